"""Jupyter layer of hope: ``%load_ext hope_widgets``, then ``%hope net`` shows a live Taylor-polynomial panel.

    from hope_widgets import HopePanel
    panel = HopePanel(net, torch.zeros(2), order=4)   # or: panel = %hope net --order 4
    panel.order = 2                                   # the view follows; panel.polynomial is the order-2 polynomial

A panel follows its model: after every cell, one whose model changed (trained in place, a global module it calls
retrained, a submodule swapped) expands again; ``with panel.follow(optimizer):`` redraws it during training.
"""

from __future__ import annotations

from typing import Any

from .panel import HopePanel
from .payloads import wrap_latex

__all__ = ["HopePanel", "load_ipython_extension", "unload_ipython_extension", "wrap_latex"]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%hope`` and ``%%hope`` (``%load_ext hope_widgets``) and the after-cell hook that keeps every panel
    on its model (``live.after_cell``, once per shell), and load the tracer in a background thread so the first
    ``%hope`` does not pay that one-time cost (about a second or more) itself."""
    from . import live
    from .magic import HopeMagics
    from .panel import start_warmup

    ipython.register_magics(HopeMagics)
    live.register(ipython)
    start_warmup()


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext hope_widgets``: the after-cell hook is removed (panels stay as they are; ``recompute()`` still
    works)."""
    from . import live

    if live.registered_shell() is ipython:
        live.unregister()
