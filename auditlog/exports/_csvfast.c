/*
 * auditlog.exports._csvfast: stored payloads to CSV records without building
 * Python objects per field.
 *
 * csv_lines(payloads) returns exactly
 *     "".join(formats.csv_line(p) for p in payloads).encode()
 * for every payload the service stores (RFC 8785, which for almost every
 * event is what orjson.dumps(..., OPT_SORT_KEYS) writes; rows stored before
 * RFC 8785 are exactly that; the rest, such as 0.000001 or keys in UTF-16
 * order, it refuses as below). It scans the JSON text directly: the
 * top-level object, the actor, location and device objects; string values are
 * unescaped, every other value is validated and skipped. The targets and
 * metadata cells are the value's JSON text taken verbatim, which equals
 * orjson.dumps() of the parsed value because canonical JSON is compositional.
 *
 * Anything it cannot take exactly as the Python code would raises ValueError,
 * and the Python caller then encodes that batch with the reference code:
 *   - malformed JSON, any white space between tokens, nesting deeper than
 *     MAX_DEPTH, a number longer than MAX_NUMBER_LEN or that might overflow a
 *     double (orjson refuses infinities);
 *   - a value of the wrong type (a non-string id, a number as actor.email, a
 *     string as location, ...), a missing id/occurredAt/category/action/actor/
 *     actor.type, a key the scanner reads given twice;
 *   - inside targets and metadata (copied verbatim), anything orjson.dumps()
 *     of the parsed value would not write the same way: a non-canonical
 *     escape (\/, \u0041, \u0008, upper-case hex, surrogate escapes), an
 *     integer outside 64 bits or "-0", a float not in orjson's shortest form
 *     (checked by orjson itself: floats are the one place that builds Python
 *     objects), object keys that are not strictly ascending (sorted as
 *     OPT_SORT_KEYS sorts them; this makes a duplicate key, which orjson
 *     would collapse, impossible);
 *   - a list item that is not a str (a str with lone surrogates fails to
 *     encode with UnicodeEncodeError, itself a ValueError).
 *
 * Memory: the payloads are read through PyUnicode_AsUTF8AndSize (the buffer
 * belongs to the str, which is held for as long as it is read); every read is
 * bounds-checked against its length; output goes into one PyMem buffer that
 * grows by doubling and is copied once into the returned bytes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 128     /* orjson.dumps refuses more than 254 levels, loads 1024 */
#define MAX_NUMBER_LEN 40 /* canonical numbers are at most 24 characters */
#define MAX_EXPONENT 308  /* below 10^308 a number cannot overflow a double */

static PyObject *orjson_loads; /* orjson.loads, to check a float's canonical form */
static PyObject *orjson_dumps; /* orjson.dumps */

