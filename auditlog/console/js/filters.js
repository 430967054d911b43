// The filter bar's state, mirrored in the page's query string so a view can
// be shared. Times travel as UTC instants (from=2026-11-28T10:00:00Z); the
// form shows them in the browser's time zone. The token never goes here.

const KEYS = ["from", "to", "actor", "category", "action", "ip"];

export function emptyFilters() {
  return { from: "", to: "", actor: "", category: "", action: "", ip: "" };
}

export function filtersFromSearch(search) {
  const params = new URLSearchParams(search);
  const state = emptyFilters();
  for (const key of KEYS) state[key] = (params.get(key) || "").trim();
  return state;
}

export function searchFromFilters(state) {
  const params = new URLSearchParams();
  for (const key of KEYS) if (state[key]) params.set(key, state[key]);
  const text = params.toString();
  return text ? `?${text}` : "";
}

// The form field each AuditEventFilter field comes from, to name a refused value by its label.
export const FIELD_FOR_ARGUMENT = {
  occurredFrom: "from", occurredTo: "to", actorEmail: "actor", categories: "category", actions: "action",
  ipAddress: "ip",
};

export function splitActions(text) {
  return text.split(",").map((a) => a.trim()).filter(Boolean);
}

// The AuditEventFilter input of the API, or null for "everything".
export function toGraphQLFilter(state) {
  const filter = {};
  if (state.from) filter.occurredFrom = state.from;
  if (state.to) filter.occurredTo = state.to;
  if (state.actor) filter.actorEmail = state.actor;
  if (state.category) filter.categories = [state.category];
  const actions = splitActions(state.action);
  if (actions.length) filter.actions = actions;
  if (state.ip) filter.ipAddress = state.ip;
  return Object.keys(filter).length ? filter : null;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// A UTC instant as the value of a datetime-local input, in local time.
function toLocalInput(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const seconds = d.getSeconds() ? `:${pad(d.getSeconds())}` : "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}${seconds}`;
}

// A datetime-local value (local time) as a UTC instant.
function fromLocalInput(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString().replace(".000Z", "Z");
}

export function fillForm(form, state) {
  form.elements.from.value = state.from ? toLocalInput(state.from) : "";
  form.elements.to.value = state.to ? toLocalInput(state.to) : "";
  form.elements.actor.value = state.actor;
  form.elements.category.value = state.category;
  form.elements.action.value = state.action;
  form.elements.ip.value = state.ip;
}

// A quick range: From the given number of hours ago (to the second), To open, so it runs to now.
export function quickRange(form, hours) {
  const now = Math.floor(Date.now() / 1000) * 1000;
  form.elements.from.value = toLocalInput(new Date(now - hours * 3600 * 1000).toISOString());
  form.elements.to.value = "";
}

// The form's state, or an error message naming the field that is wrong.
export function readForm(form) {
  const e = form.elements;
  const state = {
    from: fromLocalInput(e.from.value),
    to: fromLocalInput(e.to.value),
    actor: e.actor.value.trim(),
    category: e.category.value,
    action: splitActions(e.action.value).join(","),
    ip: e.ip.value.trim(),
  };
  if (state.from && state.to && state.from >= state.to) {
    return { error: "“From” must be earlier than “To”.", field: e.from };
  }
  if (e.actor.value && !e.actor.checkValidity()) {
    return { error: "Actor email is not a valid email address.", field: e.actor };
  }
  return { state };
}
