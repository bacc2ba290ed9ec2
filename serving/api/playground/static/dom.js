// Building elements without innerHTML: every string from the server lands as text, never as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of [].concat(children || [])) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const el = (tag, attrs, children) => build(document.createElement(tag), attrs, children);
export const svg = (tag, attrs, children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

export function fixed(value, digits = 3) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

export function millis(seconds) {
  return typeof seconds === "number" ? `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms` : "–";
}
