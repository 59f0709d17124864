"""The checks of a model archive's bytes before torch loads them: nothing in the file may run code while it is read.

Exported programs: ``torch.export.load`` itself unpickles parts of a ``.pt2`` archive. The sample inputs (and legacy
``data/weights/<model>.pt`` / ``data/constants/<model>.pt`` files, and the pickles of the pre-2.8 layout) go through
``torch.load(weights_only=True)`` but fall back to ``weights_only=False`` when that fails; weights and tensor constants
marked ``use_pickle`` in the archive's JSON are read with ``weights_only=False``; opaque constants with
``pickle.loads``; custom-object constants with TorchScript's unpickler (which runs torchbind ``__setstate__``); and
``data/aotinductor/`` holds compiled shared libraries that are loaded. So, without ``trust_pickle``, the archive is read
into memory once and inspected with torch's own zip reader first (``refuse_unsafe_export``): every pickle torch would
load must load with ``torch.load(weights_only=True)`` (then torch's own attempt succeeds the same way and never falls
back), custom and opaque object constants and AOTInductor code are refused, and so are zip archives with duplicate
member names. The checked bytes are the ones handed to ``torch.export.load``. That JSON also holds text torch runs as
Python: symbolic shape expressions (read with ``sympy.sympify``, an ``eval``, while loading), guards (compiled with
``exec`` by ``ExportedProgram.module()``) and the names of nodes, subgraphs, arguments, parameters and buffers, which
torch.fx writes into the forward it generates; so expressions and guards must be plain arithmetic over shape symbols and
input sizes (allowed names and operators only: no attribute, string or call beyond them), and every name a plain name
(word characters, dots, hyphens). The program's graph is JSON; its ``ExportedProgram`` verifier only admits registered
operators, higher-order operators and a fixed list of builtins as call targets, and hope refuses graphs that pass any
other Python callable as an argument (the JSON can name one by attribute path; checked after loading, in
``pure_graphs``).

TorchScript: ``torch.jit.load`` reads ``data.pkl`` and ``constants.pkl`` with TorchScript's C++ unpickler, which
resolves only a fixed set of globals (tensor rebuilding, containers) and classes compiled from the archive's
TorchScript code; any other global (``os.system``, ``builtins.eval``) fails with "Unknown type name". The code in the
archive is TorchScript, compiled and run by TorchScript (registered operators only), not Python. It runs a module's
``__setstate__`` inside ``torch.jit.load``, before any check of its graphs can look, so archives whose code defines one
are refused unread (``refuse_unsafe_script_code``). As with any binary parser this is not a sandbox against
memory-safety bugs in torch itself.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections import Counter
from pathlib import Path

import torch

from hope_engine.errors import ModelLoadError

# Members of the pre-2.8 exported-program layout that torch.export.load unpickles (weights_only with a fallback).
_OLD_FORMAT_PROGRAM = "serialized_exported_program.json"
_OLD_FORMAT_PICKLES = ("serialized_state_dict.pt", "serialized_state_dict.json", "serialized_constants.pt",
                       "serialized_constants.json", "serialized_example_inputs.pt")


def refuse_unsafe_export(path: Path, data: bytes) -> None:
    """Raise ModelLoadError if ``torch.export.load`` would unpickle anything from ``data`` beyond weights-only pickles,
    or load compiled code; the members and rules mirror torch's pt2 archive reader (torch/export/pt2_archive)."""
    from torch.export.pt2_archive import constants as k

    def refuse(what: str) -> ModelLoadError:
        return ModelLoadError(
            f"{path}: refused to load this exported program: {what}, and loading it can run code stored in the file. "
            "Pass --trust-pickle (trust_pickle=True) only if you trust its source")

    def weights_only(what: str, blob: bytes) -> None:
        if not blob:
            return
        try:
            torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure makes torch retry with weights_only=False
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            why = f"it names {found.group(1)}" if found else first_line(e)[:120]
            raise refuse(f"{what} holds a pickle that torch.load(weights_only=True) rejects ({why})") from None

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            old = [(i.filename, z.read(i)) for i in infos if i.filename in (*_OLD_FORMAT_PICKLES, _OLD_FORMAT_PROGRAM)]
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: exported program could not be read ({first_line(e)})") from e
    twice = [n for n, c in Counter(i.filename for i in infos).items() if c > 1]
    if twice:
        raise refuse(f"the zip archive has duplicate member names ({twice[0]})")
    for name, blob in old:  # torch falls back to this layout when its pt2 reader fails
        if name == _OLD_FORMAT_PROGRAM:
            _refuse_code_in_program_json(name, blob, refuse)
        else:
            weights_only(f"the member {name}", blob)

    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))  # the reader torch.export.load uses
        records = list(reader.get_all_records())
    except RuntimeError:
        return  # not a pt2 archive: torch.export.load can only take the pre-2.8 path checked above
    if len(set(records)) != len(records):
        raise refuse("the zip archive has duplicate member names")
    present = set(records)
    if any(r.startswith(k.AOTINDUCTOR_DIR) for r in records):
        raise refuse(f"it holds AOTInductor-compiled code ({k.AOTINDUCTOR_DIR}), a shared library loaded with it")

    def read(name: str) -> bytes:
        try:
            return reader.get_record(name)
        except RuntimeError:
            return b""  # missing: torch fails on it too, before unpickling it

    def config(name: str) -> dict[str, dict]:
        try:
            entries = json.loads(read(name).decode())["config"]
        except Exception as e:  # noqa: BLE001 - torch would fail on it too; refuse rather than guess
            raise refuse(f"{name} could not be checked ({first_line(e)[:120]})") from None
        _refuse_code_in_program_json(name, read(name), refuse)
        if not isinstance(entries, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("path_name"), str) for v in entries.values()):
            raise refuse(f"{name} could not be checked (unexpected layout)")
        return entries

    prefix, suffix = k.MODELS_FILENAME_FORMAT.split("{}")
    for record in records:
        if not record.startswith(k.MODELS_DIR):
            continue
        model = record[len(prefix):-len(suffix)]  # the same slicing as torch's _load_exported_programs
        _refuse_code_in_program_json(record, read(record), refuse)
        inputs = k.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        weights_only(f"the sample inputs file {inputs}", read(inputs))
        legacy = f"{k.WEIGHTS_DIR}{model}.pt"
        if legacy in present:
            weights_only(f"the legacy weights file {legacy}", read(legacy))
        elif (name := k.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model)) in present:
            for fqn, meta in config(name).items():
                if meta.get("use_pickle"):
                    member = os.path.join(k.WEIGHTS_DIR, meta["path_name"])
                    weights_only(f"weight {fqn!r} ({member})", read(member))
        legacy = f"{k.CONSTANTS_DIR}{model}.pt"
        if legacy in present:
            weights_only(f"the legacy constants file {legacy}", read(legacy))
        elif (name := k.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model)) in present:
            for fqn, meta in config(name).items():
                stored = meta["path_name"]
                if stored.startswith(k.CUSTOM_OBJ_FILENAME_PREFIX):
                    raise refuse(f"constant {fqn!r} is a TorchScript custom object, restored by its __setstate__")
                if stored.startswith(k.OPAQUE_OBJ_FILENAME_PREFIX):
                    raise refuse(f"constant {fqn!r} is an arbitrary pickled Python object")
                if meta.get("use_pickle"):
                    member = os.path.join(k.CONSTANTS_DIR, stored)
                    weights_only(f"constant {fqn!r} ({member})", read(member))


