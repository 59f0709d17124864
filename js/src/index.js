// The hope panel: an anywidget ESM. The kernel sends one expansion's term records, line and heat data; the order
// slider, threshold and sort only filter them here, so a slider move is a local redraw (no kernel round trip).
import "katex/dist/katex.css";
import "./style.css";
import { derivativeLatex, formulaLatex, monomialText, termPiece, typeset, visibleTerms } from "./formula.js";
import { BAR_HINT, barChart, convergencePlot, drawHeat, errorPlot, fmt, heatValues } from "./plots.js";
import { decode, payloadErrors } from "./schema.js";
import SCHEMA from "./schema.json";

const MAX_SHOWN = 60; // terms typeset in the formula (the copy button always gives all of them)
const MAX_SHOWN_HEAT = 24; // image inputs: the heat map carries the picture, the formula its largest terms
const DEBOUNCE_MS = 250; // point sliders: recompute after the hand rests this long
const THRESHOLD_OFF = -13; // threshold slider: exponents -12..0, and "all terms" at the left end

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function range(cls, min, max, step, value) {
  // data-lm-suppress-shortcuts: JupyterLab would otherwise take the arrow keys
  return h("input", { type: "range", class: cls, min, max, step, value, "data-lm-suppress-shortcuts": "true" });
}