/* ------------------------------------------------------------------------- */
/* Output buffer */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t extra)
{
    Py_ssize_t need, cap;
    char *data;

    if (extra < 0 || b->len > PY_SSIZE_T_MAX - extra) {
        PyErr_NoMemory();
        return -1;
    }
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    cap = b->cap > 0 ? b->cap : 1024;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    data = (char *)PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* The caller has reserved room. */
static inline void
buf_put(Buf *b, const char *src, Py_ssize_t n)
{
    if (n <= 0) /* nothing (and b->data may still be NULL) */
        return;
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
}

static inline void
buf_putc(Buf *b, char c)
{
    b->data[b->len++] = c;
}

/* src with every '"' doubled; the caller has reserved 2 * n. */
static void
buf_put_doubling_quotes(Buf *b, const char *src, Py_ssize_t n)
{
    const char *end = src + n;
    while (src < end) {
        const char *q = memchr(src, '"', (size_t)(end - src));
        if (q == NULL) {
            buf_put(b, src, end - src);
            return;
        }
        buf_put(b, src, q - src + 1); /* up to and with the quote */
        buf_putc(b, '"');
        src = q + 1;
    }
}

/* ------------------------------------------------------------------------- */
/* Scanner */

typedef struct {
    const unsigned char *start; /* the payload's UTF-8 */
    const unsigned char *p;     /* next byte to read */
    const unsigned char *end;
    int depth;
    const char *error; /* why the payload is refused (ValueError) */
    Buf *scratch;      /* decoded keys */
} Scanner;

enum { ABSENT = 0, JNULL, STR, STR_ESCAPED, JSON };

/* One value the CSV record needs: a string's contents (between the quotes) or
 * a JSON value's whole text. */
typedef struct {
    const unsigned char *at;
    Py_ssize_t len;
    int kind;
} Field;

enum {
    F_ID,
    F_OCCURRED_AT,
    F_CATEGORY,
    F_ACTION,
    F_ACTOR_TYPE,
    F_ACTOR_ID,
    F_ACTOR_NAME,
    F_ACTOR_EMAIL,
    F_TARGETS,
    F_IP_ADDRESS,
    F_CITY,
    F_REGION,
    F_COUNTRY,
    F_BROWSER,
    F_OS,
    F_DEVICE,
    F_USER_AGENT,
    F_METADATA,
    F_COUNT,
    /* objects read for their fields, not cells */
    F_ACTOR = F_COUNT,
    F_LOCATION,
    F_DEVICE_OBJECT,
};

typedef struct {
    const char *name;
    Py_ssize_t len;
    int field;
} Key;

#define KEY(s, f) {s, (Py_ssize_t)(sizeof(s) - 1), f}

static const Key TOP_KEYS[] = {
    KEY("id", F_ID),
    KEY("occurredAt", F_OCCURRED_AT),
    KEY("category", F_CATEGORY),
    KEY("action", F_ACTION),
    KEY("actor", F_ACTOR),
    KEY("targets", F_TARGETS),
    KEY("ipAddress", F_IP_ADDRESS),
    KEY("location", F_LOCATION),
    KEY("device", F_DEVICE_OBJECT),
    KEY("userAgent", F_USER_AGENT),
    KEY("metadata", F_METADATA),
};
static const Key ACTOR_KEYS[] = {
    KEY("type", F_ACTOR_TYPE),
    KEY("id", F_ACTOR_ID),
    KEY("name", F_ACTOR_NAME),
    KEY("email", F_ACTOR_EMAIL),
};
static const Key LOCATION_KEYS[] = {
    KEY("city", F_CITY),
    KEY("region", F_REGION),
    KEY("country", F_COUNTRY),
};
static const Key DEVICE_KEYS[] = {
    KEY("browser", F_BROWSER),
    KEY("os", F_OS),
    KEY("device", F_DEVICE),
};

#define NKEYS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Eight bytes at a time (SWAR). Each test below is exact about whether a
 * word holds such a byte; where it is, the byte loop after it finds, or
 * FIRST_BYTE where the compiler and byte order allow. */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t
load8(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Non-zero when w holds a byte below 0x20, or equal to a or b. In each of the
 * three terms a borrow only runs upwards from a byte that matches, so the
 * lowest set bit marks the first such byte in memory order on a
 * little-endian machine. */
static inline uint64_t
control_or_mask(uint64_t w, unsigned char a, unsigned char b)
{
    uint64_t x = w ^ (ONES * a), y = w ^ (ONES * b);
    return (((w - ONES * 0x20) & ~w) | ((x - ONES) & ~x) | ((y - ONES) & ~y)) & HIGHS;
}

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FIRST_BYTE(mask) (__builtin_ctzll(mask) / 8)
#endif

static inline int
has_any_of(uint64_t w, unsigned char a, unsigned char b, unsigned char c, unsigned char d)
{
    uint64_t x = w ^ (ONES * a), y = w ^ (ONES * b), z = w ^ (ONES * c), v = w ^ (ONES * d);
    return (((x - ONES) & ~x) | ((y - ONES) & ~y) | ((z - ONES) & ~z) | ((v - ONES) & ~v)) & HIGHS
               ? 1
               : 0;
}

static int
fail(Scanner *s, const char *why)
{
    if (s->error == NULL)
        s->error = why;
    return -1;
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int
hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (the caller checked there are four bytes). */
static int
read_hex4(const unsigned char *p, unsigned int *out)
{
    unsigned int v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | (unsigned int)h;
    }
    *out = v;
    return 0;
}

/* Whether \uXXXX (hex at p, value cp) is how orjson writes that character:
 * only control characters without a short escape, in lower-case hex. */
static int
is_canonical_u_escape(const unsigned char *p, unsigned int cp)
{
    static const char hexdigits[] = "0123456789abcdef";
    if (cp >= 0x20 || cp == '\b' || cp == '\t' || cp == '\n' || cp == '\f' || cp == '\r')
        return 0;
    return p[0] == '0' && p[1] == '0' && p[2] == (unsigned char)hexdigits[cp >> 4] &&
           p[3] == (unsigned char)hexdigits[cp & 0xF];
}

/* A string at s->p (on its opening quote). Validates it as orjson.loads would;
 * with strict, also refuses escapes orjson.dumps would not write. On success
 * *at and *len are its contents between the quotes, *escaped whether it
 * holds a backslash. */
static int
scan_string(Scanner *s, int strict, const unsigned char **at, Py_ssize_t *len, int *escaped)
{
    const unsigned char *p = s->p + 1;
    const unsigned char *end = s->end;
    int esc = 0;

    for (;;) {
        unsigned char c;
        while (end - p >= 8) {
            uint64_t mask = control_or_mask(load8(p), '"', '\\');
            if (mask != 0) {
#ifdef FIRST_BYTE
                p += FIRST_BYTE(mask);
#endif
                break;
            }
            p += 8;
        }
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p >= end)
            return fail(s, "unterminated string");
        c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(s, "control character in a string");
        /* a backslash */
        esc = 1;
        if (end - p < 2)
            return fail(s, "unterminated string");
        switch (p[1]) {
        case '"':
        case '\\':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p += 2;
            break;
        case '/':
            if (strict)
                return fail(s, "non-canonical escape in a verbatim value");
            p += 2;
            break;
        case 'u': {
            unsigned int cp, low;
            if (end - p < 6 || read_hex4(p + 2, &cp) < 0)
                return fail(s, "invalid \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || read_hex4(p + 8, &low) < 0 ||
                    low < 0xDC00 || low > 0xDFFF)
                    return fail(s, "high surrogate without a low surrogate");
                if (strict)
                    return fail(s, "non-canonical escape in a verbatim value");
                p += 12;
            }
            else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(s, "lone low surrogate");
            }
            else {
                if (strict && !is_canonical_u_escape(p + 2, cp))
                    return fail(s, "non-canonical escape in a verbatim value");
                p += 6;
            }
            break;
        }
        default:
            return fail(s, "invalid escape");
        }
    }
    *at = s->p + 1;
    *len = p - (s->p + 1);
    *escaped = esc;
    s->p = p + 1;
    return 0;
}

