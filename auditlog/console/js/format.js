// Turning event fields into display text. Every value stays text.

const localFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

// UTC+05:30 for an offset name such as "GMT+5:30" (Intl's "longOffset" gives "GMT+05:30", or "GMT").
function offsetText(name) {
  const match = /^GMT(?:([+-])(\d{1,2})(?::?(\d{2}))?)?$/.exec(name || "");
  if (!match) return "";
  if (!match[1]) return "UTC+00:00";
  return `UTC${match[1]}${match[2].padStart(2, "0")}:${match[3] || "00"}`;
}

function zonePart(options, date) {
  try {
    const parts = new Intl.DateTimeFormat(undefined, options).formatToParts(date);
    return parts.find((p) => p.type === "timeZoneName")?.value || "";
  } catch {
    return "";
  }
}

// The browser's zone by its name and present offset ("India Standard Time (UTC+05:30)"), not by
// its identifier: ICU still reports some zones under retired ones (Asia/Kolkata as Asia/Calcutta).
export function timeZoneText(date = new Date()) {
  const offset = offsetText(zonePart({ timeZoneName: "longOffset" }, date));
  const name = zonePart({ timeZoneName: "longGeneric" }, date);
  if (!offset) return name || "local time";
  return name && !name.startsWith("GMT") ? `${name} (${offset})` : offset;
}

// Category codes as words: "AI" stays an acronym, the others are capitalised.
const CATEGORY_LABELS = { AI: "AI" };

export function categoryLabel(code) {
  const text = String(code);
  return CATEGORY_LABELS[text] || text.charAt(0) + text.slice(1).toLowerCase();
}

export function localTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : localFormat.format(d);
}

export function utcTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function actorLines(actor) {
  if (!actor || actor.type === "SYSTEM") return { name: actor?.name || "System", email: "" };
  if (actor.type === "API_KEY") return { name: actor.name || "API key", email: actor.id || "" };
  return { name: actor.name || actor.email || actor.id || "Unknown user", email: actor.name ? actor.email || "" : "" };
}

export function targetText(target) {
  return target.name || target.id || target.type;
}

export function locationText(location) {
  if (!location) return "";
  // A country-only location may have a code the database has no name for.
  return [location.city, location.region, location.country || location.countryCode]
    .filter(Boolean).join(", ");
}

export function deviceText(device) {
  if (!device) return "";
  const major = (v) => (v ? ` ${String(v).split(".")[0]}` : "");
  const parts = [];
  if (device.browser && device.browser !== "Other") parts.push(`${device.browser}${major(device.browserVersion)}`);
  if (device.os && device.os !== "Other") parts.push(`${device.os}${device.osVersion ? ` ${device.osVersion}` : ""}`);
  if (device.device && device.device !== "Other") parts.push(device.device);
  return parts.join(" · ");
}

export const ANOMALY_LABELS = {
  NEW_COUNTRY: ["New country", "First successful login of this actor from this country"],
  NEW_DEVICE: ["New device", "First successful login of this actor from this device"],
  NEW_IP: ["New IP", "First successful login of this actor from this IP address"],
};

export function anomalyLabel(code) {
  return ANOMALY_LABELS[code] || [String(code), "Anomaly flagged at ingest"];
}