async function copyText(text) {
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

// the dict payloads (hope_widgets/schema.py, exported to schema.json): checked and decoded as they arrive
const DECODED = new Set(SCHEMA.payloads);

function render({ model, el }) {
  // decoded once per new value of a trait (a slider move re-reads the same objects)
  const memo = new Map();
  const get = (k) => {
    const raw = model.get(k);
    if (!DECODED.has(k)) return raw;
    const hit = memo.get(k);
    if (hit && hit.raw === raw) return hit.value;
    const problems = payloadErrors(SCHEMA, k, raw);
    if (problems.length) {
      // the kernel sent a shape this view does not know (see hope_widgets/schema.py): said, not hidden
      el.dataset.payloadErrors = problems.slice(0, 3).join("; ");
      console.warn(`hope panel: ${k} does not match its schema: ${el.dataset.payloadErrors}`);
    }
    const value = decode(raw);
    memo.set(k, { raw, value });
    return value;
  };
  const root = h("div", { class: "hope-panel" });
  el.append(root);

  // ---- header: title, result, method, output, busy
  const title = h("span", { class: "hope-title" });
  const spinner = h("span", { class: "hope-spinner", title: "computing" });
  const methodBox = h("span", { class: "hope-methods" });
  const methodButtons = {};
  for (const [m, label] of [["exact", "exact"], ["hope", "paper rule"]]) {
    const b = h("button", { class: `hope-method hope-method-${m}`, text: label, title: `method="${m}"` });
    b.addEventListener("click", () => {
      model.set("method", m);
      model.save_changes();
      showPending(true);
    });
    methodButtons[m] = b;
    methodBox.append(b);
  }
  const outputSelect = h("select", { class: "hope-output", title: "output element" });
  outputSelect.addEventListener("change", () => {
    model.set("output", Number(outputSelect.value));
    model.save_changes();
  });
  const outputBox = h("label", { class: "hope-field" }, "output ", outputSelect);
  const header = h("div", { class: "hope-header" }, title, spinner, h("span", { class: "hope-grow" }), outputBox, methodBox);
  const info = h("div", { class: "hope-info" });

  // ---- formula
  const formula = h("div", { class: "hope-formula" });
  const copyButton = h("button", { class: "hope-copy", text: "Copy LaTeX", title: "copy the polynomial as LaTeX" });
  const more = h("div", { class: "hope-more" });
  const detail = h("div", { class: "hope-detail", text: "Hover or click a term for its exact coefficient and derivative." });
  const formulaBox = h("div", { class: "hope-formula-box" }, formula, copyButton);

  // ---- controls
  const orderInput = range("hope-order", 0, get("max_order"), 1, get("order"));
  const orderValue = h("span", { class: "hope-order-value" });
  const thresholdInput = range("hope-threshold", THRESHOLD_OFF, 0, 1, THRESHOLD_OFF);
  const thresholdValue = h("span", { class: "hope-threshold-value" });
  const sortSelect = h("select", { class: "hope-sort" });
  for (const s of ["degree", "magnitude"]) sortSelect.append(h("option", { value: s, text: `by ${s}` }));
  // certified band: a tolerance box (empty = off); the kernel certifies |f - P| on the plotted segment
  const certifyInput = h("input", { type: "number", class: "hope-certify-tol", min: "0", step: "any", placeholder: "off", "data-lm-suppress-shortcuts": "true" });
  const certifyField = h("label", { class: "hope-field hope-certify-field", title: "a guaranteed bound on |network − polynomial| along the line; the dashed lines mark where it stays below this tolerance" }, "certify |f−P| ≤ ", certifyInput);
  const bandLine = h("div", { class: "hope-band-info" });
  const controls = h(
    "div",
    { class: "hope-controls" },
    h("label", { class: "hope-field" }, "order ", orderInput, orderValue),
    h("label", { class: "hope-field" }, "hide |c| ≤ ", thresholdInput, thresholdValue),
    h("label", { class: "hope-field" }, "sort ", sortSelect),
    certifyField,
  );
  const pointBox = h("div", { class: "hope-point" });

  // ---- plots
  const dirSelect = h("select", { class: "hope-direction", title: "direction of the plotted line" });
  dirSelect.addEventListener("change", () => {
    model.set("direction", Number(dirSelect.value));
    model.save_changes();
    showPending(true);
  });
  const plotLine = h("div", { class: "hope-plot hope-plot-line" });
  const plotError = h("div", { class: "hope-plot hope-plot-error" });
  const plotBars = h("div", { class: "hope-plot hope-plot-bars" });
  const heatCanvas = h("canvas", { class: "hope-heat-canvas" });
  const heatKind = h("select", { class: "hope-heat-kind" });
  heatKind.append(h("option", { value: "contribution", text: "change of the output when one pixel alone rises by the radius" }));
  heatKind.append(h("option", { value: "coefficient", text: "each pixel's own coefficient of the current order" }));
  const heatLegend = h("div", { class: "hope-heat-legend" });
  const heatTitle = h("div", { class: "hope-plot-title", text: "pixel attribution over the input: red raises the output, blue lowers it" });
  const plotHeat = h("div", { class: "hope-plot hope-plot-heat" }, heatTitle, heatCanvas, heatKind, heatLegend);
  const lineTools = h("label", { class: "hope-field hope-dir-field" }, "line along ", dirSelect);
  const plots = h("div", { class: "hope-plots" }, plotLine, plotError, plotHeat, plotBars);
  const errorLine = h("div", { class: "hope-error" });
  const warningLine = h("div", { class: "hope-warning" });
  const notice = h("div", { class: "hope-notice" });
  const timing = h("div", { class: "hope-timing" });

  root.append(header, info, errorLine, warningLine, formulaBox, more, detail, controls, pointBox, lineTools, plots, bandLine, notice, timing);

  // ---- state local to the view
  let visible = [];
  let hovered = -1;
  let pinned = -1;
  let pending = false;
  let debounce = null;
  let pointInputs = [];

  function showPending(on) {
    pending = on;
    spinner.classList.toggle("hope-active", pending || get("busy"));
  }

  function labelOf(i) {
    return monomialText(get("term_records").alpha[i], get("names"));
  }

  function showDetail(i) {
    const terms = get("term_records");
    if (i < 0 || !terms.c || i >= terms.c.length) {
      detail.textContent = "Hover or click a term for its exact coefficient and derivative.";
      return;
    }
    const alpha = terms.alpha[i];
    const dtex = derivativeLatex(alpha, get("names_tex"));
    detail.innerHTML = "";
    detail.append(
      h("span", { class: "hope-detail-math" }),
      h("span", { class: "hope-detail-text", text: `coefficient c = ${terms.c[i]}  ·  degree ${terms.deg[i]}  ·  term ${labelOf(i)}${pinned === i ? "  (pinned: click again to release)" : ""}` }),
    );
    detail.firstChild.innerHTML = typeset(`${dtex} = ${terms.d[i]}`);
    detail.dataset.term = String(i);
  }

  function setHover(i) {
    hovered = i;
    const shown = i >= 0 ? i : pinned;
    for (const e of formula.querySelectorAll(".hope-term")) e.classList.toggle("hope-term-hover", Number(e.dataset.term) === i || Number(e.dataset.term) === pinned);
    let label = "";
    for (const e of plotBars.querySelectorAll(".hope-bar")) {
      const on = Number(e.dataset.term) === i || Number(e.dataset.term) === pinned;
      e.classList.toggle("hope-bar-hover", on);
      if (Number(e.dataset.term) === shown) label = e.dataset.label;
    }
    // the bar chart names the hovered term (a bar alone does not say which term it is)
    const barText = plotBars.querySelector(".hope-bar-label");
    if (barText) barText.textContent = label || (shown >= 0 ? `${labelOf(shown)}: c = ${fmt(get("term_records").c[shown])}` : BAR_HINT);
    showDetail(shown);
  }

  function renderFormula() {
    const terms = get("term_records");
    const order = get("order");
    const threshold = get("threshold");
    visible = visibleTerms(terms, order, threshold, get("sort"));
    const full = formulaLatex(terms, visible);
    formula.dataset.latex = full;
    formula.dataset.order = String(order);
    formula.dataset.count = String(visible.length);
    const parts = [];
    if (visible.length === 0) parts.push(`<span class="hope-term hope-zero">${typeset("0")}</span>`);
    const limit = get("mode") === "heat" ? MAX_SHOWN_HEAT : MAX_SHOWN;
    visible.slice(0, limit).forEach((i, pos) => {
      const cls = Number.isFinite(terms.c[i]) ? "hope-term" : "hope-term hope-term-nonfinite";
      parts.push(`<span class="${cls}" data-term="${i}" data-degree="${terms.deg[i]}">${typeset(termPiece(terms, i, pos))}</span>`);
    });
    formula.innerHTML = parts.join("");
    more.textContent = visible.length > limit ? `… and ${visible.length - limit} more terms (raise the threshold, or copy the LaTeX for all of them)` : "";
    const total = terms.c ? terms.c.length : 0;
    const hidden = terms.c ? terms.deg.filter((d) => d <= order).length - visible.length : 0;
    orderValue.textContent = `${order} / ${get("max_order")}`;
    thresholdValue.textContent = threshold > 0 ? `${threshold.toExponential(0)} (${hidden} hidden)` : "off";
    formula.title = `${visible.length} of ${total} nonzero terms`;
  }

  function renderPlots() {
    const order = get("order");
    const mode = get("mode");
    const line = get("line");
    const compare = get("compare");
    const lineMode = mode === "line";
    plotHeat.style.display = lineMode ? "none" : "";
    plotLine.style.display = lineMode ? "" : "none";
    plotError.style.display = lineMode ? "" : "none";
    lineTools.style.display = lineMode && get("names").length > 1 ? "" : "none";
    if (lineMode) {
      if (line && line.t) {
        const d = line.direction;
        const names = get("names");
        const dirLabel = d < 0 ? "the diagonal" : names[d];
        plotLine.innerHTML = convergencePlot(line, order, compare, dirLabel, get("band"));
        plotError.innerHTML = errorPlot(line, order);
      } else {
        plotLine.textContent = (line && line.error) || "";
        plotError.textContent = "";
      }
    } else {
      const heat = get("heat");
      if (heat && heat.coef) {
        const vals = heatValues(heat, order, heatKind.value);
        const { max, nonfinite } = drawHeat(heatCanvas, heat, vals);
        const what = heatKind.value === "coefficient" ? `degree-${order} coefficient` : `terms of degree ≤ ${order}, radius ${fmt(heat.radius)}`;
        heatLegend.textContent = `order ${order}: full red / blue = ±${fmt(max)} (${what}); ${heat.rows}×${heat.cols} pixels${heat.channels > 1 ? `, ${heat.channels} channels summed` : ""}, named p[row][col] in the formula${nonfinite ? `; ${nonfinite} pixel(s) NaN or infinite (grey-green)` : ""}`;
      }
    }
    const labels = visible.slice(0, 40).map(labelOf);
    plotBars.innerHTML = barChart(get("term_records"), visible, labels, hovered >= 0 ? hovered : pinned);
    let cmp = "";
    if (compare && compare.relative) {
      const r = compare.relative[Math.min(order, compare.relative.length - 1)];
      cmp = ` · paper rule vs exact at order ${order}: ${r === null ? "n/a" : `${(100 * r).toPrecision(3)} %`} (coefficient norm)`;
    } else if (compare && compare.error) cmp = ` · ${compare.error}`;
    const band = get("band") || {};
    bandLine.textContent = lineMode && band.text ? band.text : "";
    bandLine.style.display = bandLine.textContent ? "" : "none";
    certifyField.style.display = lineMode ? "" : "none";
    const res = get("result");
    const pt = (res.point || []).slice(0, 6).map(fmt).join(", ") + ((res.point || []).length > 6 ? ", …" : "");
    const timingText = res.timing || `expanded in ${res.seconds} s`;
    info.textContent = `at x₀ = (${pt}) · ${res.method === "hope" ? "paper rule (hope)" : "exact"} · ${res.size} coefficients (${res.kind} basis, order ≤ ${get("max_order")}) · ${timingText}${cmp}`;
  }

  function renderView() {
    renderFormula();
    renderPlots();
    if (pinned >= 0 || hovered >= 0) setHover(hovered);
  }

  function renderHeader() {
    title.textContent = get("title") ? `Taylor polynomial of ${get("title")}` : "Taylor polynomial";
    // the toggle shows the method of the result on screen (a refused method is in the error line, not highlighted)
    const shownMethod = get("result").method || get("method");
    for (const [m, b] of Object.entries(methodButtons)) b.classList.toggle("hope-active", shownMethod === m);
    const n = get("n_outputs");
    outputBox.style.display = n > 1 ? "" : "none";
    if (outputSelect.options.length !== n) {
      outputSelect.innerHTML = "";
      for (let i = 0; i < n; i++) outputSelect.append(h("option", { value: String(i), text: String(i) }));
    }
    outputSelect.value = String(get("output"));
    sortSelect.value = get("sort");
    orderInput.max = String(get("max_order"));
    orderInput.value = String(get("order"));
    const t = get("threshold");
    thresholdInput.value = String(t > 0 ? Math.round(Math.log10(t)) : THRESHOLD_OFF);
    errorLine.textContent = get("error");
    errorLine.style.display = get("error") ? "" : "none";
    warningLine.textContent = get("warning");
    warningLine.style.display = get("warning") ? "" : "none";
    notice.textContent = get("notice");
    notice.style.display = get("notice") ? "" : "none";
    spinner.classList.toggle("hope-active", pending || get("busy"));
  }

  function buildDirections() {
    const names = get("names");
    dirSelect.innerHTML = "";
    dirSelect.append(h("option", { value: "-1", text: "diagonal (all inputs)" }));
    names.forEach((nm, i) => dirSelect.append(h("option", { value: String(i), text: nm })));
    dirSelect.value = String(get("direction"));
  }

  function buildPoint() {
    pointBox.innerHTML = "";
    pointInputs = [];
    if (get("mode") !== "line") {
      pointBox.append(h("span", { class: "hope-field", text: `${get("names").length} inputs: set panel.point from Python to move the point` }));
      return;
    }
    const names = get("names");
    const bounds = get("bounds");
    get("point").forEach((v, i) => {
      const [lo, hi] = bounds[i];
      const slider = range("hope-point-slider", lo, hi, (hi - lo) / 200, v);
      const num = h("input", { type: "number", class: "hope-point-number", step: String((hi - lo) / 200), value: String(v), "data-lm-suppress-shortcuts": "true" });
      const onInput = (src) => {
        // an empty or partial number box is not a point: keep the last valid value (the slider's), never 0
        const empty = src.value.trim() === "";
        const value = Number(src.value);
        num.classList.toggle("hope-invalid", src === num && (empty || !Number.isFinite(value)));
        if (empty || !Number.isFinite(value)) return;
        (src === slider ? num : slider).value = String(value);
        showPending(true);
        clearTimeout(debounce);
        debounce = setTimeout(sendPoint, DEBOUNCE_MS);
      };
      slider.addEventListener("input", () => onInput(slider));
      num.addEventListener("input", () => onInput(num));
      pointInputs.push([slider, num]);
      pointBox.append(h("label", { class: "hope-field hope-point-field" }, `${names[i]} `, slider, num));
    });
  }

  function sendPoint() {
    const pt = pointInputs.map(([slider, num]) => {
      const typed = num.value.trim() === "" ? NaN : Number(num.value);
      return Number.isFinite(typed) ? typed : Number(slider.value);
    });
    model.set("point", pt);
    model.save_changes();
  }

  function syncPoint() {
    const pt = get("point");
    pointInputs.forEach(([slider, num], i) => {
      if (document.activeElement !== slider && document.activeElement !== num) {
        slider.value = String(pt[i]);
        num.value = String(Number(pt[i].toPrecision(6)));
      }
    });
  }

  // ---- user input
  certifyInput.value = get("certify_tol") > 0 ? String(get("certify_tol")) : "";
  const applyCertify = () => {
    const text = certifyInput.value.trim();
    const tol = text === "" ? 0 : Number(text);
    if (!Number.isFinite(tol) || tol < 0) {
      certifyInput.classList.add("hope-invalid");
      return;
    }
    certifyInput.classList.remove("hope-invalid");
    model.set("certify_tol", tol);
    model.save_changes();
  };
  certifyInput.addEventListener("change", applyCertify);
  certifyInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") applyCertify();
  });
  orderInput.addEventListener("input", () => {
    const t0 = performance.now();
    model.set("order", Number(orderInput.value)); // re-renders synchronously through change:order
    model.save_changes();
    const t1 = performance.now();
    root.dataset.renderMs = (t1 - t0).toFixed(2);
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        const t2 = performance.now();
        root.dataset.paintMs = (t2 - t0).toFixed(2);
        timing.textContent = `last slider move (to order ${get("order")}): view updated in ${(t1 - t0).toFixed(1)} ms (painted in ${(t2 - t0).toFixed(1)} ms)`;
      }),
    );
  });
  thresholdInput.addEventListener("input", () => {
    const s = Number(thresholdInput.value);
    model.set("threshold", s <= THRESHOLD_OFF ? 0 : 10 ** s);
    model.save_changes();
  });
  sortSelect.addEventListener("change", () => {
    model.set("sort", sortSelect.value);
    model.save_changes();
  });
  heatKind.addEventListener("change", renderPlots);
  copyButton.addEventListener("click", async () => {
    const ok = await copyText(formula.dataset.latex || "");
    copyButton.textContent = ok ? "Copied ✓" : "Copy failed";
    setTimeout(() => (copyButton.textContent = "Copy LaTeX"), 1200);
  });
  const termOf = (e) => {
    const t = e.target.closest("[data-term]");
    return t ? Number(t.dataset.term) : -1;
  };
  for (const box of [formula, plotBars]) {
    box.addEventListener("mouseover", (e) => setHover(termOf(e)));
    box.addEventListener("mouseleave", () => setHover(-1));
    box.addEventListener("click", (e) => {
      const i = termOf(e);
      pinned = i === pinned ? -1 : i;
      setHover(i);
    });
  }

  // ---- kernel -> view
  const on = (names, fn) => {
    for (const n of names) model.on(`change:${n}`, fn);
    return () => names.forEach((n) => model.off(`change:${n}`, fn));
  };
  const offs = [
    on(["order", "threshold", "sort"], () => {
      renderHeader();
      renderView();
    }),
    on(["term_records", "line", "heat", "compare", "result", "band"], () => {
      showPending(false);
      renderHeader();
      renderView();
    }),
    on(["busy", "error", "warning", "notice", "method", "output", "n_outputs", "title", "max_order"], () => {
      if (!get("busy")) pending = false;
      renderHeader();
    }),
    on(["point"], syncPoint),
    on(["bounds", "mode", "names"], () => {
      buildPoint();
      buildDirections();
      renderView();
    }),
    on(["direction"], () => (dirSelect.value = String(get("direction")))),
    on(["certify_tol"], () => {
      if (document.activeElement !== certifyInput) certifyInput.value = get("certify_tol") > 0 ? String(get("certify_tol")) : "";
    }),
  ];

  buildPoint();
  buildDirections();
  renderHeader();
  renderView();
  return () => {
    clearTimeout(debounce);
    offs.forEach((off) => off());
  };
}

export default { render };
