// The row of view controls: order slider, threshold slider, sort, and the certified band's tolerance.
// The order, threshold and sort only filter the term records already here (a local redraw); the tolerance asks the
// kernel to certify.
import { h, range } from "../dom.js";

const THRESHOLD_OFF = -13; // threshold slider: exponents -12..0, and "all terms" at the left end

export function createControls({ model, get, onRendered, onPainted }) {
  const orderInput = range("hope-order", 0, get("max_order"), 1, get("order"));
  const orderValue = h("span", { class: "hope-order-value" });
  const thresholdInput = range("hope-threshold", THRESHOLD_OFF, 0, 1, THRESHOLD_OFF);
  const thresholdValue = h("span", { class: "hope-threshold-value" });
  const sortSelect = h("select", { class: "hope-sort" });
  for (const s of ["degree", "magnitude"]) sortSelect.append(h("option", { value: s, text: `by ${s}` }));
  // certified band: a tolerance box (empty = off); the kernel certifies |f - P| on the plotted segment
  const certifyInput = h("input", { type: "number", class: "hope-certify-tol", min: "0", step: "any", placeholder: "off", "data-lm-suppress-shortcuts": "true" });
  const certifyField = h("label", { class: "hope-field hope-certify-field", title: "a guaranteed bound on |network − polynomial| along the line; the dashed lines mark where it stays below this tolerance" }, "certify |f−P| ≤ ", certifyInput);
  const el = h(
    "div",
    { class: "hope-controls" },
    h("label", { class: "hope-field" }, "order ", orderInput, orderValue),
    h("label", { class: "hope-field" }, "hide |c| ≤ ", thresholdInput, thresholdValue),
    h("label", { class: "hope-field" }, "sort ", sortSelect),
    certifyField,
  );

  // ---- user input (onRendered / onPainted: the order slider's move timed in the page, to the view and to paint)
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
    onRendered(t1 - t0);
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        const t2 = performance.now();
        onPainted(t1 - t0, t2 - t0);
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

  // ---- kernel -> view
  // the controls' positions from the traits
  function sync() {
    sortSelect.value = get("sort");
    orderInput.max = String(get("max_order"));
    orderInput.value = String(get("order"));
    const t = get("threshold");
    thresholdInput.value = String(t > 0 ? Math.round(Math.log10(t)) : THRESHOLD_OFF);
  }

  // the readouts next to the sliders; `hidden`: terms of degree <= order the threshold hides
  function renderValues(hidden) {
    const threshold = get("threshold");
    orderValue.textContent = `${get("order")} / ${get("max_order")}`;
    thresholdValue.textContent = threshold > 0 ? `${threshold.toExponential(0)} (${hidden} ${hidden === 1 ? "term" : "terms"} hidden)` : "off";
  }

  // the tolerance box: shown in line mode only, and never overwritten while the user types in it
  function showCertify(lineMode) {
    certifyField.style.display = lineMode ? "" : "none";
  }

  function syncCertify() {
    if (document.activeElement !== certifyInput) certifyInput.value = get("certify_tol") > 0 ? String(get("certify_tol")) : "";
  }

  // the tolerance asks the kernel to certify: off without one
  function setKernel(live) {
    certifyInput.disabled = !live;
  }

  return { el, sync, renderValues, showCertify, syncCertify, setKernel };
}
