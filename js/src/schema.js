// The browser's copy of the panel's payload contract: schema.json is written from hope_widgets/schema.py
// (`python -m hope_widgets.schema`; a test fails when it is stale). `payloadErrors` checks a synced value as it
// arrives, before `decode`, with the same rules as schema.errors in Python.

function short(v) {
  const text = JSON.stringify(v) ?? String(v);
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}

// Every mismatch of `value` with type `t` (an empty array: it matches), each naming its path.
export function typeErrors(schema, t, value, where = "value") {
  if (typeof t === "string") {
    const ok = {
      int: (v) => Number.isInteger(v),
      number: (v) => (typeof v === "number" && Number.isFinite(v)) || schema.nonfinite.includes(v),
      string: (v) => typeof v === "string",
      bool: (v) => typeof v === "boolean",
      null: (v) => v === null,
    }[t];
    if (!ok) throw new Error(`unknown schema type ${t}`);
    return ok(value) ? [] : [`${where}: expected ${t}, got ${short(value)}`];
  }
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  if ("list" in t) {
    if (!Array.isArray(value)) return [`${where}: expected a list, got ${short(value)}`];
    const out = [];
    for (let i = 0; i < value.length && out.length < 5; i++) out.push(...typeErrors(schema, t.list, value[i], `${where}[${i}]`));
    return out;
  }
  if ("tuple" in t) {
    if (!Array.isArray(value) || value.length !== t.tuple.length) return [`${where}: expected a list of ${t.tuple.length}, got ${short(value)}`];
    return t.tuple.flatMap((s, i) => typeErrors(schema, s, value[i], `${where}[${i}]`));
  }
  if ("enum" in t) return t.enum.includes(value) ? [] : [`${where}: expected one of ${t.enum.join(", ")}, got ${short(value)}`];
  if ("map" in t) {
    if (!isObject(value)) return [`${where}: expected an object, got ${short(value)}`];
    return Object.entries(value).flatMap(([k, v]) => typeErrors(schema, t.map, v, `${where}.${k}`));
  }
  if ("record" in t) {
    if (!isObject(value)) return [`${where}: expected an object, got ${short(value)}`];
    const req = t.record;
    const opt = t.optional || {};
    const out = Object.keys(req).filter((k) => !(k in value)).map((k) => `${where}: missing key '${k}'`);
    for (const [k, v] of Object.entries(value)) {
      if (k in req) out.push(...typeErrors(schema, req[k], v, `${where}.${k}`));
      else if (k in opt) out.push(...typeErrors(schema, opt[k], v, `${where}.${k}`));
      else out.push(`${where}: unexpected key '${k}'`);
    }
    const lengths = (t.same_length || []).filter((k) => Array.isArray(value[k])).map((k) => value[k].length);
    if (new Set(lengths).size > 1) out.push(`${where}: columns of different lengths`);
    return out;
  }
  if ("oneOf" in t) {
    const tries = t.oneOf.map((s) => typeErrors(schema, s, value, where));
    if (tries.some((e) => e.length === 0)) return [];
    return tries.reduce((a, b) => (b.length < a.length ? b : a));
  }
  throw new Error(`unknown schema type ${JSON.stringify(t)}`);
}

// The mismatches of synced trait `trait`'s raw value (as the kernel sent it) with the schema.
export function payloadErrors(schema, trait, value) {
  const entry = schema.traits[trait];
  if (!entry) return [`${trait}: not a trait of the schema`];
  return typeErrors(schema, entry.type, value, trait);
}

// JSON has no NaN or infinity: the kernel sends them as the strings "NaN", "Infinity", "-Infinity"
// (payloads.sanitize; schema.json's `nonfinite`); here they become numbers again, at any depth.
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
