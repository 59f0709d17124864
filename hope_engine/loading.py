"""Load a saved model for expansion, safely by default.

Safe formats (no code from the file runs): TorchScript archives (``torch.jit.save``) and exported programs
(``torch.export.save``). A fully pickled module (``torch.save(model)``) runs code from the file when loaded, so it is
read only with ``trust_pickle=True``. A bare state dict holds weights but no architecture and cannot be expanded.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn


class ModelLoadError(ValueError):
    """The file could not be loaded as a model; the message says why and what to do."""


class LoadedModel:
    """A loaded model as a plain function of one tensor (the engine traces it), with its parameter dtype."""

    def __init__(self, module, kind: str):
        self.module = module
        self.kind = kind
        params = [p for p in module.parameters() if p.is_floating_point()] if hasattr(module, "parameters") else []
        self.dtype = params[0].dtype if params else torch.get_default_dtype()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def __repr__(self) -> str:
        return f"LoadedModel({self.kind})"


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
        try:
            return LoadedModel(torch.export.load(str(path)).module(), "exported program")
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


_STATE_HINT = ("; save the model with torch.jit.script(model).save(path), torch.jit.trace(model, x).save(path) or "
               "torch.export.save(torch.export.export(model, (x,)), path)")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
