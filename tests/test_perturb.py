"""Perturb-and-MAP family (diffcomb/perturb.py, csrc/perturb): solvers against the numpy/scipy
reference, noise samplers' distributions and reproducibility, estimators against exact
expectations and finite differences, modules, custom-op checks, CUDA agreement."""

from __future__ import annotations

import doctest
import functools
import importlib
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import diffcomb
import diffcomb.perturb
from tests.conftest import DEVICES, DTYPES, HAS_CUDA, assert_close, requires_cuda
from tests.reference import perturb as ref

# ------------------------------------------------------------------------------------------------
# Helpers.


def _np_rows(x: torch.Tensor, event_dims: int) -> np.ndarray:
    x = x.detach().cpu().double()
    return x.reshape(-1, *x.shape[x.dim() - event_dims:]).numpy()


def _ref_apply(fn, x: torch.Tensor, event_dims: int) -> torch.Tensor:
    rows = _np_rows(x, event_dims)
    out = np.stack([fn(r) for r in rows]) if len(rows) else np.zeros_like(rows)
    return torch.from_numpy(out).reshape(x.shape)


def _ties(gen: torch.Generator, *shape: int, levels: int = 4) -> torch.Tensor:
    return torch.randint(0, levels, shape, generator=gen).double()


class CountingSolver:
    """A user solver that records the batch sizes it was called with."""

    def __init__(self, solver, event_dims: int = 1):
        self.solver, self.event_dims, self.calls = solver, event_dims, []

    def __call__(self, theta):
        self.calls.append(tuple(theta.shape))
        return self.solver(theta)


# ------------------------------------------------------------------------------------------------
# Solvers against the reference.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 1), (2, 3, 9), (64, 33), (4, 300)])
def test_argmax_topk_ranks_match_reference(gen, device, dtype, shape):
    for x in (torch.randn(shape, generator=gen, dtype=torch.float64), _ties(gen, *shape)):
        xd = x.to(device=device, dtype=dtype)
        assert_close(diffcomb.argmax_onehot(xd), _ref_apply(ref.argmax_onehot, x, 1), rtol=0, atol=0)
        assert_close(diffcomb.sort_permutation(xd), _ref_apply(ref.ranks, x, 1), rtol=0, atol=0)
        for k in sorted({0, 1, shape[-1] // 2, shape[-1]}):
            assert_close(diffcomb.topk_mask(xd, k), _ref_apply(lambda r: ref.topk_mask(r, k), x, 1), rtol=0, atol=0)


def test_rank_matrix(gen):
    x = _ties(gen, 3, 6)
    p = diffcomb.sort_permutation(x, matrix=True)
    assert p.shape == (3, 6, 6)
    for b in range(3):
        np.testing.assert_array_equal(p[b].numpy(), ref.rank_matrix(x[b].numpy()))
        assert torch.equal(p[b].T @ x[b], x[b].sort().values)


@pytest.mark.parametrize("device", DEVICES)
def test_spec_grid_and_assignment_examples(device):
    w = torch.tensor([[[1.0, 5, 1], [1, 9, 1], [5, 1, 1]], [[1.0, 1, 1], [9, 9, 1], [9, 9, 1]]], device=device)
    expected = torch.tensor([[[1.0, 0, 0], [1, 0, 0], [0, 1, 1]], [[1.0, 1, 0], [0, 0, 1], [0, 0, 1]]])
    path = diffcomb.grid_shortest_path(w)
    assert torch.equal(path.cpu(), expected)
    assert ((path * w).sum((-2, -1)).cpu() == 4).all()
    theta = torch.tensor([[4.0, 1, 3], [2, 0, 5], [3, 2, 2]], device=device)
    y = diffcomb.linear_assignment(theta, maximize=True)
    assert y.argmax(-1).tolist() == [0, 2, 1] and float((y * theta).sum()) == 11
    assert torch.equal(diffcomb.linear_assignment(-theta), y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 2), (3, 3), (5, 7), (12, 12)])
def test_grid_shortest_path_matches_reference(gen, device, dtype, shape):
    batch = 6
    # Continuous weights: the optimal path is unique, the mask must match exactly.
    w = torch.rand((batch, *shape), generator=gen, dtype=torch.float64) * 9 + 0.1
    out = diffcomb.grid_shortest_path(w.to(device=device, dtype=dtype)).cpu().double()
    for b in range(batch):
        mask, cost = ref.grid_shortest_path(w[b].to(dtype).double().numpy())
        np.testing.assert_array_equal(out[b].numpy(), mask)
    # Integer weights: many ties; the returned path is a valid optimal path.
    w = torch.randint(1, 4, (batch, *shape), generator=gen).double()
    out = diffcomb.grid_shortest_path(w.to(device=device, dtype=dtype)).cpu().double()
    for b in range(batch):
        _, cost = ref.grid_shortest_path(w[b].numpy())
        assert ref.is_grid_path(out[b].numpy())
        assert ref.grid_path_cost(w[b].numpy(), out[b].numpy()) == cost


def test_grid_tiny_bruteforce(gen):
    for shape in [(2, 3), (3, 3), (3, 4)]:
        for _ in range(4):
            w = torch.randint(0, 3, shape, generator=gen).double()  # zero weights included
            path = diffcomb.grid_shortest_path(w).numpy()
            assert ref.is_grid_path(path)
            assert ref.grid_path_cost(w.numpy(), path) == ref.grid_bruteforce_cost(w.numpy())


def test_grid_bucket_and_heap_paths_agree(gen):
    # Moderate weights use the bucket queue; one tiny weight forces the binary heap (too many
    # buckets); zeros force the heap too. Every case matches the reference exactly.
    w = torch.rand(8, 9, 11, generator=gen, dtype=torch.float64) * 5 + 0.5
    tiny = w.clone()
    tiny[:, 4, 4] = 1e-12
    for weights in (w, tiny):
        out = diffcomb.grid_shortest_path(weights)
        for b in range(8):
            np.testing.assert_array_equal(out[b].numpy(), ref.grid_shortest_path(weights[b].numpy())[0])


def test_grid_zero_and_negative_weights_are_clamped():
    w = torch.zeros(5, 6)
    path = diffcomb.grid_shortest_path(w)
    assert ref.is_grid_path(path.numpy())
    assert int(path.sum()) == 6  # fewest vertices among the zero-cost paths
    w = -torch.rand(4, 4)  # all clamped to 0
    assert torch.equal(diffcomb.grid_shortest_path(w), diffcomb.grid_shortest_path(torch.zeros(4, 4)))


def _grid_labels_path(weights: np.ndarray) -> np.ndarray:
    """The 0/1 path of the kernels' tie rule: Dijkstra on (cost, vertex count) labels compared
    lexicographically, then SPEC.md 6.1.4's backtrack restricted to neighbours u with
    dist[u] + W[v] == dist[v] and count[u] + 1 == count[v] (first in the fixed order)."""
    import heapq

    wts = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    h, w = wts.shape
    label = {(0, 0): (wts[0, 0], 1)}
    heap, done = [(wts[0, 0], 1, 0, 0)], set()
    while heap:
        d, c, i, j = heapq.heappop(heap)
        if (i, j) in done:
            continue
        done.add((i, j))
        for di, dj in ref.NEIGHBOURS:
            a, b = i + di, j + dj
            if 0 <= a < h and 0 <= b < w and (a, b) not in done:
                cand = (d + wts[a, b], c + 1)
                if cand < label.get((a, b), (math.inf, 0)):
                    label[(a, b)] = cand
                    heapq.heappush(heap, (*cand, a, b))
    mask = np.zeros((h, w))
    i, j = h - 1, w - 1
    mask[i, j] = 1.0
    while (i, j) != (0, 0):
        d, c = label[(i, j)]
        for di, dj in ref.NEIGHBOURS:
            a, b = i + di, j + dj
            if 0 <= a < h and 0 <= b < w and label[(a, b)][1] + 1 == c and label[(a, b)][0] + wts[i, j] == d:
                i, j = a, b
                break
        mask[i, j] = 1.0
    return mask


@pytest.mark.parametrize("shape", [(12, 12), (30, 30), (7, 19), (1, 9), (9, 1), (1, 1)])
def test_grid_sweeps_match_reference(gen, shape):
    # The CPU solves several grids at a time (8, one per SIMD lane) with relaxation sweeps: a
    # batch of 37 fills whole groups and part of one; continuous weights (unique optimum) must
    # give the reference's path exactly.
    w = torch.rand((37, *shape), generator=gen, dtype=torch.float64) * 9 + 0.1
    out = diffcomb.grid_shortest_path(w)
    for b in range(w.shape[0]):
        np.testing.assert_array_equal(out[b].numpy(), ref.grid_shortest_path(w[b].numpy())[0])
    # Float32 input, Warcraft-like terrain: a few cost levels, so many equal-cost paths; the
    # tie rule (fewest vertices, then the fixed neighbour order) must hold exactly.
    levels = torch.tensor([0.8, 1.2, 5.3, 7.7, 9.2])
    t = levels[torch.randint(0, 5, (20, *shape), generator=gen)]
    out = diffcomb.grid_shortest_path(t)
    for b in range(t.shape[0]):
        np.testing.assert_array_equal(out[b].numpy(), _grid_labels_path(t[b].double().numpy()))


def test_grid_sweeps_zero_weights_and_ties(gen):
    # Zero weights (zero-cost cycles) and integer weights: ties everywhere, resolved by the
    # vertex count and the neighbour order, as the Dijkstra labels resolve them.
    for shape in [(6, 6), (5, 11), (13, 4)]:
        w = torch.randint(0, 3, (18, *shape), generator=gen).double()
        w[:3] = 0.0
        w[3:6] = 1.0
        out = diffcomb.grid_shortest_path(w)
        for b in range(w.shape[0]):
            np.testing.assert_array_equal(out[b].numpy(), _grid_labels_path(w[b].numpy()))
            assert ref.grid_path_cost(w[b].numpy(), out[b].numpy()) == ref.grid_dijkstra(w[b].numpy())[0][-1, -1]


