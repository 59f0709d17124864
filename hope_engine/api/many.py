"""Expansions over a data set: many reference points, in memory-bounded chunks, optionally on an executor.

``expand_many(model, points, order)`` is ``expand(model, chunk, order, batched=True)`` over consecutive chunks of
the points (each row of a chunk is one reference point x0_i; its polynomial p_i(x) = sum_a c_{a,i} (x - x0_i)^a), so
the coefficients are those of a single batched ``expand`` call, chunk by chunk.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from hope_engine.algebra.polynomial import TaylorPolynomial
from hope_engine.errors import ExpansionError

DEFAULT_CHUNK = 256          # points per chunk when the memory estimate is unavailable
CHUNK_MEMORY_FRACTION = 0.25  # of the default memory budget: the part one chunk's expansion may take


def _expand_chunk(model, x: torch.Tensor, order: int, options: dict) -> TaylorPolynomial:
    """One chunk (module level, so that executors can pickle it)."""
    from hope_engine.api.expand import expand

    return expand(model, x, order, batched=True, **options)


def _batch_tensor(batch: Any) -> torch.Tensor:
    """The points of one item of an iterable: a tensor, or the first element of a (x, y, ...) tuple / list."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise ExpansionError(f"expand_many: a batch must be a tensor or an (x, ...) tuple, got {type(batch).__name__}")
    return batch