/* Appends the unescaped contents of a string scan_string accepted. */
static int
decode_string(Scanner *s, const unsigned char *p, Py_ssize_t n, Buf *out)
{
    const unsigned char *end = p + n;

    if (buf_reserve(out, n) < 0) /* unescaping never lengthens */
        return -1;
    while (p < end) {
        const unsigned char *run = p;
        unsigned int cp, low;
        while (p < end && *p != '\\')
            p++;
        buf_put(out, (const char *)run, p - run);
        if (p >= end)
            break;
        if (end - p < 2)
            return fail(s, "invalid escape");
        switch (p[1]) {
        case '"':
            buf_putc(out, '"');
            p += 2;
            continue;
        case '\\':
            buf_putc(out, '\\');
            p += 2;
            continue;
        case '/':
            buf_putc(out, '/');
            p += 2;
            continue;
        case 'b':
            buf_putc(out, '\b');
            p += 2;
            continue;
        case 'f':
            buf_putc(out, '\f');
            p += 2;
            continue;
        case 'n':
            buf_putc(out, '\n');
            p += 2;
            continue;
        case 'r':
            buf_putc(out, '\r');
            p += 2;
            continue;
        case 't':
            buf_putc(out, '\t');
            p += 2;
            continue;
        case 'u':
            break;
        default:
            return fail(s, "invalid escape");
        }
        if (end - p < 6 || read_hex4(p + 2, &cp) < 0)
            return fail(s, "invalid \\u escape");
        p += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || read_hex4(p + 2, &low) < 0 ||
                low < 0xDC00 || low > 0xDFFF)
                return fail(s, "high surrogate without a low surrogate");
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            /* 12 escape bytes become 4 */
            buf_putc(out, (char)(0xF0 | (cp >> 18)));
            buf_putc(out, (char)(0x80 | ((cp >> 12) & 0x3F)));
            buf_putc(out, (char)(0x80 | ((cp >> 6) & 0x3F)));
            buf_putc(out, (char)(0x80 | (cp & 0x3F)));
        }
        else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail(s, "lone low surrogate");
        }
        else if (cp < 0x80) {
            buf_putc(out, (char)cp);
        }
        else if (cp < 0x800) {
            buf_putc(out, (char)(0xC0 | (cp >> 6)));
            buf_putc(out, (char)(0x80 | (cp & 0x3F)));
        }
        else {
            buf_putc(out, (char)(0xE0 | (cp >> 12)));
            buf_putc(out, (char)(0x80 | ((cp >> 6) & 0x3F)));
            buf_putc(out, (char)(0x80 | (cp & 0x3F)));
        }
    }
    return 0;
}

