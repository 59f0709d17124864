"""Jupyter layer of hope: ``%load_ext hope_widgets``, then ``%hope net`` shows a live Taylor-polynomial panel.

    from hope_widgets import HopePanel
    panel = HopePanel(net, torch.zeros(2), order=4)   # or: panel = %hope net --order 4
    panel.order = 2                                   # the view follows; panel.polynomial is the order-2 polynomial
"""

from __future__ import annotations

from typing import Any

from .panel import HopePanel
from .payloads import wrap_latex

__all__ = ["HopePanel", "load_ipython_extension", "wrap_latex"]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%hope`` and ``%%hope`` (``%load_ext hope_widgets``), and load the tracer in a background thread so
    the first ``%hope`` does not pay that one-time cost (about a second or more) itself."""
    from .magic import HopeMagics
    from .panel import start_warmup

    ipython.register_magics(HopeMagics)
    start_warmup()
