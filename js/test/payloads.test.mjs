// The front end against the panel's contract (hope_widgets/contract.schema.json), with states the kernel really sent
// (written by tests/test_widgets_contract.py; path in HOPE_PAYLOADS_FILE). The kernel validated them; here:
//  1. decode turns the non-finite strings back into numbers, at any depth;
//  2. every name the components ask for -- get("x") -- is a setting, a key of the view or of the status, and every
//     one of those is read somewhere;
//  3. the keys of the view's payloads the front end reads -- recorded while plots.js / formula.js draw them, and
//     scanned in index.js and its components -- are keys of the schema, and every key of the schema (but the ones
//     marked x-unread) is read somewhere.
// Run: node --test js/test/   (tests/test_widgets_schema.py runs it)
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { derivativeLatex, formulaLatex, monomialText, termPiece, visibleTerms } from "../src/formula.js";
import { barChart, convergencePlot, drawHeat, drawImage, errorPlot, heatValues, pixelInfo } from "../src/plots.js";
import { decode } from "../src/decode.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const SCHEMA = JSON.parse(fs.readFileSync(path.join(here, "..", "..", "hope_widgets", "contract.schema.json"), "utf8"));
const VIEW = SCHEMA.$defs.View.properties;
const STATUS = SCHEMA.$defs.Status.properties;
const SETTINGS = SCHEMA["x-settings"];
const resolve = (t) => (t && t.$ref ? resolve(SCHEMA.$defs[t.$ref.split("/").pop()]) : t);
// the view's payloads: its keys whose values are objects with keys of their own
const PAYLOADS = Object.keys(VIEW).filter((k) => schemaKeys(VIEW[k]).all.size > 0);
const SRC = path.join(here, "..", "src");
// index.js and its components (src/components/): the code that reads the payloads through get("trait")
const VIEWS = fs
  .readdirSync(SRC, { recursive: true })
  .filter((f) => f.endsWith(".js"))
  .map((f) => fs.readFileSync(path.join(SRC, f), "utf8"));
const FILE = process.env.HOPE_PAYLOADS_FILE;
const CASES = FILE ? JSON.parse(fs.readFileSync(FILE, "utf8")) : [];

// the keys a payload's schema knows: required, optional and unread, over every alternative
function schemaKeys(t, out = { all: new Set(), unread: new Set() }) {
  t = resolve(t);
  if (t && typeof t === "object") {
    if (t.type === "object" && t.properties) {
      for (const k of Object.keys(t.properties)) out.all.add(k);
      for (const k of t["x-unread"] || []) out.unread.add(k);
    }
    for (const s of [...(t.anyOf || []), ...(t.oneOf || [])]) schemaKeys(s, out);
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
    if (!PAYLOADS.includes(trait)) continue;
    for (const r of source.matchAll(new RegExp(`\\b${name}\\.(\\w+)`, "g"))) add(trait, r[1]);
    for (const r of source.matchAll(new RegExp(`const \\{([^}]+)\\} = ${name}\\b`, "g"))) {
      for (const k of r[1].split(",")) add(trait, k.trim().split(":")[0].trim());
    }
  }
}

function readersRead(cases) {
  const seen = Object.fromEntries(PAYLOADS.map((k) => [k, new Set()]));
  for (const { state } of cases) {
    const view = state.view;
    const v = (k) => recorder(decode(view[k]), seen[k]);
    const terms = v("term_records");
    for (const order of [0, state.order, view.max_order]) {
      for (const sort of ["degree", "magnitude"]) {
        const idx = visibleTerms(terms, order, 0, sort);
        formulaLatex(terms, idx);
        idx.slice(0, 3).forEach((i, pos) => {
          termPiece(terms, i, pos);
          derivativeLatex(terms.alpha[i], view.names_tex);
          monomialText(terms.alpha[i], view.names);
        });
        barChart(terms, idx, idx.map(String), idx[0]);
      }
      const line = v("line");
      if (decode(view.line).t) {
        convergencePlot(line, order, v("compare"), "the diagonal", v("band"));
        errorPlot(line, order);
      }
      const heat = v("heat");
      if (decode(view.heat).coef) {
        for (const kind of ["contribution", "coefficient"]) {
          const values = heatValues(heat, order, kind);
          drawHeat(fakeCanvas(), heat, values, 0);
          pixelInfo(heat, values, 0, view.names);
        }
        drawImage(fakeCanvas(), heat);
      }
    }
  }
  return seen;
}

test("decode turns the non-finite strings back into numbers, at any depth", () => {
  assert.deepEqual(decode({ a: ["NaN", "Infinity", ["-Infinity", "x"]] }), { a: [NaN, Infinity, [-Infinity, "x"]] });
  assert.deepEqual(decode({ t: [0, 1], error: "" }), { t: [0, 1], error: "" });
  for (const { name, state } of CASES) {
    const c = decode(state.view.term_records).c;
    assert.ok(c.every((x) => typeof x === "number"), `${name}: a coefficient is not a number after decode`);
  }
});

test("the components ask for traits, view and status keys only, and for all of them", () => {
  const names = [...Object.keys(SCHEMA.properties), ...Object.keys(VIEW), ...Object.keys(STATUS)];
  const known = new Set(names);
  assert.equal(known.size, names.length, "a name twice");
  assert.ok(SETTINGS.every((k) => k in SCHEMA.properties));
  const asked = new Set(VIEWS.flatMap((source) => [...source.matchAll(/\b(?:get|model\.set)\("(\w+)"/g)].map((m) => m[1])));
  assert.deepEqual([...asked].filter((k) => !known.has(k)), [], "names the contract does not have");
  assert.deepEqual([...known].filter((k) => !asked.has(k)), [], "names of the contract the front end never reads");
});

test("the front end reads exactly the keys of the schema", { skip: !FILE }, () => {
  const fromIndex = indexReads();
  const fromReaders = readersRead(CASES);
  for (const trait of PAYLOADS) {
    const { all, unread } = schemaKeys(VIEW[trait]);
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
