// Build the panel's ESM and CSS into ../hope_widgets/static/ (or into the folder given as the first argument).
// Deterministic: pinned esbuild, no source maps, no timestamps -- the same sources give the same bytes, which is
// what check-bundle.sh relies on to tell a stale committed bundle.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(process.argv[2] ?? path.join(here, "..", "hope_widgets", "static"));

await build({
  entryPoints: { widget: path.join(here, "src", "index.js") },
  outdir,
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
  // KaTeX's fonts: woff2 inlined (every browser JupyterLab supports reads it), the older formats dropped
  loader: { ".woff2": "dataurl", ".woff": "empty", ".ttf": "empty" },
});
console.log(`built ${path.join(outdir, "widget.js")} and widget.css`);
