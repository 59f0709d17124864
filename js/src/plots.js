// Plots as SVG strings (and one canvas for heat maps), drawn from data the kernel sent once: cheap to redraw on
// every slider move.

const W = 320;
const H = 200;
const PAD = { l: 46, r: 10, t: 20, b: 30 };
export const COLORS = { net: "#222", poly: "#d2691e", exact: "#3b6fb6", pos: "#3b6fb6", neg: "#c0392b", hi: "#f0a500" };

function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

function scale(lo, hi, a, b) {
  const d = hi - lo || 1;
  return (v) => a + ((v - lo) / d) * (b - a);
}

function frame(title, inner, xLabel) {
  return (
    `<svg viewBox="0 0 ${W} ${H}" class="hope-svg" xmlns="http://www.w3.org/2000/svg">` +
    `<text x="${PAD.l}" y="13" class="hope-plot-title">${esc(title)}</text>${inner}` +
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
export function convergencePlot(line, order, compare, dirLabel) {
  const { t, net } = line;
  const poly = line.poly[Math.min(order, line.poly.length - 1)];
  let lo = Math.min(...net);
  let hi = Math.max(...net);
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
  s += `<path d="${path(t, net, x, y)}" class="hope-curve hope-net" stroke="${COLORS.net}" clip-path="url(#hope-clip)"/>`;
  s += `<path d="${path(t, poly, x, y)}" class="hope-curve hope-poly" stroke="${COLORS.poly}" clip-path="url(#hope-clip)"/>`;
  let legend = `<tspan fill="${COLORS.net}">— network</tspan>  <tspan fill="${COLORS.poly}">— order ${order}</tspan>`;
  if (compare && compare.exact_poly) legend += `  <tspan fill="${COLORS.exact}">-- exact</tspan>`;
  s += `<text x="${W - PAD.r}" y="13" text-anchor="end" class="hope-legend">${legend}</text>`;
  return frame("along the line", s, `t along ${dirLabel}`);
}

// max |network - P_k| over the line, for every order k (log scale); the current order is marked.
export function errorPlot(line, order) {
  const errs = line.poly.map((row) => Math.max(...row.map((v, i) => Math.abs(v - line.net[i]))));
  const logs = errs.map((e) => Math.log10(Math.max(e, 1e-16)));
  const lo = Math.floor(Math.min(...logs));
  const hi = Math.ceil(Math.max(...logs)) + (Math.ceil(Math.max(...logs)) === Math.floor(Math.min(...logs)) ? 1 : 0);
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
    const cls = k === order ? "hope-dot hope-dot-current" : "hope-dot";
    s += `<circle cx="${x(k)}" cy="${y(v)}" r="${k === order ? 4.5 : 2.5}" class="${cls}"><title>order ${k}: max error ${fmt(errs[k])}</title></circle>`;
  });
  return frame(`max |network − P_k| on the line (order ${order}: ${fmt(errs[Math.min(order, K)])})`, s, "order k");
}

// |coefficient| of the shown terms, log scale, coloured by sign; bar i carries data-term=i for hover linking.
export function barChart(terms, idx, labels, highlight) {
  const shown = idx.slice(0, 40);
  if (shown.length === 0) return frame("coefficients", "", "");
  const logs = shown.map((i) => Math.log10(Math.abs(terms.c[i])));
  const hi = Math.ceil(Math.max(...logs));
  const lo = Math.min(Math.floor(Math.min(...logs)), hi - 1);
  const y = scale(lo, hi, H - PAD.b, PAD.t);
  const bw = (W - PAD.l - PAD.r) / shown.length;
  const ys = [];
  const step = Math.max(1, Math.ceil((hi - lo) / 5));
  for (let v = lo; v <= hi; v += step) ys.push([v, `1e${v}`]);
  let s = axes((v) => v, y, [], ys);
  shown.forEach((i, k) => {
    const top = y(logs[k]);
    const fill = i === highlight ? COLORS.hi : terms.c[i] < 0 ? COLORS.neg : COLORS.pos;
    s += `<rect x="${(PAD.l + k * bw + 0.5).toFixed(1)}" y="${top.toFixed(1)}" width="${Math.max(bw - 1, 1).toFixed(1)}" height="${(H - PAD.b - top).toFixed(1)}" fill="${fill}" class="hope-bar" data-term="${i}"><title>${esc(labels[k])}: ${terms.c[i]}</title></rect>`;
  });
  const more = idx.length > shown.length ? ` (first ${shown.length} of ${idx.length})` : "";
  return frame(`|coefficient|, blue +, red −${more}`, s, "terms, in formula order");
}

function diverging(v) {
  // -1 .. 1 -> red .. white .. blue
  const a = Math.min(1, Math.abs(v));
  const [r, g, b] = v < 0 ? [192, 57, 43] : [59, 111, 182];
  const mix = (c) => Math.round(255 + (c - 255) * a);
  return [mix(r), mix(g), mix(b)];
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

export function drawHeat(canvas, heat, values) {
  const { rows, cols } = heat;
  const size = 260;
  const cell = Math.max(1, Math.floor(size / Math.max(rows, cols)));
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const ctx = canvas.getContext("2d");
  let m = 0;
  for (const v of values) m = Math.max(m, Math.abs(v));
  const img = ctx.createImageData(cols, rows);
  values.forEach((v, i) => {
    const [r, g, b] = diverging(m > 0 ? v / m : 0);
    img.data.set([r, g, b, 255], 4 * i);
  });
  const tmp = document.createElement("canvas");
  tmp.width = cols;
  tmp.height = rows;
  tmp.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
  return m;
}
