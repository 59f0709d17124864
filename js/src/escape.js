// The one escaping function for markup built as strings (SVG plots, the formula's term spans): correct in text AND
// in attribute values (double- or single-quoted), so a variable name, title, message or term label -- which may be
// any dict key, e.g. `a"b`, `<x>`, `c'd&e` -- is always shown as the text it is and never becomes markup.
// DOM nodes built with h() (textContent / setAttribute) need no escaping; KaTeX escapes what it typesets itself.
const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c]);
}
