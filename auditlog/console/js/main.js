// The Audit Logs console: sign-in, the filter bar (mirrored in the URL), the
// events table with "Load more", row detail, actor investigation, export and
// the live tail. Everything goes through the service's own GraphQL API.

import { ApiError, gql, session, websocketURL } from "./api.js";
import { ActorInvestigation, EventDetail, wireDialogs } from "./dialogs.js";
import { byId, el, setText, show } from "./dom.js";
import { runExport } from "./exporter.js";
import {
  FIELD_FOR_ARGUMENT, emptyFilters, fillForm, filtersFromSearch, quickRange, readForm, searchFromFilters,
  toGraphQLFilter,
} from "./filters.js";
import { categoryLabel, timeZoneText } from "./format.js";
import { LiveTail } from "./live.js";
import { EVENTS, LIVE, PAGE_SIZE, START } from "./queries.js";
import { EventTable } from "./table.js";

const ui = {
  title: byId("page-title"),
  skip: byId("skip-link"),
  signIn: byId("sign-in"),
  signInForm: byId("sign-in-form"),
  signInError: byId("sign-in-error"),
  console: byId("console"),
  session: byId("session"),
  workspace: byId("workspace-label"),
  filters: byId("filters"),
  category: byId("f-category"),
  actions: byId("action-list"),
  status: byId("status"),
  empty: byId("empty"),
  more: byId("load-more"),
  live: byId("live-toggle"),
  liveStatus: byId("live-status"),
  exportForm: byId("export-form"),
  exportButton: byId("export-button"),
  exportResult: byId("export-result"),
};

const state = { filters: emptyFilters(), load: 0, tail: null, catalogLoaded: false };

const detail = new EventDetail({ onInvestigate: (email) => actor.open(email), onError: handleError });
const actor = new ActorInvestigation({ onFilterActor: filterByActor, onError: handleError });
const table = new EventTable(byId("event-rows"), {
  onOpen: (event) => detail.open(event),
  onInvestigate: (email) => actor.open(email),
});

function setStatus(message, kind = "") {
  setText(ui.status, message);
  ui.status.className = `status ${kind}`.trim();
}

function showCount() {
  setStatus(`${table.size.toLocaleString()} event${table.size === 1 ? "" : "s"} shown, newest first.`);
}

function showSignIn(message = "", kind = "error") {
  stopLive();
  table.reset();
  show(ui.console, false);
  show(ui.session, false);
  show(ui.skip, false);
  show(ui.signIn, true);
  setText(ui.signInError, message);
  ui.signInError.className = kind;
  show(ui.signInError, Boolean(message));
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
  ui.signInForm.elements.token.focus();
}

function signInMessage(error) {
  if (error.code === "UNAUTHENTICATED") {
    return `Sign-in failed (401): ${error.message} Paste a valid API key or console token.`;
  }
  if (error.code === "FORBIDDEN") {
    // The service names the role ("the member role cannot read the audit log"): say it once.
    return `Access denied: ${error.message.replace(/\.$/, "")}; sign in with an owner's or admin's key or token.`;
  }
  return error.message;
}

// Errors from any request: a lost or refused session goes back to sign-in.
function handleError(error) {
  if (error instanceof ApiError && (error.code === "UNAUTHENTICATED" || error.code === "FORBIDDEN")) {
    session.clear();
    showSignIn(signInMessage(error));
    return;
  }
  setStatus(badInputMessage(error), "error");
}

// "filter.ipAddress: must be …" as one sentence naming the field by its label, which is focused.
function badInputMessage(error) {
  if (!error.argument) return error.message;
  const prefix = `${error.argument}: `;
  const reason = error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
  const input = ui.filters.elements[FIELD_FOR_ARGUMENT[error.argument.replace(/^.*\bfilter\./, "")]];
  if (!input?.labels?.length) return `${error.argument} ${reason.replace(/\.$/, "")}.`;
  input.setAttribute("aria-invalid", "true");
  input.focus();
  return `“${input.labels[0].textContent.trim()}” ${reason.replace(/\.$/, "")}.`;
}

function fillCatalog(catalog) {
  if (state.catalogLoaded) return;
  const categories = [...new Set(catalog.map((e) => e.category))];
  ui.category.append(...categories.map((c) => el("option", { value: c }, categoryLabel(c))));
  const prefixes = new Set();
  for (const { action } of catalog) {
    const parts = action.split(".");
    for (let i = 1; i < parts.length; i += 1) prefixes.add(`${parts.slice(0, i).join(".")}.*`);
  }
  const options = [...[...prefixes].sort(), ...catalog.map((e) => e.action)];
  ui.actions.append(...options.map((value) => el("option", { value })));
  state.catalogLoaded = true;
}

// Credits the location data's source where its licence asks for it (DB-IP's
// country database, used when no City database is configured).
async function showCredits() {
  try {
    const response = await fetch("/console/config.json", { credentials: "omit" });
    if (!response.ok) return;
    const config = await response.json();
    const geoip = config.geoipAttribution === "dbip";
    show(byId("geoip-credit"), geoip);
    show(byId("credits"), geoip);
  } catch {
    // No credit line is shown; the console works the same.
  }
}

