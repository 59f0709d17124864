// The polynomial: the typeset terms (each a span carrying data-term), the copy button, the "... more terms" line
// and the detail line of the hovered / pinned term.
import { h, copyText } from "../dom.js";
import { escapeHtml } from "../escape.js";
import { derivativeLatex, formulaLatex, monomialText, termPiece, typeset, visibleTerms } from "../formula.js";

const MAX_SHOWN = 60; // terms typeset in the formula (the copy button always gives all of them)
const MAX_SHOWN_HEAT = 24; // image inputs: the heat map carries the picture, the formula its largest terms
const DETAIL_HINT = "Hover or click a term for its exact coefficient and derivative.";

// Plain-text name of term i (x·y^2), for labels.
export function termLabel(get, i) {
  return monomialText(get("term_records").alpha[i], get("names"));
}

export function createFormula({ get }) {
  const el = h("div", { class: "hope-formula" });
  const copyButton = h("button", { class: "hope-copy", text: "Copy LaTeX", title: "copy the polynomial as LaTeX" });
  const box = h("div", { class: "hope-formula-box" }, el, copyButton);
  const more = h("div", { class: "hope-more" });
  const detail = h("div", { class: "hope-detail", text: DETAIL_HINT });
  let visible = [];

  copyButton.addEventListener("click", async () => {
    const ok = await copyText(el.dataset.latex || "");
    copyButton.textContent = ok ? "Copied ✓" : "Copy failed";
    setTimeout(() => (copyButton.textContent = "Copy LaTeX"), 1200);
  });

  // The terms kept at the current order, threshold and sort, typeset. Returns how many terms of degree <= order the
  // threshold hides.
  function render() {
    const terms = get("term_records");
    const order = get("order");
    const threshold = get("threshold");
    visible = visibleTerms(terms, order, threshold, get("sort"));
    const full = formulaLatex(terms, visible);
    el.dataset.latex = full;
    el.dataset.order = String(order);
    el.dataset.count = String(visible.length);
    const parts = [];
    if (visible.length === 0) parts.push(`<span class="hope-term hope-zero">${typeset("0")}</span>`);
    const limit = get("mode") === "heat" ? MAX_SHOWN_HEAT : MAX_SHOWN;
    visible.slice(0, limit).forEach((i, pos) => {
      const cls = Number.isFinite(terms.c[i]) ? "hope-term" : "hope-term hope-term-nonfinite";
      // KaTeX escapes what it typesets (a name like <x> or a"b stays text); the attributes go through escapeHtml
      parts.push(`<span class="${cls}" data-term="${escapeHtml(i)}" data-degree="${escapeHtml(terms.deg[i])}">${typeset(termPiece(terms, i, pos))}</span>`);
    });
    el.innerHTML = parts.join("");
    const rest = visible.length - limit;
    more.textContent = rest > 0 ? `… and ${rest} more ${rest === 1 ? "term" : "terms"} (raise the threshold, or copy the LaTeX for all of them)` : "";
    const total = terms.c ? terms.c.length : 0;
    el.title = `${visible.length} of ${total} nonzero terms`;
    return terms.c ? terms.deg.filter((d) => d <= order).length - visible.length : 0;
  }

  // The exact coefficient and derivative of term i (i < 0: the hint); `pinned` is the term a click holds.
  function showDetail(i, pinned) {
    const terms = get("term_records");
    if (i < 0 || !terms.c || i >= terms.c.length) {
      detail.textContent = DETAIL_HINT;
      return;
    }
    const alpha = terms.alpha[i];
    const dtex = derivativeLatex(alpha, get("names_tex"));
    detail.innerHTML = "";
    detail.append(
      h("span", { class: "hope-detail-math" }),
      h("span", { class: "hope-detail-text", text: `coefficient c = ${terms.c[i]}  ·  degree ${terms.deg[i]}  ·  term ${termLabel(get, i)}${pinned === i ? "  (pinned: click again to release)" : ""}` }),
    );
    detail.firstChild.innerHTML = typeset(`${dtex} = ${terms.d[i]}`);
    detail.dataset.term = String(i);
  }

  return { el, box, more, detail, render, showDetail, visible: () => visible };
}