# Names a symbolic-shape expression may use: torch's sympy functions (torch's deserializer list), sympy's own
# constructors and assumptions; symbols are a few letters and digits (s0, u3). Guards use the input tables' methods.
_SYMPY_NAMES = frozenset({
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "Symbol", "Integer", "Rational",
    "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "true", "false",
    "oo", "zoo", "nan", "True", "False", "None", "positive", "negative", "nonnegative", "nonpositive", "integer",
    "real", "finite", "infinite", "zero", "nonzero", "even", "odd", "rational", "commutative", "int_oo", "floor",
    "ceiling", "sqrt", "Piecewise", "ITE", "BooleanTrue", "BooleanFalse"})
_GUARD_NAMES = frozenset({"L", "size", "stride", "storage_offset", "dim", "numel", "math", "isnan", "inf", "floor",
                          "ceil", "trunc", "sqrt", "and", "or", "not", "True", "False", "None",
                          "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"})
_SYMBOL = re.compile(r"[a-z]{1,4}\d+")
_ARITHMETIC = frozenset("( ) , + - * / // % ** < > <= >= == != & | ~".split())


def _plain_expression(text, names: frozenset, operators: frozenset) -> bool:
    """Whether ``text`` is one line of arithmetic: Python tokens that are numbers, names in ``names`` (or symbols),
    single-quoted identifiers and ``operators``, nothing else (no other name, attribute or string can be reached)."""
    import tokenize

    if not isinstance(text, str) or len(text) > 100_000 or any(c in text for c in "\n\r\\"):
        return False
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for token in tokens:
        kind, string = token.type, token.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.NUMBER) \
                or (kind == tokenize.NAME and (string in names or _SYMBOL.fullmatch(string))) \
                or (kind == tokenize.STRING and re.fullmatch(r"'[A-Za-z_]\w*'", string)) \
                or (kind == tokenize.OP and string in operators):
            continue
        return False
    return True


