// Plots as SVG strings (and one canvas for heat maps), drawn from data the kernel sent once: cheap to redraw on
// every slider move.
import { escapeHtml } from "./escape.js";

// The SVGs are W wide in user units and never drawn narrower than 0.92 W px (style.css: .hope-plot min-width), so the
// 12-unit fonts of style.css are at least 11 px on screen at 100% zoom.
const W = 320;
const H = 200;
const PAD = { l: 46, r: 10, t: 34, b: 30 }; // the title on the first line, a legend on the second, then the plot
const BARS_H = 240; // the coefficient bars: room for a label under the bars
const BARS_PAD = { l: 46, r: 10, t: 34, b: 64 };
// Signs as in the notebooks' maps (matplotlib's RdBu_r): red positive, blue negative, in the bars and the heat map.
export const COLORS = { net: "#222", poly: "#d2691e", exact: "#6a3d9a", pos: "#c0392b", neg: "#2f6db5", hi: "#f0a500", bad: "#7a7a7a", band: "#2e8b57" };
const TITLE_CHARS = 46; // about what fits on one line of a plot at the title's font size
const LEGEND_CHARS = 46; // the same for the legend line
export const BAR_HINT = "terms in formula order (hover a bar for its term)";
// every string put into the SVG markup below -- text or attribute value -- goes through esc
const esc = escapeHtml;


export function fmt(v) {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "∞";
  if (v === -Infinity) return "−∞";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

function scale(lo, hi, a, b) {
  const d = hi - lo || 1;
  return (v) => a + ((v - lo) / d) * (b - a);
}

// A title that fits: it starts at the left edge, and a long one is squeezed (never cut off by the frame).
function titleText(title) {
  const fit = title.length > TITLE_CHARS ? ` textLength="${W - 8}" lengthAdjust="spacingAndGlyphs"` : "";
  return `<text x="4" y="13" class="hope-plot-title"${fit}>${esc(title)}</text>`;
}

// A plot with nothing to draw, and why (e.g. the network is NaN all along the line).
function message(title, text) {
  const words = String(text).split(" ");
  const lines = [];
  let cur = "";
  for (const w of words) {
    if ((cur + " " + w).trim().length > 44) {
      lines.push(cur.trim());
      cur = w;
    } else cur += " " + w;
  }
  if (cur.trim()) lines.push(cur.trim());
  const body = lines.map((l, i) => `<text x="${W / 2}" y="${H / 2 - 8 * (lines.length - 1) + 16 * i}" text-anchor="middle" class="hope-plot-message">${esc(l)}</text>`).join("");
  return frame(title, body, "");
}

function finite(vs) {
  return vs.filter((v) => Number.isFinite(v));
}

// "1 point", "2 points": a count with its noun in the right number
export function plural(count, noun, nouns = `${noun}s`) {
  return `${count} ${count === 1 ? noun : nouns}`;
}

// Round tick values in [lo, hi]: multiples of 1, 2 or 5 times a power of ten, about `count` of them.
export function niceTicks(lo, hi, count = 4) {
  if (!(Number.isFinite(lo) && Number.isFinite(hi)) || hi <= lo) return Number.isFinite(lo) ? [lo] : [];
  const raw = (hi - lo) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const out = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k++) out.push(Number((k * step).toPrecision(12)) + 0);
  return out;
}

// Distinct ids per drawing: several panels on one page each reference their own clip path.
let uid = 0;
const nextId = (name) => `hope-${name}-${++uid}`;

function frame(title, inner, xLabel, height = H) {
  return (
    `<svg viewBox="0 0 ${W} ${height}" class="hope-svg" xmlns="http://www.w3.org/2000/svg">` +
    `${titleText(title)}${inner}` +
    (xLabel ? `<text x="${(PAD.l + W - PAD.r) / 2}" y="${height - 3}" text-anchor="middle" class="hope-axis">${esc(xLabel)}</text>` : "") +
    `</svg>`
  );
}