/* Whether orjson.dumps(orjson.loads(text)) == text for one float token. */
static int
float_is_canonical(Scanner *s, const unsigned char *at, Py_ssize_t n)
{
    PyObject *text, *value, *dumped;
    int same;

    text = PyBytes_FromStringAndSize((const char *)at, n);
    if (text == NULL)
        return -1;
    value = PyObject_CallOneArg(orjson_loads, text);
    Py_DECREF(text);
    if (value == NULL)
        goto refused;
    dumped = PyObject_CallOneArg(orjson_dumps, value);
    Py_DECREF(value);
    if (dumped == NULL)
        goto refused;
    same = PyBytes_Check(dumped) && PyBytes_GET_SIZE(dumped) == n &&
           memcmp(PyBytes_AS_STRING(dumped), at, (size_t)n) == 0;
    Py_DECREF(dumped);
    if (!same)
        return fail(s, "non-canonical float in a verbatim value");
    return 0;

refused:
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return -1;
    PyErr_Clear();
    return fail(s, "float orjson does not take");
}

static int
scan_number(Scanner *s, int strict)
{
    const unsigned char *p = s->p;
    const unsigned char *end = s->end;
    const unsigned char *start = p, *int_start;
    Py_ssize_t int_digits, n;
    long exponent = 0;
    int negative = 0, is_float = 0;

    if (*p == '-') {
        negative = 1;
        p++;
    }
    int_start = p;
    if (p < end && *p == '0') {
        p++;
    }
    else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p))
            p++;
    }
    else {
        return fail(s, "invalid number");
    }
    int_digits = p - int_start;
    if (p < end && *p == '.') {
        const unsigned char *fraction;
        is_float = 1;
        fraction = ++p;
        while (p < end && is_digit(*p))
            p++;
        if (p == fraction)
            return fail(s, "invalid number");
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        const unsigned char *digits;
        int exponent_negative = 0;
        is_float = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            exponent_negative = *p == '-';
            p++;
        }
        digits = p;
        while (p < end && is_digit(*p)) {
            if (exponent < 100000)
                exponent = exponent * 10 + (*p - '0');
            p++;
        }
        if (p == digits)
            return fail(s, "invalid number");
        if (exponent_negative)
            exponent = -exponent;
    }
    n = p - start;
    if (n > MAX_NUMBER_LEN)
        return fail(s, "number too long");
    if ((long)int_digits + exponent > MAX_EXPONENT)
        return fail(s, "number that might overflow a double");
    if (strict) {
        if (!is_float) {
            if (negative && int_digits == 1 && *int_start == '0')
                return fail(s, "non-canonical integer in a verbatim value");
            /* outside 64 bits orjson.loads gives a float */
            if (negative ? (int_digits > 19 ||
                            (int_digits == 19 && memcmp(int_start, "9223372036854775808", 19) > 0))
                         : (int_digits > 20 ||
                            (int_digits == 20 && memcmp(int_start, "18446744073709551615", 20) > 0)))
                return fail(s, "integer outside 64 bits in a verbatim value");
        }
        else if (float_is_canonical(s, start, n) < 0) {
            return -1;
        }
    }
    s->p = p;
    return 0;
}

static int
scan_literal(Scanner *s, const char *word, Py_ssize_t n)
{
    if (s->end - s->p < n || memcmp(s->p, word, (size_t)n) != 0)
        return fail(s, "invalid literal");
    s->p += n;
    return 0;
}

static int skip_value(Scanner *s, int strict);

/* The next character of a string scan_string accepted with strict, as one
 * byte of its UTF-8 (strict escapes all stand for ASCII), or -1 at the end. */
static int
next_key_byte(const unsigned char **p, const unsigned char *end)
{
    const unsigned char *q = *p;
    unsigned int cp;

    if (q >= end)
        return -1;
    if (*q != '\\') {
        *p = q + 1;
        return *q;
    }
    if (end - q >= 2) {
        *p = q + 2;
        switch (q[1]) {
        case '"':
            return '"';
        case '\\':
            return '\\';
        case 'b':
            return '\b';
        case 'f':
            return '\f';
        case 'n':
            return '\n';
        case 'r':
            return '\r';
        case 't':
            return '\t';
        case 'u':
            if (end - q >= 6 && read_hex4(q + 2, &cp) == 0 && cp < 0x80) {
                *p = q + 6;
                return (int)cp;
            }
            break;
        default:
            break;
        }
    }
    *p = end; /* cannot happen after scan_string: end the comparison */
    return -1;
}

/* Compares two object keys as orjson's OPT_SORT_KEYS orders them (by code
 * point, which is the order of their UTF-8 bytes). */
