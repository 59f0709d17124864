"""Bounded caches of the engine (bases, product tables, degree vectors) and the machine's memory.

``BoundedCache`` is an LRU mapping bounded by bytes: an entry's size is the bytes of the tensors it holds (or a size
given at insertion); inserting past the bound releases the least recently used entries, and an entry larger than the
bound is returned to the caller without being kept. ``WeakCache`` holds values for objects it keeps weakly (a model,
a class): an entry goes with its key, or when more than ``max_entries`` keys are held. ``memoize`` is a function's
``BoundedCache``. Every engine cache is one of these, registered by name: ``clear_all()`` empties them all,
``cache_bytes()`` says what they hold (tests/test_caches.py scans hope_engine/ for any other module-level cache).

Interrupt safety: a value is built completely before it is inserted, and each entry stores its own size, so a
KeyboardInterrupt at any point leaves either no entry or a complete one, and the byte count always matches.

The default memory budget of an expansion follows the machine: ``MEMORY_FRACTION`` of the memory available now
(``MemAvailable`` of /proc/meminfo, or psutil), or ``FALLBACK_BYTES`` (4 GiB) when neither can be read.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch

GiB = 2**30
FALLBACK_BYTES = 4 * GiB
MEMORY_FRACTION = 0.5          # of the available memory: the default budget of one expansion
CACHE_FRACTION = 0.125         # of the available memory: the default bound of each engine cache ...
CACHE_MAX_BYTES = 2 * GiB      # ... at most this ...
CACHE_MIN_BYTES = 64 * 2**20   # ... and at least this


_AVAILABLE: list = [0.0, None]   # (monotonic time read, bytes): reread at most every _AVAILABLE_TTL seconds
_AVAILABLE_TTL = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (MemAvailable of /proc/meminfo, else psutil), or None; read
    at most every half second (a small model's expansion takes less than reading it)."""
    now = time.monotonic()
    if now - _AVAILABLE[0] > _AVAILABLE_TTL or _AVAILABLE[1] is None:
        _AVAILABLE[:] = [now, _read_available_memory()]
    return _AVAILABLE[1]


def _read_available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # optional
    except ImportError:
        return None
    try:
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - any failure: unknown
        return None


def default_memory_budget() -> int:
    """The default memory budget of an expansion: MEMORY_FRACTION x available memory, or FALLBACK_BYTES if unknown."""
    avail = available_memory()
    return FALLBACK_BYTES if avail is None else max(int(MEMORY_FRACTION * avail), 1)


def default_cache_bytes() -> int:
    """The default byte bound of one engine cache: CACHE_FRACTION x available memory, clamped to
    [CACHE_MIN_BYTES, CACHE_MAX_BYTES] (CACHE_MAX_BYTES / 2 when the available memory is unknown)."""
    avail = available_memory()
    if avail is None:
        return CACHE_MAX_BYTES // 2
    return int(min(CACHE_MAX_BYTES, max(CACHE_MIN_BYTES, CACHE_FRACTION * avail)))


def nbytes_of(value: Any) -> int:
    """Bytes of the tensors in ``value`` (tensors, and tuples/lists/dicts/dataclass-like objects holding them).

    A view counts the bytes it spans, not its whole storage."""
    seen: set[int] = set()

    def walk(v: Any) -> int:
        if isinstance(v, torch.Tensor):
            return v.numel() * v.element_size()
        if id(v) in seen:
            return 0
        seen.add(id(v))
        if isinstance(v, (tuple, list)):
            return sum(walk(e) for e in v)
        if isinstance(v, dict):
            return sum(walk(e) for e in v.values())
        fields = getattr(v, "__dataclass_fields__", None)
        if fields is not None:
            return sum(walk(getattr(v, f)) for f in fields)
        return 0

    return walk(value)


_REGISTRY: dict[str, weakref.ref] = {}
_registry_lock = threading.Lock()