// The legend line under the title: coloured pieces of text, squeezed to the plot's width when long.
function legendLine(pieces) {
  const chars = pieces.reduce((n, [text]) => n + text.length + 2, 0);
  const fit = chars > LEGEND_CHARS ? ` textLength="${W - 8}" lengthAdjust="spacingAndGlyphs"` : "";
  const spans = pieces.map(([text, color], i) => `<tspan fill="${color}"${i ? ' dx="10"' : ""}>${esc(text)}</tspan>`).join("");
  return `<text x="4" y="28" class="hope-legend"${fit}>${spans}</text>`;
}

function axes(x, y, xs, ys, pad = PAD, height = H) {
  const base = height - pad.b;
  let s = `<line x1="${pad.l}" y1="${base}" x2="${W - pad.r}" y2="${base}" class="hope-axisline"/>`;
  s += `<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${base}" class="hope-axisline"/>`;
  for (const [v, label] of xs) {
    s += `<text x="${x(v)}" y="${base + 13}" text-anchor="middle" class="hope-tick">${esc(label)}</text>`;
  }
  for (const [v, label] of ys) {
    s += `<text x="${pad.l - 4}" y="${y(v) + 4}" text-anchor="end" class="hope-tick">${esc(label)}</text>`;
    s += `<line x1="${pad.l}" y1="${y(v)}" x2="${W - pad.r}" y2="${y(v)}" class="hope-grid"/>`;
  }
  return s;
}

function path(ts, vs, x, y) {
  let d = "";
  let pen = false;
  for (let i = 0; i < ts.length; i++) {
    const v = vs[i];
    if (!Number.isFinite(v)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(ts[i]).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  }
  return d;
}

// The certified band of the order shown: a funnel, lower <= f(t) <= upper at every t (the kernel certified nested
// boxes around x0, so it is tight near x0), drawn where both ends are finite and clipped to the plot; a triangle marks
// where it leaves the plot on each side. `ylo`, `yhi`: the plotted range. The dashed verticals: where
// |f - P| <= tol is certified.
function certifiedBand(band, line, order, x, y, ylo, yhi, clip) {
  if (!band || band.order !== order || !band.lower) return "";
  const { t } = line;
  const { lower, upper } = band;
  const span = yhi - ylo;
  const keep = (v) => Math.min(yhi + span, Math.max(ylo - span, v)); // far outside the plot: clipped anyway
  let s = "";
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const top = run.map((i) => `${x(t[i]).toFixed(1)},${y(keep(upper[i])).toFixed(1)}`);
      const bottom = run.map((i) => `${x(t[i]).toFixed(1)},${y(keep(lower[i])).toFixed(1)}`).reverse();
      s += `<polygon points="${top.concat(bottom).join(" ")}" fill="${COLORS.band}" fill-opacity="0.25" stroke="${COLORS.band}" stroke-opacity="0.5" stroke-width="0.6" class="hope-band" clip-path="url(#${clip})"><title>certified band (${esc(band.radii.length)} nested boxes around x₀): the network lies inside at every t</title></polygon>`;
    }
    run = [];
  };
  t.forEach((_, i) => {
    if (Number.isFinite(lower[i]) && Number.isFinite(upper[i])) run.push(i);
    else flush();
  });
  flush();
  // where the band leaves the plot, walking out from x0 on each side: a triangle on the edge it crosses
  const centre = t.reduce((best, v, i) => (Math.abs(v) < Math.abs(t[best]) ? i : best), 0);
  for (const step of [-1, 1]) {
    for (let i = centre; i >= 0 && i < t.length; i += step) {
      const above = !(upper[i] <= yhi);
      const below = !(lower[i] >= ylo);
      if (!above && !below) continue;
      const cx = x(t[i]);
      const edge = above ? PAD.t : H - PAD.b;
      const tip = above ? edge - 1 : edge + 1;
      const foot = above ? edge + 7 : edge - 7;
      s += `<polygon points="${(cx - 5).toFixed(1)},${foot} ${(cx + 5).toFixed(1)},${foot} ${cx.toFixed(1)},${tip}" fill="${COLORS.band}" class="hope-band-clip"><title>the certified band leaves the plot here (t = ${esc(fmt(t[i]))}): it is wider than the plotted range beyond</title></polygon>`;
      break;
    }
  }
  const tr = band.tol_radius;
  if (Number.isFinite(tr) && tr > 0 && tr < t[t.length - 1]) {
    for (const tv of [-tr, tr]) s += `<line x1="${x(tv)}" y1="${PAD.t}" x2="${x(tv)}" y2="${H - PAD.b}" stroke="${COLORS.band}" stroke-dasharray="3 3" class="hope-band-radius"/>`;
  }
  return s;
}

