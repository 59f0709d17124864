// One term, three places: hovering or clicking a term in the formula or a bar in the chart highlights both, names
// the term under the bars and shows its exact coefficient and derivative in the detail line. A click pins a term.
import { BAR_HINT, fmt } from "../plots.js";
import { termLabel } from "./formula-view.js";

export function linkTerms({ get, formula, bars }) {
  let hovered = -1;
  let pinned = -1;

  function setHover(i) {
    hovered = i;
    const shown = i >= 0 ? i : pinned;
    for (const e of formula.el.querySelectorAll(".hope-term")) e.classList.toggle("hope-term-hover", Number(e.dataset.term) === i || Number(e.dataset.term) === pinned);
    let label = "";
    for (const e of bars.querySelectorAll(".hope-bar")) {
      const on = Number(e.dataset.term) === i || Number(e.dataset.term) === pinned;
      e.classList.toggle("hope-bar-hover", on);
      if (Number(e.dataset.term) === shown) label = e.dataset.label;
    }
    // the bar chart names the hovered term (a bar alone does not say which term it is)
    const barText = bars.querySelector(".hope-bar-label");
    if (barText) barText.textContent = label || (shown >= 0 ? `${termLabel(get, shown)}: c = ${fmt(get("term_records").c[shown])}` : BAR_HINT);
    formula.showDetail(shown, pinned);
  }

  const termOf = (e) => {
    const t = e.target.closest("[data-term]");
    return t ? Number(t.dataset.term) : -1;
  };
  for (const box of [formula.el, bars]) {
    box.addEventListener("mouseover", (e) => setHover(termOf(e)));
    box.addEventListener("mouseleave", () => setHover(-1));
    box.addEventListener("click", (e) => {
      const i = termOf(e);
      pinned = i === pinned ? -1 : i;
      setHover(i);
    });
  }

  return {
    // the term the bar chart highlights: the hovered one, else the pinned one (-1: none)
    highlighted: () => (hovered >= 0 ? hovered : pinned),
    // after a redraw: the highlight and the detail line again, if a term is hovered or pinned
    refresh() {
      if (pinned >= 0 || hovered >= 0) setHover(hovered);
    },
  };
}
