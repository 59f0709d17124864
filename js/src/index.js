// The hope panel: an anywidget ESM. The kernel sends one expansion's term records, line and heat data; the order
// slider, threshold and sort only filter them here, so a slider move is a local redraw (no kernel round trip).
// render() puts the panel together from its components (js/src/components/) and wires the kernel's traits to them.
// The synced state (types: contract.d.ts, generated from hope_widgets/contract.schema.json): the settings the view
// sets (order, point, output, method, threshold, sort, direction, certify_tol), and what the kernel writes: `view`
// (everything drawn) and `status` (busy, error, notice, warning).
import "katex/dist/katex.css";
import "./style.css";
import { createControls } from "./components/controls.js";
import { createFormula } from "./components/formula-view.js";
import { createHeader } from "./components/header.js";
import { createPlots } from "./components/plots-view.js";
import { createPointControls } from "./components/point.js";
import { createStatus } from "./components/status.js";
import { watchKernel } from "./components/kernel.js";
import { linkTerms } from "./components/term-links.js";
import { h } from "./dom.js";
import { decode } from "./decode.js";

/** @typedef {import("./contract").View} View */
/** @typedef {import("./contract").Status} Status */

// get(name): a key of the status, a key of the view, or else a setting (a trait of its own); the three sets of names
// are disjoint (tests/test_widgets_contract.py). The view is decoded once per new value -- a slider move re-reads the
// same objects. The kernel checked both payloads against the contract before sending them: they are not checked
// again here.
function stateReader(model) {
  let memo = { raw: undefined, value: /** @type {View} */ ({}) };
  const view = () => {
    const raw = model.get("view");
    if (memo.raw !== raw) memo = { raw, value: decode(raw) };
    return memo.value;
  };
  return (k) => {
    const status = /** @type {Status} */ (model.get("status"));
    if (k in status) return status[k];
    const v = view();
    return k in v ? v[k] : model.get(k);
  };
}

// the view's keys that lay out the point controls and the direction selector: rebuilt only when these change
const layoutOf = (get) => JSON.stringify([get("mode"), get("names"), get("bounds")]);

function render({ model, el }) {
  const get = stateReader(model);
  const root = h("div", { class: "hope-panel" });
  el.append(root);

  const status = createStatus({ get });
  const header = createHeader({ model, get });
  const formula = createFormula({ get });
  const controls = createControls({
    model,
    get,
    onRendered: (ms) => (root.dataset.renderMs = ms.toFixed(2)),
    // the slider's move timed in the page, kept as data attributes (tests read them; no stale footer on screen)
    onPainted: (renderMs, paintMs) => (root.dataset.paintMs = paintMs.toFixed(2)),
  });
  const point = createPointControls({ model, get, showPending: header.showPending });
  const plots = createPlots({ model, get, showPending: header.showPending, onHeatKind: renderPlots });
  const terms = linkTerms({ get, formula, bars: plots.bars });

  root.append(
    header.el,
    status.info,
    status.kernelNote,
    status.errorLine,
    status.warningLine,
    formula.box,
    formula.more,
    formula.detail,
    controls.el,
    point.el,
    plots.lineTools,
    status.bandLine,
    plots.el,
    status.notice,
  );

  // the controls that recompute in the kernel are off, with a one-line note, while no kernel answers
  const kernel = watchKernel({
    model,
    onChange: (live) => {
      root.dataset.kernel = live ? "live" : "none";
      header.setKernel(live);
      point.setKernel(live);
      plots.setKernel(live);
      controls.setKernel(live);
      status.showKernel(live);
    },
  });

  function renderHeader() {
    header.render();
    controls.sync();
    status.render();
  }

  function renderPlots() {
    const lineMode = get("mode") === "line";
    plots.render(formula.visible(), terms.highlighted());
    status.renderBand(lineMode);
    controls.showCertify(lineMode);
    status.renderInfo();
  }

  function renderView() {
    controls.renderValues(formula.render());
    renderPlots();
    terms.refresh();
  }

  // ---- kernel -> view
  const on = (names, fn) => {
    for (const n of names) model.on(`change:${n}`, fn);
    return () => names.forEach((n) => model.off(`change:${n}`, fn));
  };
  let layout = layoutOf(get);
  const offs = [
    on(["order", "threshold", "sort"], () => {
      renderHeader();
      renderView();
    }),
    on(["view"], () => {
      header.showPending(false);
      header.settle();
      if (layoutOf(get) !== layout) {
        layout = layoutOf(get);
        point.build();
        plots.buildDirections();
      }
      renderHeader();
      renderView();
    }),
    on(["status", "method", "output"], () => {
      header.settle();
      renderHeader();
    }),
    on(["point"], point.sync),
    on(["direction"], plots.syncDirection),
    on(["certify_tol"], controls.syncCertify),
  ];

  point.build();
  plots.buildDirections();
  renderHeader();
  renderView();
  return () => {
    point.dispose();
    kernel.dispose();
    offs.forEach((off) => off());
  };
}

export default { render };