// Network and the order-k polynomial along the line x0 + t d (the y range follows the network, the polynomial is
// clipped to it, so a diverging truncation does not flatten the picture), round ticks, the band if certified.
export function convergencePlot(line, order, compare, dirLabel, band) {
  const { t, net } = line;
  const poly = line.poly[Math.min(order, line.poly.length - 1)];
  const netOk = finite(net);
  const polyOk = finite(poly);
  if (netOk.length === 0 && polyOk.length === 0) {
    return message("along the line: no finite values", "the network and the polynomial are NaN or infinite all along this line: the point left the domain of a function the model applies");
  }
  const ref = netOk.length ? netOk : polyOk;
  let lo = Math.min(...ref);
  let hi = Math.max(...ref);
  const span = hi - lo || Math.abs(hi) || 1;
  lo -= 0.35 * span;
  hi += 0.35 * span;
  const x = scale(t[0], t[t.length - 1], PAD.l, W - PAD.r);
  const y = scale(lo, hi, H - PAD.b, PAD.t);
  const clip = nextId("clip");
  const defs = `<clipPath id="${clip}"><rect x="${PAD.l}" y="${PAD.t}" width="${W - PAD.l - PAD.r}" height="${H - PAD.t - PAD.b}"/></clipPath>`;
  const xs = niceTicks(t[0], t[t.length - 1], 4).map((v) => [v, fmt(v)]);
  const ys = niceTicks(lo, hi, 4).map((v) => [v, fmt(v)]);
  let s = defs + axes(x, y, xs, ys);
  s += `<line x1="${x(0)}" y1="${PAD.t}" x2="${x(0)}" y2="${H - PAD.b}" class="hope-grid hope-center"/>`;
  if (compare && compare.exact_poly) {
    const ex = compare.exact_poly[Math.min(order, compare.exact_poly.length - 1)];
    s += `<path d="${path(t, ex, x, y)}" class="hope-curve" stroke="${COLORS.exact}" stroke-dasharray="4 3" clip-path="url(#${clip})"/>`;
  }
  s += certifiedBand(band, line, order, x, y, lo, hi, clip);
  s += `<path d="${path(t, net, x, y)}" class="hope-curve hope-net" stroke="${COLORS.net}" clip-path="url(#${clip})"/>`;
  s += `<path d="${path(t, poly, x, y)}" class="hope-curve hope-poly" stroke="${COLORS.poly}" clip-path="url(#${clip})"/>`;
  // points where the network or the polynomial is not a number: marked on the axis, and counted apiece in the title
  const badNet = t.filter((_, i) => !Number.isFinite(net[i])).length;
  const badPoly = t.filter((_, i) => !Number.isFinite(poly[i])).length;
  t.forEach((tb, i) => {
    if (!Number.isFinite(net[i]) || !Number.isFinite(poly[i])) s += `<rect x="${(x(tb) - 1.5).toFixed(1)}" y="${H - PAD.b - 4}" width="3" height="4" fill="${COLORS.bad}" class="hope-nonfinite-mark"/>`;
  });
  const pieces = [["— network", COLORS.net], [`— order ${order}`, COLORS.poly]];
  if (compare && compare.exact_poly) pieces.push(["-- exact", COLORS.exact]);
  if (band && band.order === order && band.lower) pieces.push(["▒ certified band", COLORS.band]);
  s += legendLine(pieces);
  let title = "network and polynomial along the line";
  if (badNet || badPoly) {
    const counts = [];
    if (badNet) counts.push(`network at ${badNet} of ${plural(t.length, "point")}`);
    if (badPoly) counts.push(`order ${order} at ${badPoly} of ${plural(t.length, "point")}`);
    title = `NaN/∞ (grey marks): ${counts.join(", ")}`;
  }
  return frame(title, s, `t along ${dirLabel}`);
}

