"""Load a saved model for expansion, safely by default.

Safe formats (no Python code from the file runs): TorchScript archives (``torch.jit.save``) and exported programs
(``torch.export.save``). A fully pickled module (``torch.save(model)``) runs code from the file when loaded, so it is
read only with ``trust_pickle=True``. A bare state dict holds weights but no architecture and cannot be expanded.

Without ``trust_pickle`` a TorchScript archive or exported program is read into memory once, and those bytes are
checked before torch loads them (``archive_checks``: no pickle beyond weights, no code in the program's JSON, no
TorchScript ``__setstate__``); then, before anything from the file runs, every loaded graph is checked against an
allow-list of pure tensor math (``pure_graphs``: no file, I/O or random ops, no writes to the model's state).
``trust_pickle=True`` skips the byte checks (it allows pickles in the file); the graph checks run whatever it says,
since trusting a file's pickles does not make its graphs' file or random ops safe to run.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from hope_engine.errors import ModelLoadError
from hope_engine.io.archive_checks import first_line, refuse_unsafe_export, refuse_unsafe_script_code
from hope_engine.io.pure_graphs import refuse_callable_arguments, refuse_impure_program, refuse_impure_script

__all__ = ["LoadedModel", "ModelLoadError", "load_model"]


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
        source = str(path)
        if not trust_pickle:
            data = path.read_bytes()  # check and load the same bytes, even if the file changes meanwhile
            refuse_unsafe_script_code(path, data)
            source = io.BytesIO(data)
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated, still the TorchScript reader
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(source, map_location="cpu").eval()
        except Exception as e:  # noqa: BLE001 - reported as one line
            raise ModelLoadError(f"{path}: TorchScript archive could not be loaded ({first_line(e)})") from e
        refuse_impure_script(path, module)  # (with trust_pickle too: see the module text)
        return LoadedModel(module, "torchscript")
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
        source: str | io.BytesIO = str(path)
        if not trust_pickle:
            data = path.read_bytes()  # check and load the same bytes, even if the file changes meanwhile
            refuse_unsafe_export(path, data)
            source = io.BytesIO(data)
        try:
            program = torch.export.load(source)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{path}: exported program could not be loaded ({first_line(e)})") from e
        refuse_callable_arguments(path, program)  # (with trust_pickle too: see the module text)
        refuse_impure_program(path, program)
        try:
            return LoadedModel(program.module(), "exported program", _static_batch(program))
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{path}: exported program could not be loaded ({first_line(e)})") from e
    if trust_pickle:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{path}: could not be loaded ({first_line(e)})") from e
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


_STATE_HINT = ("; save the model with torch.jit.script(model).save(path), torch.jit.trace(model, x).save(path) or "
               "torch.export.save(torch.export.export(model, (x,)), path)")
