// Export: createExport with the current filters, then every file starts
// downloading at once (one anchor click per part, a moment apart so the
// browser takes each), with the links listed in case a browser holds some back.

import { gql } from "./api.js";
import { el } from "./dom.js";
import { CREATE_EXPORT } from "./queries.js";

const GAP_MS = 250;

// Only http(s) links are followed; a same-origin link downloads in place.
function safeLink(url) {
  let parsed;
  try {
    parsed = new URL(url, location.href);
  } catch {
    return null;
  }
  return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed : null;
}

function fileName(format, exportId, part, count) {
  const suffix = count > 1 ? `-part${part}` : "";
  return `audit-log-${exportId}${suffix}.${format.toLowerCase()}`;
}

function download(link, name) {
  const a = el("a", { href: link.href, class: "visually-hidden" });
  if (link.origin === location.origin) a.setAttribute("download", name);
  else a.setAttribute("rel", "noopener");
  document.body.append(a);
  a.click();
  a.remove();
}

export async function runExport(filter, format, resultBox) {
  const data = await gql(CREATE_EXPORT, { input: { filter, format } });
  const exp = data.createExport;
  const files = (exp.files || []).map((f) => ({ ...f, link: safeLink(f.url) })).filter((f) => f.link);
  const count = files.length;
  const list = el("ul", { class: "export-files" });
  files.forEach((f) => {
    const name = fileName(format, exp.id, f.part, count);
    const a = el("a", { href: f.link.href }, `Part ${f.part} (${f.rowCount.toLocaleString()} rows)`);
    if (f.link.origin === location.origin) a.setAttribute("download", name);
    list.append(el("li", {}, a));
  });
  const rows = exp.rowCount.toLocaleString();
  resultBox.replaceChildren(
    el("p", {}, `Export ${exp.id} (${format}, ${rows} events, ${count} file${count === 1 ? "" : "s"}): download started.`),
    list,
    el("button", { type: "button", class: "link", onclick: () => { resultBox.hidden = true; } }, "Dismiss"),
  );
  resultBox.hidden = false;
  files.forEach((f, i) => {
    setTimeout(() => download(f.link, fileName(format, exp.id, f.part, count)), i * GAP_MS);
  });
  return exp;
}
