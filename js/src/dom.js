// Small DOM helpers of the panel's components. h() sets text with textContent and attributes with setAttribute, so
// what it builds needs no escaping (markup built as strings goes through escapeHtml in escape.js).

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

export function range(cls, min, max, step, value) {
  // data-lm-suppress-shortcuts: JupyterLab would otherwise take the arrow keys
  return h("input", { type: "range", class: cls, min, max, step, value, "data-lm-suppress-shortcuts": "true" });
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", { style: "position:fixed;opacity:0" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
