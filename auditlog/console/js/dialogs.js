// Row detail (the full JSON payload, pretty-printed, with a copy button, and
// its integrity check) and the actor investigation (actorActivity). Modal
// <dialog>s: Escape closes, focus returns to what opened them.

import { gql } from "./api.js";
import { byId, el, none, setText } from "./dom.js";
import { actorLines, categoryLabel, deviceText, localTime, locationText, utcTime } from "./format.js";
import { IntegrityCheck } from "./integrity.js";
import { ACTOR_ACTIVITY, EVENT_PAYLOAD } from "./queries.js";

function openModal(dialog) {
  const opener = document.activeElement;
  dialog.addEventListener("close", () => { if (opener instanceof HTMLElement) opener.focus(); }, { once: true });
  if (!dialog.open) dialog.showModal();
}

export function wireDialogs() {
  for (const dialog of document.querySelectorAll("dialog")) {
    for (const button of dialog.querySelectorAll("[data-close]")) {
      button.addEventListener("click", () => dialog.close());
    }
    // A click on the backdrop (outside the dialog box) closes it.
    dialog.addEventListener("click", (ev) => { if (ev.target === dialog) dialog.close(); });
  }
}

function summaryRows(event) {
  const { name, email } = actorLines(event.actor);
  const rows = [
    ["Action", event.action],
    ["Category", categoryLabel(event.category)],
    ["When", `${localTime(event.occurredAt)} (${utcTime(event.occurredAt)})`],
    ["Actor", email ? `${name} <${email}>` : name],
    ["IP address", event.ipAddress || none()],
    ["Location", locationText(event.location) || none()],
    ["Device", deviceText(event.device) || none()],
    ["Event id", event.id],
  ];
  return rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]);
}

export class EventDetail {
  constructor({ onInvestigate, onError }) {
    this.dialog = byId("detail");
    this.json = byId("detail-json");
    this.copyStatus = byId("copy-status");
    this.investigate = byId("detail-investigate");
    this.onError = onError;
    this.integrity = new IntegrityCheck({ onError });
    this.event = null;
    this.dialog.addEventListener("close", () => this.integrity.stop());
    byId("copy-json").addEventListener("click", () => this.copy());
    this.investigate.addEventListener("click", () => {
      const email = this.event?.actor?.email;
      if (!email) return;
      this.dialog.close();
      onInvestigate(email);
    });
  }

  async open(event) {
    this.event = event;
    setText(byId("detail-title"), event.action);
    byId("detail-summary").replaceChildren(...summaryRows(event));
    this.investigate.hidden = !event.actor?.email;
    setText(this.copyStatus, "");
    setText(this.json, "Loading…");
    this.json.removeAttribute("data-loaded");
    openModal(this.dialog);
    this.integrity.check(event.id);
    try {
      const data = await gql(EVENT_PAYLOAD, { id: event.id });
      if (this.event !== event) return;
      const payload = data.auditEvent ? data.auditEvent.payload : null;
      setText(this.json, payload === null ? "This event is no longer available (past retention)." :
        JSON.stringify(payload, null, 2));
      if (payload !== null) this.json.setAttribute("data-loaded", "");
    } catch (error) {
      setText(this.json, "");
      this.onError(error);
    }
  }

  async copy() {
    if (!this.json.hasAttribute("data-loaded")) return;
    try {
      await navigator.clipboard.writeText(this.json.textContent);
      setText(this.copyStatus, "Copied to the clipboard.");
    } catch {
      // Without clipboard permission, select the text so Ctrl+C copies it.
      const range = document.createRange();
      range.selectNodeContents(this.json);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      setText(this.copyStatus, "Selected: press Ctrl+C (⌘C) to copy.");
    }
  }
}

const regionNames = new Intl.DisplayNames(undefined, { type: "region" });

// "SE" as "Sweden (SE)"; anything that is not a two-letter code stays as it is.
function countryName(code) {
  if (!/^[A-Z]{2}$/.test(code)) return code;
  try {
    const name = regionNames.of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;
  }
}

function seenTable(caption, column, values, label = (v) => v) {
  const head = el("tr", {},
    el("th", { scope: "col" }, column),
    el("th", { scope: "col", class: "num" }, "Events"),
    el("th", { scope: "col" }, "First seen"),
    el("th", { scope: "col" }, "Last seen"));
  const body = values.length ? values.map((v) => el("tr", {},
    el("td", { class: "mono" }, label(v.value)),
    el("td", { class: "num" }, v.count.toLocaleString()),
    el("td", { title: utcTime(v.firstSeen) }, localTime(v.firstSeen)),
    el("td", { title: utcTime(v.lastSeen) }, localTime(v.lastSeen)),
  )) : [el("tr", {}, el("td", { colspan: "4", class: "muted" }, "None recorded."))];
  return el("table", { class: "seen" }, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body));
}

export class ActorInvestigation {
  constructor({ onFilterActor, onError }) {
    this.dialog = byId("actor");
    this.body = byId("actor-body");
    this.status = byId("actor-status");
    this.onError = onError;
    this.email = null;
    byId("actor-filter").addEventListener("click", () => {
      this.dialog.close();
      if (this.email) onFilterActor(this.email);
    });
  }

  async open(email) {
    this.email = email;
    setText(byId("actor-title"), `Actor activity: ${email}`);
    setText(this.status, "Loading…");
    this.body.replaceChildren();
    openModal(this.dialog);
    try {
      const data = await gql(ACTOR_ACTIVITY, { email });
      if (this.email !== email) return;
      const a = data.actorActivity;
      setText(this.status, "IP addresses, countries and devices this actor was seen with.");
      this.body.replaceChildren(
        seenTable("IP addresses", "IP address", a.ipAddresses),
        seenTable("Countries", "Country", a.countries, countryName),
        seenTable("Devices", "Device", a.devices),
      );
    } catch (error) {
      setText(this.status, `Could not load this actor's activity: ${error.message}`);
      this.onError(error);
    }
  }
}