// max |network - P_k| over the line, for every order k (log scale); the current order is marked.
export function errorPlot(line, order) {
  // over the points where both are numbers; an order with none is NaN (no dot)
  const errs = line.poly.map((row) => {
    const d = finite(row.map((v, i) => Math.abs(v - line.net[i])));
    return d.length ? Math.max(...d) : NaN;
  });
  if (finite(errs).length === 0) {
    return message("max |network − P_k| on the line: none", "no order has a finite error on this line: the network or the polynomial is NaN or infinite there (the point left the domain of a function the model applies)");
  }
  const logs = errs.map((e) => (Number.isFinite(e) ? Math.log10(Math.max(e, 1e-16)) : NaN));
  const okLogs = finite(logs);
  const lo = Math.floor(Math.min(...okLogs));
  const hi = Math.ceil(Math.max(...okLogs)) + (Math.ceil(Math.max(...okLogs)) === Math.floor(Math.min(...okLogs)) ? 1 : 0);
  const K = errs.length - 1;
  const x = scale(0, Math.max(K, 1), PAD.l, W - PAD.r);
  const y = scale(lo, hi, H - PAD.b, PAD.t);
  const step = Math.max(1, Math.ceil((hi - lo) / 5));
  const ys = [];
  for (let v = lo; v <= hi; v += step) ys.push([v, `1e${v}`]);
  const xs = [];
  for (let k = 0; k <= K; k += K > 12 ? 2 : 1) xs.push([k, String(k)]);
  let s = axes(x, y, xs, ys);
  s += `<path d="${path(errs.map((_, k) => k), logs, x, y)}" class="hope-curve" stroke="${COLORS.poly}"/>`;
  logs.forEach((v, k) => {
    if (!Number.isFinite(v)) return;
    const cls = k === order ? "hope-dot hope-dot-current" : "hope-dot";
    s += `<circle cx="${x(k)}" cy="${y(v)}" r="${k === order ? 4.5 : 2.5}" class="${cls}"><title>order ${k}: max error ${esc(fmt(errs[k]))}</title></circle>`;
  });
  return frame(`max |network − P_k| on the line; order ${order}: ${fmt(errs[Math.min(order, K)])}`, s, "order k");
}

// |coefficient| of the shown terms, log scale, coloured by sign; bar i carries data-term=i for hover linking.
// A NaN or infinite coefficient is a full-height grey bar. Under the bars each term's name (every bar while they are
// wide enough for a label, else every few); the line under the title names the hovered bar's term and coefficient.
export function barChart(terms, idx, labels, highlight) {
  const pad = BARS_PAD;
  const base = BARS_H - pad.b;
  const shown = idx.slice(0, 40);
  if (shown.length === 0) return frame("coefficients", "", "", BARS_H);
  const logs = shown.map((i) => Math.log10(Math.abs(terms.c[i])));
  const okLogs = finite(logs);
  const hi = okLogs.length ? Math.ceil(Math.max(...okLogs)) : 1;
  const lo = okLogs.length ? Math.min(Math.floor(Math.min(...okLogs)), hi - 1) : 0;
  const y = scale(lo, hi, base, pad.t);
  const bw = (W - pad.l - pad.r) / shown.length;
  const ys = [];
  const step = Math.max(1, Math.ceil((hi - lo) / 5));
  for (let v = lo; v <= hi; v += step) ys.push([v, `1e${v}`]);
  let s = axes((v) => v, y, [], ys, pad, BARS_H);
  const every = Math.max(1, Math.ceil(13 / bw)); // a label needs about 13 units across (rotated text, 12 units)
  shown.forEach((i, k) => {
    const ok = Number.isFinite(logs[k]);
    const top = ok ? y(logs[k]) : pad.t;
    const fill = i === highlight ? COLORS.hi : !ok ? COLORS.bad : terms.c[i] < 0 ? COLORS.neg : COLORS.pos;
    const text = barLabel(labels[k], terms.c[i]);
    const left = pad.l + k * bw;
    s += `<rect x="${(left + 0.5).toFixed(1)}" y="${top.toFixed(1)}" width="${Math.max(bw - 1, 1).toFixed(1)}" height="${(base - top).toFixed(1)}" fill="${fill}" class="hope-bar${ok ? "" : " hope-bar-nonfinite"}" data-term="${esc(i)}" data-label="${esc(text)}"><title>${esc(text)}</title></rect>`;
    if (k % every === 0) {
      const name = labels[k].length > 10 ? `${labels[k].slice(0, 9)}…` : labels[k];
      const cx = (left + bw / 2 + 4).toFixed(1);
      s += `<text x="${cx}" y="${base + 6}" transform="rotate(-60 ${cx} ${base + 6})" text-anchor="end" class="hope-tick hope-bar-tick" data-term="${esc(i)}">${esc(name)}</text>`;
    }
  });
  // the line under the title names the hovered bar's term
  const h = shown.indexOf(highlight);
  const label = h >= 0 ? barLabel(labels[h], terms.c[highlight]) : BAR_HINT;
  s += `<text x="4" y="28" class="hope-legend hope-bar-label">${esc(label)}</text>`;
  const more = idx.length > shown.length ? ` (first ${shown.length} of ${idx.length})` : "";
  return frame(`|coefficient|: red +, blue −${more}`, s, "", BARS_H);
}

