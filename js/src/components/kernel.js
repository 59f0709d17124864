// Is a kernel behind this panel? A panel restored from a saved notebook (its widget state), shown by nbviewer, or
// left by a stopped kernel has no live model in Python: its point, method, direction and tolerance would send changes
// nobody answers, and spin forever. A ping (a custom message) finds out. Without a comm channel, send() does nothing.
// With one, the message is serialized to go out (JSON.stringify calls its toJSON: a channel exists, so a panel in
// Python does), and the kernel reports busy / idle for it once it runs it (its iopub status) -- later, if the kernel
// is busy with a long cell. Neither within `waitMs` -> onChange(false); either, even later -> onChange(true).
const PING = { type: "hope-ping" };

export function watchKernel({ model, onChange, waitMs = 4000 }) {
  let live = null; // null: not known yet
  let timer = null;
  const set = (value) => {
    if (live === value) return;
    live = value;
    onChange(value);
  };
  function ping() {
    clearTimeout(timer);
    let sent = false;
    const content = { ...PING, toJSON: () => ((sent = true), { ...PING }) };
    try {
      model.send(content, { iopub: { status: () => set(true) } });
    } catch {
      set(false);
      return;
    }
    if (sent) set(true);
    else timer = setTimeout(() => set(sent || live === true), waitMs);
  }
  ping();
  return { live: () => live, ping, dispose: () => clearTimeout(timer) };
}
