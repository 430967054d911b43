// The events table: one row per event, newest first, every cell built as text.

import { el, hiddenText, none } from "./dom.js";
import {
  actorLines, anomalyLabel, categoryLabel, deviceText, localTime, locationText, targetText, utcTime,
} from "./format.js";

const MAX_TARGETS_SHOWN = 2;

// Parts of a cell set apart only by layout (inline badges, a muted type) are separated by a
// space too, so the cell's accessible name and its copied text do not run together; the name
// and email (and the category) are blocks, which both already separate. The UTC time is spoken
// and copied, after a no-break space: an ordinary one before out-of-flow text is not copied.

function timestampCell(iso) {
  const utc = utcTime(iso);
  return el("td", { class: "ts" },
    el("time", { datetime: iso, title: utc }, localTime(iso)), hiddenText(`\u00a0(${utc})`));
}

function actorCell(actor, onInvestigate) {
  const { name, email } = actorLines(actor);
  const cell = el("td", { class: "actor" },
    el("span", { class: actor?.type === "SYSTEM" ? "actor-name system" : "actor-name" }, name));
  const investigate = actor?.type !== "SYSTEM" && actor?.email;
  if (!email && !investigate) return cell;
  const second = el("span", { class: "actor-email" }, email);
  if (investigate) {
    second.append(email ? " " : "", el("button", {
      type: "button",
      class: "link investigate",
      "aria-label": `Investigate ${actor.email}`,
      title: "IP addresses, countries and devices of this actor",
      onclick: (ev) => { ev.stopPropagation(); onInvestigate(actor.email); },
    }, "Investigate"));
  }
  cell.append(second);
  return cell;
}

// The open button's name says which event it opens: action, actor and time, as a row is read.
function openLabel(event) {
  return `${event.action} by ${actorLines(event.actor).name} at ${localTime(event.occurredAt)}`;
}

function actionCell(event, onOpen) {
  const cell = el("td", { class: "action" },
    el("button", {
      type: "button",
      class: "link open-event",
      "aria-haspopup": "dialog",
      "aria-label": openLabel(event),
      onclick: (ev) => { ev.stopPropagation(); onOpen(event); },
    }, event.action),
    el("span", { class: "category" }, categoryLabel(event.category)));
  (event.anomalies || []).forEach((code, i) => {
    const [label, help] = anomalyLabel(code);
    cell.append(i ? " " : "", el("span", { class: "badge warn", title: help, "data-anomaly": code }, label));
  });
  return cell;
}

function targetCell(targets) {
  const shown = (targets || []).slice(0, MAX_TARGETS_SHOWN);
  const more = (targets || []).length - shown.length;
  if (!shown.length) return el("td", { class: "target" }, none());
  const cell = el("td", { class: "target" });
  for (const t of shown) {
    cell.append(el("span", { class: "target-item", title: `${t.type}${t.id ? ` ${t.id}` : ""}` },
      targetText(t), " ", el("span", { class: "target-type" }, `(${t.type})`)));
  }
  if (more > 0) cell.append(el("span", { class: "muted" }, `+${more} more`));
  return cell;
}

export function eventRow(event, { onOpen, onInvestigate, fresh = false }) {
  const row = el("tr", { "data-event-id": event.id, class: fresh ? "fresh" : null },
    timestampCell(event.occurredAt),
    actorCell(event.actor, onInvestigate),
    actionCell(event, onOpen),
    targetCell(event.targets),
    el("td", { class: "ip mono" }, event.ipAddress || none()),
    el("td", { class: "location" }, locationText(event.location) || none()),
    el("td", { class: "device" }, deviceText(event.device) || none()));
  row.addEventListener("click", (ev) => {
    if (window.getSelection()?.toString()) return; // selecting text is not opening
    if (ev.target instanceof Element && ev.target.closest("button")) return;
    onOpen(event);
  });
  return row;
}

// Rows shown, their ids (to drop duplicates from replays) and the cursors at both ends.
export class EventTable {
  constructor(tbody, handlers) {
    this.tbody = tbody;
    this.handlers = handlers;
    this.reset();
  }

  reset() {
    this.tbody.replaceChildren();
    this.ids = new Set();
    this.newestCursor = null;
    this.endCursor = null;
  }

  get size() {
    return this.ids.size;
  }

  appendPage(edges, endCursor) {
    if (this.newestCursor === null && edges.length) this.newestCursor = edges[0].cursor;
    for (const { node } of edges) {
      if (this.ids.has(node.id)) continue;
      this.ids.add(node.id);
      this.tbody.append(eventRow(node, this.handlers));
    }
    if (endCursor) this.endCursor = endCursor;
  }

  // A live event: on top, highlighted. False when it was already shown.
  prependLive(edge) {
    this.newestCursor = edge.cursor;
    if (this.ids.has(edge.node.id)) return false;
    this.ids.add(edge.node.id);
    this.tbody.prepend(eventRow(edge.node, { ...this.handlers, fresh: true }));
    return true;
  }
}
