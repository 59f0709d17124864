// The front end against the payload contract (hope_widgets/schema.py -> src/schema.json), with payloads the kernel
// really sent (written by tests/test_widgets_schema.py; path in HOPE_PAYLOADS_FILE):
//  1. every payload passes the browser's validator (src/schema.js), and broken ones do not;
//  2. the keys the front end reads -- recorded while plots.js / formula.js draw them, and scanned in index.js and
//     its components --
//     are keys of the schema, and every key of the schema (but the ones marked `unread`) is read somewhere.
// Run: node --test js/test/   (tests/test_widgets_schema.py runs it)
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { derivativeLatex, formulaLatex, monomialText, termPiece, visibleTerms } from "../src/formula.js";
import { barChart, convergencePlot, drawHeat, errorPlot, heatValues } from "../src/plots.js";
import { decode, payloadErrors } from "../src/schema.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const SCHEMA = JSON.parse(fs.readFileSync(path.join(here, "..", "src", "schema.json"), "utf8"));
const SRC = path.join(here, "..", "src");
// index.js and its components (src/components/): the code that reads the payloads through get("trait")
const VIEWS = fs
  .readdirSync(SRC, { recursive: true })
  .filter((f) => f.endsWith(".js"))
  .map((f) => fs.readFileSync(path.join(SRC, f), "utf8"));
const FILE = process.env.HOPE_PAYLOADS_FILE;
const CASES = FILE ? JSON.parse(fs.readFileSync(FILE, "utf8")) : [];

// the keys a trait's schema knows: required, optional and unread, over every alternative
function schemaKeys(t, out = { all: new Set(), unread: new Set() }) {
  if (t && typeof t === "object") {
    if ("record" in t) {
      for (const k of [...Object.keys(t.record), ...Object.keys(t.optional || {})]) out.all.add(k);
      for (const k of t.unread || []) out.unread.add(k);
    }
    for (const s of t.oneOf || []) schemaKeys(s, out);
  }
  return out;
}

function recorder(value, seen) {
  return new Proxy(value, {
    get(target, key, receiver) {
      if (typeof key === "string") seen.add(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      if (typeof key === "string") seen.add(key);
      return Reflect.has(target, key);
    },
  });
}

function fakeCanvas() {
  const ctx = {
    imageSmoothingEnabled: true,
    clearRect() {},
    drawImage() {},
    putImageData() {},
    createImageData: (w, h) => ({ data: new Uint8ClampedArray(4 * w * h) }),
  };
  return { width: 0, height: 0, getContext: () => ctx };
}
globalThis.document = { createElement: () => fakeCanvas() };

// keys of the payloads that index.js and its components read: get("x").key, and `const v = get("x")` ... v.key /
// const { a, b } = v (each file on its own: a local name means its trait in its file only)
function indexReads() {
  const reads = {};
  const add = (trait, key) => (reads[trait] ??= new Set()).add(key);
  for (const source of VIEWS) fileReads(source, add);
  return reads;
}

function fileReads(source, add) {
  for (const m of source.matchAll(/get\("(\w+)"\)\.(\w+)/g)) add(m[1], m[2]);
  for (const m of source.matchAll(/const (\w+) = get\("(\w+)"\)/g)) {
    const [, name, trait] = m;
    if (!SCHEMA.payloads.includes(trait)) continue;
    for (const r of source.matchAll(new RegExp(`\\b${name}\\.(\\w+)`, "g"))) add(trait, r[1]);
    for (const r of source.matchAll(new RegExp(`const \\{([^}]+)\\} = ${name}\\b`, "g"))) {
      for (const k of r[1].split(",")) add(trait, k.trim().split(":")[0].trim());
    }
  }
}

function readersRead(cases) {
  const seen = Object.fromEntries(SCHEMA.payloads.map((k) => [k, new Set()]));
  for (const { state } of cases) {
    const v = (k) => recorder(decode(state[k]), seen[k]);
    const terms = v("term_records");
    for (const order of [0, state.order, state.max_order]) {
      for (const sort of ["degree", "magnitude"]) {
        const idx = visibleTerms(terms, order, 0, sort);
        formulaLatex(terms, idx);
        idx.slice(0, 3).forEach((i, pos) => {
          termPiece(terms, i, pos);
          derivativeLatex(terms.alpha[i], state.names_tex);
          monomialText(terms.alpha[i], state.names);
        });
        barChart(terms, idx, idx.map(String), idx[0]);
      }
      const line = v("line");
      if (decode(state.line).t) {
        convergencePlot(line, order, v("compare"), "the diagonal", v("band"));
        errorPlot(line, order);
      }
      const heat = v("heat");
      if (decode(state.heat).coef) {
        for (const kind of ["contribution", "coefficient"]) drawHeat(fakeCanvas(), heat, heatValues(heat, order, kind));
      }
    }
  }
  return seen;
}

test("the kernel's payloads pass the browser's validator", { skip: !FILE }, () => {
  assert.ok(CASES.length > 0);
  for (const { name, state } of CASES) {
    for (const [trait, value] of Object.entries(state)) {
      assert.deepEqual(payloadErrors(SCHEMA, trait, value), [], `${name}: ${trait}`);
    }
  }
});

test("the validator refuses what the browser would misread", () => {
  const line = { t: [0, 1], net: [1, "NaN"], poly: [[1, 2]], direction: -1 };
  assert.deepEqual(payloadErrors(SCHEMA, "line", line), []);
  assert.notDeepEqual(payloadErrors(SCHEMA, "line", { ...line, net: [1, null] }), []); // a NaN sent raw
  assert.notDeepEqual(payloadErrors(SCHEMA, "line", { ...line, extra: 1 }), []); // a key the schema does not know
  assert.notDeepEqual(payloadErrors(SCHEMA, "line", { t: [0, 1], net: [1, 2], poly: [[1, 2]] }), []); // one missing
  assert.notDeepEqual(payloadErrors(SCHEMA, "line", { ...line, net: [1] }), []); // columns of unequal length
  assert.notDeepEqual(payloadErrors(SCHEMA, "result", {}), []);
  assert.deepEqual(decode({ a: ["NaN", "Infinity", ["-Infinity", "x"]] }), { a: [NaN, Infinity, [-Infinity, "x"]] });
});

test("the front end reads exactly the keys of the schema", { skip: !FILE }, () => {
  const fromIndex = indexReads();
  const fromReaders = readersRead(CASES);
  for (const trait of SCHEMA.payloads) {
    const { all, unread } = schemaKeys(SCHEMA.traits[trait].type);
    const read = new Set([...(fromIndex[trait] || []), ...fromReaders[trait]]);
    // a Proxy also sees what the engine of JS asks for itself (length of an array view, toJSON...): only names
    // that look like payload keys count, i.e. not Array / Object members
    const keys = [...read].filter((k) => !(k in Object.prototype) && k !== "length" && k !== "constructor");
    const unknown = keys.filter((k) => !all.has(k));
    assert.deepEqual(unknown, [], `${trait}: the front end reads keys the schema does not have`);
    const missed = [...all].filter((k) => !unread.has(k) && !read.has(k));
    assert.deepEqual(missed, [], `${trait}: keys the kernel sends that the front end never reads (or mark them unread)`);
    const readAnyway = [...unread].filter((k) => read.has(k));
    assert.deepEqual(readAnyway, [], `${trait}: keys marked unread that the front end reads`);
  }
});
