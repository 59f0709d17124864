// The panel's lines of words: the info line under the header (the result on screen), the error / warning / notice
// lines from the kernel, the certified band's line under the plots and the slider timing at the bottom.
// All of it is text (textContent): a message is shown as it is, whatever it holds.
import { h } from "../dom.js";
import { fmt } from "../plots.js";

export function createStatus({ get }) {
  const info = h("div", { class: "hope-info" });
  const errorLine = h("div", { class: "hope-error" });
  const warningLine = h("div", { class: "hope-warning" });
  const notice = h("div", { class: "hope-notice" });
  const timing = h("div", { class: "hope-timing" });
  const bandLine = h("div", { class: "hope-band-info" });

  function show(line, text) {
    line.textContent = text;
    line.style.display = text ? "" : "none";
  }

  // error, warning and notice: hidden while empty
  function render() {
    show(errorLine, get("error"));
    show(warningLine, get("warning"));
    show(notice, get("notice"));
  }

  // the certified band's guarantee in words (line mode only)
  function renderBand(lineMode) {
    const band = get("band") || {};
    show(bandLine, lineMode && band.text ? band.text : "");
  }

  // where, how and how fast the expansion on screen was made (and, for the paper's rule, how far it is from exact)
  function renderInfo() {
    const order = get("order");
    const compare = get("compare");
    let cmp = "";
    if (compare && compare.relative) {
      const r = compare.relative[Math.min(order, compare.relative.length - 1)];
      cmp = ` · paper rule vs exact at order ${order}: ${r === null ? "n/a" : `${(100 * r).toPrecision(3)} %`} (coefficient norm)`;
    } else if (compare && compare.error) cmp = ` · ${compare.error}`;
    const res = get("result");
    const pt = (res.point || []).slice(0, 6).map(fmt).join(", ") + ((res.point || []).length > 6 ? ", …" : "");
    const timingText = res.timing || `expanded in ${res.seconds} s`;
    info.textContent = `at x₀ = (${pt}) · ${res.method === "hope" ? "paper rule (hope)" : "exact"} · ${res.size} coefficients (${res.kind} basis, order ≤ ${get("max_order")}) · ${timingText}${cmp}`;
  }

  // the last order-slider move, timed in the page
  function showTiming(order, renderMs, paintMs) {
    timing.textContent = `last slider move (to order ${order}): view updated in ${renderMs.toFixed(1)} ms (painted in ${paintMs.toFixed(1)} ms)`;
  }

  return { info, errorLine, warningLine, notice, timing, bandLine, render, renderBand, renderInfo, showTiming };
}
