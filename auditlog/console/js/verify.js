// Checking an event's inclusion proof and its checkpoint's signature in the
// browser, trusting nothing the service says without recomputing it: RFC 8785
// (JCS) leaf hashes, the RFC 9162 inclusion path, the C2SP signed note (Ed25519).

const LEAF = Uint8Array.of(0);
const NODE = Uint8Array.of(1);
const ED25519 = 1; // the signed-note signature type of Ed25519
const SIGNATURE_PREFIX = "\u2014 "; // an em dash and a space
const encoder = new TextEncoder();

export class VerifyError extends Error {}

// RFC 8785: JSON.stringify already writes numbers and strings as JCS wants;
// object keys sort by UTF-16 code units, which is the default sort.
export function jcs(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`;
  const members = Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${jcs(value[key])}`);
  return `{${members.join(",")}}`;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

export function fromBase64(text, what) {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new VerifyError(`${what} is not valid base64.`);
  }
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function equal(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

export function leafHash(payload) {
  return sha256(LEAF, encoder.encode(jcs(payload)));
}

// RFC 9162 2.1.3.2. Halving by division, not bit operators: tree sizes may pass 2^31.
export async function rootFromPath(leaf, index, size, path) {
  if (index < 0 || index >= size) return null;
  const half = (n) => Math.floor(n / 2);
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(NODE, p, r);
      while (fn !== 0 && fn % 2 === 0) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      r = await sha256(NODE, r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 ? r : null;
}

// `<name>+<key hash, 8 hex>+<base64(0x01 || public key)>`, its hash checked.
export async function parseVerifierKey(text) {
  // Split at the first two "+" only: base64 has "+" in it too.
  const match = /^([^+\s]+)\+([0-9a-f]{8})\+(\S+)$/.exec(text.trim());
  if (!match) throw new VerifyError("The verifier key is not <name>+<8 hex digits>+<base64 key>.");
  const [, name, hashHex, blob] = match;
  const raw = fromBase64(blob, "The verifier key");
  if (raw.length !== 33 || raw[0] !== ED25519) {
    throw new VerifyError("The verifier key is not an Ed25519 signed-note key.");
  }
  const publicKey = raw.slice(1);
  const hash = (await sha256(encoder.encode(`${name}\n`), raw)).slice(0, 4);
  if (hex(hash) !== hashHex) throw new VerifyError("The verifier key's hash does not match its name and key.");
  return { name, hash, hashHex, publicKey };
}

// A checkpoint note: its body (the signed bytes), origin, size, root and signature lines.
export function parseCheckpointNote(note) {
  const split = note.indexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) {
    throw new VerifyError("The signed note is not a body, a blank line and signature lines.");
  }
  const body = note.slice(0, split + 1);
  const [origin, sizeText, rootText, ...rest] = body.split("\n");
  if (rest.length < 1 || !/^(0|[1-9][0-9]*)$/.test(sizeText ?? "")) {
    throw new VerifyError("The checkpoint has no origin, tree size and root hash lines.");
  }
  const root = fromBase64(rootText, "The checkpoint's root hash");
  if (root.length !== 32) throw new VerifyError("The checkpoint's root hash is not 32 bytes.");
  const signatures = note.slice(split + 2, -1).split("\n").map((line) => {
    if (!line.startsWith(SIGNATURE_PREFIX)) {
      throw new VerifyError("A signature line does not start with an em dash and a space.");
    }
    const words = line.slice(SIGNATURE_PREFIX.length);
    const space = words.lastIndexOf(" ");
    const raw = fromBase64(words.slice(space + 1), "A signature");
    return { name: words.slice(0, space), keyHash: raw.slice(0, 4), signature: raw.slice(4) };
  });
  return { body, origin, size: Number(sizeText), root, signatures };
}

// "verified" with the key that signed; "bad" when no listed key's signature
// verifies; "unsupported" when this browser's WebCrypto has no Ed25519.
export async function checkSignature(note, keys) {
  const body = encoder.encode(note.body);
  let tried = false;
  for (const sig of note.signatures) {
    for (const key of keys) {
      if (sig.name !== key.name || !equal(sig.keyHash, key.hash)) continue;
      tried = true;
      let imported;
      try {
        imported = await crypto.subtle.importKey("raw", key.publicKey, { name: "Ed25519" }, false, ["verify"]);
      } catch (error) {
        if (error?.name === "NotSupportedError") return { status: "unsupported", key };
        throw error;
      }
      if (await crypto.subtle.verify({ name: "Ed25519" }, imported, sig.signature, body)) {
        return { status: "verified", key };
      }
    }
  }
  return { status: "bad", key: null, tried };
}

function proofHashes(hashes) {
  return hashes.map((text) => {
    const hash = fromBase64(text, "A proof hash");
    if (hash.length !== 32) throw new VerifyError("A proof hash is not 32 bytes.");
    return hash;
  });
}

// The whole check of one sealed event against its checkpoint. Throws a
// VerifyError naming the first thing that does not hold; otherwise says
// whether the signature was checked ("verified") or could not be ("unsupported").
export async function verifyEvent(event, integrity) {
  const proof = event.inclusionProof;
  const note = parseCheckpointNote(proof.checkpoint.signedNote);
  if (note.origin !== integrity.origin) {
    throw new VerifyError(`The checkpoint is of another log (${note.origin}), not ${integrity.origin}.`);
  }
  if (note.size !== proof.treeSize || proof.checkpoint.treeSize !== proof.treeSize) {
    throw new VerifyError("The proof and its signed checkpoint are of different tree sizes.");
  }
  if (event.leafIndex !== null && event.leafIndex !== proof.leafIndex) {
    throw new VerifyError("The proof is for another leaf than this event's.");
  }
  const leaf = await leafHash(event.payload);
  const root = await rootFromPath(leaf, proof.leafIndex, proof.treeSize, proofHashes(proof.hashes));
  if (!root || !equal(root, note.root)) {
    throw new VerifyError(`The inclusion proof does not lead to the root hash of checkpoint ${note.size}.`);
  }
  // Retired keys stay listed: a checkpoint signed before a rotation still verifies.
  const listed = new Set([integrity.verifierKey, ...integrity.verifierKeys]);
  const keys = await Promise.all([...listed].map(parseVerifierKey));
  const signature = await checkSignature(note, keys);
  if (signature.status === "bad") {
    throw new VerifyError(signature.tried ? "The checkpoint's signature does not verify." :
      "The checkpoint is not signed by any of the service's verifier keys.");
  }
  return signature;
}
