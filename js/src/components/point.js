// The reference point: one slider and number box per input (line mode), debounced into one recompute in the kernel;
// image-like inputs get one line saying to set panel.point from Python.
import { h, range } from "../dom.js";

const DEBOUNCE_MS = 250; // point sliders: recompute after the hand rests this long

export function createPointControls({ model, get, showPending }) {
  const el = h("div", { class: "hope-point" });
  let debounce = null;
  let inputs = []; // [slider, number box] per variable

  function build() {
    el.innerHTML = "";
    inputs = [];
    if (get("mode") !== "line") {
      el.append(h("span", { class: "hope-field", text: `${get("names").length} inputs: set panel.point from Python to move the point` }));
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
        debounce = setTimeout(send, DEBOUNCE_MS);
      };
      slider.addEventListener("input", () => onInput(slider));
      num.addEventListener("input", () => onInput(num));
      inputs.push([slider, num]);
      // the name is a text node: shown as it is, whatever characters it has
      el.append(h("label", { class: "hope-field hope-point-field" }, `${names[i]} `, slider, num));
    });
  }

  function send() {
    const pt = inputs.map(([slider, num]) => {
      const typed = num.value.trim() === "" ? NaN : Number(num.value);
      return Number.isFinite(typed) ? typed : Number(slider.value);
    });
    model.set("point", pt);
    model.save_changes();
  }

  // the kernel's point, except in the control the user is on
  function sync() {
    const pt = get("point");
    inputs.forEach(([slider, num], i) => {
      if (document.activeElement !== slider && document.activeElement !== num) {
        slider.value = String(pt[i]);
        num.value = String(Number(pt[i].toPrecision(6)));
      }
    });
  }

  // moving the point recomputes in the kernel: off without one
  let live = true;
  function setKernel(on) {
    live = on;
    for (const [slider, num] of inputs) slider.disabled = num.disabled = !on;
  }

  return { el, build: () => (build(), setKernel(live)), sync, setKernel, dispose: () => clearTimeout(debounce) };
}
