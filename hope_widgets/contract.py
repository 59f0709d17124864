"""The synced state of ``HopePanel``, typed once: ``contract.schema.json`` (JSON Schema, draft 2020-12), beside it.

Ten synced traits: eight *settings* the browser or Python sets (``order``, ``point``, ``output``, ``method``,
``threshold``, ``sort``, ``direction``, ``certify_tol``), one ``view`` (everything the browser renders) and one
``status`` (busy, error, notice, warning). The schema file is the single source:

- Python validates what it sends -- ``view`` and ``status`` -- against it, once, when the panel sets them (``check``),
  while ``HOPE_CHECK_PAYLOADS`` is set (the test suite sets it): a heat map's view holds thousands of numbers, and a
  JSON Schema check of each costs tens of milliseconds per result, too much for every interactive change; the
  settings are checked by the panel's own validators (one-line ``PanelError`` messages);
- the browser does not validate again: its types, ``js/src/contract.d.ts``, are generated from the schema
  (``node js/contract-types.mjs``; ``js/check-bundle.sh`` fails while they are stale) and only ``decode``
  (js/src/decode.js) touches the values (NaN / infinity strings back to numbers).

Two keywords of our own, ignored by other JSON Schema tools: ``x-same-length`` (the listed columns of a columnar
record have one length; checked here) and ``x-unread`` (keys sent for Python users and tests that the browser does not
read; js/test/payloads.test.mjs checks the list).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "contract.schema.json"
#: set to "1" (the test suite does) and the panel validates ``view`` and ``status`` before they are sent (``check``)
CHECK_ENV = "HOPE_CHECK_PAYLOADS"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
#: the synced traits, the settings among them, and the keys of the two payloads
TRAITS: tuple[str, ...] = tuple(SCHEMA["properties"])
SETTINGS: tuple[str, ...] = tuple(SCHEMA["x-settings"])
VIEW_KEYS: tuple[str, ...] = tuple(SCHEMA["$defs"]["View"]["properties"])
STATUS_KEYS: tuple[str, ...] = tuple(SCHEMA["$defs"]["Status"]["properties"])
#: the trait that holds each payload -> the schema definition it must match
PAYLOADS = {"view": "View", "status": "Status"}


class PayloadError(ValueError):
    """A payload that does not match the contract (``check``): the browser would misread it."""


@cache
def _validator(definition: str) -> Any:
    """A JSON Schema validator of ``$defs/<definition>`` (jsonschema, with ``x-same-length`` checked too)."""
    import jsonschema
    from jsonschema import validators

    def same_length(validator: Any, keys: list[str], instance: Any, schema: dict) -> Any:
        if isinstance(instance, dict):
            lengths = {k: len(instance[k]) for k in keys if isinstance(instance.get(k), list)}
            if len(set(lengths.values())) > 1:
                yield jsonschema.ValidationError(f"columns of different lengths {lengths}")

    base = validators.validator_for(SCHEMA)
    cls = validators.extend(base, {"x-same-length": same_length})
    root = {**SCHEMA, "$ref": f"#/$defs/{definition}"}
    root.pop("properties")
    root.pop("required")
    root.pop("additionalProperties")
    root.pop("type")
    return cls(root)


def errors(definition: str, value: Any) -> list[str]:
    """Every mismatch of ``value`` with ``$defs/<definition>`` (``[]``: the browser reads it as typed), each with its
    path. A float NaN / infinity is a mismatch wherever it is: JSON has none (it must travel as a string)."""
    if definition not in SCHEMA["$defs"]:
        return [f"{definition}: no such definition in {SCHEMA_PATH.name}"]
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as e:
        return [f"{definition}: not strict JSON ({e}): encode NaN / infinity with payloads.sanitize"]
    except TypeError as e:
        return [f"{definition}: not JSON ({e})"]
    out = []
    for err in _leaves(_validator(definition).iter_errors(value)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        message = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        out.append(f"{definition}{where}: {message}")
    return out


def _leaves(errs: Any) -> list[Any]:
    """The errors to report: for a value that fits no alternative of an ``anyOf``, the errors of the alternative it
    came closest to (fewest missing and unexpected keys), not the whole value."""
    out = []
    for err in sorted(errs, key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in e.absolute_path]):
        if not err.context:
            out.append(err)
            continue
        alternatives: dict[Any, list[Any]] = {}
        for e in err.context:
            alternatives.setdefault(e.relative_schema_path[0], []).append(e)
        out += _leaves(min(alternatives.values(), key=_misfit))
    return out


def _misfit(errs: list[Any]) -> tuple[int, int]:
    """How far a value is from one alternative's shape: keys missing or unexpected at its top, a wrong type."""
    n = 0
    for e in errs:
        if e.relative_path:
            continue
        if e.validator == "required":
            n += 1
        elif e.validator == "additionalProperties" and isinstance(e.instance, dict):
            n += sum(k not in e.schema.get("properties", {}) for k in e.instance)
        elif e.validator in ("type", "enum"):
            n += 1000
    return n, len(errs)


def check(definition: str, value: Any) -> None:
    """Raise ``PayloadError`` when ``value`` does not match ``$defs/<definition>``."""
    problems = errors(definition, value)
    if problems:
        raise PayloadError("; ".join(p if len(p) < 300 else p[:297] + "..." for p in problems[:5]))


def checking() -> bool:
    """Whether the panel validates its payloads before sending them (environment variable ``HOPE_CHECK_PAYLOADS``)."""
    return os.environ.get(CHECK_ENV, "") not in ("", "0")