async function enter() {
  try {
    const data = await gql(START);
    const ws = data.workspace;
    setText(ui.workspace, `Workspace ${ws.id} · ${ws.plan.replace("_", " ").toLowerCase()}`);
    fillCatalog(data.eventCatalog);
  } catch (error) {
    if (error.code === "UNAUTHENTICATED" || error.code === "FORBIDDEN") session.clear();
    showSignIn(signInMessage(error));
    return;
  }
  show(ui.signIn, false);
  show(ui.session, true);
  show(ui.skip, true);
  show(ui.console, true);
  // The sign-in form just vanished: start from the page heading, so the next Tab is the skip link.
  ui.title.focus();
  state.filters = filtersFromSearch(location.search);
  fillForm(ui.filters, state.filters);
  await reload();
}

async function loadPage(after) {
  const ticket = ++state.load;
  ui.more.disabled = true;
  setStatus(after ? "Loading more…" : "Loading…");
  try {
    const data = await gql(EVENTS, { filter: toGraphQLFilter(state.filters), first: PAGE_SIZE, after });
    if (ticket !== state.load) return false;
    const { edges, pageInfo } = data.auditEvents;
    table.appendPage(edges, pageInfo.endCursor);
    show(ui.more, pageInfo.hasNextPage);
    show(ui.empty, table.size === 0);
    showCount();
    return true;
  } catch (error) {
    if (ticket === state.load) handleError(error);
    return false;
  } finally {
    ui.more.disabled = false;
  }
}

async function reload() {
  const wasLive = Boolean(state.tail);
  stopLive();
  table.reset();
  show(ui.more, false);
  show(ui.empty, false);
  const ok = await loadPage(null);
  if (ok && wasLive) startLive();
}

function applyFilters(filters, { push = true } = {}) {
  clearInvalid();
  state.filters = filters;
  fillForm(ui.filters, filters);
  if (push) history.pushState(null, "", `${location.pathname}${searchFromFilters(filters)}`);
  return reload();
}

function clearInvalid() {
  for (const input of ui.filters.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

function applyForm() {
  clearInvalid();
  const { state: filters, error, field } = readForm(ui.filters);
  if (error) {
    setStatus(error, "error");
    field.setAttribute("aria-invalid", "true");
    field.focus();
    return;
  }
  applyFilters(filters);
}

function filterByActor(email) {
  return applyFilters({ ...state.filters, actor: email });
}

function liveStatus(kind, message) {
  ui.liveStatus.className = `live-status ${kind}`;
  setText(ui.liveStatus, message);
  if (kind === "error" || kind === "off") ui.live.checked = false;
}

function startLive() {
  stopLive();
  state.tail = new LiveTail({
    url: websocketURL(),
    token: session.token,
    query: LIVE,
    filter: toGraphQLFilter(state.filters),
    after: table.newestCursor,
    onEdge: (edge) => {
      if (!table.prependLive(edge)) return;
      show(ui.empty, false);
      showCount();
    },
    onStatus: (kind, message) => {
      if (kind === "unauthorized") {
        state.tail = null;
        handleError(new ApiError("UNAUTHENTICATED", `The live tail was refused (${message}).`));
        return;
      }
      if (kind === "error" || kind === "off") state.tail = null;
      liveStatus(kind, message);
    },
  });
  ui.live.checked = true;
  state.tail.start();
}

function stopLive() {
  const tail = state.tail;
  state.tail = null;
  if (tail) tail.stop();
}

function wire() {
  setText(byId("tz-note"), `Times in ${timeZoneText()}; hover a time for UTC.`);
  wireDialogs();
  ui.signInForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = ui.signInForm.elements.token.value.trim();
    if (!token) return;
    session.set(token);
    ui.signInForm.reset();
    enter();
  });
  byId("sign-out").addEventListener("click", () => {
    session.clear();
    showSignIn("Signed out.", "notice");
  });
  ui.filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    applyForm();
  });
  for (const button of document.querySelectorAll("[data-range-hours]")) {
    button.addEventListener("click", () => {
      quickRange(ui.filters, Number(button.dataset.rangeHours));
      applyForm();
    });
  }
  byId("clear-filters").addEventListener("click", () => applyFilters(emptyFilters()));
  ui.more.addEventListener("click", () => loadPage(table.endCursor));
  ui.live.addEventListener("change", () => {
    if (ui.live.checked) startLive();
    else stopLive();
  });
  ui.exportForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    ui.exportButton.disabled = true;
    setStatus("Preparing the export…");
    try {
      await runExport(toGraphQLFilter(state.filters), ui.exportForm.elements.format.value, ui.exportResult);
      showCount();
    } catch (error) {
      handleError(error);
    } finally {
      ui.exportButton.disabled = false;
    }
  });
  // Back and Forward restore the filters of that entry. Following an in-page link (the skip
  // link's #events) fires popstate too, with the same search: reloading then would replace
  // the rows under the keyboard focus, so only a change of filters reloads.
  window.addEventListener("popstate", () => {
    const filters = filtersFromSearch(location.search);
    if (searchFromFilters(filters) === searchFromFilters(state.filters)) return;
    applyFilters(filters, { push: false });
  });
}

wire();
showCredits();
if (session.token) enter();
else showSignIn();
