"""Panels that follow their model: after every cell, each live panel whose model changed expands again and redraws.

IPython fires ``post_run_cell`` when a cell finishes; ``after_cell`` is registered for it once per shell (by
``%load_ext hope_widgets`` or by the first panel made in IPython) and asks every live panel whether its model changed,
by the engine's own notion (``guard.state_token``: the guard stamp -- parameters, buffers, structure, the globals and
closures the code reads -- plus the state of every tensor it met). A panel that is closed or garbage-collected is
forgotten: the registry holds panels weakly. When nothing changed the check is one stamp lookup and a few version
counters per model (benchmarks/panel_follow.py measures it).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

_panels: weakref.WeakSet = weakref.WeakSet()
_shell: Any = None  # the shell ``after_cell`` is registered with (None: not registered)


def track(panel: Any) -> None:
    """Follow ``panel`` after every cell (held weakly), registering the hook with IPython's shell if there is one."""
    _panels.add(panel)
    register()


def live_panels() -> list[Any]:
    """The panels followed now: created, not closed and not garbage-collected."""
    return [p for p in list(_panels) if getattr(p, "comm", None) is not None]


def register(shell: Any = None) -> bool:
    """Register ``after_cell`` for ``shell``'s ``post_run_cell`` event (default: the running IPython), once; returns
    whether a shell has it. Outside IPython nothing is registered (``HopePanel.recompute()`` and ``follow`` remain)."""
    global _shell
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
        if shell is None:
            return False
    if shell is _shell:
        return True
    unregister()
    shell.events.register("post_run_cell", after_cell)
    _shell = shell
    return True


def unregister() -> None:
    """Remove ``after_cell`` from the shell it was registered with (``%unload_ext hope_widgets`` calls this)."""
    global _shell
    if _shell is not None:
        with contextlib.suppress(ValueError):  # (removed already by someone else)
            _shell.events.unregister("post_run_cell", after_cell)
        _shell = None


def registered_shell() -> Any:
    """The shell ``after_cell`` is registered with, or None."""
    return _shell


def after_cell(result: Any = None) -> list[Any]:
    """IPython's ``post_run_cell`` hook: every live panel whose model changed expands again and redraws, its status
    saying "updated: the model changed". Returns the panels that updated. Panels on one model share one token."""
    updated = []
    tokens: dict[int, Any] = {}
    for panel in list(_panels):
        if getattr(panel, "comm", None) is None:  # closed: never again
            _panels.discard(panel)
            continue
        if panel.follow_model(tokens):  # (it never raises: a failure is shown in the panel)
            updated.append(panel)
    return updated
