// The plots: network and polynomial along a line (with its direction selector) and the error per order, or the
// pixel heat map (a diverging map with its colour bar, the input image beside it, a hovered pixel named); and the
// coefficient bars. The SVG comes from plots.js, which escapes every string it writes.
import { h } from "../dom.js";
import { barChart, cellSize, colorBar, convergencePlot, drawHeat, drawImage, errorPlot, fmt, heatValues, pixelInfo, plural } from "../plots.js";
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
  const heatBar = h("div", { class: "hope-heat-colorbar" });
  const imageCanvas = h("canvas", { class: "hope-heat-image" });
  const imageLegend = h("div", { class: "hope-heat-image-legend" });
  const imageBox = h("div", { class: "hope-heat-image-box" }, h("div", { class: "hope-heat-caption", text: "input" }), imageCanvas, imageLegend);
  const mapBox = h("div", { class: "hope-heat-map-box" }, heatCanvas, heatBar);
  const heatKind = h("select", { class: "hope-heat-kind" });
  heatKind.append(h("option", { value: "contribution", text: "change of the output when one pixel alone rises by the radius" }));
  heatKind.append(h("option", { value: "coefficient", text: "each pixel's own coefficient of the current order" }));
  heatKind.addEventListener("change", () => onHeatKind());
  const heatHover = h("div", { class: "hope-heat-hover", text: "hover a pixel for its term, value, derivative and rank" });
  const heatLegend = h("div", { class: "hope-heat-legend" });
  const heatTitle = h("div", { class: "hope-plot-title", text: "pixel attribution: red raises the output, blue lowers it" });
  const plotHeat = h("div", { class: "hope-plot hope-plot-heat" }, heatTitle, h("div", { class: "hope-heat-row" }, mapBox, imageBox), heatKind, heatHover, heatLegend);
  let heatShown = null; // { heat, values, order } of the map on screen, for the hover
  let hoveredPixel = -1;
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
      heatShown = { heat, values: vals, order };
      const { max, nonfinite } = drawHeat(heatCanvas, heat, vals, hoveredPixel);
      heatBar.innerHTML = colorBar(max, heatKind.value === "coefficient" ? "coefficient" : "Δ output");
      const image = drawImage(imageCanvas, heat);
      imageBox.style.display = image ? "" : "none";
      if (image) imageLegend.textContent = `black ${fmt(image.lo)} … white ${fmt(image.hi)}${heat.channels > 1 ? " (channels averaged)" : ""}`;
      const what = heatKind.value === "coefficient" ? `degree-${order} coefficient` : `terms of degree ≤ ${order}, radius ${fmt(heat.radius)}`;
      heatLegend.textContent = `order ${order}: full red / blue = ±${fmt(max)} (${what}); ${heat.rows}×${heat.cols} pixels${heat.channels > 1 ? `, ${heat.channels} channels summed` : ""}, named p[row][col] in the formula${nonfinite ? `; ${plural(nonfinite, "pixel")} NaN or infinite (grey-green)` : ""}`;
      if (hoveredPixel >= 0) showPixel(hoveredPixel);
    }
  }

  // the hovered pixel: its term's name, input value, map value, derivative and rank, and an outline on the map
  function showPixel(i) {
    if (!heatShown) return;
    const { heat, values, order } = heatShown;
    const p = pixelInfo(heat, values, i, get("names"));
    const input = Number.isFinite(p.image) ? `input ${fmt(p.image)} · ` : "";
    const d = heat.channels > 1 ? "Σ ∂f/∂p (channels)" : `∂f/∂${p.name}`;
    heatHover.textContent = `${p.name}${p.summed ? " (channels summed)" : ""}: ${input}value ${fmt(p.value)} (order ${order}) · ${d} = ${fmt(p.derivative)} · rank ${Number.isFinite(p.rank) ? p.rank : "–"} of ${p.count} by |value|`;
    heatHover.dataset.pixel = String(i);
  }
  heatCanvas.addEventListener("mousemove", (e) => {
    if (!heatShown) return;
    const { heat } = heatShown;
    const rect = heatCanvas.getBoundingClientRect();
    const cell = (cellSize(heat) * rect.width) / heatCanvas.width;
    const c = Math.floor((e.clientX - rect.left) / cell);
    const r = Math.floor((e.clientY - rect.top) / cell);
    if (r < 0 || c < 0 || r >= heat.rows || c >= heat.cols) return;
    const i = r * heat.cols + c;
    if (i === hoveredPixel) return;
    hoveredPixel = i;
    drawHeat(heatCanvas, heat, heatShown.values, i);
    showPixel(i);
  });
  heatCanvas.addEventListener("mouseleave", () => {
    hoveredPixel = -1;
    if (heatShown) drawHeat(heatCanvas, heatShown.heat, heatShown.values);
  });

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

  // without a kernel the line cannot be recomputed along another direction
  function setKernel(live) {
    dirSelect.disabled = !live;
  }

  return { el, lineTools, bars, render, buildDirections, syncDirection, setKernel };
}