export function barLabel(label, c) {
  return `${label}: c = ${fmt(c)}`;
}

// A diverging colour map, -1 .. 0 .. 1 -> blue .. white .. red (RdBu_r, as the notebooks' maps), opaque: the input
// image has its own panel. A NaN / infinite value is grey-green.
const STOPS = [[-1, [33, 102, 172]], [-0.5, [103, 169, 207]], [0, [247, 247, 247]], [0.5, [239, 138, 98]], [1, [178, 24, 43]]];
export function diverging(v) {
  if (!Number.isFinite(v)) return [110, 140, 90, 255];
  const u = Math.max(-1, Math.min(1, v));
  let k = 0;
  while (k < STOPS.length - 2 && u > STOPS[k + 1][0]) k++;
  const [[a, ca], [b, cb]] = [STOPS[k], STOPS[k + 1]];
  const f = (u - a) / (b - a);
  return [...ca.map((c, j) => Math.round(c + f * (cb[j] - c))), 255];
}

// The colour bar of the map as SVG (small rects, no gradient ids), with its numeric range -max .. 0 .. +max.
export function colorBar(max, label) {
  const w = 220;
  const steps = 44;
  let s = "";
  for (let k = 0; k < steps; k++) {
    const [r, g, b] = diverging(-1 + (2 * (k + 0.5)) / steps);
    s += `<rect x="${(10 + (k * w) / steps).toFixed(1)}" y="4" width="${(w / steps + 0.6).toFixed(1)}" height="12" fill="rgb(${r},${g},${b})"/>`;
  }
  s += `<rect x="10" y="4" width="${w}" height="12" fill="none" class="hope-axisline"/>`;
  const ticks = [[10, `−${fmt(max)}`, "start"], [10 + w / 2, "0", "middle"], [10 + w, `+${fmt(max)}`, "end"]];
  for (const [x, text, anchor] of ticks) s += `<text x="${x}" y="30" text-anchor="${anchor}" class="hope-tick hope-colorbar-tick">${esc(text)}</text>`;
  s += `<text x="${16 + w}" y="14" class="hope-tick">${esc(label)}</text>`;
  return `<svg viewBox="0 0 ${w + 80} 34" width="${w + 80}" height="34" class="hope-colorbar" xmlns="http://www.w3.org/2000/svg">${s}</svg>`;
}