def _serpentine(h: int, wd: int, wall: float) -> torch.Tensor:
    """Walls of weight `wall` on every odd column, open alternately at the bottom and the top row:
    the only cheap path runs down and up every corridor."""
    w = torch.ones(h, wd, dtype=torch.float64)
    w[:, 1::2] = wall
    w[h - 1, 1::4] = 1.0
    w[0, 3::4] = 1.0
    return w


def test_grid_sweeps_maze_falls_back_to_dijkstra(gen):
    # 3 x 301: 150 up-and-down turns need more relaxation sweeps than the CPU's budget, so those
    # grids are finished by Dijkstra; the other grids of the same group keep their sweep result.
    maze = _serpentine(3, 301, 1e6)
    easy = torch.rand(3, 301, generator=gen, dtype=torch.float64) * 9 + 0.1
    w = torch.stack([maze, easy, maze * 2, easy + 1, maze.flip(-1)] + [easy * 3] * 12)
    out = diffcomb.grid_shortest_path(w)
    assert float((out[0] * maze).sum()) == 303  # one cell per column, two in the first and the last
    for b in range(w.shape[0]):
        np.testing.assert_array_equal(out[b].numpy(), ref.grid_shortest_path(w[b].numpy())[0])
    # A square maze that converges within the budget (fewer turns) gives the same answer.
    sq = _serpentine(30, 30, 1e3)[None].repeat(3, 1, 1) + torch.rand(3, 30, 30, generator=gen, dtype=torch.float64)
    out = diffcomb.grid_shortest_path(sq)
    for b in range(3):
        np.testing.assert_array_equal(out[b].numpy(), ref.grid_shortest_path(sq[b].numpy())[0])


def test_grid_sweeps_nan_rows_in_a_group(gen):
    w = torch.rand(20, 8, 8, generator=gen, dtype=torch.float64) + 0.5
    w[3, 2, 2] = float("nan")
    w[17, 0, 0] = float("inf")
    out = diffcomb.grid_shortest_path(w)
    assert out[3].isnan().all() and out[17].isnan().all()
    for b in set(range(20)) - {3, 17}:
        np.testing.assert_array_equal(out[b].numpy(), ref.grid_shortest_path(w[b].numpy())[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (4, 4), (3, 6), (6, 3), (25, 25)])
@pytest.mark.parametrize("maximize", [False, True])
def test_linear_assignment_matches_scipy(gen, device, dtype, shape, maximize):
    batch = 5
    for c in (torch.randn((batch, *shape), generator=gen, dtype=torch.float64), _ties(gen, batch, *shape)):
        y = diffcomb.linear_assignment(c.to(device=device, dtype=dtype), maximize=maximize).cpu().double()
        for b in range(batch):
            cb = c[b].to(dtype).double().numpy()
            expected = ref.linear_assignment(cb, maximize)
            yb = y[b].numpy()
            assert yb.sum() == min(shape)
            assert (yb.sum(0) <= 1).all() and (yb.sum(1) <= 1).all() and set(np.unique(yb)) <= {0.0, 1.0}
            np.testing.assert_allclose((yb * cb).sum(), (expected * cb).sum(), rtol=1e-12, atol=1e-9)


def test_assignment_bruteforce(gen):
    for shape in [(3, 3), (4, 4), (2, 5), (5, 2)]:
        for maximize in (False, True):
            c = _ties(gen, *shape, levels=3)
            y = diffcomb.linear_assignment(c, maximize=maximize)
            assert float((y * c).sum()) == ref.assignment_bruteforce_value(c.numpy(), maximize)


@pytest.mark.parametrize("device", DEVICES)
def test_assignment_costs_near_the_float64_limit(gen, device):
    # c - u - v would overflow to inf (and the solver would never finish) without the scaling
    for shape in [(4, 4), (3, 5), (5, 3)]:
        for maximize in (False, True):
            levels = torch.randint(-1, 2, (20, *shape), generator=gen).double()
            c = levels * 1.7e308
            y = diffcomb.linear_assignment(c.to(device), maximize=maximize).cpu()
            for b in range(20):
                expected = ref.assignment_bruteforce_value(levels[b].numpy(), maximize)
                assert float((y[b] * levels[b]).sum()) == expected
    c = torch.tensor([[1.7e308, 1.0], [1.0, 1e-300]], dtype=torch.float64, device=device)  # mixed magnitudes
    assert diffcomb.linear_assignment(c).cpu().tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("device", DEVICES)
def test_solvers_nan_rows_and_other_rows_unaffected(device):
    x = torch.randn(3, 5, device=device)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    for out in (diffcomb.argmax_onehot(x), diffcomb.topk_mask(x, 2), diffcomb.sort_permutation(x),
                diffcomb.sort_permutation(x, matrix=True).flatten(-2)):
        assert torch.isnan(out[1:]).all() and not torch.isnan(out[0]).any()
        assert out[0].sum() > 0
    w = torch.rand(3, 4, 4, device=device)
    w[1, 1, 1] = float("nan")
    w[2, 0, 0] = -float("inf")
    out = diffcomb.grid_shortest_path(w)
    assert torch.isnan(out[1:]).all() and not torch.isnan(out[0]).any()
    c = torch.randn(2, 3, 3, device=device)
    c[1, 0, 0] = float("inf")
    out = diffcomb.linear_assignment(c)
    assert torch.isnan(out[1]).all() and out[0].sum() == 3


@pytest.mark.parametrize("device", DEVICES)
def test_solvers_empty_and_noncontiguous(device, gen):
    assert diffcomb.topk_mask(torch.empty(0, 5, device=device), 2).shape == (0, 5)
    assert diffcomb.topk_mask(torch.empty(3, 0, device=device), 0).shape == (3, 0)
    assert diffcomb.sort_permutation(torch.empty(2, 0, device=device)).shape == (2, 0)
    assert diffcomb.grid_shortest_path(torch.empty(0, 3, 3, device=device)).shape == (0, 3, 3)
    assert diffcomb.linear_assignment(torch.empty(0, 2, 2, device=device)).shape == (0, 2, 2)
    assert diffcomb.linear_assignment(torch.empty(2, 0, 3, device=device)).shape == (2, 0, 3)
    x = torch.randn(6, 8, generator=gen).to(device)
    assert torch.equal(diffcomb.topk_mask(x.T, 3), diffcomb.topk_mask(x.T.contiguous(), 3))
    w = torch.rand(5, 5, 3, generator=gen).to(device)
    assert torch.equal(diffcomb.grid_shortest_path(w.permute(2, 0, 1)),
                       diffcomb.grid_shortest_path(w.permute(2, 0, 1).contiguous()))
    c = torch.randn(4, 4, 2, generator=gen).to(device)
    assert torch.equal(diffcomb.linear_assignment(c.permute(2, 1, 0)),
                       diffcomb.linear_assignment(c.permute(2, 1, 0).contiguous()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_solvers_half(gen, dtype):
    x = torch.randn(4, 9, generator=gen)
    assert diffcomb.topk_mask(x.to(dtype), 3).dtype == dtype
    assert torch.equal(diffcomb.topk_mask(x.to(dtype), 3).float(), diffcomb.topk_mask(x.to(dtype).float(), 3))
    w = torch.rand(2, 4, 4, generator=gen)
    assert torch.equal(diffcomb.grid_shortest_path(w.to(dtype)).float(),
                       diffcomb.grid_shortest_path(w.to(dtype).float()))


def test_solvers_are_not_differentiable_and_detach():
    x = torch.randn(3, 4, requires_grad=True)
    assert not diffcomb.topk_mask(x, 2).requires_grad


def test_solver_bad_input():
    with pytest.raises(ValueError, match=r"diffcomb\.topk_mask: k must be an int in \[0, 5\], got 6"):
        diffcomb.topk_mask(torch.randn(5), 6)
    with pytest.raises(TypeError, match="k must be an int"):
        diffcomb.topk_mask(torch.randn(5), 2.0)
    with pytest.raises(TypeError, match="theta must be a real tensor"):
        diffcomb.argmax_onehot(torch.arange(4).to(torch.complex64))
    with pytest.raises(ValueError, match="at least one element"):
        diffcomb.argmax_onehot(torch.empty(3, 0))
    with pytest.raises(ValueError, match="at least 2 dimension"):
        diffcomb.grid_shortest_path(torch.rand(5))
    with pytest.raises(ValueError, match="at least 2 dimension"):
        diffcomb.linear_assignment(torch.rand(5))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        diffcomb.sort_permutation([1.0, 2.0])
    with pytest.raises(TypeError, match="maximize must be a bool"):
        diffcomb.linear_assignment(torch.rand(2, 2), maximize="yes")


def test_solver_ops_opcheck_and_compile(gen):
    x = torch.randn(4, 7, generator=gen)
    w = torch.rand(3, 5, 6, generator=gen)
    c = torch.randn(2, 4, 5, generator=gen)
    ops = torch.ops.diffcomb
    for op, args in ((ops.argmax_onehot, (x,)), (ops.topk_mask, (x, 3)), (ops.sort_ranks, (x,)),
                     (ops.grid_shortest_path, (w,)), (ops.linear_assignment, (c, True))):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))

    @torch.compile(fullgraph=True)
    def f(x, w, c):
        return diffcomb.topk_mask(x, 3), diffcomb.grid_shortest_path(w), diffcomb.linear_assignment(c)

    got = f(x, w, c)
    assert torch.equal(got[0], diffcomb.topk_mask(x, 3))
    assert torch.equal(got[1], diffcomb.grid_shortest_path(w))
    assert torch.equal(got[2], diffcomb.linear_assignment(c))


