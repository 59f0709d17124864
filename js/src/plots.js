// Plots as SVG strings (and one canvas for heat maps), drawn from data the kernel sent once: cheap to redraw on
// every slider move.
import { escapeHtml } from "./escape.js";

const W = 320;
const H = 200;
const PAD = { l: 46, r: 10, t: 20, b: 30 };
// Signs as in the notebooks' maps (matplotlib's RdBu_r): red positive, blue negative, in the bars and the heat map.
export const COLORS = { net: "#222", poly: "#d2691e", exact: "#6a3d9a", pos: "#c0392b", neg: "#2f6db5", hi: "#f0a500", bad: "#7a7a7a", band: "#2e8b57" };
const TITLE_CHARS = 52; // about what fits on one line of a plot at the title's font size
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
    if ((cur + " " + w).trim().length > 50) {
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

function frame(title, inner, xLabel) {
  return (
    `<svg viewBox="0 0 ${W} ${H}" class="hope-svg" xmlns="http://www.w3.org/2000/svg">` +
    `${titleText(title)}${inner}` +
    (xLabel ? `<text x="${(PAD.l + W - PAD.r) / 2}" y="${H - 3}" text-anchor="middle" class="hope-axis">${esc(xLabel)}</text>` : "") +
    `</svg>`
  );
}

function axes(x, y, xs, ys) {
  let s = `<line x1="${PAD.l}" y1="${H - PAD.b}" x2="${W - PAD.r}" y2="${H - PAD.b}" class="hope-axisline"/>`;
  s += `<line x1="${PAD.l}" y1="${PAD.t}" x2="${PAD.l}" y2="${H - PAD.b}" class="hope-axisline"/>`;
  for (const [v, label] of xs) {
    s += `<text x="${x(v)}" y="${H - PAD.b + 12}" text-anchor="middle" class="hope-tick">${esc(label)}</text>`;
  }
  for (const [v, label] of ys) {
    s += `<text x="${PAD.l - 4}" y="${y(v) + 3}" text-anchor="end" class="hope-tick">${esc(label)}</text>`;
    s += `<line x1="${PAD.l}" y1="${y(v)}" x2="${W - PAD.r}" y2="${y(v)}" class="hope-grid"/>`;
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

// Network and the order-k polynomial along the line x0 + t d (the y range follows the network, the polynomial is
// clipped to it, so a diverging truncation does not flatten the picture).
// The certified band P_k(t) +- R of the order it was certified at (a guarantee over the plotted segment), and the
// radius within which R stays below the tolerance (dashed verticals).
function certifiedBand(band, line, order, x, y) {
  if (!band || band.order !== order || !Number.isFinite(band.remainder)) return "";
  const poly = line.poly[Math.min(order, line.poly.length - 1)];
  const r = band.remainder;
  const upper = line.t.map((tv, i) => `${x(tv).toFixed(1)},${y(poly[i] + r).toFixed(1)}`);
  const lower = line.t.map((tv, i) => `${x(tv).toFixed(1)},${y(poly[i] - r).toFixed(1)}`).reverse();
  let s = `<polygon points="${upper.concat(lower).join(" ")}" fill="${COLORS.band}" fill-opacity="0.22" stroke="none" class="hope-band" clip-path="url(#hope-clip)"><title>certified: |f − P| ≤ ${esc(fmt(r))} on this segment</title></polygon>`;
  const tr = band.tol_radius;
  if (Number.isFinite(tr) && tr < line.t[line.t.length - 1]) {
    for (const tv of [-tr, tr]) s += `<line x1="${x(tv)}" y1="${PAD.t}" x2="${x(tv)}" y2="${H - PAD.b}" stroke="${COLORS.band}" stroke-dasharray="3 3" class="hope-band-radius"/>`;
  }
  return s;
}

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
  const clip = `<clipPath id="hope-clip"><rect x="${PAD.l}" y="${PAD.t}" width="${W - PAD.l - PAD.r}" height="${H - PAD.t - PAD.b}"/></clipPath>`;
  const xs = [t[0], 0, t[t.length - 1]].map((v) => [v, fmt(v)]);
  const ys = [lo + 0.1 * (hi - lo), (lo + hi) / 2, hi - 0.1 * (hi - lo)].map((v) => [v, fmt(v)]);
  let s = clip + axes(x, y, xs, ys);
  s += `<line x1="${x(0)}" y1="${PAD.t}" x2="${x(0)}" y2="${H - PAD.b}" class="hope-grid hope-center"/>`;
  if (compare && compare.exact_poly) {
    const ex = compare.exact_poly[Math.min(order, compare.exact_poly.length - 1)];
    s += `<path d="${path(t, ex, x, y)}" class="hope-curve" stroke="${COLORS.exact}" stroke-dasharray="4 3" clip-path="url(#hope-clip)"/>`;
  }
  s += certifiedBand(band, line, order, x, y);
  s += `<path d="${path(t, net, x, y)}" class="hope-curve hope-net" stroke="${COLORS.net}" clip-path="url(#hope-clip)"/>`;
  s += `<path d="${path(t, poly, x, y)}" class="hope-curve hope-poly" stroke="${COLORS.poly}" clip-path="url(#hope-clip)"/>`;
  // points where the network or the polynomial is not a number: marked on the axis, and said in the title
  const bad = t.filter((_, i) => !Number.isFinite(net[i]) || !Number.isFinite(poly[i]));
  for (const tb of bad) s += `<rect x="${(x(tb) - 1.5).toFixed(1)}" y="${H - PAD.b - 4}" width="3" height="4" fill="${COLORS.bad}" class="hope-nonfinite-mark"/>`;
  let legend = `<tspan fill="${COLORS.net}">— network</tspan>  <tspan fill="${COLORS.poly}">— order ${esc(order)}</tspan>`;
  if (compare && compare.exact_poly) legend += `  <tspan fill="${COLORS.exact}">-- exact</tspan>`;
  if (band && band.order === order && Number.isFinite(band.remainder)) legend += `  <tspan fill="${COLORS.band}">▒ certified ±${esc(fmt(band.remainder))}</tspan>`;
  s += `<text x="${W - PAD.r}" y="${PAD.t + 10}" text-anchor="end" class="hope-legend">${legend}</text>`;
  const title = bad.length ? `along the line (NaN/∞ at ${bad.length} of ${t.length} points: grey marks)` : "network and polynomial along the line";
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
// A NaN or infinite coefficient is a full-height grey bar. Hovering a bar names its term (the label line at the top).
export function barChart(terms, idx, labels, highlight) {
  const shown = idx.slice(0, 40);
  if (shown.length === 0) return frame("coefficients", "", "");
  const logs = shown.map((i) => Math.log10(Math.abs(terms.c[i])));
  const okLogs = finite(logs);
  const hi = okLogs.length ? Math.ceil(Math.max(...okLogs)) : 1;
  const lo = okLogs.length ? Math.min(Math.floor(Math.min(...okLogs)), hi - 1) : 0;
  const y = scale(lo, hi, H - PAD.b, PAD.t);
  const bw = (W - PAD.l - PAD.r) / shown.length;
  const ys = [];
  const step = Math.max(1, Math.ceil((hi - lo) / 5));
  for (let v = lo; v <= hi; v += step) ys.push([v, `1e${v}`]);
  let s = axes((v) => v, y, [], ys);
  shown.forEach((i, k) => {
    const ok = Number.isFinite(logs[k]);
    const top = ok ? y(logs[k]) : PAD.t;
    const fill = i === highlight ? COLORS.hi : !ok ? COLORS.bad : terms.c[i] < 0 ? COLORS.neg : COLORS.pos;
    const text = barLabel(labels[k], terms.c[i]);
    s += `<rect x="${(PAD.l + k * bw + 0.5).toFixed(1)}" y="${top.toFixed(1)}" width="${Math.max(bw - 1, 1).toFixed(1)}" height="${(H - PAD.b - top).toFixed(1)}" fill="${fill}" class="hope-bar${ok ? "" : " hope-bar-nonfinite"}" data-term="${esc(i)}" data-label="${esc(text)}"><title>${esc(text)}</title></rect>`;
  });
  // the x-axis label names the hovered bar's term
  const h = shown.indexOf(highlight);
  const label = h >= 0 ? barLabel(labels[h], terms.c[highlight]) : BAR_HINT;
  s += `<text x="${(PAD.l + W - PAD.r) / 2}" y="${H - 3}" text-anchor="middle" class="hope-axis hope-bar-label">${esc(label)}</text>`;
  const more = idx.length > shown.length ? ` (first ${shown.length} of ${idx.length})` : "";
  return frame(`|coefficient|: red +, blue −${more}`, s, "");
}

export function barLabel(label, c) {
  return `${label}: c = ${fmt(c)}`;
}

// -1 .. 1 -> blue .. transparent .. red (RdBu_r, as the notebooks' maps): the input image shows through where the
// attribution is small. A NaN / infinite value is an opaque grey-green pixel.
export function diverging(v) {
  if (!Number.isFinite(v)) return [110, 140, 90, 255];
  const a = Math.min(1, Math.abs(v));
  const [r, g, b] = v < 0 ? [47, 109, 181] : [192, 57, 43];
  return [r, g, b, Math.round(255 * Math.sqrt(a) * 0.9)];
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

// The input image in grey (its own min..max), and the attribution over it: symmetric scale, max |value| = full
// colour. Returns { max, nonfinite } (max over the finite values, count of NaN / infinite pixels).
export function drawHeat(canvas, heat, values) {
  const { rows, cols } = heat;
  const size = 260;
  const cell = Math.max(1, Math.floor(size / Math.max(rows, cols)));
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const image = heat.image;
  if (image && image.length === rows * cols) {
    const ok = finite(image);
    const lo = ok.length ? Math.min(...ok) : 0;
    const span = ok.length ? Math.max(...ok) - lo || 1 : 1;
    const under = pixels(rows, cols, (i) => {
      const g = Number.isFinite(image[i]) ? Math.round(40 + 175 * ((image[i] - lo) / span)) : 0;
      return [g, g, g, 255];
    });
    ctx.drawImage(under, 0, 0, canvas.width, canvas.height);
  }
  let m = 0;
  let nonfinite = 0;
  for (const v of values) {
    if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
    else nonfinite += 1;
  }
  const over = pixels(rows, cols, (i) => diverging(Number.isFinite(values[i]) ? (m > 0 ? values[i] / m : 0) : NaN));
  ctx.drawImage(over, 0, 0, canvas.width, canvas.height);
  return { max: m, nonfinite };
}
