"""What the engine changes while it runs a model, shared by concurrent calls: the first call in saves and sets, the
last call out restores.

Tracing and the self-check run the model in eval mode, with its module attributes restored afterwards, and with a few
process-wide settings changed (the fused attention fast path, mkldnn, TorchScript's optimizer, torch's loggers). Two
threads on one model must not record each other's changes as the original state, and no lock may be held while the
model runs: a forward that waits on another thread which itself expands a model would deadlock. So each module and
each setting keeps a count of the calls inside: the first to enter saves the state and sets the engine's, the last to
leave restores it. A short lock guards that bookkeeping only. Runs of the same modules (``running``) are serialized per
module, since tracing swaps a module's parameters while its forward runs: models that share no module never wait
for each other.
"""

from __future__ import annotations

import contextlib
import operator
import threading
import weakref
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()  # the bookkeeping only: never held while a model runs


class Setting:
    """A process-wide setting held at ``value`` while any call is inside ``held()``."""

    def __init__(self, get: Callable[[], Any], set_: Callable[[Any], None], value: Any):
        self._get, self._set, self._value = get, set_, value
        self._count = 0
        self._saved: Any = None

    def enter(self) -> None:
        with _LOCK:
            if self._count == 0:
                self._saved = self._get()
                self._set(self._value)
            self._count += 1

    def leave(self) -> None:
        with _LOCK:
            self._count -= 1
            if self._count == 0:
                self._set(self._saved)

    @contextlib.contextmanager
    def held(self):
        self.enter()
        try:
            yield
        finally:
            self.leave()


class Report:
    """What leaving found: ``changed`` True where something had changed and was restored, False where nothing had,
    None where another call was still inside (the last one out restores; this one cannot tell)."""

    changed: bool | None = False


class _PerModule:
    """Per module: how many calls are inside, and what the first one saved (``save(m)``), given back to ``restore(m,
    saved)`` by the last one out. ``needed(m)``: whether a module no call holds needs saving at all."""

    def __init__(self, save: Callable, restore: Callable, needed: Callable | None = None):
        self._save, self._restore, self._needed = save, restore, needed
        self._inside: dict[int, list] = {}  # id(module) -> [module, count, saved]

    def enter(self, modules: list) -> list:
        """Count this call in for every module (saving what the first call in saves); the entries for ``leave``."""
        inside, needed, mine = self._inside, self._needed, []
        with _LOCK:
            for m in modules:
                entry = inside.get(id(m))
                if entry is not None:
                    entry[1] += 1
                elif needed is None or needed(m):
                    entry = inside[id(m)] = [m, 1, self._save(m)]
                else:
                    continue
                mine.append(entry)
        return mine

    def leave(self, mine: list, report: Report) -> None:
        """Count this call out; the last one out restores (``report``: whether anything had changed)."""
        inside = self._inside
        with _LOCK:
            last = []
            for entry in mine:
                entry[1] -= 1
                if entry[1] == 0:
                    del inside[id(entry[0])]
                    last.append(entry)
                elif report.changed is False:
                    report.changed = None
            for m, _, saved in last:
                if self._restore(m, saved):
                    report.changed = True

    @contextlib.contextmanager
    def held(self, modules: list):
        report = Report()
        mine = self.enter(modules)
        try:
            yield report
        finally:
            self.leave(mine, report)


def _training(m) -> bool:
    return m.training


def _save_training(m) -> bool:
    state = m.__dict__
    if "training" in state:  # (a plain attribute: no Module.__setattr__ on this hot path)
        state["training"] = False
    else:
        m.training = False
    return True


def _restore_training(m, training: bool) -> None:
    state = m.__dict__
    if "training" in state:
        state["training"] = training
    else:
        m.training = training


def _save_attributes(m) -> tuple:
    attrs = m.__dict__.copy()
    # (an empty dict, most hook tables, is kept as None: it must stay empty)
    return attrs, [(v, v.copy() if v else None) for v in attrs.values() if isinstance(v, dict)]