# ------------------------------------------------------------------------------------------------
# Noise samplers.

N_SAMPLES = 200_000


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sampler_moments_and_distribution(device, dtype):
    g = torch.Generator().manual_seed(1)
    x = diffcomb.sample_gumbel((N_SAMPLES,), generator=g, dtype=dtype, device=device).cpu().double().numpy()
    assert abs(x.mean() - ref.EULER_GAMMA) < 4 * math.sqrt(math.pi**2 / 6 / N_SAMPLES)
    assert x.var() == pytest.approx(math.pi**2 / 6, rel=0.02)
    assert stats.kstest(x, stats.gumbel_r.cdf).pvalue > 1e-3
    x = diffcomb.sample_normal((N_SAMPLES,), generator=g, dtype=dtype, device=device).cpu().double().numpy()
    assert abs(x.mean()) < 4 / math.sqrt(N_SAMPLES) and x.var() == pytest.approx(1.0, rel=0.02)
    assert stats.kstest(x, stats.norm.cdf).pvalue > 1e-3


@pytest.mark.parametrize("k,tau,s", [(5, 1.0, 10), (1, 1.0, 10), (10, 2.0, 3), (0.5, 1.0, 1), (100, 1.0, 10)])
def test_sum_of_gamma_moments_and_distribution(k, tau, s):
    g = torch.Generator().manual_seed(2)
    x = diffcomb.sample_sum_of_gamma((N_SAMPLES,), k=k, tau=tau, s=s, generator=g, dtype=torch.float64).numpy()
    mean, var = ref.sum_of_gamma_moments(k, tau, s)
    assert abs(x.mean() - mean) < 4 * math.sqrt(var / N_SAMPLES)
    assert x.var() == pytest.approx(var, rel=0.03)
    # Same distribution as an independent numpy sampler.
    y = ref.sum_of_gamma_numpy(np.random.default_rng(0), 50_000, k, tau, s)
    assert stats.ks_2samp(x[:50_000], y).pvalue > 1e-3


def test_spec_sum_of_gamma_values_and_gumbel_limit():
    g = torch.Generator().manual_seed(3)
    x = diffcomb.sample_sum_of_gamma((N_SAMPLES,), k=5, generator=g, dtype=torch.float64).numpy()
    assert x.mean() == pytest.approx(0.125277, abs=4 * math.sqrt(0.309954 / N_SAMPLES))
    assert x.var() == pytest.approx(0.309954, rel=0.02)
    # The sum of k SoG(k, 1, s) tends to a standard Gumbel as s grows.
    total = diffcomb.sample_sum_of_gamma((20_000, 5), k=5, s=200, generator=g, dtype=torch.float64).sum(1).numpy()
    assert total.mean() == pytest.approx(ref.EULER_GAMMA, abs=0.035)
    assert total.var() == pytest.approx(math.pi**2 / 6, rel=0.07)
    assert stats.kstest(total, stats.gumbel_r.cdf).pvalue > 1e-3


def test_sampler_reproducibility():
    a = diffcomb.sample_sum_of_gamma((3, 50), k=3, generator=torch.Generator().manual_seed(7))
    b = diffcomb.sample_sum_of_gamma((3, 50), k=3, generator=torch.Generator().manual_seed(7))
    c = diffcomb.sample_sum_of_gamma((3, 50), k=3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(11)
    d = diffcomb.sample_gumbel((100,))
    torch.manual_seed(11)
    assert torch.equal(d, diffcomb.sample_gumbel((100,)))
    # Normal noise: the dtype changes only the rounding of the same stream (Gumbel noise has a
    # float32 stream of its own, one 24-bit uniform per 32-bit word, for speed).
    e = diffcomb.sample_normal((101,), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    f = diffcomb.sample_normal((101,), generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    assert torch.equal(e.float(), f)
    h = diffcomb.sample_gumbel((101,), generator=torch.Generator().manual_seed(5), dtype=torch.float16)
    h32 = diffcomb.sample_gumbel((101,), generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    assert h.dtype == torch.float16 and torch.equal(h, h32.half())
    # Groups of 4 (float32 Gumbel) and 2 values: a prefix of a longer draw is the shorter draw.
    for n in (1, 2, 3, 5, 7):
        for fn in (diffcomb.sample_gumbel, diffcomb.sample_normal):
            for dt in (torch.float32, torch.float64):
                short = fn((n,), generator=torch.Generator().manual_seed(6), dtype=dt)
                long = fn((8,), generator=torch.Generator().manual_seed(6), dtype=dt)
                assert torch.equal(short, long[:n])
    assert diffcomb.sample_gumbel((0, 3)).shape == (0, 3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0x123456789ABCDEF0, -5])
@pytest.mark.parametrize("numel", [1, 3, 4, 5, 255, 257, 10_007])
def test_gumbel_stream_is_philox_and_the_formula(device, dtype, seed, numel):
    """The Gumbel stream is -log(-log(u)) of the uniforms of Philox-4x32-10 (the numpy reference,
    itself checked against the generator's published answers), rounded once to the dtype."""
    seed_t = torch.tensor([seed], dtype=torch.int64, device=device)
    kind = diffcomb.perturb.noise.NOISE_CODES["gumbel"]
    out = diffcomb.perturb.noise._noise_op(seed_t, (numel,), kind, 1.0, 1.0, 1, dtype).cpu().double().numpy()
    expected = ref.gumbel_stream(seed % 2**64, numel, single=dtype == torch.float32)
    if dtype == torch.float32:  # float32 rounding of the float64 value: equal up to a tie at the last bit
        np.testing.assert_allclose(out, expected.astype(np.float32).astype(np.float64), rtol=1.2e-7, atol=1e-30)
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-15)
    assert np.isfinite(out).all()


def test_sampler_independent_of_threads():
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = diffcomb.sample_sum_of_gamma((4000,), k=2, generator=g())
        a_gumbel = [diffcomb.sample_gumbel((200_003,), generator=g(), dtype=dt) for dt in (torch.float32, torch.float64)]
        torch.set_num_threads(2)
        b = diffcomb.sample_sum_of_gamma((4000,), k=2, generator=g())
        b_gumbel = [diffcomb.sample_gumbel((200_003,), generator=g(), dtype=dt) for dt in (torch.float32, torch.float64)]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(a_gumbel, b_gumbel))


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="k must be positive"):
        diffcomb.sample_sum_of_gamma((3,), k=0)
    with pytest.raises(ValueError, match="s must be"):
        diffcomb.sample_sum_of_gamma((3,), k=2, s=0)
    with pytest.raises(ValueError, match="tau must be positive"):
        diffcomb.sample_sum_of_gamma((3,), k=2, tau=-1.0)
    with pytest.raises(ValueError, match="shape must be"):
        diffcomb.sample_gumbel((3, -1))
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        diffcomb.sample_normal((3,), dtype=torch.int64)
    with pytest.raises(TypeError, match="generator must be"):
        diffcomb.sample_normal((3,), generator=5)


def test_noise_op_opcheck_and_compile():
    seed = torch.tensor([123], dtype=torch.int64)
    torch.library.opcheck(torch.ops.diffcomb.perturb_noise, (seed, [4, 5], 2, 3.0, 1.0, 10, torch.float32))

    @torch.compile(fullgraph=True)
    def f(theta):
        return diffcomb.topk_mask(theta + diffcomb.sample_gumbel(theta.shape, dtype=theta.dtype), 2)

    out = f(torch.randn(3, 6))
    assert out.shape == (3, 6) and (out.sum(-1) == 2).all()


# ------------------------------------------------------------------------------------------------
# Perturbed optimizer and Fenchel-Young loss.


def test_perturbed_argmax_gumbel_is_softmax_and_jacobian():
    theta = torch.tensor([1.0, 0.5, -0.2], dtype=torch.float64, requires_grad=True)
    m = 200_000
    f = diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=m, sigma=0.5,
                           generator=torch.Generator().manual_seed(0))
    y = f(theta)
    assert_close(y, [0.685590, 0.252215, 0.062195], rtol=0, atol=4 / math.sqrt(m))
    jac = torch.stack([torch.autograd.grad(y[i], theta, retain_graph=True)[0] for i in range(3)])
    expected = ref.perturbed_argmax_gumbel_jacobian(theta.detach().numpy(), 0.5)
    assert_close(jac, expected, rtol=0, atol=0.02)
    fd = ref.finite_difference_jacobian(lambda t: ref.perturbed_argmax_gumbel(t, 0.5), theta.detach().numpy())
    assert_close(jac, fd, rtol=0, atol=0.02)


def test_perturbed_two_class_gaussian():
    theta = torch.tensor([0.3, 0.0], dtype=torch.float64, requires_grad=True)
    f = diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=200_000, sigma=0.5, noise="normal",
                           generator=torch.Generator().manual_seed(1))
    y = f(theta)
    assert_close(y[0], 0.664313, rtol=0, atol=0.005)
    (grad,) = torch.autograd.grad(y[0], theta)
    assert_close(grad, [0.515630, -0.515630], rtol=0, atol=0.02)