def auto_chunk_size(model, sample: torch.Tensor, order: int, terms: str = "total", variables=None,
                    budget: int | None = None) -> int:
    """Points per chunk so that one chunk's estimated peak memory (``cost.estimate_cost``: fixed tables plus the
    per-point jets, from traces at 1 and 2 points) stays within ``budget`` bytes (default: a quarter of the default
    memory budget). DEFAULT_CHUNK when the estimate cannot be made."""
    from hope_engine.caches import default_memory_budget
    from hope_engine.capture import trace
    from hope_engine.capture.arguments import prepare_point
    from hope_engine.run.cost import estimate_cost

    budget = int(CHUNK_MEMORY_FRACTION * default_memory_budget()) if budget is None else budget
    try:
        costs = []
        for b in (1, 2):
            x = prepare_point(model, sample[:1].expand(b, *sample.shape[1:]).clone())
            n = x[0].numel() if variables is None else len(variables)
            traced = trace.trace(model, x)
            costs.append(estimate_cost(traced, n, order, terms, x.element_size(), like=x, input_numel=x.numel()).memory)
    except Exception:
        return DEFAULT_CHUNK
    per_point = max(costs[1] - costs[0], 1)
    fixed = max(costs[0] - per_point, 0)
    return int(max(1, (budget - fixed) // per_point))


def _chunks(points, chunk_size: int | None, model, order: int,
            options: dict) -> tuple[Iterator[torch.Tensor], int | None]:
    """Chunks of points and their count (None when unknown, e.g. a generator)."""
    if isinstance(points, torch.Tensor):
        if points.dim() < 2:
            raise ExpansionError(f"expand_many: points need a leading axis of points and at least one more, got "
                                 f"shape {tuple(points.shape)} (one point: points[None])")
        size = chunk_size or auto_chunk_size(model, points, order, options.get("terms", "total"),
                                             options.get("variables"))
        return iter(points.split(size)), -(-points.shape[0] // size)
    if not isinstance(points, Iterable):
        raise ExpansionError(f"expand_many: points must be a tensor or an iterable of batches, got "
                             f"{type(points).__name__}")
    try:
        total = len(points)  # a DataLoader or a list of batches
    except TypeError:
        total = None
    batches = (_batch_tensor(b) for b in points)
    if chunk_size is None:
        return batches, total
    return (piece for b in batches for piece in b.split(chunk_size)), None


def _progress(enabled: bool, total: int | None):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="expand_many", unit="chunk")


def concatenate(parts: list[TaylorPolynomial]) -> TaylorPolynomial:
    """Batched polynomials of one model, basis and variables as one: coefficients (M, B1 + B2 + ..., ...)."""
    if not parts:
        raise ExpansionError("expand_many: no points")
    first = parts[0]
    for p in parts[1:]:
        if p.basis is not first.basis and (p.basis.n, p.basis.order, p.basis.kind) != (
                first.basis.n, first.basis.order, first.basis.kind):
            raise ExpansionError("expand_many: chunks were expanded in different bases")
    checks = tuple(c for c in first.checks if all(c in p.checks for p in parts))  # what every chunk had checked
    return TaylorPolynomial(first.basis, torch.cat([p.coefficients for p in parts], 1),
                            torch.cat([p.center for p in parts], 0), first.variables, True, names=first.names,
                            method=first.method, checks=checks)


def expand_many(model, points, order: int = 6, *, chunk_size: int | None = None,
                executor: concurrent.futures.Executor | None = None, progress: bool = True, concat: bool = True,
                max_pending: int | None = None, **options) -> TaylorPolynomial | list[TaylorPolynomial]:
    """Taylor polynomials of ``model`` at many reference points, chunk by chunk.

    points: a tensor (N, *row) of N points, or an iterable of batches (a DataLoader: tensors or (x, y) tuples, x
    taken). chunk_size: points per ``expand`` call; None: for a tensor, as many as fit a quarter of the default memory
    budget by ``expand``'s own estimate (``auto_chunk_size``), for an iterable, its batches as they come.
    executor: any ``concurrent.futures.Executor`` (a ProcessPoolExecutor, a dask.distributed ``client.get_executor()``
    ...): chunks are submitted to it, at most ``max_pending`` (default 2 x its workers, or 4) at a time, so the model
    must pickle. Use processes, not threads: while tracing, the model's modules are switched to eval mode and
    process-wide module hooks are set, which threads sharing the model would see (a ThreadPoolExecutor is refused).
    progress: a ``tqdm.auto`` bar over chunks when tqdm is installed. concat: True returns
    one batched TaylorPolynomial (coefficients (M, N, ...)), False a list of one batched polynomial per chunk, in
    input order.
    options: passed to ``expand`` (terms, output, variables, names, memory_budget, ...; ``batched`` is always True).
    """
    if "batched" in options:
        raise ExpansionError("expand_many: points are always batched (axis 0); do not pass batched=")
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        raise ExpansionError("expand_many: executor is a ThreadPoolExecutor; use processes (ProcessPoolExecutor, a "
                             "dask.distributed client's executor with processes=True): while tracing, the model is "
                             "switched to eval mode and module hooks are set, which threads sharing it would see")
    chunks, total = _chunks(points, chunk_size, model, order, options)
    first = next(chunks, None)
    if first is not None:
        _refuse_interacting_rows(model, first if first.shape[0] >= 8 or not isinstance(points, torch.Tensor)
                                 else points[:8], options)
        chunks = itertools.chain([first], chunks)
    bar = _progress(progress, total)
    results: list[TaylorPolynomial] = []
    try:
        if executor is None:
            for x in chunks:
                results.append(_expand_chunk(model, x, order, options))
                if bar is not None:
                    bar.update(1)
        else:
            results = _run_on(executor, chunks, model, order, options, bar, max_pending)
    finally:
        if bar is not None:
            bar.close()
    return concatenate(results) if concat else results


def _refuse_interacting_rows(model, sample: torch.Tensor, options: dict) -> None:
    """A model whose batch rows read each other (batch statistics, a norm over the batch) has no per-point expansion
    independent of how the points are grouped: refused, so that every chunk size gives the same answer."""
    from hope_engine.api.expand import rows_interact
    from hope_engine.capture.arguments import prepare_call, trace_model

    if sample.dim() < 2 or sample.shape[0] < 2:
        return
    keys = ("output", "variables", "names", "wrt")
    call = prepare_call(model, sample[:8], batched=True, **{k: options[k] for k in keys if k in options})
    if rows_interact(trace_model(call.model, call.x0, call.stamp), call.x0):
        raise ExpansionError("expand_many: the model's rows interact (an output row changes when another row of "
                             "its batch moves: batch statistics, a norm or softmax over axis 0), so a point's "
                             "expansion depends on which points share its chunk. Expand the batch you mean with "
                             "expand(model, batch, order) (each row with the others held fixed), or make the model "
                             "treat rows independently (eval mode for batch norm).")


def _run_on(executor: concurrent.futures.Executor, chunks: Iterator[torch.Tensor], model, order: int, options: dict,
            bar, max_pending: int | None) -> list[TaylorPolynomial]:
    """Submit chunks with a bounded window of pending futures; results in input order."""
    if max_pending is None:
        workers = getattr(executor, "_max_workers", None)
        max_pending = 2 * workers if isinstance(workers, int) and workers > 0 else 4
    pending: collections.OrderedDict[int, concurrent.futures.Future] = collections.OrderedDict()
    done: dict[int, TaylorPolynomial] = {}
    for i in itertools.count():
        x = next(chunks, None)
        if x is not None:
            pending[i] = executor.submit(_expand_chunk, model, x, order, options)
        while pending and (x is None or len(pending) >= max_pending):
            finished, _ = concurrent.futures.wait(pending.values(), return_when=concurrent.futures.FIRST_COMPLETED)
            for j in [j for j, f in pending.items() if f in finished]:
                done[j] = pending.pop(j).result()
                if bar is not None:
                    bar.update(1)
        if x is None:
            break
    return [done[i] for i in sorted(done)]