static int
compare_keys(const unsigned char *a, Py_ssize_t alen, int a_escaped, const unsigned char *b,
             Py_ssize_t blen, int b_escaped)
{
    const unsigned char *aend = a + alen, *bend = b + blen;

    if (!a_escaped && !b_escaped) {
        Py_ssize_t common = alen < blen ? alen : blen;
        int c = memcmp(a, b, (size_t)common);
        if (c != 0)
            return c;
        return alen < blen ? -1 : alen > blen;
    }
    for (;;) {
        int x = next_key_byte(&a, aend), y = next_key_byte(&b, bend);
        if (x != y)
            return x < y ? -1 : 1;
        if (x < 0)
            return 0;
    }
}

static int
enter(Scanner *s)
{
    if (++s->depth > MAX_DEPTH)
        return fail(s, "nested too deeply");
    s->p++; /* the opening bracket */
    return 0;
}

static int
skip_array(Scanner *s, int strict)
{
    if (enter(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        if (skip_value(s, strict) < 0)
            return -1;
        if (s->p >= s->end)
            return fail(s, "unterminated array");
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == ']') {
            s->p++;
            s->depth--;
            return 0;
        }
        return fail(s, "expected , or ] in an array");
    }
}

static int
skip_object(Scanner *s, int strict)
{
    const unsigned char *previous = NULL;
    Py_ssize_t previous_len = 0;
    int previous_escaped = 0;

    if (enter(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        const unsigned char *key;
        Py_ssize_t key_len;
        int escaped;

        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a key");
        if (scan_string(s, strict, &key, &key_len, &escaped) < 0)
            return -1;
        if (strict) {
            /* Canonical keys are sorted, hence unique: orjson would collapse a
             * duplicate key, and the verbatim copy would not. */
            if (previous != NULL &&
                compare_keys(previous, previous_len, previous_escaped, key, key_len, escaped) >= 0)
                return fail(s, "keys not strictly ascending in a verbatim value");
            previous = key;
            previous_len = key_len;
            previous_escaped = escaped;
        }
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected :");
        s->p++;
        if (skip_value(s, strict) < 0)
            return -1;
        if (s->p >= s->end)
            return fail(s, "unterminated object");
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == '}') {
            s->p++;
            s->depth--;
            return 0;
        }
        return fail(s, "expected , or } in an object");
    }
}

static int
skip_value(Scanner *s, int strict)
{
    const unsigned char *at;
    Py_ssize_t len;
    int escaped;

    if (s->p >= s->end)
        return fail(s, "expected a value");
    switch (*s->p) {
    case '"':
        return scan_string(s, strict, &at, &len, &escaped);
    case '{':
        return skip_object(s, strict);
    case '[':
        return skip_array(s, strict);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    default:
        if (*s->p == '-' || is_digit(*s->p))
            return scan_number(s, strict);
        return fail(s, "expected a value");
    }
}

/* The field a key names, or -1. A key with escapes is decoded first. */
static int
match_key(Scanner *s, const Key *keys, int nkeys, const unsigned char *at, Py_ssize_t len,
          int escaped, int *field)
{
    int i;

    if (escaped) {
        s->scratch->len = 0;
        if (decode_string(s, at, len, s->scratch) < 0)
            return -1;
        at = (const unsigned char *)s->scratch->data;
        len = s->scratch->len;
    }
    *field = -1;
    for (i = 0; i < nkeys; i++) {
        if (keys[i].len == len && memcmp(keys[i].name, at, (size_t)len) == 0) {
            *field = keys[i].field;
            break;
        }
    }
    return 0;
}

/* An object of string-or-null fields (actor, location, device); other keys
 * are skipped. */
static int
read_fields(Scanner *s, const Key *keys, int nkeys, Field *fields)
{
    unsigned int seen = 0;

    if (enter(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        const unsigned char *key, *at;
        Py_ssize_t key_len, len;
        int escaped, field;

        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a key");
        if (scan_string(s, 0, &key, &key_len, &escaped) < 0)
            return -1;
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected :");
        s->p++;
        if (match_key(s, keys, nkeys, key, key_len, escaped, &field) < 0)
            return -1;
        if (field < 0) {
            if (skip_value(s, 0) < 0)
                return -1;
        }
        else {
            if (seen & (1u << field))
                return fail(s, "a key given twice");
            seen |= 1u << field;
            if (s->p < s->end && *s->p == '"') {
                if (scan_string(s, 0, &at, &len, &escaped) < 0)
                    return -1;
                fields[field].at = at;
                fields[field].len = len;
                fields[field].kind = escaped ? STR_ESCAPED : STR;
            }
            else if (s->p < s->end && *s->p == 'n') {
                if (scan_literal(s, "null", 4) < 0)
                    return -1;
                fields[field].kind = JNULL;
            }
            else {
                return fail(s, "a value that is neither a string nor null");
            }
        }
        if (s->p >= s->end)
            return fail(s, "unterminated object");
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == '}') {
            s->p++;
            s->depth--;
            return 0;
        }
        return fail(s, "expected , or } in an object");
    }
}

