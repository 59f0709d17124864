// The polynomial shown: which terms, in which order, and their LaTeX -- the same rules as the engine's
// TaylorPolynomial.terms() / .latex(), applied to the term records the kernel sent once per expansion.
import katex from "katex";

// Indices of the terms kept at `order` above `threshold`, sorted as terms(sort=...) sorts them. The records come in
// basis order and Array.prototype.sort is stable, exactly like Python's sort, so ties fall the same way. A NaN or
// infinite coefficient is always kept, whatever the threshold: it is never hidden.
export function visibleTerms(terms, order, threshold, sort) {
  const idx = [];
  const n = terms.c ? terms.c.length : 0;
  for (let i = 0; i < n; i++) {
    const c = terms.c[i];
    if (terms.deg[i] <= order && c !== 0 && (!Number.isFinite(c) || Math.abs(c) > threshold)) idx.push(i);
  }
  const mag = (i) => Math.abs(terms.c[i]);
  if (sort === "magnitude") idx.sort((a, b) => mag(b) - mag(a));
  else idx.sort((a, b) => terms.deg[a] - terms.deg[b] || mag(b) - mag(a));
  return idx;
}

// The signed LaTeX piece of the term at position `pos` of the formula (the first one carries no "+").
export function termPiece(terms, i, pos) {
  const c = terms.c[i];
  const sign = c < 0 ? "-" : pos === 0 ? "" : "+";
  return sign ? `${sign} ${terms.tex[i]}` : terms.tex[i];
}

// The whole formula as TaylorPolynomial.latex(threshold=..., sort=...) writes it.
export function formulaLatex(terms, idx) {
  if (idx.length === 0) return "0";
  return idx.map((i, pos) => termPiece(terms, i, pos)).join(" ");
}

// d^a f / dx^a as LaTeX, from a sparse multi-index [[variable, power], ...].
export function derivativeLatex(alpha, namesTex) {
  const k = alpha.reduce((s, [, e]) => s + e, 0);
  if (k === 0) return "f(x_0)";
  const top = k === 1 ? "\\partial f" : `\\partial^{${k}} f`;
  const bottom = alpha
    .map(([v, e]) => `\\partial ${namesTex[v]}${e > 1 ? `^{${e}}` : ""}`)
    .join("\\,");
  return `\\frac{${top}}{${bottom}}(x_0)`;
}

// Plain-text monomial for labels: x1^2*x2 (text: whoever puts it into markup escapes it).
export function monomialText(alpha, names) {
  if (alpha.length === 0) return "1";
  return alpha.map(([v, e]) => (e > 1 ? `${names[v]}^${e}` : names[v])).join("·");
}

const cache = new Map();

// KaTeX HTML of a LaTeX string, memoised: a slider move re-uses the pieces it has already typeset. The LaTeX holds the
// variable names (any dict key); KaTeX escapes every character it writes into its HTML (text and attributes, also
// the raw TeX of a piece it cannot parse, shown as a katex-error), and trust: false keeps \href, \htmlClass and
// the like from writing links or attributes, so a name can never become markup.
export function typeset(tex) {
  let html = cache.get(tex);
  if (html === undefined) {
    html = katex.renderToString(tex, { throwOnError: false, output: "htmlAndMathml", trust: false });
    if (cache.size > 20000) cache.clear();
    cache.set(tex, html);
  }
  return html;
}
