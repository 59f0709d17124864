"""Memory and time budgets, the bounded engine caches, and their consistency after an interrupt (all small cases)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hope_engine import MemoryBudgetError, TimeBudgetError, caches, expand
from hope_engine.algebra import basis as basis_mod
from hope_engine.algebra import jet as series_mod
from hope_engine.algebra.basis import make_basis, product_table_bytes, product_tables, tables_cached
from hope_engine.caches import BoundedCache
from hope_engine.capture import trace
from hope_engine.run import program
from hope_engine.run.cost import estimate_cost


def mlp(n: int, width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n, width), nn.Tanh(), nn.Linear(width, 1)).double().eval()


def reference_tables(n: int, order: int) -> list[list[torch.Tensor]]:
    """(left, right, out within block, left degree) per degree by the defining loop: a_i + a_j = a_k."""
    b = make_basis(n, order, "total")
    rows = b.multi_indices()
    out = []
    for d in range(order + 1):
        cols: list[list[int]] = [[], [], [], []]
        for p in range(d + 1):
            for i in range(b.offsets[p], b.offsets[p + 1]):
                for j in range(b.offsets[d - p], b.offsets[d - p + 1]):
                    k = b.position([x + y for x, y in zip(rows[i], rows[j])])
                    for col, v in zip(cols, (i, j, k - b.offsets[d], p)):
                        col.append(v)
        out.append([torch.tensor(c, dtype=torch.long) for c in cols])
    return out


@pytest.fixture(autouse=True)
def fresh_caches():
    caches.clear_all()
    yield
    caches.clear_all()


@pytest.mark.parametrize("n,order", [(1, 4), (2, 0), (2, 6), (3, 5), (5, 3), (7, 2)])
def test_vectorized_product_tables_match_the_defining_loop(n, order):
    got = product_tables(make_basis(n, order, "total"))
    for table, ref in zip(got, reference_tables(n, order), strict=True):
        for a, b in zip((table.left, table.right, table.out, table.left_degree), ref):
            assert torch.equal(a, b)


def test_estimate_counts_the_product_table_and_grows_with_it():
    model, x0 = mlp(4), torch.zeros(1, 4, dtype=torch.float64)
    traced = trace.trace(model, x0)
    small = estimate_cost(traced, 4, 4, "total", 8, like=x0, input_numel=4)
    large = estimate_cost(traced, 4, 8, "total", 8, like=x0, input_numel=4)
    assert small.parts["tables"] == product_table_bytes(4, 4)
    assert large.parts["tables"] == product_table_bytes(4, 8)
    assert large.memory - small.memory >= product_table_bytes(4, 8) - product_table_bytes(4, 4)
    assert large.seconds > small.seconds
    pure = estimate_cost(traced, 4, 8, "pure", 8, like=x0, input_numel=4)
    assert pure.parts["tables"] == 0 and pure.memory < large.memory
    product_tables(make_basis(4, 8, "total"))  # once cached, the table costs nothing more
    assert estimate_cost(traced, 4, 8, "total", 8, like=x0, input_numel=4).parts["tables"] == 0


def test_estimate_counts_the_live_jets_and_the_largest_temporary():
    """Wider activations and more coefficients each raise the jet part in proportion."""
    x0 = torch.zeros(1, 3, dtype=torch.float64)
    narrow = estimate_cost(trace.trace(mlp(3, 16), x0), 3, 6, "total", 8, like=x0, input_numel=3).parts["jets"]
    wide = estimate_cost(trace.trace(mlp(3, 64), x0), 3, 6, "total", 8, like=x0, input_numel=3).parts["jets"]
    assert 3 < wide / narrow <= 4
    m = math.comb(3 + 6, 6)
    assert wide >= 3 * m * 64 * 8  # pre-activation, tanh and its helper series alive together


def test_bounded_cache_evicts_least_recently_used_over_its_byte_bound():
    c = BoundedCache("test lru", max_bytes=1000)
    t = [torch.zeros(50, dtype=torch.float64) for _ in range(4)]  # 400 bytes each
    c.put("a", t[0])
    c.put("b", t[1])
    assert c.nbytes == 800 and len(c) == 2
    assert c.get("a") is t[0]  # "a" is now the most recently used
    c.put("c", t[2])
    assert "b" not in c and "a" in c and "c" in c and c.nbytes == 800
    c.put("huge", torch.zeros(200, dtype=torch.float64))  # 1600 bytes > bound: returned, not kept
    assert "huge" not in c and c.nbytes == 800
    built = c.get_or_build("d", lambda: t[3])
    assert built is t[3] and c.get_or_build("d", lambda: pytest.fail("rebuilt")) is t[3]
    c.max_bytes = 400
    assert len(c) == 1 and c.nbytes == 400
    c.clear()
    assert len(c) == 0 and c.nbytes == 0
    assert "test lru" in caches.caches()


def test_engine_caches_release_tables_over_their_bound():
    tables = caches.caches()["product tables"]
    flat = caches.caches()["flat product tables"]
    saved = tables.max_bytes, flat.max_bytes
    model, x0 = mlp(3), torch.full((1, 3), 0.2, dtype=torch.float64)
    reference = expand(model, x0, 5).coefficients.clone()
    caches.clear_all()
    try:
        tables.max_bytes = flat.max_bytes = product_table_bytes(3, 5) - 1
        again = expand(model, x0, 5)
        assert not tables_cached(3, 5) and len(tables) == 0 and len(flat) == 0
        assert torch.allclose(again.coefficients, reference, rtol=1e-12, atol=1e-14)
    finally:
        tables.max_bytes, flat.max_bytes = saved
    assert caches.cache_bytes() == sum(c.nbytes for c in caches.caches().values())


def _refuse_to_run(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the expansion ran although it should have been refused")

    monkeypatch.setattr(program, "run", boom)
    monkeypatch.setattr(basis_mod, "_build_tables", boom)


def test_memory_refusal_names_the_numbers_without_running(monkeypatch):
    _refuse_to_run(monkeypatch)
    model, x0 = mlp(10), torch.zeros(1, 10, dtype=torch.float64)
    with pytest.raises(MemoryBudgetError) as info:
        expand(model, x0, 14, memory_budget=2**30)
    msg, e = str(info.value), info.value
    assert e.estimate > product_table_bytes(10, 14) and e.budget == 2**30
    assert "1.0 GiB" in msg and "tables" in msg and f"memory_budget={2 ** (e.estimate - 1).bit_length()}" in msg
    assert not tables_cached(10, 14)


def test_default_memory_budget_follows_available_memory(monkeypatch):
    monkeypatch.setattr(caches, "available_memory", lambda: 8 * 2**30)
    assert caches.default_memory_budget() == 4 * 2**30
    monkeypatch.setattr(caches, "available_memory", lambda: None)
    assert caches.default_memory_budget() == caches.FALLBACK_BYTES == 4 * 2**30
    monkeypatch.setattr(caches, "available_memory", lambda: 2**30)
    _refuse_to_run(monkeypatch)
    with pytest.raises(MemoryBudgetError) as info:  # memory_budget=None: half of the (patched) 1 GiB
        expand(mlp(10), torch.zeros(1, 10, dtype=torch.float64), 12)
    assert info.value.budget == 2**29


def test_time_refusal_names_the_numbers_and_the_overrides(monkeypatch):
    _refuse_to_run(monkeypatch)
    model, x0 = mlp(10, width=512), torch.zeros(1, 10, dtype=torch.float64)
    with pytest.raises(TimeBudgetError) as info:
        expand(model, x0, 10, memory_budget=2**50, time_budget=1.0)
    msg = str(info.value)
    assert info.value.estimate > 1.0 and "time budget of 1 s" in msg
    assert "time_budget=None" in msg and "--max-order" in msg and "\n" not in msg


def test_small_expansions_pass_both_budgets():
    p = expand(mlp(2), torch.zeros(1, 2, dtype=torch.float64), 4, time_budget=60.0)
    assert p.basis.size == math.comb(6, 4)


def test_paper_rule_checks_the_budget_before_it_allocates(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(600, 4), nn.Tanh(), nn.Linear(4, 1)).double().eval()
    x0 = torch.zeros(1, 600, dtype=torch.float64)
    monkeypatch.setattr(basis_mod, "_build_basis", lambda *a: pytest.fail("the basis was built"))
    with pytest.raises(MemoryBudgetError) as info:  # C(604, 4) = 5.5e9 coefficients
        expand(model, x0, 4, method="hope", memory_budget=2**32)
    assert "(hope)" in str(info.value) and info.value.estimate > 2**32
    with pytest.raises(TimeBudgetError):
        expand(model, x0, 2, method="hope", memory_budget=2**50, time_budget=1e-6)
    monkeypatch.undo()
    small = expand(model, x0, 2, method="hope", variables=range(5), memory_budget=2**32, time_budget=60)
    assert small.basis.size == math.comb(5 + 2, 2)


def test_interrupted_table_build_leaves_no_entry(monkeypatch):
    original = basis_mod._build_tables

    def interrupted(*args):
        original(*args)  # complete, then interrupted before it is cached
        raise KeyboardInterrupt

    monkeypatch.setattr(basis_mod, "_build_tables", interrupted)
    model, x0 = mlp(3), torch.full((1, 3), 0.3, dtype=torch.float64)
    with pytest.raises(KeyboardInterrupt):
        expand(model, x0, 4)
    assert not tables_cached(3, 4)
    monkeypatch.setattr(basis_mod, "_build_tables", original)
    got = expand(model, x0, 4).coefficients
    caches.clear_all()
    assert torch.equal(got, expand(model, x0, 4).coefficients)


def test_interrupt_mid_expansion_leaves_every_cache_consistent(monkeypatch):
    model, x0 = mlp(3), torch.full((1, 3), 0.3, dtype=torch.float64)
    reference = expand(model, x0, 5).coefficients.clone()
    caches.clear_all()
    calls = {"n": 0}
    original = series_mod.riccati_coefficients

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt  # the tables exist by now; the jets are half computed

    monkeypatch.setattr(series_mod, "riccati_coefficients", interrupted)
    with pytest.raises(KeyboardInterrupt):
        expand(model, x0, 5)
    assert calls["n"] == 1
    for cache in caches.caches().values():
        assert cache.nbytes == sum(size for _, size in cache._data.values())
        assert cache.nbytes <= cache.max_bytes
    if tables_cached(3, 5):  # a cached table is a complete one
        tabs = product_tables(make_basis(3, 5, "total"))
        assert sum(t.left.numel() for t in tabs) == math.comb(2 * 3 + 5, 5)
    monkeypatch.setattr(series_mod, "riccati_coefficients", original)
    assert torch.allclose(expand(model, x0, 5).coefficients, reference, rtol=1e-13, atol=1e-15)


def test_panel_passes_a_time_budget(monkeypatch):
    panel = pytest.importorskip("hope_widgets.panel")
    seen = {}

    def fake_expand(*args, **kwargs):
        seen.update(kwargs)
        raise TimeBudgetError("refused", 100.0, kwargs.get("time_budget") or 0.0)

    monkeypatch.setattr(panel, "expand", fake_expand)
    with pytest.raises(TimeBudgetError):
        panel.HopePanel(mlp(2), [0.1, 0.2], order=2, max_order=4)
    assert seen["time_budget"] == panel.TIME_BUDGET == 60.0
