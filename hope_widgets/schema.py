"""The synced state of ``HopePanel``, described once: every trait the browser reads, with its keys and types.

This module is the contract between the kernel (``hope_widgets/panel.py``, ``payloads.py``) and the front end
(``js/src``). It is written once here, exported to ``js/src/schema.json`` (``python -m hope_widgets.schema``), read by
the browser's validator (``js/src/schema.js``) and by the tests on both sides, and rendered as the table in
``js/README.md`` (``markdown_table()``); tests fail when any of these copies drifts.

Types are plain JSON values, so both languages read the same description:

- ``"int"``, ``"string"``, ``"bool"``, ``"null"``;
- ``"number"``: an int or a finite float, or one of the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has
  no non-finite numbers: ``payloads.sanitize`` encodes them so, ``decode`` in ``js/src/index.js`` reads them back);
  a bare float NaN / infinity is *not* a number here (it would reach the browser as ``null``);
- ``{"list": T}``; ``{"tuple": [T1, T2, ...]}`` (a list of that length);
- ``{"enum": [...]}``: one of these strings;
- ``{"map": T}``: an object with any string keys, every value of type T;
- ``{"record": {key: T}, "optional": {key: T}, "same_length": [key, ...]}``: an object with exactly the record's keys
  (plus any optional ones, no others); the ``same_length`` keys are lists of one length (columnar records);
  ``"unread"`` names keys the browser does not read (sent for Python users and tests; js/test checks the list);
- ``{"oneOf": [T, ...]}``: any one of the alternatives (``{"record": {}}`` is the empty object ``{}``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

#: how a non-finite number travels (JSON has no NaN or infinity); ``Number(s)`` in JS reads each back
NONFINITE_STRINGS = ("NaN", "Infinity", "-Infinity")
#: set to "1" (the test suite does) and the panel validates every payload before it is sent (``check``)
CHECK_ENV = "HOPE_CHECK_PAYLOADS"
JSON_PATH = Path(__file__).resolve().parent.parent / "js" / "src" / "schema.json"

NUMBER = "number"
EMPTY: dict[str, Any] = {"record": {}}


def _list(t: Any) -> dict[str, Any]:
    return {"list": t}


def _record(keys: dict[str, Any], optional: dict[str, Any] | None = None, same_length: list[str] | None = None,
            unread: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"record": keys}
    if optional:
        out["optional"] = optional
    if same_length:
        out["same_length"] = same_length
    if unread:
        out["unread"] = unread
    return out


def _trait(doc: str, t: Any) -> dict[str, Any]:
    return {"doc": doc, "type": t}


#: every synced trait of ``HopePanel``: its type and one line on what it holds
SCHEMA: dict[str, dict[str, Any]] = {
    # ---- settings (the user sets these from Python or in the view)
    "title": _trait("the model's name, shown in the header", "string"),
    "order": _trait("the order shown (0..max_order); the browser filters the term records by it", "int"),
    "max_order": _trait("the order the panel expanded to", "int"),
    "point": _trait("the expansion point, one value per variable (finite)", _list(NUMBER)),
    "bounds": _trait("[low, high] of each point control", _list({"tuple": [NUMBER, NUMBER]})),
    "names": _trait("variable names", _list("string")),
    "names_tex": _trait("variable names in LaTeX", _list("string")),
    "output": _trait("the selected output element", "int"),
    "n_outputs": _trait("number of output elements", "int"),
    "method": _trait("the method asked for", {"enum": ["exact", "hope"]}),
    "threshold": _trait("terms with |c| <= threshold are hidden (never a NaN / infinite one)", NUMBER),
    "sort": _trait("term order of the formula", {"enum": ["degree", "magnitude"]}),
    "direction": _trait("the plotted line: -1 the diagonal, i >= 0 variable i", "int"),
    "mode": _trait("line plots (few inputs) or a heat map (image-like or many inputs)", {"enum": ["line", "heat"]}),
    "certify_tol": _trait("> 0: show the certified band and the radius where |f - P| <= certify_tol", NUMBER),
    # ---- results (the kernel writes these)
    "term_records": _trait(
        "every nonzero term of the selected output at max_order, columnar, in basis order: degree, coefficient, "
        "derivative, LaTeX body without sign, sparse multi-index [[variable, power], ...]",
        _record({"deg": _list("int"), "c": _list(NUMBER), "d": _list(NUMBER), "tex": _list("string"),
                 "alpha": _list(_list({"tuple": ["int", "int"]}))},
                same_length=["deg", "c", "d", "tex", "alpha"])),
    "line": _trait(
        "line mode: t along the line, the network, and row k = the order-k truncation at each t; or why there is "
        "no plot; {} in heat mode",
        {"oneOf": [EMPTY,
                   _record({"t": _list(NUMBER), "net": _list(NUMBER), "poly": _list(_list(NUMBER)), "direction": "int"},
                           same_length=["t", "net"]),
                   _record({"error": "string"})]}),
    "heat": _trait(
        "heat mode: grid, coef[j-1][i] = unmixed coefficient c_{j e_i}, the line radius and the input image "
        "(per pixel, channels averaged); {} in line mode",
        {"oneOf": [EMPTY,
                   _record({"rows": "int", "cols": "int", "channels": "int", "n": "int",
                            "coef": _list(_list(NUMBER)), "radius": NUMBER},
                           optional={"image": _list(NUMBER)})]}),
    "compare": _trait(
        "method='hope' only: relative coefficient difference to the exact expansion per order (null where the "
        "exact one is 0) and the exact truncations on the line; or why there is no comparison; {} for 'exact'",
        {"oneOf": [EMPTY,
                   _record({"relative": _list({"oneOf": [NUMBER, "null"]})},
                           optional={"exact_poly": _list(_list(NUMBER))}),
                   _record({"error": "string"})]}),
    "result": _trait(
        "the expansion shown: its point, method, seconds, timing line, basis size and kind",
        _record({"point": _list(NUMBER), "method": {"enum": ["exact", "hope"]}, "seconds": NUMBER,
                 "timing": "string", "size": "int", "kind": {"enum": ["total", "pure"]}})),
    "band": _trait(
        "certify_tol > 0, line mode: the certified bound |f - P_order| <= remainder on the plotted segment, the box "
        "half-width, the radius within which it is <= tol (null: not asked), the kinks crossed, the info line; or "
        "why there is none; {} when off",
        {"oneOf": [EMPTY,
                   _record({"remainder": NUMBER, "box": NUMBER, "tol": NUMBER,
                            "tol_radius": {"oneOf": [NUMBER, "null"]}, "crossings": {"map": "int"},
                            "order": "int", "text": "string"}, unread=["box", "tol", "crossings"]),
                   _record({"error": "string", "order": "int", "text": "string"}, unread=["error"])]}),
    # ---- status
    "busy": _trait("an expansion is running", "bool"),
    "error": _trait("why the last recompute failed (the last good result stays), or ''", "string"),
    "notice": _trait("the expansion's warnings, or ''", "string"),
    "warning": _trait("which coefficients are NaN / infinite and why, or ''", "string"),
}

#: the dict payloads (their shape depends on the state); the browser decodes NaN / infinity strings in these
PAYLOADS = ("term_records", "line", "heat", "compare", "result", "band")


class PayloadError(ValueError):
    """A synced value that does not match its schema (``check``): the browser would misread it."""


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, str) and v in NONFINITE_STRINGS


def errors(t: Any, value: Any, where: str = "") -> list[str]:
    """Every mismatch between ``value`` and type ``t`` (an empty list: it matches), each naming its path."""
    here = where or "value"
    if isinstance(t, str):
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": _is_number, "string": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
              "null": lambda v: v is None}[t](value)
        return [] if ok else [f"{here}: expected {t}, got {_short(value)}"]
    if "list" in t:
        if not isinstance(value, (list, tuple)):
            return [f"{here}: expected a list, got {_short(value)}"]
        out: list[str] = []
        for i, v in enumerate(value):
            out += errors(t["list"], v, f"{here}[{i}]")
            if len(out) >= 5:
                break
        return out
    if "tuple" in t:
        if not isinstance(value, (list, tuple)) or len(value) != len(t["tuple"]):
            return [f"{here}: expected a list of {len(t['tuple'])}, got {_short(value)}"]
        return [e for s, v, i in zip(t["tuple"], value, range(len(value))) for e in errors(s, v, f"{here}[{i}]")]
    if "enum" in t:
        return [] if value in t["enum"] else [f"{here}: expected one of {t['enum']}, got {_short(value)}"]
    if "map" in t:
        if not isinstance(value, dict):
            return [f"{here}: expected an object, got {_short(value)}"]
        return [e for k, v in value.items() for e in errors(t["map"], v, f"{here}.{k}")]
    if "record" in t:
        if not isinstance(value, dict):
            return [f"{here}: expected an object, got {_short(value)}"]
        required, optional = t["record"], t.get("optional", {})
        out = [f"{here}: missing key {k!r}" for k in required if k not in value]
        out += [f"{here}: unexpected key {k!r}" for k in value if k not in required and k not in optional]
        for k, v in value.items():
            if k in required or k in optional:
                out += errors(required.get(k, optional.get(k)), v, f"{here}.{k}")
        lengths = {k: len(value[k]) for k in t.get("same_length", []) if isinstance(value.get(k), (list, tuple))}
        if len(set(lengths.values())) > 1:
            out.append(f"{here}: columns of different lengths {lengths}")
        return out
    if "oneOf" in t:
        tries = [errors(s, value, where) for s in t["oneOf"]]
        if any(not e for e in tries):
            return []
        best = min(tries, key=len)  # the closest alternative says what is wrong
        return best if len(t["oneOf"]) == 1 else [f"{here}: matches none of {len(t['oneOf'])} shapes; closest: "
                                                  f"{best[0]}"] + best[1:]
    raise ValueError(f"unknown schema type {t!r}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(trait: str, value: Any) -> list[str]:
    """The mismatches of a synced trait's ``value`` with its schema (``[]``: the browser reads it as documented)."""
    if trait not in SCHEMA:
        return [f"{trait}: not a synced trait of the schema (add it to hope_widgets/schema.py)"]
    return errors(SCHEMA[trait]["type"], value, trait)


