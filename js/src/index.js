// The hope panel: an anywidget ESM. The kernel sends one expansion's term records, line and heat data; the order
// slider, threshold and sort only filter them here, so a slider move is a local redraw (no kernel round trip).
// render() puts the panel together from its components (js/src/components/) and wires the kernel's traits to them.
import "katex/dist/katex.css";
import "./style.css";
import { createControls } from "./components/controls.js";
import { createFormula } from "./components/formula-view.js";
import { createHeader } from "./components/header.js";
import { createPlots } from "./components/plots-view.js";
import { createPointControls } from "./components/point.js";
import { createStatus } from "./components/status.js";
import { linkTerms } from "./components/term-links.js";
import { h } from "./dom.js";
import { decode, payloadErrors } from "./schema.js";
import SCHEMA from "./schema.json";

// the dict payloads (hope_widgets/schema.py, exported to schema.json): checked and decoded as they arrive
const DECODED = new Set(SCHEMA.payloads);

// get(trait): the trait's value, a dict payload checked against the schema and decoded once per new value (a slider
// move re-reads the same objects); a mismatch is logged and put in the element's data-payload-errors
function traitReader(model, el) {
  const memo = new Map();
  return (k) => {
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
}

function render({ model, el }) {
  const get = traitReader(model, el);
  const root = h("div", { class: "hope-panel" });
  el.append(root);

  const status = createStatus({ get });
  const header = createHeader({ model, get });
  const formula = createFormula({ get });
  const controls = createControls({
    model,
    get,
    onRendered: (ms) => (root.dataset.renderMs = ms.toFixed(2)),
    onPainted: (renderMs, paintMs) => {
      root.dataset.paintMs = paintMs.toFixed(2);
      status.showTiming(get("order"), renderMs, paintMs);
    },
  });
  const point = createPointControls({ model, get, showPending: header.showPending });
  const plots = createPlots({ model, get, showPending: header.showPending, onHeatKind: renderPlots });
  const terms = linkTerms({ get, formula, bars: plots.bars });

  root.append(
    header.el,
    status.info,
    status.errorLine,
    status.warningLine,
    formula.box,
    formula.more,
    formula.detail,
    controls.el,
    point.el,
    plots.lineTools,
    plots.el,
    status.bandLine,
    status.notice,
    status.timing,
  );

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
  const offs = [
    on(["order", "threshold", "sort"], () => {
      renderHeader();
      renderView();
    }),
    on(["term_records", "line", "heat", "compare", "result", "band"], () => {
      header.showPending(false);
      renderHeader();
      renderView();
    }),
    on(["busy", "error", "warning", "notice", "method", "output", "n_outputs", "title", "max_order"], () => {
      header.settle();
      renderHeader();
    }),
    on(["point"], point.sync),
    on(["bounds", "mode", "names"], () => {
      point.build();
      plots.buildDirections();
      renderView();
    }),
    on(["direction"], plots.syncDirection),
    on(["certify_tol"], controls.syncCertify),
  ];

  point.build();
  plots.buildDirections();
  renderHeader();
  renderView();
  return () => {
    point.dispose();
    offs.forEach((off) => off());
  };
}

export default { render };