@pytest.mark.parametrize("noise", ["gumbel", "normal"])
@pytest.mark.parametrize("baseline", [True, False])
def test_perturbed_topk_vjp_matches_finite_differences_of_exact_expectation(noise, baseline):
    theta = torch.tensor([0.3, -0.1, 0.8, 0.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    sigma, m = 0.7, 300_000
    f = diffcomb.perturbed(functools.partial(diffcomb.topk_mask, k=2), num_samples=m, sigma=sigma, noise=noise,
                           baseline=baseline, generator=torch.Generator().manual_seed(2))
    y = f(theta)
    (grad,) = torch.autograd.grad((y * g).sum(), theta)
    if noise == "gumbel":  # exact expectation by enumeration (Plackett-Luce)
        exact = lambda t: ref.perturbed_topk_gumbel(t, 2, sigma)  # noqa: E731
        assert_close(y, exact(theta.detach().numpy()), rtol=0, atol=4 / math.sqrt(m))
        fd = ref.finite_difference_jacobian(exact, theta.detach().numpy()).T @ g.numpy()
        assert_close(grad, fd, rtol=0, atol=0.04)
    assert_close(y.sum(), 2.0)


def test_perturbed_one_solver_call_and_batching(gen):
    solver = CountingSolver(functools.partial(diffcomb.topk_mask, k=2))
    f = diffcomb.perturbed(solver, num_samples=7, generator=gen)
    theta = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    y = f(theta)
    assert y.shape == theta.shape and solver.calls == [(7 * 6, 5)]
    y.sum().backward()
    assert theta.grad.shape == theta.shape and len(solver.calls) == 1
    assert_close(y.sum(-1), torch.full((2, 3), 2.0))


def test_perturbed_reproducible_and_minimize(gen):
    w = torch.rand(2, 4, 4, generator=gen, dtype=torch.float64) + 0.1
    outs = []
    for _ in range(2):
        wr = w.clone().requires_grad_(True)
        f = diffcomb.perturbed(diffcomb.grid_shortest_path, num_samples=50, sigma=0.3, noise="normal",
                               minimize=True, generator=torch.Generator().manual_seed(4))
        y = f(wr)
        (y * w).sum().backward()
        outs.append((y.detach(), wr.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    # Tiny noise: the hard shortest path.
    f = diffcomb.perturbed(diffcomb.grid_shortest_path, num_samples=5, sigma=1e-9, noise="normal", minimize=True)
    assert torch.equal(f(w), diffcomb.grid_shortest_path(w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_perturbed_dtypes(gen, dtype):
    theta = torch.randn(3, 6, generator=gen, dtype=dtype, requires_grad=True)
    y = diffcomb.PerturbedTopK(2, num_samples=10)(theta, generator=gen)
    assert y.dtype == dtype
    y.sum().backward()
    assert theta.grad.dtype == dtype


def test_perturbed_bad_input():
    with pytest.raises(ValueError, match="sigma must be positive"):
        diffcomb.perturbed(diffcomb.argmax_onehot, sigma=0.0)
    with pytest.raises(ValueError, match="num_samples must be"):
        diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=0)
    with pytest.raises(ValueError, match="noise must be one of"):
        diffcomb.perturbed(diffcomb.argmax_onehot, noise="sum_of_gamma")
    with pytest.raises(TypeError, match="solver must be callable"):
        diffcomb.perturbed(3)
    f = diffcomb.perturbed(lambda t: t[..., :1], num_samples=2)
    with pytest.raises(ValueError, match="the solver must map a batch of scores of shape"):
        f(torch.randn(2, 3))
    with pytest.raises(ValueError, match="at least 2 dimension"):
        diffcomb.perturbed(diffcomb.grid_shortest_path)(torch.rand(4))


def test_fenchel_young_loss_argmax_gumbel(gen):
    theta = torch.tensor([[1.0, 0.5, -0.2], [0.0, 0.3, 0.1]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]], dtype=torch.float64)
    m = 200_000
    loss = diffcomb.perturbed_fenchel_young_loss(theta, target, diffcomb.argmax_onehot, num_samples=m,
                                                 sigma=0.5, reduction="none",
                                                 generator=torch.Generator().manual_seed(5))
    expected = [ref.fenchel_young_argmax_gumbel(t, y, 0.5) for t, y in zip(theta.detach().numpy(), target.numpy())]
    assert_close(loss, [e[0] for e in expected], rtol=0, atol=0.01)
    loss.sum().backward()
    assert_close(theta.grad, np.stack([e[1] for e in expected]), rtol=0, atol=4 / math.sqrt(m))
    # SPEC 7.6: F_eps = 1.477345 for theta = [1, 0.5, -0.2], eps = 0.5
    assert_close(loss[0] + 1.0, 1.477345, rtol=0, atol=0.01)
    for reduction, value in (("mean", loss.mean()), ("sum", loss.sum())):
        got = diffcomb.perturbed_fenchel_young_loss(theta, target, diffcomb.argmax_onehot, num_samples=m, sigma=0.5,
                                                    reduction=reduction, generator=torch.Generator().manual_seed(5))
        assert_close(got, value)
    with pytest.raises(ValueError, match="target must have theta's shape"):
        diffcomb.perturbed_fenchel_young_loss(theta, target[:1], diffcomb.argmax_onehot)
    with pytest.raises(ValueError, match="reduction must be"):
        diffcomb.perturbed_fenchel_young_loss(theta, target, diffcomb.argmax_onehot, reduction="max")


def test_fenchel_young_module_and_gradcheck(gen):
    loss_fn = diffcomb.PerturbedFenchelYoungLoss(functools.partial(diffcomb.topk_mask, k=2), num_samples=20)
    assert "num_samples=20" in repr(loss_fn)
    theta = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    target = diffcomb.topk_mask(torch.randn(3, 5, generator=gen, dtype=torch.float64), 2)
    # With a fixed generator the loss is a smooth function of theta for the fixed noise draws
    # (piecewise linear, its gradient is y_hat - y): gradcheck in float64.
    fn = lambda t: loss_fn(t, target, generator=torch.Generator().manual_seed(3))  # noqa: E731
    torch.autograd.gradcheck(fn, (theta,), eps=1e-7, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# I-MLE.


def test_imle_spec_topk_example():
    theta = torch.tensor([0.9, 0.1, 0.5, -0.3], requires_grad=True)
    g = torch.tensor([0.0, -1.0, 0.5, 0.0])
    f = diffcomb.imle(functools.partial(diffcomb.topk_mask, k=2), noise="none")
    z = f(theta)
    assert z.tolist() == [1, 0, 1, 0]
    (grad,) = torch.autograd.grad((z * g).sum(), theta)
    assert grad.tolist() == [0, -1, 1, 0]
    expected = ref.imle_gradient(lambda t: ref.topk_mask(t, 2), theta.detach().double().numpy(),
                                 g.double().numpy(), 1.0)
    np.testing.assert_array_equal(grad.numpy(), expected)


@pytest.mark.parametrize("lambda_", [0.3, 2.0])
def test_imle_argmax_gumbel_expectation_is_finite_difference_of_exact(lambda_):
    theta = torch.tensor([0.4, -0.3, 0.1, 0.2], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([1.0, -0.5, 0.2, 0.0], dtype=torch.float64)
    s = 300_000
    f = diffcomb.imle(diffcomb.argmax_onehot, num_samples=s, noise="gumbel", lambda_=lambda_,
                      divide_by_lambda=True, generator=torch.Generator().manual_seed(6))
    z = f(theta)
    assert_close(z, ref.softmax(theta.detach().numpy()), rtol=0, atol=4 / math.sqrt(s))
    (grad,) = torch.autograd.grad((z * g).sum(), theta)
    # E[(z - z') / lambda] = (mu(theta) - mu(theta - lambda g)) / lambda: a finite difference of
    # the exact expectation mu = softmax along -g.
    expected = ref.imle_expected_gradient_argmax_gumbel(theta.detach().numpy(), g.numpy(), lambda_) / lambda_
    assert_close(grad, expected, rtol=0, atol=5 / math.sqrt(s) / lambda_)
    mu = ref.softmax
    fd = (mu(theta.detach().numpy()) - mu(theta.detach().numpy() - lambda_ * g.numpy())) / lambda_
    assert_close(grad, fd, rtol=0, atol=5 / math.sqrt(s) / lambda_)


def test_imle_sum_of_gamma_topk_samples_and_calls(gen):
    solver = CountingSolver(functools.partial(diffcomb.topk_mask, k=3))
    f = diffcomb.imle(solver, num_samples=4, noise="sum_of_gamma", k=3, return_samples=True, generator=gen)
    theta = torch.randn(2, 5, 10, generator=gen, requires_grad=True)
    z = f(theta)
    assert z.shape == (4, 2, 5, 10) and (z.sum(-1) == 3).all()
    assert solver.calls == [(40, 10)]
    (z * torch.randn(z.shape, generator=gen)).sum().backward()
    assert solver.calls == [(40, 10), (40, 10)]
    # Each sample's estimate touches only coordinates whose membership changed: values in
    # {-1, 0, 1} per sample, so the mean is a multiple of 1/4 and each row sums to 0.
    assert_close(theta.grad.sum(-1), torch.zeros(2, 5))
    assert torch.equal(theta.grad * 4, (theta.grad * 4).round())


def test_imle_reproducible_and_minimize(gen):
    w = torch.rand(3, 5, 5, generator=gen, dtype=torch.float64) + 0.1
    g = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)
    grads = []
    for _ in range(2):
        wr = w.clone().requires_grad_(True)
        m = diffcomb.IMLEShortestPath(noise="gumbel", lambda_=2.0, tau=0.5)
        (m(wr, generator=torch.Generator().manual_seed(3)) * g).sum().backward()
        grads.append(wr.grad)
    assert torch.equal(grads[0], grads[1])
    # No noise, minimize form: dw = -(y(w) - y(w + lambda g)) (the maximize update on theta = -w).
    wr = w.clone().requires_grad_(True)
    y = diffcomb.imle(diffcomb.grid_shortest_path, noise="none", lambda_=2.0, minimize=True)(wr)
    (y * g).sum().backward()
    expected = -(diffcomb.grid_shortest_path(w) - diffcomb.grid_shortest_path(w + 2.0 * g))
    assert torch.equal(wr.grad, expected)


def test_imle_bad_input():
    with pytest.raises(ValueError, match="needs k"):
        diffcomb.imle(diffcomb.topk_mask)
    with pytest.raises(ValueError, match="lambda_ must be positive"):
        diffcomb.imle(diffcomb.argmax_onehot, noise="gumbel", lambda_=0.0)
    with pytest.raises(ValueError, match="target must be one of 'perturbation', got 'adaptive'"):
        diffcomb.imle(diffcomb.argmax_onehot, noise="gumbel", target="adaptive")
    with pytest.raises(ValueError, match="noise must be one of"):
        diffcomb.imle(diffcomb.argmax_onehot, noise="normal")
    with pytest.raises(ValueError, match="num_samples must be"):
        diffcomb.imle(diffcomb.argmax_onehot, noise="gumbel", num_samples=0)


# ------------------------------------------------------------------------------------------------
# Blackbox.


def test_blackbox_spec_and_reference(gen):
    theta = torch.tensor([0.9, 0.1, 0.5, -0.3], requires_grad=True)
    g = torch.tensor([0.0, -1.0, 0.5, 0.0])
    f = diffcomb.blackbox(functools.partial(diffcomb.topk_mask, k=2), lambda_=1.0)
    (grad,) = torch.autograd.grad((f(theta) * g).sum(), theta)
    assert grad.tolist() == [0, -1, 1, 0]
    # Shortest path in the paper's cost form: dw = -(y(w) - y(w + lambda g)) / lambda, clamped costs.
    w = torch.rand(2, 6, 6, generator=gen, dtype=torch.float64) * 5
    gw = torch.randn(2, 6, 6, generator=gen, dtype=torch.float64)
    wr = w.clone().requires_grad_(True)
    module = diffcomb.BlackboxShortestPath(lambda_=3.0)
    assert "lambda_=3.0" in repr(module)
    (module(wr) * gw).sum().backward()
    for b in range(2):
        y, _ = ref.grid_shortest_path(w[b].numpy())
        y_lam, _ = ref.grid_shortest_path(w[b].numpy() + 3.0 * gw[b].numpy())
        np.testing.assert_allclose(wr.grad[b].numpy(), -(y - y_lam) / 3.0)


def test_blackbox_straight_through_and_errors(gen):
    theta = torch.randn(3, 6, generator=gen, requires_grad=True)
    g = torch.randn(3, 6, generator=gen)
    f = diffcomb.blackbox(functools.partial(diffcomb.topk_mask, k=2), straight_through=True)
    (grad,) = torch.autograd.grad((f(theta) * g).sum(), theta)
    assert torch.equal(grad, g)
    with pytest.raises(ValueError, match="lambda_ must be positive"):
        diffcomb.blackbox(diffcomb.argmax_onehot, lambda_=-1.0)


def test_blackbox_equals_imle_without_noise_divided_by_lambda(gen):
    theta = torch.randn(4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    solver = functools.partial(diffcomb.topk_mask, k=3)
    (a,) = torch.autograd.grad((diffcomb.blackbox(solver, lambda_=1.5)(theta) * g).sum(), theta)
    imle = diffcomb.imle(solver, noise="none", lambda_=1.5, divide_by_lambda=True)
    (b,) = torch.autograd.grad((imle(theta) * g).sum(), theta)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Modules.


def test_modules(gen):
    theta = torch.randn(2, 3, 8, generator=gen, requires_grad=True)
    for module, sums in ((diffcomb.PerturbedTopK(3, num_samples=8), 3.0), (diffcomb.IMLETopK(3), 3.0),
                         (diffcomb.PerturbedArgmax(num_samples=8), 1.0)):
        y = module(theta, generator=gen)
        assert y.shape == theta.shape
        assert_close(y.sum(-1), torch.full((2, 3), sums))
        y.sum().backward()
        assert repr(module).startswith(type(module).__name__ + "(")
    w = torch.rand(2, 5, 5, generator=gen, requires_grad=True)
    for module in (diffcomb.PerturbedShortestPath(num_samples=4), diffcomb.IMLEShortestPath(),
                   diffcomb.BlackboxShortestPath()):
        y = module(w) if isinstance(module, diffcomb.BlackboxShortestPath) else module(w, generator=gen)
        assert y.shape == w.shape
        (y * w).sum().backward()
    with pytest.raises(ValueError, match="k must be"):
        diffcomb.IMLETopK(-1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        diffcomb.PerturbedTopK(2, sigma=0.0)


@pytest.mark.parametrize("module", ["perturb.noise", "perturb.solvers", "perturb.perturbed_solver",
                                    "perturb.imle_solver", "perturb.blackbox_solver", "losses.perturb"])
def test_docstring_examples(module):
    module = importlib.import_module(f"diffcomb.{module}")
    result = doctest.testmod(module, extraglobs={"torch": torch, "diffcomb": diffcomb},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------------
# CUDA agreement (skipped without a GPU).


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and diffcomb built with CUDA (diffcomb._C_cuda)")
def test_cuda_matches_cpu(gen):
    for kind in ("gumbel", "normal"):
        fn = getattr(diffcomb, f"sample_{kind}")
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            a = fn((1001,), generator=torch.Generator().manual_seed(1), dtype=dtype)
            b = fn((1001,), generator=torch.Generator().manual_seed(1), dtype=dtype, device="cuda")
            assert_close(b.cpu(), a, rtol=tol, atol=tol)
    a = diffcomb.sample_sum_of_gamma((1000,), k=4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    b = diffcomb.sample_sum_of_gamma((1000,), k=4, generator=torch.Generator().manual_seed(2), dtype=torch.float64,
                                     device="cuda")
    assert_close(b.cpu(), a, rtol=1e-12, atol=1e-12)
    x = torch.randn(50, 300, generator=gen)
    assert torch.equal(diffcomb.topk_mask(x.cuda(), 10).cpu(), diffcomb.topk_mask(x, 10))
    assert torch.equal(diffcomb.sort_permutation(x.cuda()).cpu(), diffcomb.sort_permutation(x))
    assert torch.equal(diffcomb.argmax_onehot(x.cuda()).cpu(), diffcomb.argmax_onehot(x))
    w = torch.rand(16, 30, 30, generator=gen, dtype=torch.float64)
    assert torch.equal(diffcomb.grid_shortest_path(w.cuda()).cpu(), diffcomb.grid_shortest_path(w))
    c = torch.randn(8, 60, 70, generator=gen, dtype=torch.float64)
    assert torch.equal(diffcomb.linear_assignment(c.cuda()).cpu(), diffcomb.linear_assignment(c))
    assert torch.equal(diffcomb.linear_assignment(c.transpose(1, 2).cuda()).cpu(),
                       diffcomb.linear_assignment(c.transpose(1, 2)))
    theta = torch.randn(4, 20, generator=gen, device="cpu").cuda().requires_grad_(True)
    y = diffcomb.IMLETopK(5, num_samples=3)(theta)
    y.sum().backward()
    assert theta.grad.is_cuda and (y.sum(-1) == 5).all()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and diffcomb built with CUDA (diffcomb._C_cuda)")
def test_cuda_solver_opcheck():
    x = torch.randn(4, 7, device="cuda")
    torch.library.opcheck(torch.ops.diffcomb.topk_mask, (x, 3), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.diffcomb.grid_shortest_path, (torch.rand(2, 5, 5, device="cuda"),),
                          test_utils=("test_schema", "test_faketensor"))


def test_example_runs():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "examples" / "warcraft_shortest_path.py"), "--size", "6",
                          "--train", "64", "--test", "32", "--epochs", "1"], capture_output=True, text=True,
                         cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "blackbox" in out.stdout and "imle" in out.stdout


def test_estimators_compile_fullgraph(gen):
    solver = functools.partial(diffcomb.topk_mask, k=3)
    weights = torch.arange(8.0)
    deterministic = (diffcomb.blackbox(solver, lambda_=2.0), diffcomb.imle(solver, noise="none", lambda_=2.0))
    noisy = (diffcomb.perturbed(solver, num_samples=4), diffcomb.imle(solver, noise="gumbel", num_samples=3))
    for est in deterministic + noisy:
        compiled = torch.compile(lambda x: (est(x) * weights).sum(), fullgraph=True)
        x = torch.randn(5, 8, generator=gen, requires_grad=True)
        compiled(x).backward()
        assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
        if est in deterministic:
            (expected,) = torch.autograd.grad((est(x) * weights).sum(), x)
            assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("alpha,tau,tau_target", [(1.0, 1.0, 1.0), (0.0, 0.5, 2.0), (0.5, 0.0, 1.0)])
def test_imle_matches_reference_with_the_same_noise(alpha, tau, tau_target):
    theta = torch.randn(6, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 6, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    f = diffcomb.imle(functools.partial(diffcomb.topk_mask, k=4), num_samples=3, noise="gumbel", lambda_=1.5,
                      alpha=alpha, tau=tau, tau_target=tau_target, return_samples=True)
    z = f(theta, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((z * g).sum(), theta)
    # The same noise, drawn again from the same seed.
    eps = diffcomb.sample_gumbel((3, 6, 9), generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    solver = lambda t: ref.topk_mask(t, 4)  # noqa: E731
    expected = np.zeros((6, 9))
    for s in range(3):
        for b in range(6):
            t = theta[b].detach().numpy()
            np.testing.assert_array_equal(z[s, b].detach().numpy(), solver(t + tau * eps[s, b]))
            expected[b] += (solver(t + tau * eps[s, b])
                            - solver(alpha * t - 1.5 * g[s, b].numpy() + tau_target * eps[s, b])) / 3
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("noise", ["gumbel", "normal"])
@pytest.mark.parametrize("baseline", [True, False])
def test_perturbed_matches_formula_with_the_same_noise(noise, baseline):
    theta = torch.randn(4, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigma, m = 0.7, 5
    f = diffcomb.perturbed(functools.partial(diffcomb.topk_mask, k=3), num_samples=m, sigma=sigma, noise=noise,
                           baseline=baseline)
    y = f(theta, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((y * g).sum(), theta)
    sampler = diffcomb.sample_gumbel if noise == "gumbel" else diffcomb.sample_normal
    z = sampler((m, 4, 7), generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    t = theta.detach().numpy()
    ys = np.stack([[ref.topk_mask(t[b] + sigma * z[s, b], 3) for b in range(4)] for s in range(m)])
    y_hat = ys.mean(0)
    np.testing.assert_array_equal(y.detach().numpy(), y_hat)
    grad_nu = z if noise == "normal" else 1.0 - np.exp(-z)
    dots = ((ys - (y_hat if baseline else 0.0)) * g.numpy()).sum(-1)  # (m, 4)
    expected = (dots[..., None] * grad_nu).mean(0) / sigma
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-12)


def test_estimators_on_an_empty_batch():
    theta = torch.zeros(0, 5, requires_grad=True)
    diffcomb.perturbed(diffcomb.argmax_onehot, 5)(theta).sum().backward()
    assert theta.grad.shape == (0, 5)
    for estimator in (diffcomb.imle(diffcomb.argmax_onehot, noise="gumbel"), diffcomb.blackbox(diffcomb.argmax_onehot)):
        theta.grad = None
        estimator(theta).sum().backward()
        assert theta.grad.shape == (0, 5)
    loss = diffcomb.perturbed_fenchel_young_loss(torch.zeros(0, 5), torch.zeros(0, 5), diffcomb.argmax_onehot, 5)
    assert loss.shape == () and math.isnan(float(loss))  # a mean over no items


# ------------------------------------------------------------------------------------------------
# The boundary (issue 12, item 4): bool flags, integer inputs, one device, and the raw custom ops
# under torch.ops.diffcomb called directly with bad arguments.

TOPK3 = functools.partial(diffcomb.topk_mask, k=3)
FLAG_CALLS = [
    ("matrix", lambda v: diffcomb.sort_permutation(torch.randn(4), matrix=v)),
    ("maximize", lambda v: diffcomb.linear_assignment(torch.randn(3, 3), maximize=v)),
    ("baseline", lambda v: diffcomb.perturbed(TOPK3, baseline=v)),
    ("minimize", lambda v: diffcomb.perturbed(TOPK3, minimize=v)),
    ("minimize", lambda v: diffcomb.perturbed_fenchel_young_loss(torch.randn(5), torch.zeros(5), TOPK3, minimize=v)),
    ("return_samples", lambda v: diffcomb.imle(TOPK3, return_samples=v, k=3)),
    ("divide_by_lambda", lambda v: diffcomb.imle(TOPK3, divide_by_lambda=v, k=3)),
    ("minimize", lambda v: diffcomb.imle(TOPK3, minimize=v, k=3)),
    ("straight_through", lambda v: diffcomb.blackbox(TOPK3, straight_through=v)),
    ("minimize", lambda v: diffcomb.blackbox(TOPK3, minimize=v)),
    ("minimize", lambda v: diffcomb.PerturbedFenchelYoungLoss(TOPK3, minimize=v)),
    ("straight_through", lambda v: diffcomb.BlackboxShortestPath(straight_through=v)),
]


@pytest.mark.parametrize("name,call", FLAG_CALLS, ids=[f"{i}-{name}" for i, (name, _) in enumerate(FLAG_CALLS)])
@pytest.mark.parametrize("value", ["no", 0, 1, None, np.bool_(False)])
def test_error_flag_not_a_bool(name, call, value):
    # e.g. blackbox(solver, straight_through="no") used to give the straight-through gradient.
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        call(value)


@pytest.mark.parametrize("name,call", FLAG_CALLS, ids=[f"{i}-{name}" for i, (name, _) in enumerate(FLAG_CALLS)])
def test_flags_accept_bools(name, call):
    for value in (True, False):
        call(value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_solvers_accept_integer_and_bool_inputs(dtype, gen):
    default = torch.get_default_dtype()
    x = torch.randint(0, 50, (3, 7), generator=gen).to(dtype)
    w = torch.randint(0, 9, (2, 4, 5), generator=gen).to(dtype)
    c = torch.randint(0, 9, (2, 4, 4), generator=gen).to(dtype)
    for out, expected in ((diffcomb.argmax_onehot(x), diffcomb.argmax_onehot(x.to(default))),
                          (diffcomb.topk_mask(x, 2), diffcomb.topk_mask(x.to(default), 2)),
                          (diffcomb.sort_permutation(x), diffcomb.sort_permutation(x.to(default))),
                          (diffcomb.sort_permutation(x, matrix=True), diffcomb.sort_permutation(x.to(default), True)),
                          (diffcomb.grid_shortest_path(w), diffcomb.grid_shortest_path(w.to(default))),
                          (diffcomb.linear_assignment(c), diffcomb.linear_assignment(c.to(default)))):
        assert out.dtype == default
        assert torch.equal(out, expected)


def test_estimators_accept_integer_scores_and_targets(gen):
    # e.g. a one-hot target from torch.nn.functional.one_hot (int64)
    default = torch.get_default_dtype()
    theta = torch.tensor([[3, 0, 1, 2], [0, 5, 1, 1]])
    target = torch.nn.functional.one_hot(torch.tensor([0, 1]), 4)
    loss = diffcomb.perturbed_fenchel_young_loss(theta.to(default), target, diffcomb.argmax_onehot, 8,
                                                 generator=torch.Generator().manual_seed(0))
    loss_int = diffcomb.perturbed_fenchel_young_loss(theta, target, diffcomb.argmax_onehot, 8,
                                                     generator=torch.Generator().manual_seed(0))
    assert loss_int.dtype == default and torch.equal(loss, loss_int)
    for est in (diffcomb.perturbed(TOPK3, 4), diffcomb.imle(TOPK3, k=3)):
        out = est(theta, generator=torch.Generator().manual_seed(1))
        assert out.dtype == default
        assert torch.equal(out, est(theta.to(default), generator=torch.Generator().manual_seed(1)))
    out = diffcomb.blackbox(TOPK3)(theta)
    assert out.dtype == default and torch.equal(out, diffcomb.blackbox(TOPK3)(theta.to(default)))


def test_error_tensor_arguments_on_different_devices():
    with pytest.raises(RuntimeError, match=r"perturbed_fenchel_young_loss: .*same device.*theta on cpu and target on "
                                           r"meta"):
        diffcomb.perturbed_fenchel_young_loss(torch.randn(4), torch.zeros(4, device="meta"), diffcomb.argmax_onehot)
    # a user solver that answers on another device is named, not left to fail later
    with pytest.raises(RuntimeError, match="the solver must return its solutions on the scores' device"):
        diffcomb.blackbox(lambda t: torch.zeros_like(t, device="meta"))(torch.randn(2, 3))


def _raw_perturb_bad_calls():
    ops = torch.ops.diffcomb
    x = torch.randn(3, 10, dtype=torch.float64)
    w = torch.rand(2, 4, 5, dtype=torch.float64)
    c = torch.randn(2, 3, 4, dtype=torch.float64)
    seed = torch.tensor([7], dtype=torch.int64)
    calls = []
    for name, op in (("argmax_onehot", ops.argmax_onehot), ("sort_ranks", ops.sort_ranks),
                     ("topk_mask", lambda t: ops.topk_mask(t, 2))):
        calls += [
            (f"{name}-rank-1", lambda op=op: op(x[0])),
            (f"{name}-rank-3", lambda op=op: op(x[None])),
            (f"{name}-dtype-int", lambda op=op: op(x.long())),
            (f"{name}-dtype-half", lambda op=op: op(x.half())),
            (f"{name}-noncontiguous", lambda op=op: op(x.t().contiguous().t())),
            (f"{name}-expanded", lambda op=op: op(x[:1].expand(3, 10))),
        ]
    calls += [
        ("topk_mask-k-100", lambda: ops.topk_mask(x, 100)),  # used to crash (issue 12)
        ("topk_mask-k-11", lambda: ops.topk_mask(x, 11)),
        ("topk_mask-k-negative", lambda: ops.topk_mask(x, -5)),
    ]
    for name, op, t in (("grid_shortest_path", ops.grid_shortest_path, w),
                        ("linear_assignment", lambda m: ops.linear_assignment(m, False), c)):
        calls += [
            (f"{name}-rank-2", lambda op=op, t=t: op(t[0])),
            (f"{name}-rank-4", lambda op=op, t=t: op(t[None])),
            (f"{name}-dtype-int", lambda op=op, t=t: op(t.long())),
            (f"{name}-dtype-bf16", lambda op=op, t=t: op(t.bfloat16())),
            (f"{name}-noncontiguous", lambda op=op, t=t: op(t.transpose(1, 2))),
        ]
    noise = ops.perturb_noise
    calls += [
        ("noise-seed-int32", lambda: noise(seed.int(), [3], 0, 1.0, 1.0, 1, torch.float32)),
        ("noise-seed-float", lambda: noise(seed.double(), [3], 0, 1.0, 1.0, 1, torch.float32)),
        ("noise-seed-empty", lambda: noise(seed[:0], [3], 0, 1.0, 1.0, 1, torch.float32)),
        ("noise-seed-0d", lambda: noise(seed[0], [3], 0, 1.0, 1.0, 1, torch.float32)),
        ("noise-seed-long", lambda: noise(torch.tensor([7, 8], dtype=torch.int64), [3], 0, 1.0, 1.0, 1,
                                          torch.float32)),
        ("noise-shape-negative", lambda: noise(seed, [3, -1], 0, 1.0, 1.0, 1, torch.float32)),
        ("noise-kind-3", lambda: noise(seed, [3], 3, 1.0, 1.0, 1, torch.float32)),
        ("noise-kind-negative", lambda: noise(seed, [3], -1, 1.0, 1.0, 1, torch.float32)),
        ("noise-dtype-half", lambda: noise(seed, [3], 0, 1.0, 1.0, 1, torch.float16)),
        ("noise-dtype-int", lambda: noise(seed, [3], 1, 1.0, 1.0, 1, torch.int64)),
        ("noise-sog-k-0", lambda: noise(seed, [3], 2, 0.0, 1.0, 10, torch.float32)),
        ("noise-sog-k-nan", lambda: noise(seed, [3], 2, math.nan, 1.0, 10, torch.float32)),
        ("noise-sog-k-inf", lambda: noise(seed, [3], 2, math.inf, 1.0, 10, torch.float32)),
        ("noise-sog-tau-nan", lambda: noise(seed, [3], 2, 2.0, math.nan, 10, torch.float32)),
        ("noise-sog-s-0", lambda: noise(seed, [3], 2, 2.0, 1.0, 0, torch.float32)),
        ("noise-sog-s-huge", lambda: noise(seed, [3], 2, 2.0, 1.0, 2**31, torch.float32)),
    ]
    return calls


RAW_PERTURB_BAD_CALLS = _raw_perturb_bad_calls()


@pytest.mark.parametrize("name,call", RAW_PERTURB_BAD_CALLS, ids=[name for name, _ in RAW_PERTURB_BAD_CALLS])
def test_raw_ops_refuse_bad_arguments(name, call):
    with pytest.raises((RuntimeError, ValueError, IndexError), match=r"torch\.ops\.diffcomb\."):
        call()


@pytest.mark.parametrize("dynamic", [False, True])
def test_raw_ops_refuse_bad_arguments_under_torch_compile(dynamic):
    f = torch.compile(lambda x, k: torch.ops.diffcomb.topk_mask(x, k), fullgraph=True, dynamic=dynamic,
                      backend="aot_eager")
    with pytest.raises(RuntimeError, match=r"torch\.ops\.diffcomb\.topk_mask: k must be in \[0, n\]"):
        f(torch.randn(3, 10), 100)
    x = torch.randn(3, 10)
    assert torch.equal(f(x, 4), diffcomb.topk_mask(x, 4))


def test_raw_ops_refuse_bad_arguments_under_meta_tensors():
    # The fake (meta) implementations run the same checks, so torch.compile fails at trace time.
    with pytest.raises(ValueError, match=r"torch\.ops\.diffcomb\.topk_mask: k must be in \[0, n\]"):
        torch.ops.diffcomb.topk_mask(torch.empty(3, 10, device="meta"), 100)
    with pytest.raises(RuntimeError, match=r"torch\.ops\.diffcomb\.grid_shortest_path: grid .* too large"):
        torch.ops.diffcomb.grid_shortest_path(torch.empty(1, 2**16, 2**15, device="meta"))
    with pytest.raises(ValueError, match=r"torch\.ops\.diffcomb\.perturb_noise: k must be positive"):
        torch.ops.diffcomb.perturb_noise(torch.zeros(1, dtype=torch.int64, device="meta"), [2], 2, -1.0, 1.0, 3,
                                         torch.float32)


def test_estimators_on_empty_solutions():
    # An empty event (n = 0) used to fail in a reshape(-1, 0) ("ambiguous"); SPEC 0: empty results.
    solver = functools.partial(diffcomb.topk_mask, k=0)
    theta = torch.zeros(3, 0, requires_grad=True)
    for est in (diffcomb.perturbed(solver, 4), diffcomb.imle(solver, noise="gumbel", num_samples=2),
                diffcomb.imle(solver, noise="gumbel", num_samples=2, return_samples=True), diffcomb.blackbox(solver)):
        out = est(theta)
        assert out.shape[-2:] == (3, 0)
        (grad,) = torch.autograd.grad(out.sum(), theta)
        assert grad.shape == (3, 0)
    loss = diffcomb.perturbed_fenchel_young_loss(theta, torch.zeros(3, 0), solver, 4, reduction="none")
    assert torch.equal(loss, torch.zeros(3))  # F - <theta, y> over no coordinates


# ------------------------------------------------------------------------------------------------
# dim= on the row solvers and the top-k / argmax modules: the same as moving the axis last.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [0, 1, -2, 2, -1])
def test_row_solvers_dim_matches_movedim(gen, device, dim):
    x = torch.randn(5, 6, 7, generator=gen, dtype=torch.float64).to(device)
    x[1, 2, 3] = x[1, 2, 4] = x[1, 3, 3]  # ties along every axis
    moved = x.movedim(dim, -1)
    k = x.shape[dim] // 2
    for got, expected in (
        (diffcomb.topk_mask(x, k, dim=dim), diffcomb.topk_mask(moved, k).movedim(-1, dim)),
        (diffcomb.argmax_onehot(x, dim=dim), diffcomb.argmax_onehot(moved).movedim(-1, dim)),
        (diffcomb.sort_permutation(x, dim=dim), diffcomb.sort_permutation(moved).movedim(-1, dim)),
    ):
        assert got.shape == x.shape
        assert torch.equal(got, expected)
    # Against torch on the moved axis: top-k sums to k, argmax is torch.argmax's first maximum,
    # ranks are a stable ascending argsort's inverse.
    assert torch.equal(diffcomb.topk_mask(x, k, dim=dim).sum(dim), torch.full_like(x.sum(dim), k))
    assert torch.equal(diffcomb.argmax_onehot(x, dim=dim).argmax(dim), x.argmax(dim))
    order = torch.sort(x, dim=dim, stable=True).indices
    assert torch.equal(diffcomb.sort_permutation(x, dim=dim).long() - 1, order.argsort(dim=dim))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_sort_permutation_matrix_dim(gen, dim):
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    got = diffcomb.sort_permutation(x, matrix=True, dim=dim)
    d = dim % x.dim()
    expected = diffcomb.sort_permutation(x.movedim(d, -1), matrix=True).movedim((-2, -1), (d, d + 1))
    assert got.shape == (*x.shape[: d + 1], x.shape[d], *x.shape[d + 1:])
    assert torch.equal(got, expected)
    # P applied along the item axis sends every item to its rank position: sum_i P[i, j] x_i = sorted_j.
    sorted_x = torch.einsum("ij...,i...->j...", got.movedim(d, 0).movedim(d + 1, 1), x.movedim(d, 0))
    assert_close(sorted_x.movedim(0, d), torch.sort(x, dim=d).values)


def test_row_solvers_dim_bad_input():
    x = torch.randn(3, 4)
    for call in (lambda: diffcomb.topk_mask(x, 1, dim=2), lambda: diffcomb.argmax_onehot(x, dim=-3),
                 lambda: diffcomb.sort_permutation(x, dim=5)):
        with pytest.raises(IndexError, match=r"diffcomb\.\w+: dim=-?\d is out of range for a tensor with 2 dim"):
            call()
    with pytest.raises(TypeError, match=r"diffcomb\.topk_mask: dim must be an int, got float"):
        diffcomb.topk_mask(x, 1, dim=0.0)
    with pytest.raises(ValueError, match=r"diffcomb\.topk_mask: k must be an int in \[0, 3\], got 4"):
        diffcomb.topk_mask(x, 4, dim=0)  # k is bounded by the size along dim, not the last axis
    with pytest.raises(ValueError, match=r"diffcomb\.argmax_onehot: theta must have at least one element along dim=0"):
        diffcomb.argmax_onehot(torch.empty(0, 4), dim=0)


@pytest.mark.parametrize("dim", [0, 1, -2])
def test_modules_dim_matches_movedim(gen, dim):
    theta = torch.randn(6, 4, 5, generator=gen, dtype=torch.float64)
    g = torch.randn(6, 4, 5, generator=gen, dtype=torch.float64)
    for make in (lambda d: diffcomb.PerturbedTopK(2, num_samples=6, dim=d),
                 lambda d: diffcomb.IMLETopK(2, num_samples=3, dim=d),
                 lambda d: diffcomb.PerturbedArgmax(num_samples=6, dim=d)):
        along, last = make(dim), make(-1)
        t1 = theta.clone().requires_grad_(True)
        t2 = theta.clone().requires_grad_(True)
        y1 = along(t1, generator=torch.Generator().manual_seed(3))
        y2 = last(t2.movedim(dim, -1), generator=torch.Generator().manual_seed(3)).movedim(-1, dim)
        assert y1.shape == theta.shape
        assert torch.equal(y1, y2)
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        assert torch.equal(t1.grad, t2.grad)
        assert f"dim={dim}" in repr(along)
    with pytest.raises(IndexError, match=r"diffcomb\.PerturbedTopK: dim=3 is out of range"):
        diffcomb.PerturbedTopK(2, dim=3)(theta)
    with pytest.raises(TypeError, match=r"diffcomb\.IMLETopK: dim must be an int, got str"):
        diffcomb.IMLETopK(2, dim="0")


# ------------------------------------------------------------------------------------------------
# perturbed, imle and blackbox as decorators (with and without arguments) and as plain wrappers.


def _top2(scores):
    return diffcomb.topk_mask(scores, 2)


def _run(est, theta, g, seed=None):
    theta = theta.clone().requires_grad_(True)
    out = est(theta) if seed is None else est(theta, generator=torch.Generator().manual_seed(seed))
    (out * g).sum().backward()
    return out.detach(), theta.grad


def test_decorators_match_the_wrappers(gen):
    theta = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    g = torch.randn(4, 9, generator=gen, dtype=torch.float64)

    @diffcomb.imle(num_samples=5, noise="sum_of_gamma", k=2, lambda_=2.0)
    def imle_top2(scores):
        """Top-2 mask."""
        return diffcomb.topk_mask(scores, 2)

    @diffcomb.perturbed(num_samples=7, sigma=0.5, noise="normal")
    def perturbed_top2(scores):
        return diffcomb.topk_mask(scores, 2)

    @diffcomb.blackbox(lambda_=3.0)
    def blackbox_top2(scores):
        return diffcomb.topk_mask(scores, 2)

    @diffcomb.perturbed
    def perturbed_bare(scores):
        return diffcomb.topk_mask(scores, 2)

    @diffcomb.blackbox
    def blackbox_bare(scores):
        return diffcomb.topk_mask(scores, 2)

    pairs = (
        (imle_top2, diffcomb.imle(_top2, num_samples=5, noise="sum_of_gamma", k=2, lambda_=2.0), 11),
        (perturbed_top2, diffcomb.perturbed(_top2, num_samples=7, sigma=0.5, noise="normal"), 12),
        (perturbed_bare, diffcomb.perturbed(_top2), 13),
        (blackbox_top2, diffcomb.blackbox(_top2, lambda_=3.0), None),
        (blackbox_bare, diffcomb.blackbox(_top2), None),
    )
    for decorated, wrapped, seed in pairs:
        assert type(decorated) is type(wrapped)
        y1, g1 = _run(decorated, theta, g, seed)
        y2, g2 = _run(wrapped, theta, g, seed)
        assert torch.equal(y1, y2) and torch.equal(g1, g2)
        assert g1.abs().sum() > 0  # a real gradient, not zeros on both sides
    # The decorated name reads like the function it wraps.
    assert imle_top2.__name__ == "imle_top2" and imle_top2.__doc__ == "Top-2 mask."
    assert imle_top2.__wrapped__(theta).sum() == 8
    assert "imle_top2" in repr(imle_top2)


def test_decorator_imle_torch_imle_mapping(gen):
    # torch-imle's @imle(target_distribution=TargetDistribution(alpha, beta), nb_samples=S,
    # theta_noise_temperature=t1, target_noise_temperature=t2) is diffcomb's alpha, lambda_=beta,
    # num_samples=S, tau=t1, tau_target=t2: the formula of the I-MLE backward with the same noise.
    theta = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    alpha, beta, s, t1, t2 = 0.5, 2.0, 4, 0.7, 1.5

    @diffcomb.imle(noise="gumbel", num_samples=s, alpha=alpha, lambda_=beta, tau=t1, tau_target=t2)
    def argmax(scores):
        return diffcomb.argmax_onehot(scores)

    y, grad = _run(argmax, theta, g, seed=5)
    eps = diffcomb.sample_gumbel((s, 3, 6), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = diffcomb.argmax_onehot(theta + t1 * eps)
    assert torch.equal(y, z.mean(0))
    expected = (z - diffcomb.argmax_onehot(alpha * theta - beta * g + t2 * eps)).mean(0)
    assert torch.equal(grad, expected)


def test_decorator_bad_arguments():
    # A bad argument raises where the decorator is written, before any function is decorated.
    with pytest.raises(ValueError, match=r"diffcomb\.imle: num_samples must be an int >= 1, got 0"):
        diffcomb.imle(num_samples=0, noise="gumbel")
    with pytest.raises(ValueError, match=r"diffcomb\.imle: noise must be one of 'sum_of_gamma', 'gumbel', 'none'"):
        diffcomb.imle(noise="sum-of-gamma", k=3)
    with pytest.raises(ValueError, match=r"diffcomb\.perturbed: sigma must be positive and finite, got -1"):
        diffcomb.perturbed(sigma=-1.0)
    with pytest.raises(TypeError, match=r"diffcomb\.blackbox: minimize must be a bool"):
        diffcomb.blackbox(minimize="yes")
    with pytest.raises(ValueError, match=r"diffcomb\.blackbox: event_dims must be an int >= 0, got -1"):
        diffcomb.blackbox(event_dims=-1)
    # Positional numbers are taken as the solver: the error says to pass them by keyword.
    with pytest.raises(TypeError, match=r"diffcomb\.imle: solver must be callable, got int \(used as a decorator, "
                                        r"imle takes its other arguments by keyword"):
        diffcomb.imle(5)
    decorate = diffcomb.perturbed(num_samples=3)
    with pytest.raises(TypeError, match=r"diffcomb\.perturbed: solver must be callable, got str"):
        decorate("not a function")
    # Without arguments, imle takes its defaults: the Sum-of-Gamma noise needs k, and says how to give it.
    with pytest.raises(ValueError, match=r"diffcomb\.imle: noise='sum_of_gamma' \(the default\) needs k.*"
                                         r"@diffcomb\.imle\(k=\.\.\.\)"):
        @diffcomb.imle
        def top3(scores):
            return diffcomb.topk_mask(scores, 3)


# ------------------------------------------------------------------------------------------------
# torch.func beyond the op x mode matrix (tests/autodiff_cases/perturb.py): vmap's randomness,
# per-sample gradients in one solver call, the modes an estimator does not define.

_TOP3 = functools.partial(diffcomb.topk_mask, k=3)


def _estimators(solver):
    return {"perturbed": diffcomb.perturbed(solver, num_samples=4, sigma=0.7),
            "imle": diffcomb.imle(solver, noise="gumbel", num_samples=2, lambda_=2.0),
            "blackbox": diffcomb.blackbox(solver, lambda_=2.0)}


@pytest.mark.parametrize("name", ["perturbed", "imle"])
def test_vmap_randomness(name, gen):
    est = _estimators(_TOP3)[name]
    theta = torch.randn(5, 3, 8, generator=gen, dtype=torch.float64)
    seeded = lambda t: est(t, generator=torch.Generator().manual_seed(11))  # noqa: E731
    # "same": one noise draw for every vmapped sample, as a loop with the same seed.
    same = torch.vmap(seeded, randomness="same")(theta)
    assert torch.equal(same, torch.stack([seeded(t) for t in theta]))
    # "different": independent noise per sample (a seed per sample, drawn from the generator); the
    # first sample's seed is the generator's first draw, as in an unbatched call.
    repeated = theta[:1].expand(5, 3, 8)
    different = torch.vmap(seeded, randomness="different")(repeated)
    assert torch.equal(different[0], seeded(theta[0]))
    assert all(not torch.equal(different[0], different[i]) for i in range(1, 5))
    with pytest.raises(RuntimeError, match="randomness"):
        torch.vmap(seeded)(theta)


@pytest.mark.parametrize("name", ["perturbed", "imle", "blackbox"])
def test_per_sample_gradients_fold_into_one_solver_call(name, gen):
    solver = CountingSolver(_TOP3)
    est = _estimators(solver)[name]
    theta = torch.randn(6, 2, 8, generator=gen, dtype=torch.float64)
    weights = torch.randn(8, generator=gen, dtype=torch.float64)

    def loss(t):
        if name == "blackbox":  # deterministic: no generator
            return (est(t) * weights).sum()
        return (est(t, generator=torch.Generator().manual_seed(3)) * weights).sum()

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")  # a batching rule, no fallback
        batched = torch.vmap(torch.func.grad(loss), randomness="same")(theta)
    # the forward, and the backward unless it is perturbed's (no solver call), each once for all 6 x 2 rows
    samples = {"perturbed": 4, "imle": 2, "blackbox": 1}[name]
    assert solver.calls == [(samples * 12, 8)] * (1 if name == "perturbed" else 2)
    looped = torch.stack([torch.func.grad(loss)(t) for t in theta])
    assert_close(batched, looped)


@pytest.mark.parametrize("name", ["imle", "blackbox"])
def test_surrogate_gradients_raise_for_forward_mode_and_second_derivatives(name, gen):
    est = _estimators(_TOP3)[name]
    theta = torch.randn(2, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"diffcomb.{name}: the forward-mode derivative is not defined"):
        torch.func.jvp(est, (theta,), (torch.ones_like(theta),))
    (g,) = torch.autograd.grad((est(theta) * torch.arange(8.0)).sum(), theta, create_graph=True)
    with pytest.raises(RuntimeError, match=f"diffcomb.{name}: the second derivative is not defined"):
        g.sum().backward()
    with pytest.raises(RuntimeError, match=f"diffcomb.{name}: the .* is not defined: .*gradient estimate"):
        torch.func.jacfwd(torch.func.grad(lambda t: (est(t) * torch.arange(8.0)).sum()),
                          randomness="same")(theta.detach())


def test_perturbed_jvp_is_the_transpose_of_its_vjp(gen):
    """Forward mode uses the same Monte-Carlo Jacobian as the backward: <u, J v> = <J^T u, v>, and the
    Jacobian estimate has the closed form (1/(sigma M)) sum_m (y_m - y_hat) grad nu(Z_m)^T."""
    sigma, m = 0.6, 5
    est = diffcomb.perturbed(_TOP3, num_samples=m, sigma=sigma, noise="normal")
    theta = torch.randn(8, generator=gen, dtype=torch.float64)
    f = lambda t: est(t, generator=torch.Generator().manual_seed(4))  # noqa: E731
    jf = torch.func.jacfwd(f, randomness="same")(theta)
    jr = torch.func.jacrev(f)(theta)
    assert_close(jf, jr)
    z = diffcomb.sample_normal((m, 1, 8), generator=torch.Generator().manual_seed(4), dtype=torch.float64)[:, 0]
    ys = torch.stack([diffcomb.topk_mask(theta + sigma * zm, 3) for zm in z])
    expected = ((ys - ys.mean(0)).unsqueeze(-1) * z.unsqueeze(1)).mean(0) / sigma
    assert_close(jf, expected)
    # its derivative in theta is 0 (the samples are fixed), in the cotangent the Jacobian itself
    hess = torch.func.jacfwd(torch.func.jacrev(f), randomness="same")(theta)
    assert torch.equal(hess, torch.zeros_like(hess))