def check(trait: str, value: Any) -> None:
    """Raise ``PayloadError`` when ``value`` does not match the schema of ``trait``."""
    problems = validate(trait, value)
    if problems:
        raise PayloadError("; ".join(problems[:5]))


def checking() -> bool:
    """Whether the panel validates its payloads before sending them (environment variable ``HOPE_CHECK_PAYLOADS``)."""
    return os.environ.get(CHECK_ENV, "") not in ("", "0")


def to_json() -> str:
    """The schema as the front end reads it (``js/src/schema.json``): deterministic text."""
    return json.dumps({"nonfinite": list(NONFINITE_STRINGS), "payloads": list(PAYLOADS), "traits": SCHEMA}, indent=1,
                      sort_keys=True) + "\n"


def type_text(t: Any) -> str:
    """A type in a short TypeScript-like notation, for the README table."""
    if isinstance(t, str):
        return t
    if "list" in t:
        inner = type_text(t["list"])
        return f"({inner})[]" if " | " in inner else f"{inner}[]"
    if "tuple" in t:
        return "[" + ", ".join(type_text(s) for s in t["tuple"]) + "]"
    if "enum" in t:
        return " | ".join(f'"{s}"' for s in t["enum"])
    if "map" in t:
        return "{[key]: " + type_text(t["map"]) + "}"
    if "record" in t:
        parts = [f"{k}: {type_text(s)}" for k, s in t["record"].items()]
        parts += [f"{k}?: {type_text(s)}" for k, s in t.get("optional", {}).items()]
        return "{" + ", ".join(parts) + "}"
    if "oneOf" in t:
        return " | ".join(type_text(s) for s in t["oneOf"])
    raise ValueError(f"unknown schema type {t!r}")


def markdown_table() -> str:
    """The contract as one Markdown table (trait, type, meaning): js/README.md holds exactly this text."""
    rows = ["| trait | type | holds |", "|---|---|---|"]
    def cell(text: str) -> str:  # a "|" inside a cell is escaped (GitHub's tables need it inside code too)
        return text.replace("|", "\\|")

    for name, entry in SCHEMA.items():
        rows.append(f"| `{name}` | `{cell(type_text(entry['type']))}` | {cell(entry['doc'])} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    """``python -m hope_widgets.schema [--check]``: write js/src/schema.json (or fail when it is stale)."""
    text = to_json()
    if "--check" in argv:
        if not JSON_PATH.exists() or JSON_PATH.read_text() != text:
            print(f"stale: {JSON_PATH} differs from hope_widgets/schema.py (run python -m hope_widgets.schema)")
            return 1
        return 0
    JSON_PATH.write_text(text)
    print(f"wrote {JSON_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
