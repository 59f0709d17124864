// The plots' own helpers, on made-up data: round axis ticks, what a hovered heat-map pixel says, the certified
// funnel's marks where it leaves the plot, and the NaN counts of the line plot's title.
// Run: node --test js/test/plots.test.mjs   (tests/test_widgets_bundle.py runs it)
import assert from "node:assert/strict";
import { test } from "node:test";
import { convergencePlot, niceTicks, pixelInfo, plural } from "../src/plots.js";

test("axis ticks are round numbers inside the range", () => {
  for (const [lo, hi] of [[-1.5, 1.5], [0.1234, 0.9876], [-3.2e-5, 7.7e-5], [12, 13.7], [-0.35, 2.1]]) {
    const ticks = niceTicks(lo, hi, 4);
    assert.ok(ticks.length >= 2 && ticks.length <= 7, `${lo}..${hi}: ${ticks}`);
    assert.ok(ticks.every((v) => v >= lo - 1e-12 && v <= hi + 1e-12), `${lo}..${hi}: ${ticks}`);
    const step = ticks[1] - ticks[0];
    const mantissa = step / 10 ** Math.floor(Math.log10(step));
    assert.ok([1, 2, 2.5, 5].some((m) => Math.abs(mantissa - m) < 1e-9), `${lo}..${hi}: step ${step}`);
    assert.ok(ticks.every((v) => Math.abs(v / step - Math.round(v / step)) < 1e-9), `${lo}..${hi}: ${ticks}`);
  }
});

test("a hovered pixel is named p[r][c], with its rank by |value|", () => {
  const heat = { rows: 2, cols: 3, channels: 1, n: 6, shape: [1, 2, 3], coef: [[1, 2, 3, 4, 5, 6]], radius: 1, image: [0, 1, 2, 3, 4, 5] };
  const values = [0.1, -0.5, 0.2, NaN, 0.3, -0.05];
  const info = pixelInfo(heat, values, 1, ["p[0][0]", "p[0][1]", "p[0][2]", "p[1][0]", "p[1][1]", "p[1][2]"]);
  assert.deepEqual([info.name, info.row, info.col, info.rank, info.count, info.derivative, info.image], ["p[0][1]", 0, 1, 1, 5, 2, 1]);
  assert.equal(pixelInfo(heat, values, 5, null).name, "p[1][2]");
  assert.equal(pixelInfo(heat, values, 5, null).rank, 5);
});

test("counts name their noun in the right number", () => {
  assert.equal(plural(1, "point"), "1 point");
  assert.equal(plural(81, "point"), "81 points");
  assert.equal(plural(0, "pixel"), "0 pixels");
});

// a line t in [-1, 1] along which f = P = t (the plot's range: -1.7 .. 1.7), and a band of half-width w(t)
function line(n = 21) {
  const t = Array.from({ length: n }, (_, i) => -1 + (2 * i) / (n - 1));
  return { t, net: t.slice(), poly: [t.map(() => 0), t.slice()], direction: 0 };
}
const band = (l, w) => ({ order: 1, lower: l.t.map((v) => v - w(v)), upper: l.t.map((v) => v + w(v)), radii: [0.5, 1], tol_radius: null, text: "" });

test("the funnel is drawn, and marked where it leaves the plot", () => {
  const l = line();
  const inside = convergencePlot(l, 1, {}, "x", band(l, (v) => 0.1 * v * v));
  assert.equal((inside.match(/class="hope-band"/g) || []).length, 1);
  assert.ok(!inside.includes("hope-band-clip"));
  assert.ok(inside.includes("certified band"));
  // wider than the plotted range beyond |t| = 0.5: one mark on each side, at the first t outside
  const wide = convergencePlot(l, 1, {}, "x", band(l, (v) => (Math.abs(v) > 0.5 ? 5 : 0.01)));
  const marks = [...wide.matchAll(/class="hope-band-clip"><title>[^<]*t = ([^)]*)\)/g)].map((m) => Number(m[1]));
  assert.deepEqual(marks.sort(), [-0.6, 0.6]);
  // another order than the band's: no band
  assert.ok(!convergencePlot(l, 0, {}, "x", band(l, () => 0.1)).includes("hope-band"));
});

test("the line plot's title counts NaN points of the network and the polynomial apart", () => {
  const l = line(5);
  l.net[0] = NaN;
  l.poly[1] = l.poly[1].map(() => NaN);
  const svg = convergencePlot(l, 1, {}, "x", {});
  assert.ok(svg.includes("network at 1 of 5 points, order 1 at 5 of 5 points"), svg.slice(0, 400));
});
