"""Why a model could not be traced at a point, in the user's terms: one message naming the cause and the fix.

Tracing fails for reasons that have little to do with the point's shape (a custom autograd.Function, integer token
ids, a model of several inputs called with one); each known cause gets its own message, the rest the shape hint.
"""

from __future__ import annotations

import re

import torch
from torch import nn


def trace_failure(model, x0: torch.Tensor, error: Exception) -> str:
    """The message for a failed trace of ``model`` at ``x0``."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if "autograd.Function" in text and "setup_context" in text:
        return ("the model calls a custom torch.autograd.Function: its forward is opaque to the expansion (it cannot "
                "be traced into the aten graph the engine differentiates). Write it with torch operations, or give "
                "the Function a setup_context staticmethod (torch.func's requirement) so its forward can be traced.")
    if re.search(r"'indices'.*(Long|Int)", text) or "Expected tensor for argument #1 'indices'" in text:
        return ("the model looks up integer ids (an embedding), so it cannot be expanded in its input: Taylor "
                "expansions need real-valued inputs. Expand with respect to the embeddings instead (e.g. pass "
                "inputs_embeds), or give the ids as a fixed input: expand(model, (ids, embeds), wrt=1).")
    missing = re.search(r"missing (\d+) required positional argument", text)
    if missing:
        return (f"the model takes more inputs than the one tensor given ({first}). Pass all of them as a tuple (or "
                "a dict of keyword arguments) and choose the variables with wrt=, e.g. "
                "expand(model, (q, k, v), order, wrt=0, output=lambda out: out[0]).")
    if "dynamo" in text.lower() and "optimized" in text.lower():
        return ("the model is a torch.compile'd function whose original could not be found: expand the function "
                "before compiling it.")
    return _shape_message(model, x0, first)


def _shape_message(model, x0: torch.Tensor, first: str) -> str:
    expected = ""
    if isinstance(model, nn.Module):
        layer = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
        if isinstance(layer, nn.Linear):
            k = layer.in_features
            expected = f" Its first layer is Linear({k}, ...): try a point of shape (1, {k})."
        elif layer is not None:
            expected = f" Its first layer is {type(layer).__name__} with {layer.in_channels} input channel(s)."
    return (f"the model cannot be run on a point of shape {tuple(x0.shape)} ({first}).{expected} "
            "The point must have the shape the model takes, e.g. (1, n) for n inputs.")


def unwrap_compiled(model):
    """The original module or function of a ``torch.compile``d one (the compiled artefact cannot be traced; its
    original computes the same function)."""
    if isinstance(model, nn.Module):  # (a module's attribute miss runs Module.__getattr__: look only where needed)
        original = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
        return original if isinstance(original, nn.Module) else model
    return getattr(model, "_torchdynamo_orig_callable", model)


def meta_parameters(model) -> str | None:
    """A message when the model's weights are on the meta device (shapes only, no values)."""
    from hope_engine.capture.guard import referenced_modules

    roots = referenced_modules(model)
    if not any(t is not None and t.is_meta for root in roots for m in root.modules()
               for d in (m._parameters, m._buffers) for t in d.values()):  # the common case, without names
        return None
    for module in roots:
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.is_meta:
                return (f"the model's weights are on the meta device ({name} has a shape but no values), so there is "
                        "nothing to expand: materialise them first, e.g. model.to_empty(device='cpu') and "
                        "model.load_state_dict(...).")
    return None