_NAME = re.compile(r"[\w.\-]*")  # names: word characters, dots and hyphens; no quote, bracket, operator or space
_FREE_TEXT = frozenset({"as_string", "as_strings", "torch_version"})  # written with repr, or never into code


def _refuse_code_in_program_json(name: str, blob: bytes, refuse) -> None:
    """Raise ``refuse(...)`` if the exported program's JSON (or a weights/constants config) holds text torch runs as
    Python while loading or unlifting it: symbolic-shape expressions (``expr_str``, read with ``sympy.sympify``, which
    evaluates them) and guards (``guards_code``, compiled with ``exec`` by ``ExportedProgram.module()``) must be plain
    arithmetic (``_plain_expression``); every other string and key, and the strings inside the pytree specs
    (``in_spec``/``out_spec``) must be a plain name (``_NAME``): torch.fx writes names of nodes, subgraphs, arguments,
    parameters and buffers into the Python source it generates and runs, and string graph inputs into the guards.
    Node metadata (stack traces) and string arguments of ops (written with ``repr``) are free text."""
    def check_name(text: str) -> None:
        if not _NAME.fullmatch(text):
            raise refuse(f"{name} holds the name {text[:80]!r}, which is not a plain name (word characters, dots, "
                         "hyphens), and torch writes names into Python source it runs")

    try:
        document = json.loads(blob.decode())
    except Exception as e:  # noqa: BLE001 - torch would fail on it too; refuse rather than guess
        raise refuse(f"{name} could not be checked ({first_line(e)[:120]})") from None
    stack: list = [(None, document)]
    while stack:
        key, item = stack.pop()
        if key == "expr_str":
            if not _plain_expression(item, _SYMPY_NAMES, _ARITHMETIC | {"="}):
                raise refuse(f"{name} holds the shape expression {str(item)[:80]!r}, which is not plain arithmetic "
                             "(torch evaluates it as Python code while loading)")
        elif key == "guards_code":
            for guard in item if isinstance(item, list) else [item]:
                if not _plain_expression(guard, _GUARD_NAMES, _ARITHMETIC | {".", "[", "]"}):
                    raise refuse(f"{name} holds the guard {str(guard)[:80]!r}, which is not a plain comparison "
                                 "(torch compiles it as Python code)")
        elif key in ("in_spec", "out_spec", "context") and isinstance(item, str) and item[:1] in ("[", "{", '"'):
            try:  # a pytree spec: JSON inside a JSON string (its dict contexts once more)
                stack.append((None, json.loads(item)))
            except ValueError:
                check_name(item)
        elif key == "metadata" or (key in _FREE_TEXT and not isinstance(item, dict)):
            continue
        elif isinstance(item, str):
            check_name(item)
        elif isinstance(item, list):
            stack.extend((key, x) for x in item)
        elif isinstance(item, dict):
            if "nodes" in item and isinstance(item.get("inputs"), list):  # a graph: its string inputs reach guards
                stack.extend(("graph input", i.get("as_string")) for i in item["inputs"] if isinstance(i, dict))
            for k, v in item.items():
                check_name(k)
                stack.append((k, v))


def refuse_unsafe_script_code(path: Path, data: bytes) -> None:
    """Raise ModelLoadError if the TorchScript archive defines ``__setstate__``: ``torch.jit.load`` runs it while
    restoring the module, before its graph can be inspected."""
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))  # the reader torch.jit.load uses
        records = list(reader.get_all_records())
    except RuntimeError as e:
        raise ModelLoadError(f"{path}: TorchScript archive could not be loaded ({first_line(e)})") from e
    for record in records:
        if record.endswith(".py") and b"__setstate__" in reader.get_record(record):
            raise ModelLoadError(
                f"{path}: refused to load this TorchScript archive: its code defines __setstate__ ({record}), which "
                "torch.jit.load runs while loading, before hope can check it runs only pure tensor math. Save the "
                "model with torch.export instead, or pass --trust-pickle (trust_pickle=True) only if you trust its "
                "source")


def first_line(e: Exception) -> str:
    """The first line of an error's message, or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
