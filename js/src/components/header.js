// Header: the model's title, the busy spinner, the output selector and the exact / paper-rule toggle.
import { h } from "../dom.js";

export function createHeader({ model, get }) {
  let pending = false; // a change was sent to the kernel and its result has not come back yet
  let live = true; // a kernel answers (index.js: watchKernel); without one nothing is pending, nothing spins
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
  const el = h("div", { class: "hope-header" }, title, spinner, h("span", { class: "hope-grow" }), outputBox, methodBox);

  function showPending(on) {
    pending = on && live;
    spinner.classList.toggle("hope-active", pending || (live && get("busy")));
  }

  // the method and the output recompute in the kernel: off without one
  function setKernel(on) {
    live = on;
    for (const b of Object.values(methodButtons)) b.disabled = !on;
    outputSelect.disabled = !on;
    showPending(pending);
  }

  // the kernel is idle again: nothing is pending any more
  function settle() {
    if (!get("busy")) pending = false;
  }

  function render() {
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
    spinner.classList.toggle("hope-active", pending || (live && get("busy")));
  }

  return { el, showPending, settle, render, setKernel };
}
