// Escaping of what the panel writes as markup strings: variable names are dict keys, so any character can be in
// them. escapeHtml (src/escape.js) must be correct in text and in attribute values, and the SVG that plots.js writes
// must stay well-formed, with every name coming back as exactly the text it was.
// Run: node --test js/test/escape.test.mjs   (tests/test_widgets_escaping.py runs it)
import assert from "node:assert/strict";
import { test } from "node:test";
import { escapeHtml } from "../src/escape.js";
import { monomialText } from "../src/formula.js";
import { barChart, barLabel, convergencePlot, errorPlot } from "../src/plots.js";

const NAMES = ['a"b', "<x>", "c'd&e"];

// the inverse of escapeHtml: what a browser reads back from an attribute value or a text node
function unescape(s) {
  return s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

// A strict reading of markup written with double-quoted attributes: every tag is a name and name="value" pairs
// whose values hold no quote or angle bracket, every & starts an entity, and text holds no angle bracket.
// Returns [{tag, attrs, text}] of the start tags, text being the decoded text right after the tag.
const TAG = /^<(\/?)([A-Za-z][\w-]*)((?:\s+[A-Za-z][\w:-]*="[^"<>]*")*)\s*(\/?)>$/;
const ATTR = /\s+([A-Za-z][\w:-]*)="([^"<>]*)"/g;
const ENTITY = /&(?!(?:amp|lt|gt|quot|#39);)/;
function parse(markup) {
  const out = [];
  const open = [];
  for (const token of markup.match(/<[^>]*>|[^<]+/g)) {
    if (token.startsWith("<")) {
      const m = TAG.exec(token);
      assert.ok(m, `malformed tag: ${token}`);
      const [, close, tag, attrs, selfClosing] = m;
      if (close) {
        assert.equal(open.pop(), tag, `unbalanced </${tag}>`);
        continue;
      }
      const attributes = {};
      for (const [, k, v] of attrs.matchAll(ATTR)) {
        assert.ok(!(k in attributes), `attribute ${k} twice in ${token}`);
        assert.ok(!ENTITY.test(v), `a bare & in ${token}`);
        attributes[k] = unescape(v);
      }
      out.push({ tag, attrs: attributes, text: "" });
      if (!selfClosing) open.push(tag);
    } else {
      assert.ok(!ENTITY.test(token), `a bare & in the text ${token}`);
      if (out.length) out[out.length - 1].text += unescape(token);
    }
  }
  assert.deepEqual(open, [], "unclosed tags");
  return out;
}

test("escapeHtml escapes & < > \" ' and nothing else", () => {
  assert.equal(escapeHtml(`a"b <x> c'd&e`), "a&quot;b &lt;x&gt; c&#39;d&amp;e");
  assert.equal(escapeHtml("&amp;"), "&amp;amp;"); // text, not markup: escaped again
  assert.equal(escapeHtml("x₀ · ∂f/∂x ≤ 1e-3 [p][0]"), "x₀ · ∂f/∂x ≤ 1e-3 [p][0]");
  assert.equal(escapeHtml(12), "12");
  for (const name of NAMES) {
    assert.equal(unescape(escapeHtml(name)), name);
    assert.doesNotMatch(escapeHtml(name), /["'<>]/); // safe between double quotes, single quotes and in text
  }
});

test("the bar chart names each term exactly, in its attributes and its text", () => {
  const alpha = [[], [[0, 1]], [[1, 1]], [[2, 1]], [[0, 1], [1, 1]], [[2, 2]]];
  const terms = { deg: alpha.map((a) => a.reduce((s, [, e]) => s + e, 0)), c: [0.5, -0.25, 1.5, 2e-5, -3, 0.125], alpha };
  const idx = alpha.map((_, i) => i);
  const labels = idx.map((i) => monomialText(alpha[i], NAMES));
  assert.deepEqual(labels.slice(1, 4), NAMES);
  for (const highlight of [-1, 4]) {
    const tags = parse(barChart(terms, idx, labels, highlight));
    const bars = tags.filter((t) => t.tag === "rect");
    assert.equal(bars.length, idx.length);
    bars.forEach((bar, k) => {
      assert.deepEqual(Object.keys(bar.attrs).sort(), ["class", "data-label", "data-term", "fill", "height", "width", "x", "y"]);
      assert.equal(bar.attrs["data-term"], String(k));
      assert.equal(bar.attrs["data-label"], barLabel(labels[k], terms.c[k]));
    });
    const titles = tags.filter((t) => t.tag === "title").map((t) => t.text);
    assert.deepEqual(titles, idx.map((k) => barLabel(labels[k], terms.c[k])));
    const label = tags.find((t) => (t.attrs.class || "").includes("hope-bar-label")).text;
    if (highlight >= 0) assert.equal(label, `a"b·<x>: c = -3`);
  }
});

test("the line plots say the direction's name exactly", () => {
  const t = [-1, -0.5, 0, 0.5, 1];
  const line = { t, net: t.map((v) => Math.sin(v)), poly: [t.map(() => 0), t.map((v) => v)], direction: 1 };
  for (const name of NAMES) {
    const tags = parse(convergencePlot(line, 1, {}, name, {}));
    assert.equal(tags.filter((e) => e.tag === "text" && e.attrs.class === "hope-axis").map((e) => e.text).join(), `t along ${name}`);
  }
  parse(errorPlot(line, 1));
});