def _same(d: dict, saved: dict) -> bool:
    """The same keys holding the same objects (compared at C speed: identity, in insertion order)."""
    return d.keys() == saved.keys() and all(map(operator.is_, d.values(), saved.values()))


def _restore_attributes(m, saved: tuple) -> bool:
    attrs, inner = saved
    state = m.__dict__
    changed = not _same(state, attrs)
    if changed:
        state.clear()
        state.update(attrs)
    for d, content in inner:
        if content is None:
            if d:
                d.clear()
                changed = True
        elif not _same(d, content):
            d.clear()
            d.update(content)
            changed = True
    return changed


_EVAL = _PerModule(_save_training, _restore_training, needed=_training)
_ATTRIBUTES = _PerModule(_save_attributes, _restore_attributes)


_MODULE_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> its RLock


def locks_of(modules: list) -> list:
    """The locks ``running`` takes for these modules, in their global order (one per module, made on first use)."""
    with _LOCK:
        locks = []
        for m in sorted(modules, key=id):
            try:
                lock = _MODULE_LOCKS.get(m)
                if lock is None:
                    lock = _MODULE_LOCKS[m] = threading.RLock()
            except TypeError:  # (a module that cannot be weakly referenced or hashed: not locked)
                continue
            locks.append(lock)
    return locks


@contextlib.contextmanager
def running(modules: list, locks: list | None = None):
    """One thread at a time runs these modules for the engine (tracing swaps their parameters for functional
    stand-ins while the model runs, which another thread's run of the same modules must not see). Per module, taken
    in one global order (no lock-order deadlock between calls on overlapping models), reentrant; calls on models that
    share no module never wait for each other. ``locks``: ``locks_of(modules)`` if taken already."""
    locks = locks_of(modules) if locks is None else locks
    taken = 0
    try:
        for lock in locks:
            lock.acquire()
            taken += 1
        yield
    finally:
        for lock in reversed(locks[:taken]):
            lock.release()


class Run:
    """The engine running a model, as one context manager (the self-check's hot path: no nested generators): the
    modules' locks (``running``), their attributes kept (``attributes_kept``; unless ``keep_attributes`` is False),
    eval modes (``eval_modes``) and ``settings`` held. Entering returns a ``Report`` (whether attributes changed)."""

    __slots__ = ("modules", "locks", "keep", "settings", "report", "_taken", "_attributes", "_eval", "_held")

    def __init__(self, modules: list, locks: list | None = None, keep_attributes: bool = True,
                 settings: tuple = ()):
        self.modules, self.keep, self.settings = modules, keep_attributes, settings
        self.locks = locks_of(modules) if locks is None else locks
        self.report = Report()
        self._taken, self._attributes, self._eval, self._held = 0, None, None, 0

    def __enter__(self) -> Report:
        try:
            for lock in self.locks:
                lock.acquire()
                self._taken += 1
            if self.keep:
                self._attributes = _ATTRIBUTES.enter(self.modules)
            self._eval = _EVAL.enter(self.modules)
            for setting in self.settings:
                setting.enter()
                self._held += 1
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.report

    def __exit__(self, *exc) -> None:
        try:
            for setting in reversed(self.settings[:self._held]):
                setting.leave()
            if self._eval is not None:
                _EVAL.leave(self._eval, Report())
            if self._attributes is not None:
                _ATTRIBUTES.leave(self._attributes, self.report)
        finally:
            for lock in reversed(self.locks[:self._taken]):
                lock.release()


def eval_modes(modules: list):
    """Every module in eval mode while any call is inside; each module's own mode back when the last one leaves."""
    return _EVAL.held(modules)


def attributes_kept(modules: list):
    """Every module's attributes, parameters, buffers, submodules and hooks the same objects again when the last call
    inside leaves (whatever running the model did to them). Yields a ``Report``: whether anything had changed."""
    return _ATTRIBUTES.held(modules)
