// The plots: network and polynomial along a line (with its direction selector) and the error per order, or the
// pixel heat map; and the coefficient bars. The SVG comes from plots.js, which escapes every string it writes.
import { h } from "../dom.js";
import { barChart, convergencePlot, drawHeat, errorPlot, fmt, heatValues } from "../plots.js";
import { termLabel } from "./formula-view.js";

export function createPlots({ model, get, showPending, onHeatKind }) {
  const dirSelect = h("select", { class: "hope-direction", title: "direction of the plotted line" });
  dirSelect.addEventListener("change", () => {
    model.set("direction", Number(dirSelect.value));
    model.save_changes();
    showPending(true);
  });
  const plotLine = h("div", { class: "hope-plot hope-plot-line" });
  const plotError = h("div", { class: "hope-plot hope-plot-error" });
  const bars = h("div", { class: "hope-plot hope-plot-bars" });
  const heatCanvas = h("canvas", { class: "hope-heat-canvas" });
  const heatKind = h("select", { class: "hope-heat-kind" });
  heatKind.append(h("option", { value: "contribution", text: "change of the output when one pixel alone rises by the radius" }));
  heatKind.append(h("option", { value: "coefficient", text: "each pixel's own coefficient of the current order" }));
  heatKind.addEventListener("change", () => onHeatKind());
  const heatLegend = h("div", { class: "hope-heat-legend" });
  const heatTitle = h("div", { class: "hope-plot-title", text: "pixel attribution over the input: red raises the output, blue lowers it" });
  const plotHeat = h("div", { class: "hope-plot hope-plot-heat" }, heatTitle, heatCanvas, heatKind, heatLegend);
  const lineTools = h("label", { class: "hope-field hope-dir-field" }, "line along ", dirSelect);
  const el = h("div", { class: "hope-plots" }, plotLine, plotError, plotHeat, bars);

  function renderLine(order) {
    const line = get("line");
    if (line && line.t) {
      const d = line.direction;
      const names = get("names");
      const dirLabel = d < 0 ? "the diagonal" : names[d];
      plotLine.innerHTML = convergencePlot(line, order, get("compare"), dirLabel, get("band"));
      plotError.innerHTML = errorPlot(line, order);
    } else {
      plotLine.textContent = (line && line.error) || "";
      plotError.textContent = "";
    }
  }

  function renderHeat(order) {
    const heat = get("heat");
    if (heat && heat.coef) {
      const vals = heatValues(heat, order, heatKind.value);
      const { max, nonfinite } = drawHeat(heatCanvas, heat, vals);
      const what = heatKind.value === "coefficient" ? `degree-${order} coefficient` : `terms of degree ≤ ${order}, radius ${fmt(heat.radius)}`;
      heatLegend.textContent = `order ${order}: full red / blue = ±${fmt(max)} (${what}); ${heat.rows}×${heat.cols} pixels${heat.channels > 1 ? `, ${heat.channels} channels summed` : ""}, named p[row][col] in the formula${nonfinite ? `; ${nonfinite} pixel(s) NaN or infinite (grey-green)` : ""}`;
    }
  }

  // `visible`: the formula's terms in its order; `highlight`: the hovered or pinned term (-1: none)
  function render(visible, highlight) {
    const order = get("order");
    const lineMode = get("mode") === "line";
    plotHeat.style.display = lineMode ? "none" : "";
    plotLine.style.display = lineMode ? "" : "none";
    plotError.style.display = lineMode ? "" : "none";
    lineTools.style.display = lineMode && get("names").length > 1 ? "" : "none";
    if (lineMode) renderLine(order);
    else renderHeat(order);
    const labels = visible.slice(0, 40).map((i) => termLabel(get, i));
    bars.innerHTML = barChart(get("term_records"), visible, labels, highlight);
  }

  // one option per variable (its name as the option's text) and the diagonal
  function buildDirections() {
    const names = get("names");
    dirSelect.innerHTML = "";
    dirSelect.append(h("option", { value: "-1", text: "diagonal (all inputs)" }));
    names.forEach((nm, i) => dirSelect.append(h("option", { value: String(i), text: nm })));
    syncDirection();
  }

  function syncDirection() {
    dirSelect.value = String(get("direction"));
  }

  return { el, lineTools, bars, render, buildDirections, syncDirection };
}
