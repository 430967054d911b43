// The events table: one row per event, newest first, every cell built as text.

import { el } from "./dom.js";
import {
  actorLines, anomalyLabel, deviceText, localTime, locationText, targetText, utcTime,
} from "./format.js";

const MAX_TARGETS_SHOWN = 2;

function timestampCell(iso) {
  const utc = utcTime(iso);
  return el("td", { class: "ts" },
    el("time", { datetime: iso, title: utc, "aria-label": `${localTime(iso)} (${utc})` }, localTime(iso)));
}

function actorCell(actor, onInvestigate) {
  const { name, email } = actorLines(actor);
  const second = el("span", { class: "actor-email" }, email);
  if (actor?.type !== "SYSTEM" && actor?.email) {
    second.append(el("button", {
      type: "button",
      class: "link investigate",
      "aria-label": `Investigate ${actor.email}`,
      title: "IP addresses, countries and devices of this actor",
      onclick: (ev) => { ev.stopPropagation(); onInvestigate(actor.email); },
    }, "Investigate"));
  }
  return el("td", { class: "actor" },
    el("span", { class: actor?.type === "SYSTEM" ? "actor-name system" : "actor-name" }, name),
    email || second.childElementCount ? second : null);
}

function actionCell(event, onOpen) {
  const cell = el("td", { class: "action" },
    el("button", {
      type: "button",
      class: "link open-event",
      "aria-haspopup": "dialog",
      onclick: (ev) => { ev.stopPropagation(); onOpen(event); },
    }, event.action));
  cell.append(el("span", { class: "category" }, event.category));
  for (const code of event.anomalies || []) {
    const [label, help] = anomalyLabel(code);
    cell.append(el("span", { class: "badge warn", title: help, "data-anomaly": code }, label));
  }
  return cell;
}

function targetCell(targets) {
  const cell = el("td", { class: "target" });
  for (const t of (targets || []).slice(0, MAX_TARGETS_SHOWN)) {
    cell.append(el("span", { class: "target-item", title: `${t.type}${t.id ? ` ${t.id}` : ""}` },
      targetText(t), el("span", { class: "target-type" }, t.type)));
  }
  const more = (targets || []).length - MAX_TARGETS_SHOWN;
  if (more > 0) cell.append(el("span", { class: "muted" }, `+${more} more`));
  return cell;
}

export function eventRow(event, { onOpen, onInvestigate, fresh = false }) {
  const row = el("tr", { "data-event-id": event.id, class: fresh ? "fresh" : null },
    timestampCell(event.occurredAt),
    actorCell(event.actor, onInvestigate),
    actionCell(event, onOpen),
    targetCell(event.targets),
    el("td", { class: "ip mono" }, event.ipAddress || ""),
    el("td", { class: "location" }, locationText(event.location)),
    el("td", { class: "device" }, deviceText(event.device)));
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
