// JSON has no NaN or infinity: the kernel sends them as the strings "NaN", "Infinity", "-Infinity"
// (payloads.sanitize; `Real` in hope_widgets/contract.schema.json); here they become numbers again, at any depth.
// The kernel validated the payload against the contract before sending it: nothing here checks it again.
const NONFINITE = new Set(["NaN", "Infinity", "-Infinity"]);
export function decode(v) {
  if (typeof v === "string") return NONFINITE.has(v) ? Number(v) : v;
  if (Array.isArray(v)) return v.map(decode);
  if (v && typeof v === "object") {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = decode(x);
    return out;
  }
  return v;
}
