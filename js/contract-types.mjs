// Generate src/contract.d.ts -- the front end's types of the panel's synced state -- from the one description of it,
// hope_widgets/contract.schema.json (JSON Schema). `node contract-types.mjs` rewrites the file; `--check` exits 1
// while it is stale (check-bundle.sh runs it). Deterministic: the same schema gives the same bytes.
// Covers the JSON Schema the contract uses: $ref to $defs, enum, anyOf / oneOf, type (integer, number, string,
// boolean, null, array with items or prefixItems, object with properties / required / additionalProperties).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const SCHEMA_PATH = path.join(here, "..", "hope_widgets", "contract.schema.json");
const OUT_PATH = path.join(here, "src", "contract.d.ts");

const comment = (text, pad) => (text ? `${pad}/** ${text.replace(/\*\//g, "* /")} */\n` : "");

function ts(s, pad = "") {
  if (s === false) return "never";
  if (s.$ref) return s.$ref.split("/").pop();
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  const alternatives = s.anyOf || s.oneOf;
  if (alternatives) return alternatives.map((a) => ts(a, pad)).join(" | ");
  switch (s.type) {
    case "integer":
      return "Int";
    case "number":
      return "number";
    case "string":
      return "string";
    case "boolean":
      return "boolean";
    case "null":
      return "null";
    case "array": {
      if (s.prefixItems) return `[${s.prefixItems.map((p) => ts(p, pad)).join(", ")}]`;
      const inner = ts(s.items, pad);
      return inner.includes("|") ? `(${inner})[]` : `${inner}[]`;
    }
    case "object":
      if (s.properties) return `{\n${members(s, `${pad}  `)}${pad}}`;
      if (s.additionalProperties && typeof s.additionalProperties === "object") return `{ [key: string]: ${ts(s.additionalProperties, pad)} }`;
      return "Record<string, never>";
    default:
      throw new Error(`contract-types: no TypeScript for ${JSON.stringify(s)}`);
  }
}

function members(s, pad) {
  const required = new Set(s.required || []);
  const unread = new Set(s["x-unread"] || []);
  return Object.entries(s.properties)
    .map(([k, p]) => {
      const doc = [p.description, unread.has(k) ? "(sent for Python users and tests; the browser does not read it)" : ""].filter(Boolean).join(" ");
      return `${comment(doc, pad)}${pad}${k}${required.has(k) ? "" : "?"}: ${ts(p, pad)};\n`;
    })
    .join("");
}

function declaration(name, s) {
  const same = s["x-same-length"] ? `columns of one length: ${s["x-same-length"].join(", ")}` : "";
  const doc = comment([s.description, same].filter(Boolean).join("; "), "");
  if (s.type === "object" && s.properties) return `${doc}export interface ${name} {\n${members(s, "  ")}}\n`;
  return `${doc}export type ${name} = ${ts(s)};\n`;
}

export function generate(schema) {
  const parts = [
    "// Generated from hope_widgets/contract.schema.json by js/contract-types.mjs: do not edit. Rewrite it with\n" +
      "// `node js/contract-types.mjs` after a change of the schema (js/check-bundle.sh fails while it is stale).\n",
    "/** an integer (JSON Schema `integer`) */\nexport type Int = number;\n",
    declaration(schema.title, schema),
    `/** the settings: the synced traits the browser (or Python) sets */\nexport type Setting = ${schema["x-settings"].map((k) => JSON.stringify(k)).join(" | ")};\n`,
    `export type Settings = Pick<${schema.title}, Setting>;\n`,
    ...Object.entries(schema.$defs).map(([name, s]) => declaration(name, s)),
  ];
  return parts.join("\n");
}

const text = generate(JSON.parse(fs.readFileSync(SCHEMA_PATH, "utf8")));
if (process.argv.includes("--check")) {
  const current = fs.existsSync(OUT_PATH) ? fs.readFileSync(OUT_PATH, "utf8") : "";
  if (current !== text) {
    console.error("stale types: js/src/contract.d.ts differs from hope_widgets/contract.schema.json (run: node js/contract-types.mjs)");
    process.exit(1);
  }
} else {
  fs.writeFileSync(OUT_PATH, text);
  console.log(`wrote ${OUT_PATH}`);
}
