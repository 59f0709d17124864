"""expand_many: chunked expansions over many points equal one batched expand, in process and on executors."""

import concurrent.futures
import multiprocessing

import pytest
import torch
from torch import nn

from hope_engine import TaylorPolynomial, expand, expand_many
from hope_engine.api.many import auto_chunk_size
from hope_engine.errors import ExpansionError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double().eval()


def _points(n=10) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_chunks_equal_one_batched_expand():
    model, pts = _model(), _points()
    whole = expand(model, pts, 4, batched=True)
    p = expand_many(model, pts, 4, chunk_size=3, progress=False)
    assert isinstance(p, TaylorPolynomial) and p.batched and p.batch_size == 10
    torch.testing.assert_close(p.coefficients, whole.coefficients, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(p.center, pts)
    torch.testing.assert_close(p(pts + 0.01), whole(pts + 0.01))


def test_list_of_chunks_and_dataloader():
    model, pts = _model(), _points()
    parts = expand_many(model, pts, 3, chunk_size=4, progress=False, concat=False)
    assert [q.batch_size for q in parts] == [4, 4, 2]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pts, torch.zeros(10)), batch_size=4)
    p = expand_many(model, loader, 3, progress=False)
    torch.testing.assert_close(p.coefficients, torch.cat([q.coefficients for q in parts], 1))
    gen = (pts[i:i + 5] for i in range(0, 10, 5))  # a generator of tensors, re-chunked
    assert [q.batch_size for q in expand_many(model, gen, 3, chunk_size=2, progress=False, concat=False)] == [2, 2,
                                                                                                              1] * 2


def test_options_and_errors():
    model, pts = _model(), _points(4)
    p = expand_many(model, pts, 2, progress=False, terms="pure", output=1)
    q = expand(model, pts, 2, terms="pure", output=1, batched=True)
    torch.testing.assert_close(p.coefficients, q.coefficients)
    with pytest.raises(ExpansionError, match="batched"):
        expand_many(model, pts, 2, batched=False)
    with pytest.raises(ExpansionError, match="leading axis"):
        expand_many(model, pts[0], 2)
    with pytest.raises(ExpansionError, match="iterable"):
        expand_many(model, 3.0, 2)


def test_auto_chunk_size_follows_the_budget():
    model, pts = _model(), _points()
    small = auto_chunk_size(model, pts, 6, budget=2**20)
    large = auto_chunk_size(model, pts, 6, budget=2**30)
    assert 1 <= small < large
    p = expand_many(model, pts, 2, progress=False)  # chunk_size None: the estimate
    torch.testing.assert_close(p.coefficients, expand(model, pts, 2, batched=True).coefficients)


def test_progress_bar_is_optional():
    pytest.importorskip("tqdm")
    model, pts = _model(), _points(4)
    p = expand_many(model, pts, 2, chunk_size=2, progress=True)
    assert p.batch_size == 4
    torch.testing.assert_close(p.coefficients, expand(model, pts, 2, batched=True).coefficients, rtol=1e-13,
                               atol=1e-13)


def test_process_pool_executor_matches_single_process():
    model, pts = _model(), _points()
    single = expand_many(model, pts, 4, chunk_size=3, progress=False)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        pooled = expand_many(model, pts, 4, chunk_size=3, progress=False, executor=pool)
    assert torch.equal(pooled.coefficients, single.coefficients)
    assert torch.equal(pooled.center, single.center)


def test_dask_local_cluster_matches_single_process():
    distributed = pytest.importorskip("distributed")
    model, pts = _model(), _points()
    single = expand_many(model, pts, 4, chunk_size=3, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        got = expand_many(model, pts, 4, chunk_size=3, progress=False, executor=client.get_executor())
    assert torch.equal(got.coefficients, single.coefficients)
    assert torch.equal(got.center, single.center)


def test_a_thread_pool_is_refused_with_the_reason():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh()).double()
    with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(ExpansionError, match="use processes"):
        expand_many(net, torch.zeros(4, 2, dtype=torch.float64), 2, executor=pool, progress=False)
