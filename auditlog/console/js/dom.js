// Building DOM nodes from untrusted data: text only, never HTML.
// Strings become text nodes (Node.append); attributes go through setAttribute.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing element #${id}`);
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function setText(node, text) {
  node.textContent = text ?? "";
}

// Text for assistive technology and copying only, such as the separator between two
// parts of a cell that are set apart visually by layout alone.
export function hiddenText(text) {
  return el("span", { class: "visually-hidden" }, text);
}

// An empty value: "—" on screen, "none" to assistive technology (its alt text in the CSS).
export function none() {
  return el("span", { class: "none" });
}
