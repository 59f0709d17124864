// Generated from hope_widgets/contract.schema.json by js/contract-types.mjs: do not edit. Rewrite it with
// `node js/contract-types.mjs` after a change of the schema (js/check-bundle.sh fails while it is stale).

/** an integer (JSON Schema `integer`) */
export type Int = number;

/** The synced state of HopePanel, the whole contract between the kernel (hope_widgets/panel.py) and the browser (js/src): eight settings the browser (or Python) sets, one view the kernel renders into, one status. Written once, here: Python validates view and status against it (hope_widgets/contract.py), js/src/contract.d.ts is generated from it (node js/contract-types.mjs). */
export interface HopePanelState {
  /** the order shown (0..max_order); the browser filters the term records by it */
  order: Int;
  /** the expansion point, one value per variable (finite) */
  point: number[];
  /** the selected output element */
  output: Int;
  /** the method asked for */
  method: Method;
  /** terms with |c| <= threshold are hidden (never a NaN / infinite one) */
  threshold: number;
  /** term order of the formula */
  sort: "degree" | "magnitude";
  /** the plotted line: -1 the diagonal, i >= 0 variable i */
  direction: Int;
  /** > 0: show the certified band and the radius where |f - P| <= certify_tol; 0: off */
  certify_tol: number;
  view: View;
  status: Status;
}

/** the settings: the synced traits the browser (or Python) sets */
export type Setting = "order" | "point" | "output" | "method" | "threshold" | "sort" | "direction" | "certify_tol";

export type Settings = Pick<HopePanelState, Setting>;

/** a finite number, or a non-finite one as the string "NaN", "Infinity" or "-Infinity" (JSON has none: payloads.sanitize encodes them, decode in js/src/decode.js reads them back) */
export type Real = number | "NaN" | "Infinity" | "-Infinity";

export type Method = "exact" | "hope";

/** the payload of a part not shown */
export type Empty = Record<string, never>;

/** why there is no payload */
export interface Failure {
  error: string;
}

/** everything the browser renders, sent as one value: the header, the point controls' layout and the payloads of the one expansion shown */
export interface View {
  /** the model's name, shown in the header */
  title: string;
  /** the order the panel expanded to */
  max_order: Int;
  /** variable names */
  names: string[];
  /** variable names in LaTeX */
  names_tex: string[];
  /** [low, high] of each point control */
  bounds: [Real, Real][];
  /** number of output elements */
  n_outputs: Int;
  /** line plots (few inputs) or a heat map (image-like or many inputs) */
  mode: "line" | "heat";
  term_records: TermRecords;
  /** line mode: the network and its truncations along a line, or why there is no plot; {} in heat mode */
  line: Empty | Line | Failure;
  /** heat mode: the unmixed coefficients per pixel; {} in line mode */
  heat: Empty | Heat;
  /** method='hope' only: how far the paper's rule is from the exact expansion, or why there is no comparison; {} for 'exact' */
  compare: Empty | Compare | Failure;
  result: Result;
  /** certify_tol > 0, line mode, method 'exact': the certified band at the shown order, or why there is none; {} when off */
  band: Empty | Band | BandFailure;
}

/** what the kernel is doing and what went wrong, shown as lines of text */
export interface Status {
  /** an expansion is running */
  busy: boolean;
  /** why the last recompute failed (the last good result stays), or '' */
  error: string;
  /** the expansion's warnings, or '' */
  notice: string;
  /** which coefficients are NaN / infinite and why, or '' */
  warning: string;
}

/** every nonzero term of the selected output at max_order, columnar (one entry per term in each column), in basis order; columns of one length: deg, c, d, tex, alpha */
export interface TermRecords {
  /** degree */
  deg: Int[];
  /** coefficient */
  c: Real[];
  /** derivative d^alpha f(x0) */
  d: Real[];
  /** LaTeX body, without the sign, as TaylorPolynomial.latex writes it */
  tex: string[];
  /** sparse multi-index [[variable, power], ...] */
  alpha: [Int, Int][][];
}

/** the plotted line: t along it, the network at each t, row k = the order-k truncation at each t; columns of one length: t, net */
export interface Line {
  t: Real[];
  net: Real[];
  poly: Real[][];
  /** -1 the diagonal, i >= 0 variable i */
  direction: Int;
}

/** the pixel grid, the input's shape (one point, without the batch axis), coef[j-1][i] = unmixed coefficient c_{j e_i}, the line radius and the input image (per pixel, channels averaged) */
export interface Heat {
  rows: Int;
  cols: Int;
  channels: Int;
  n: Int;
  /** the shape of one input (the batch axis left out) */
  shape: Int[];
  coef: Real[][];
  radius: Real;
  image?: Real[];
}

/** relative coefficient difference to the exact expansion per order (null where the exact one is 0), and the exact truncations on the line */
export interface Compare {
  relative: (Real | null)[];
  exact_poly?: Real[][];
}

/** the expansion shown: its point, method, seconds, timing line, basis size and kind */
export interface Result {
  point: Real[];
  method: Method;
  seconds: Real;
  timing: string;
  size: Int;
  kind: "total" | "pure";
}

/** the certified band at the shown order, a funnel along the line: lower <= f(t) <= upper at every t of the line (the intersection over k <= order of P_k(t) +- the bound certified on the smallest level |t| <= radii[j] holding t); widths[j] bounds |f - P_order| for |t| <= radii[j]; remainder: the one-box bound over the whole line; tol_radius: the largest |t| with |f - P_order| <= tol certified (null: not asked) and reason: why it is 0, with the fix ('' otherwise); the box half-width, the kinks crossed, the header line; columns of one length: lower, upper */
export interface Band {
  /** (sent for Python users and tests; the browser does not read it) */
  remainder: Real;
  /** (sent for Python users and tests; the browser does not read it) */
  box: Real;
  /** (sent for Python users and tests; the browser does not read it) */
  tol: Real;
  tol_radius: Real | null;
  /** (sent for Python users and tests; the browser does not read it) */
  reason: string;
  /** (sent for Python users and tests; the browser does not read it) */
  crossings: { [key: string]: Int };
  radii: Real[];
  /** (sent for Python users and tests; the browser does not read it) */
  widths: Real[];
  /** at each t of the line */
  lower: Real[];
  /** at each t of the line */
  upper: Real[];
  order: Int;
  text: string;
}

/** why there is no certified band at this order, in words */
export interface BandFailure {
  /** (sent for Python users and tests; the browser does not read it) */
  error: string;
  order: Int;
  text: string;
}
