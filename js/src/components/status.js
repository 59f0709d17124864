// The panel's lines of words: the info line under the header (the result on screen: the point, or for an image its
// shape and summary), the error / warning / notice lines from the kernel, the certified band's header line above the
// plots, and the note shown when no kernel answers. All of it is text (textContent): a message is shown as it is.
import { h } from "../dom.js";
import { fmt } from "../plots.js";

export function createStatus({ get }) {
  const info = h("div", { class: "hope-info" });
  const errorLine = h("div", { class: "hope-error" });
  const warningLine = h("div", { class: "hope-warning" });
  const notice = h("div", { class: "hope-notice" });
  const bandLine = h("div", { class: "hope-band-info" });
  const kernelNote = h("div", { class: "hope-no-kernel" });
  show(kernelNote, "");

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
    const point = res.point || [];
    const heat = get("heat");
    let at;
    if (get("mode") === "heat" && heat && heat.shape) {
      // an image: its shape and summary say more than its first values
      const ok = point.filter((v) => Number.isFinite(v));
      const mean = ok.reduce((a, v) => a + v, 0) / (ok.length || 1);
      const bad = point.length - ok.length;
      at = `input ${heat.shape.join("×")}: min ${fmt(Math.min(...ok))}, max ${fmt(Math.max(...ok))}, mean ${fmt(mean)}${bad ? `, ${bad} not finite` : ""}`;
    } else {
      at = `at x₀ = (${point.slice(0, 6).map(fmt).join(", ")}${point.length > 6 ? ", …" : ""})`;
    }
    const timingText = res.timing || `expanded in ${res.seconds} s`;
    info.textContent = `${at} · ${res.method === "hope" ? "paper rule (hope)" : "exact"} · ${res.size} coefficients (${res.kind} basis, order ≤ ${get("max_order")}) · ${timingText}${cmp}`;
  }

  // no kernel answers this panel (a saved or static copy, or a stopped kernel): one line says what still works
  function showKernel(live) {
    show(kernelNote, live === false ? "No kernel is connected to this panel: order, threshold and sort work; the point, method, direction and tolerance need one (run the cell again)." : "");
  }

  return { info, errorLine, warningLine, notice, bandLine, kernelNote, render, renderBand, renderInfo, showKernel };
}