/* A JSON value copied verbatim (targets must be an array, metadata an object). */
static int
read_verbatim(Scanner *s, unsigned char open, Field *field)
{
    const unsigned char *at = s->p;

    if (s->p < s->end && *s->p == 'n') {
        if (scan_literal(s, "null", 4) < 0)
            return -1;
        field->kind = JNULL;
        return 0;
    }
    if (s->p >= s->end || *s->p != open)
        return fail(s, open == '[' ? "targets is not an array" : "metadata is not an object");
    if ((open == '[' ? skip_array(s, 1) : skip_object(s, 1)) < 0)
        return -1;
    field->at = at;
    field->len = s->p - at;
    field->kind = JSON;
    return 0;
}

static int
read_event(Scanner *s, Field *fields)
{
    unsigned int seen = 0;

    if (s->p >= s->end || *s->p != '{')
        return fail(s, "the payload is not a JSON object");
    if (enter(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
    }
    else {
        for (;;) {
            const unsigned char *key, *at;
            Py_ssize_t key_len, len;
            int escaped, field;

            if (s->p >= s->end || *s->p != '"')
                return fail(s, "expected a key");
            if (scan_string(s, 0, &key, &key_len, &escaped) < 0)
                return -1;
            if (s->p >= s->end || *s->p != ':')
                return fail(s, "expected :");
            s->p++;
            if (match_key(s, TOP_KEYS, NKEYS(TOP_KEYS), key, key_len, escaped, &field) < 0)
                return -1;
            if (field >= 0) {
                if (seen & (1u << field))
                    return fail(s, "a key given twice");
                seen |= 1u << field;
            }
            switch (field) {
            case -1:
                if (skip_value(s, 0) < 0)
                    return -1;
                break;
            case F_ID:
            case F_OCCURRED_AT:
            case F_CATEGORY:
            case F_ACTION:
                /* written as they are: Python's join needs a str */
                if (s->p >= s->end || *s->p != '"')
                    return fail(s, "id, occurredAt, category or action is not a string");
                if (scan_string(s, 0, &at, &len, &escaped) < 0)
                    return -1;
                fields[field].at = at;
                fields[field].len = len;
                fields[field].kind = escaped ? STR_ESCAPED : STR;
                break;
            case F_IP_ADDRESS:
            case F_USER_AGENT:
                if (s->p < s->end && *s->p == '"') {
                    if (scan_string(s, 0, &at, &len, &escaped) < 0)
                        return -1;
                    fields[field].at = at;
                    fields[field].len = len;
                    fields[field].kind = escaped ? STR_ESCAPED : STR;
                }
                else if (s->p < s->end && *s->p == 'n') {
                    if (scan_literal(s, "null", 4) < 0)
                        return -1;
                    fields[field].kind = JNULL;
                }
                else {
                    return fail(s, "ipAddress or userAgent is neither a string nor null");
                }
                break;
            case F_ACTOR:
                if (s->p >= s->end || *s->p != '{')
                    return fail(s, "actor is not an object");
                if (read_fields(s, ACTOR_KEYS, NKEYS(ACTOR_KEYS), fields) < 0)
                    return -1;
                break;
            case F_LOCATION:
            case F_DEVICE_OBJECT:
                if (s->p < s->end && *s->p == 'n') {
                    if (scan_literal(s, "null", 4) < 0)
                        return -1;
                }
                else if (s->p < s->end && *s->p == '{') {
                    if ((field == F_LOCATION
                             ? read_fields(s, LOCATION_KEYS, NKEYS(LOCATION_KEYS), fields)
                             : read_fields(s, DEVICE_KEYS, NKEYS(DEVICE_KEYS), fields)) < 0)
                        return -1;
                }
                else {
                    return fail(s, "location or device is neither an object nor null");
                }
                break;
            case F_TARGETS:
                if (read_verbatim(s, '[', &fields[F_TARGETS]) < 0)
                    return -1;
                break;
            case F_METADATA:
                if (read_verbatim(s, '{', &fields[F_METADATA]) < 0)
                    return -1;
                break;
            default:
                return fail(s, "internal error: unknown field");
            }
            if (s->p >= s->end)
                return fail(s, "unterminated object");
            if (*s->p == ',') {
                s->p++;
                continue;
            }
            if (*s->p == '}') {
                s->p++;
                s->depth--;
                break;
            }
            return fail(s, "expected , or } in an object");
        }
    }
    if (s->p != s->end)
        return fail(s, "content after the payload's object");
    if (!(seen & (1u << F_ACTOR)))
        return fail(s, "no actor");
    if (fields[F_ID].kind != STR && fields[F_ID].kind != STR_ESCAPED)
        return fail(s, "no id");
    if (fields[F_OCCURRED_AT].kind != STR && fields[F_OCCURRED_AT].kind != STR_ESCAPED)
        return fail(s, "no occurredAt");
    if (fields[F_CATEGORY].kind != STR && fields[F_CATEGORY].kind != STR_ESCAPED)
        return fail(s, "no category");
    if (fields[F_ACTION].kind != STR && fields[F_ACTION].kind != STR_ESCAPED)
        return fail(s, "no action");
    if (fields[F_ACTOR_TYPE].kind != STR && fields[F_ACTOR_TYPE].kind != STR_ESCAPED)
        return fail(s, "actor.type is not a string");
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Cells */

/* A string field's unescaped UTF-8: its raw bytes, or decoded into scratch. */
static int
field_text(Scanner *s, const Field *f, const char **text, Py_ssize_t *len)
{
    if (f->kind == STR) {
        *text = (const char *)f->at;
        *len = f->len;
        return 0;
    }
    s->scratch->len = 0;
    if (decode_string(s, f->at, f->len, s->scratch) < 0)
        return -1;
    *text = s->scratch->data;
    *len = s->scratch->len;
    return 0;
}

/* id, occurredAt, category, action, actor type: written as they are. */
static int
put_plain(Scanner *s, Buf *out, const Field *f)
{
    const char *text;
    Py_ssize_t len;

    if (field_text(s, f, &text, &len) < 0 || buf_reserve(out, len) < 0)
        return -1;
    buf_put(out, text, len);
    return 0;
}

/* formats.text_cell: empty for None; a leading apostrophe before a formula
 * start; double quotes around a value with " , \n or \r, quotes doubled. */
static int
put_text(Scanner *s, Buf *out, const Field *f)
{
    const char *text;
    Py_ssize_t len, i;
    int formula, quote = 0;

    if (f->kind != STR && f->kind != STR_ESCAPED)
        return 0;
    if (field_text(s, f, &text, &len) < 0)
        return -1;
    if (len == 0)
        return 0;
    formula = text[0] == '=' || text[0] == '+' || text[0] == '-' || text[0] == '@' ||
              text[0] == '\t' || text[0] == '\r';
    i = 0;
    while (len - i >= 8 && !has_any_of(load8((const unsigned char *)text + i), '"', ',', '\n', '\r'))
        i += 8;
    for (; i < len; i++) {
        char c = text[i];
        if (c == '"' || c == ',' || c == '\n' || c == '\r') {
            quote = 1;
            break;
        }
    }
    if (!quote) {
        if (buf_reserve(out, len + 1) < 0)
            return -1;
        if (formula)
            buf_putc(out, '\'');
        buf_put(out, text, len);
        return 0;
    }
    if (len > (PY_SSIZE_T_MAX - 3) / 2) {
        PyErr_NoMemory();
        return -1;
    }
    if (buf_reserve(out, 2 * len + 3) < 0)
        return -1;
    buf_putc(out, '"');
    if (formula)
        buf_putc(out, '\'');
    buf_put_doubling_quotes(out, text, len);
    buf_putc(out, '"');
    return 0;
}

/* targets / metadata: the JSON text in double quotes, its quotes doubled. */
static int
put_json(Buf *out, const Field *f, const char *empty)
{
    if (f->kind != JSON) {
        if (buf_reserve(out, 4) < 0)
            return -1;
        buf_put(out, empty, 4);
        return 0;
    }
    if (f->len > (PY_SSIZE_T_MAX - 2) / 2) {
        PyErr_NoMemory();
        return -1;
    }
    if (buf_reserve(out, 2 * f->len + 2) < 0)
        return -1;
    buf_putc(out, '"');
    buf_put_doubling_quotes(out, (const char *)f->at, f->len);
    buf_putc(out, '"');
    return 0;
}

static int
put_comma(Buf *out)
{
    if (buf_reserve(out, 1) < 0)
        return -1;
    buf_putc(out, ',');
    return 0;
}

/* One payload as one CSV record (formats.CSV_COLUMNS order, CRLF). */
static int
put_record(Scanner *s, Buf *out, const Field *fields)
{
    int i;

    for (i = 0; i < F_COUNT; i++) {
        int rc;
        if (i > 0 && put_comma(out) < 0)
            return -1;
        switch (i) {
        case F_ID:
        case F_OCCURRED_AT:
        case F_CATEGORY:
        case F_ACTION:
        case F_ACTOR_TYPE:
            rc = put_plain(s, out, &fields[i]);
            break;
        case F_TARGETS:
            rc = put_json(out, &fields[i], "\"[]\"");
            break;
        case F_METADATA:
            rc = put_json(out, &fields[i], "\"{}\"");
            break;
        default:
            rc = put_text(s, out, &fields[i]);
            break;
        }
        if (rc < 0)
            return -1;
    }
    if (buf_reserve(out, 2) < 0)
        return -1;
    buf_put(out, "\r\n", 2);
    return 0;
}

/* ------------------------------------------------------------------------- */

static PyObject *
csv_lines(PyObject *Py_UNUSED(module), PyObject *payloads)
{
    Buf out = {NULL, 0, 0};
    Buf scratch = {NULL, 0, 0};
    PyObject *result = NULL;
    Py_ssize_t i;

    if (!PyList_Check(payloads)) {
        PyErr_Format(PyExc_TypeError, "csv_lines() takes a list of str, not %.100s",
                     Py_TYPE(payloads)->tp_name);
        return NULL;
    }
    /* The size is read again on every turn: nothing here runs Python code that
     * could change the list, but a float check calls orjson (and may collect). */
    for (i = 0; i < PyList_GET_SIZE(payloads); i++) {
        PyObject *item = PyList_GET_ITEM(payloads, i);
        const char *text;
        Py_ssize_t len;
        Field fields[F_COUNT];
        Scanner s;
        int rc;

        if (!PyUnicode_Check(item)) {
            PyErr_Format(PyExc_ValueError, "payload %zd is a %.100s, not a str", i,
                         Py_TYPE(item)->tp_name);
            goto done;
        }
        Py_INCREF(item);
        text = PyUnicode_AsUTF8AndSize(item, &len);
        if (text == NULL) {
            Py_DECREF(item);
            goto done;
        }
        memset(fields, 0, sizeof(fields));
        s.start = s.p = (const unsigned char *)text;
        s.end = s.start + len;
        s.depth = 0;
        s.error = NULL;
        s.scratch = &scratch;
        rc = read_event(&s, fields);
        if (rc == 0)
            rc = put_record(&s, &out, fields);
        if (rc < 0 && !PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "payload %zd, byte %zd: %s", i,
                         (Py_ssize_t)(s.p - s.start), s.error ? s.error : "refused");
        Py_DECREF(item);
        if (rc < 0)
            goto done;
    }
    result = PyBytes_FromStringAndSize(out.data != NULL ? out.data : "", out.len);

done:
    PyMem_Free(out.data);
    PyMem_Free(scratch.data);
    return result;
}

PyDoc_STRVAR(csv_lines_doc,
             "csv_lines(payloads, /)\n--\n\n"
             "The CSV records of stored payloads, as bytes: exactly\n"
             "\"\".join(csv_line(p) for p in payloads).encode(). Raises ValueError\n"
             "for anything it does not take exactly as csv_line would.");

static PyMethodDef csvfast_methods[] = {
    {"csv_lines", csv_lines, METH_O, csv_lines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef csvfast_module = {
    PyModuleDef_HEAD_INIT,
    "auditlog.exports._csvfast",
    "CSV records of stored payloads, scanned in C (see auditlog.exports.formats).",
    -1,
    csvfast_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__csvfast(void)
{
    PyObject *orjson, *module;

    if (orjson_loads == NULL) {
        orjson = PyImport_ImportModule("orjson");
        if (orjson == NULL)
            return NULL;
        orjson_loads = PyObject_GetAttrString(orjson, "loads");
        orjson_dumps = PyObject_GetAttrString(orjson, "dumps");
        Py_DECREF(orjson);
        if (orjson_loads == NULL || orjson_dumps == NULL) {
            Py_CLEAR(orjson_loads);
            Py_CLEAR(orjson_dumps);
            return NULL;
        }
    }
    module = PyModule_Create(&csvfast_module);
    return module;
}