// Pixel attribution from the unmixed terms: per pixel the sum over orders j <= k of c_{j e_i} r^j ("contribution"),
// or the degree-k coefficient alone ("coefficient"); channels are summed.
export function heatValues(heat, order, kind) {
  const { n, rows, cols, channels, coef, radius } = heat;
  const hw = rows * cols;
  const out = new Float64Array(hw);
  const K = Math.min(order, coef.length);
  for (let i = 0; i < n; i++) {
    let v = 0;
    if (kind === "coefficient") v = K >= 1 ? coef[K - 1][i] : 0;
    else for (let j = 1; j <= K; j++) v += coef[j - 1][i] * radius ** j;
    out[channels > 1 ? i % hw : i] += v;
  }
  return out;
}

function pixels(rows, cols, fill) {
  const tmp = document.createElement("canvas");
  tmp.width = cols;
  tmp.height = rows;
  const ctx = tmp.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) img.data.set(fill(i), 4 * i);
  ctx.putImageData(img, 0, 0);
  return tmp;
}

// The cell size of a heat map drawn at about `size` px: whole pixels per cell.
export function cellSize(heat, size = 260) {
  return Math.max(1, Math.floor(size / Math.max(heat.rows, heat.cols)));
}

// The attribution map: a symmetric scale, max |value| = full colour, opaque; `mark`: a pixel to outline (the hovered
// one, or -1). Returns { max, nonfinite } (max over the finite values, count of NaN / infinite pixels).
export function drawHeat(canvas, heat, values, mark = -1) {
  const { rows, cols } = heat;
  const cell = cellSize(heat);
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  let m = 0;
  let nonfinite = 0;
  for (const v of values) {
    if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
    else nonfinite += 1;
  }
  const map = pixels(rows, cols, (i) => diverging(Number.isFinite(values[i]) ? (m > 0 ? values[i] / m : 0) : NaN));
  ctx.drawImage(map, 0, 0, canvas.width, canvas.height);
  if (mark >= 0 && mark < rows * cols && ctx.strokeRect) {
    ctx.strokeStyle = "#111";
    ctx.lineWidth = Math.max(1, cell / 8);
    ctx.strokeRect((mark % cols) * cell + 0.5, Math.floor(mark / cols) * cell + 0.5, cell - 1, cell - 1);
  }
  return { max: m, nonfinite };
}

// The input image in grey, its own min .. max (black .. white), drawn small beside the map. Returns { lo, hi } or
// null when the kernel sent no image.
export function drawImage(canvas, heat, size = 120) {
  const { rows, cols } = heat;
  const image = heat.image;
  if (!image || image.length !== rows * cols) return null;
  const cell = Math.max(1, Math.floor(size / Math.max(rows, cols)));
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  const ok = finite(image);
  const lo = ok.length ? Math.min(...ok) : 0;
  const hi = ok.length ? Math.max(...ok) : 0;
  const span = hi - lo || 1;
  const grey = pixels(rows, cols, (i) => {
    const g = Number.isFinite(image[i]) ? Math.round(255 * ((image[i] - lo) / span)) : 0;
    return [g, g, g, 255];
  });
  ctx.drawImage(grey, 0, 0, canvas.width, canvas.height);
  return { lo, hi };
}

// What a hovered pixel says: its name, input value, map value, first derivative (channels summed) and rank by
// |map value| among the finite pixels (1 = the largest).
export function pixelInfo(heat, values, i, names) {
  const { rows, cols, channels, coef } = heat;
  const hw = rows * cols;
  const r = Math.floor(i / cols);
  const c = i % cols;
  const name = channels === 1 && names && names[i] ? names[i] : `p[${r}][${c}]`;
  let derivative = NaN;
  if (coef.length) {
    derivative = 0;
    for (let k = 0; k < channels; k++) derivative += coef[0][k * hw + i];
  }
  const v = values[i];
  let rank = 1;
  let count = 0;
  for (const w of values) {
    if (!Number.isFinite(w)) continue;
    count += 1;
    if (Math.abs(w) > Math.abs(v)) rank += 1;
  }
  const image = heat.image && heat.image.length === hw ? heat.image[i] : NaN;
  return { name, row: r, col: c, value: v, derivative, rank: Number.isFinite(v) ? rank : NaN, count, image, summed: channels > 1 };
}