class _Limited:
    """What both cache kinds share: a registered name, entries (value, size) in ``_data`` bounded by ``max_entries``
    and ``max_bytes`` (None follows ``default_cache_bytes()``, read when first needed), hit/miss/eviction counts, and
    ``clear()``. Subclasses say how entries are held and which goes first (``_shrink``)."""

    def __init__(self, name: str, data, max_bytes: int | None, max_entries: int | None):
        self.name = name
        self._max_bytes = max_bytes
        self.max_entries = max_entries
        self._data = data
        self._lock = threading.RLock()
        self.hits = self.misses = self.evictions = 0
        _register(self)

    @property
    def max_bytes(self) -> int:
        if self._max_bytes is None:
            self._max_bytes = default_cache_bytes()
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int | None) -> None:
        with self._lock:
            self._max_bytes = None if value is None else int(value)
            self._shrink(0, adding=False)

    @property
    def nbytes(self) -> int:
        """Bytes held now: the sum of the sizes stored with the entries."""
        with self._lock:
            return sum(size for _, size in list(self._data.values()))

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Release every entry (the memory returns once nothing elsewhere still references it)."""
        with self._lock:
            self._data.clear()

    def _shrink(self, incoming: int, adding: bool = True) -> None:
        raise NotImplementedError


class BoundedCache(_Limited):
    """An LRU mapping with at most ``max_bytes`` bytes (and at most ``max_entries`` entries).

    ``get_or_build(key, build, nbytes=None)`` returns the cached value or builds, inserts and returns it. The value
    is inserted only once ``build`` has returned, so an interrupted build leaves the cache as it was. ``clear()``
    releases everything. ``max_bytes=None`` follows ``default_cache_bytes()`` (read when first needed).
    """

    def __init__(self, name: str, max_bytes: int | None = None, max_entries: int | None = 64):
        super().__init__(name, OrderedDict(), max_bytes, max_entries)  # key -> (value, size), least recent first

    def fits(self, nbytes: int) -> bool:
        """Whether an entry of ``nbytes`` would be kept."""
        return nbytes <= self.max_bytes

    # ----------------------------------------------------------------------------------------------- mapping
    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self._data))

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value for ``key`` (marked most recently used), or ``default``."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: Any, nbytes: int | None = None) -> Any:
        """Insert ``value`` (its size: ``nbytes`` or the bytes of its tensors), releasing least recently used entries
        until it fits; a value larger than the bound is not kept. Returns ``value``."""
        size = nbytes_of(value) if nbytes is None else int(nbytes)
        with self._lock:
            self._data.pop(key, None)
            if size > self.max_bytes:
                return value
            self._shrink(size)
            self._data[key] = (value, size)  # one store: an interrupt leaves the entry absent or complete
        return value

    def get_or_build(self, key: Hashable, build: Callable[[], Any], nbytes: int | None = None) -> Any:
        """The cached value for ``key``, or ``build()`` inserted once it is complete (built outside
        ``torch.inference_mode``: a cached tensor made there could not be used by a later call that records autograd
        history)."""
        entry = self.get(key, _MISSING)
        if entry is not _MISSING:
            return entry
        with torch.inference_mode(False):
            value = build()
        return self.put(key, value, nbytes)

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            entry = self._data.pop(key, None)
        return default if entry is None else entry[0]

    def _shrink(self, incoming: int, adding: bool = True) -> None:
        """Evict least recently used entries until ``incoming`` more bytes (and, if ``adding``, one more entry) fit."""
        limit = self.max_bytes - incoming
        room = (self.max_entries - 1 if adding else self.max_entries) if self.max_entries is not None else None
        while self._data and (sum(s for _, s in self._data.values()) > limit
                              or (room is not None and len(self._data) > room)):
            self._data.popitem(last=False)
            self.evictions += 1

    def __repr__(self) -> str:
        return (f"BoundedCache({self.name!r}, {len(self._data)} entries, {self.nbytes} / {self.max_bytes} bytes, "
                f"hits={self.hits}, misses={self.misses}, evictions={self.evictions})")


_MISSING = object()


class WeakCache(_Limited):
    """Values for objects held weakly (a model, a wrapper, a class): an entry goes when its key is collected, and at
    most ``max_entries`` keys are held (the one inserted or updated longest ago is dropped first: a hit does not
    reorder, so that a lookup stays one weak dictionary read). Each entry's size is given at insertion (default 0:
    a value holding nothing but references to what its key holds anyway); ``max_bytes`` bounds their sum.

    ``get`` raises TypeError for a key that cannot be held weakly or hashed (callers then do without the cache)."""

    def __init__(self, name: str, max_entries: int = 256, max_bytes: int | None = None):
        super().__init__(name, weakref.WeakKeyDictionary(), max_bytes, max_entries)  # key -> (value, size)

    def __contains__(self, key: Any) -> bool:
        try:
            return key in self._data
        except TypeError:
            return False

    def keys(self) -> list:
        return list(self._data.keys())

    def get(self, key: Any, default: Any = None) -> Any:
        entry = self._data.get(key)
        if entry is None:
            self.misses += 1
            return default
        self.hits += 1
        return entry[0]

    def put(self, key: Any, value: Any, nbytes: int = 0) -> Any:
        """Insert (or replace) ``key``'s value, dropping the oldest entries past the bounds; a value larger than the
        byte bound is not kept. Raises TypeError for a key that cannot be held weakly. Returns ``value``."""
        size = int(nbytes)
        with self._lock:
            self._data.pop(key, None)
            if size > self.max_bytes:
                return value
            self._shrink(size)
            self._data[key] = (value, size)
        return value

    def pop(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            try:
                entry = self._data.pop(key, None)
            except TypeError:
                entry = None
        return default if entry is None else entry[0]

    def _shrink(self, incoming: int, adding: bool = True) -> None:
        limit = self.max_bytes - incoming
        room = self.max_entries - 1 if adding else self.max_entries
        while len(self._data) and (len(self._data) > room
                                   or sum(s for _, s in list(self._data.values())) > limit):
            oldest = next(iter(self._data.keys()), None)
            if oldest is None:
                break
            self._data.pop(oldest, None)
            self.evictions += 1

    def __repr__(self) -> str:
        return (f"WeakCache({self.name!r}, {len(self)} entries, {self.nbytes} bytes, hits={self.hits}, "
                f"misses={self.misses}, evictions={self.evictions})")


def memoize(name: str, max_entries: int = 64) -> Callable[[Callable], Callable]:
    """``functools.lru_cache`` for the engine: the function's results (of hashable arguments, holding no tensors) in a
    registered ``BoundedCache`` of at most ``max_entries`` entries, so that ``clear_all`` empties it too."""

    def decorate(fn: Callable) -> Callable:
        cache = BoundedCache(name, max_entries=max_entries)

        @functools.wraps(fn)
        def memoized(*args: Hashable) -> Any:
            hit = cache.get(args, _MISSING)
            if hit is not _MISSING:
                return hit
            with torch.inference_mode(False):  # (as ``get_or_build``)
                return cache.put(args, fn(*args), nbytes=0)

        memoized.cache = cache
        return memoized

    return decorate


def _register(cache: BoundedCache | WeakCache) -> None:
    with _registry_lock:
        _REGISTRY[cache.name] = weakref.ref(cache)


def caches() -> dict[str, BoundedCache | WeakCache]:
    """Every live engine cache by name."""
    with _registry_lock:
        live = {name: ref() for name, ref in _REGISTRY.items()}
    return {name: c for name, c in live.items() if c is not None}


def clear_all() -> None:
    """Release every engine cache: bases and tables, traced graphs, guards, model facts, wrappers, memoized values."""
    for c in caches().values():
        c.clear()


def cache_bytes() -> int:
    """Bytes held by all engine caches together."""
    return sum(c.nbytes for c in caches().values())
