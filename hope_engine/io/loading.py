"""Load a saved model for expansion, safely by default.

Safe formats (no Python code from the file runs): TorchScript archives (``torch.jit.save``) and exported programs
(``torch.export.save``). A fully pickled module (``torch.save(model)``) runs code from the file when loaded, so it is
read only with ``trust_pickle=True``. A bare state dict holds weights but no architecture and cannot be expanded.

Exported programs: ``torch.export.load`` itself unpickles parts of a ``.pt2`` archive. The sample inputs (and legacy
``data/weights/<model>.pt`` / ``data/constants/<model>.pt`` files, and the pickles of the pre-2.8 layout) go through
``torch.load(weights_only=True)`` but fall back to ``weights_only=False`` when that fails; weights and tensor constants
marked ``use_pickle`` in the archive's JSON are read with ``weights_only=False``; opaque constants with
``pickle.loads``; custom-object constants with TorchScript's unpickler (which runs torchbind ``__setstate__``); and
``data/aotinductor/`` holds compiled shared libraries that are loaded. So, without ``trust_pickle``, the archive is read
into memory once and inspected with torch's own zip reader first: every pickle torch would load must load with
``torch.load(weights_only=True)`` (then torch's own attempt succeeds the same way and never falls back), custom and
opaque object constants and AOTInductor code are refused, and so are zip archives with duplicate member names. The
checked bytes are the ones handed to ``torch.export.load``. The program's graph is JSON; its ``ExportedProgram``
verifier only admits registered operators, higher-order operators and a fixed list of builtins as call targets, and
hope refuses graphs that pass any other Python callable as an argument (the JSON can name one by attribute path).

TorchScript: ``torch.jit.load`` reads ``data.pkl`` and ``constants.pkl`` with TorchScript's C++ unpickler, which
resolves only a fixed set of globals (tensor rebuilding, containers) and classes compiled from the archive's
TorchScript code; any other global (``os.system``, ``builtins.eval``) fails with "Unknown type name". The code in the
archive is TorchScript, compiled and run by TorchScript (registered operators only), not Python. As with any binary
parser this is not a sandbox against memory-safety bugs in torch itself.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import torch
from torch import nn


class ModelLoadError(ValueError):
    """The file could not be loaded as a model; the message says why and what to do."""


class LoadedModel:
    """A loaded model as a plain function of one tensor (the engine traces it), with its parameter dtype."""

    def __init__(self, module, kind: str, static_batch: int | None = None):
        self.module = module
        self.kind = kind
        self.static_batch = static_batch
        params = [p for p in module.parameters() if p.is_floating_point()] if hasattr(module, "parameters") else []
        self.dtype = params[0].dtype if params else torch.get_default_dtype()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.static_batch
        if s is None or x.dim() == 0 or x.shape[0] == s or x.shape[0] % s:
            return self.module(x)
        # exported with a fixed batch size (torch.export's default): run the rows in slices of that size
        return torch.cat([self.module(x[i:i + s]) for i in range(0, x.shape[0], s)])

    def __repr__(self) -> str:
        return f"LoadedModel({self.kind})"


def _static_batch(program) -> int | None:
    """The fixed first dimension of an exported program's (single) input, or None when it is dynamic or unknown."""
    try:
        names = program.graph_signature.user_inputs
        node = next(nd for nd in program.graph.nodes if nd.op == "placeholder" and nd.name == names[0])
        first = node.meta["val"].shape[0]
    except (AttributeError, IndexError, KeyError, StopIteration, TypeError):
        return None
    return first if isinstance(first, int) and len(names) == 1 else None


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def load_model(path, trust_pickle: bool = False) -> LoadedModel:
    """TorchScript or exported program (always); a pickled nn.Module only with ``trust_pickle`` (it executes code)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    names = _zip_names(path)
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated, still the TorchScript reader
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
            return LoadedModel(module.eval(), "torchscript")
        except Exception as e:  # noqa: BLE001 - reported as one line
            raise ModelLoadError(f"{path}: TorchScript archive could not be loaded ({_first_line(e)})") from e
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
        source: str | io.BytesIO = str(path)
        if not trust_pickle:
            data = path.read_bytes()  # check and load the same bytes, even if the file changes meanwhile
            _refuse_unsafe_export(path, data)
            source = io.BytesIO(data)
        try:
            program = torch.export.load(source)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{path}: exported program could not be loaded ({_first_line(e)})") from e
        if not trust_pickle:
            _refuse_callable_arguments(path, program)
        try:
            return LoadedModel(program.module(), "exported program", _static_batch(program))
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{path}: exported program could not be loaded ({_first_line(e)})") from e
    if trust_pickle:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{path}: could not be loaded ({_first_line(e)})") from e
        if not isinstance(obj, nn.Module):
            raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module" + _STATE_HINT
                                 if isinstance(obj, dict) else f"{path} holds a {type(obj).__name__}, not a model")
        return LoadedModel(obj.eval(), "pickled module")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        if "Unsupported global" in str(e):
            raise ModelLoadError(
                f"{path} is a pickled object, not TorchScript or an exported program: loading it executes code stored "
                "in the file. Pass --trust-pickle (trust_pickle=True) only if you trust its source") from e
        raise ModelLoadError(f"{path} is not a model file hope can read (not TorchScript, an exported program or a "
                             "torch.save file)") from e
    if isinstance(obj, dict):
        raise ModelLoadError(f"{path} holds a state dict (weights without the architecture)" + _STATE_HINT)
    raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a model")


# Members of the pre-2.8 exported-program layout that torch.export.load unpickles (weights_only with a fallback).
_OLD_FORMAT_PICKLES = ("serialized_state_dict.pt", "serialized_state_dict.json", "serialized_constants.pt",
                       "serialized_constants.json", "serialized_example_inputs.pt")


def _refuse_unsafe_export(path: Path, data: bytes) -> None:
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
            why = f"it names {found.group(1)}" if found else _first_line(e)[:120]
            raise refuse(f"{what} holds a pickle that torch.load(weights_only=True) rejects ({why})") from None

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            old = [(i.filename, z.read(i)) for i in infos if i.filename in _OLD_FORMAT_PICKLES]
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: exported program could not be read ({_first_line(e)})") from e
    twice = [n for n, c in Counter(i.filename for i in infos).items() if c > 1]
    if twice:
        raise refuse(f"the zip archive has duplicate member names ({twice[0]})")
    for name, blob in old:  # torch falls back to this layout when its pt2 reader fails
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
            raise refuse(f"{name} could not be checked ({_first_line(e)[:120]})") from None
        if not isinstance(entries, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("path_name"), str) for v in entries.values()):
            raise refuse(f"{name} could not be checked (unexpected layout)")
        return entries

    prefix, suffix = k.MODELS_FILENAME_FORMAT.split("{}")
    for record in records:
        if not record.startswith(k.MODELS_DIR):
            continue
        model = record[len(prefix):-len(suffix)]  # the same slicing as torch's _load_exported_programs
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


def _refuse_callable_arguments(path: Path, program) -> None:
    """Raise ModelLoadError if a graph node gets a Python callable as an argument (only operators, graphs and values
    may appear there): the JSON names such arguments by attribute path (``as_operator``), so a crafted program could
    hand ``os.popen`` to a higher-order operator that calls its argument. The verifier checks node targets, not this."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            leaves: list = []
            torch.fx.node.map_aggregate((node.args, node.kwargs), leaves.append)
            for leaf in leaves:
                if callable(leaf) and not isinstance(
                        leaf, (torch.fx.Node, torch._ops.OperatorBase, torch._ops.OpOverloadPacket, nn.Module)):
                    name = f"{getattr(leaf, '__module__', '?')}.{getattr(leaf, '__qualname__', type(leaf).__name__)}"
                    raise ModelLoadError(
                        f"{path}: refused to load this exported program: node {node.name!r} passes the Python callable "
                        f"{name} to {node.target}, and running it can run code named in the file. Pass --trust-pickle "
                        "(trust_pickle=True) only if you trust its source")


_STATE_HINT = ("; save the model with torch.jit.script(model).save(path), torch.jit.trace(model, x).save(path) or "
               "torch.export.save(torch.export.export(model, (x,)), path)")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
