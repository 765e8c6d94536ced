"""soft-DTW on series through the grouped kernel (csrc/softdtw/cpu_lanes.cpp).

A batch (B > 1) of pairs of at most 128 x 128 cells without per-pair lengths runs as groups of up
to 8 pairs interleaved along the diagonals; a single pair, lengths, or longer series run the
per-pair sweep (cpu.cpp). Both evaluate the same cell formulas, so they agree to rounding. The
tests compare the grouped kernel with
- the per-pair sweep (the same pairs called one at a time: B = 1 never takes the groups),
- the general route (``soft_dtw_from_cost`` of ``pairwise_cost``: the cost-matrix kernel and torch's
  autograd through the pairwise costs, what custom costs and torch.func use),
- the lean eager path against the checked path (``lean_path(False)``), the float64 reference of
  tests/reference/softdtw.py, and gradcheck in float64;
over gammas (hard DTW included), bands, costs, shapes, group splits, thread counts, NaN costs in one
pair of a group, and the divergence (``normalize=True``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffcomb
from diffcomb._autodiff import lean_path
from tests.reference import softdtw as ref

COSTS = ["sqeuclidean", "half_sqeuclidean", "log_augmented"]
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}


def _grads(x, y, gamma, cost="sqeuclidean", bandwidth=None, g=None):
    """(values, grad x, grad y) of soft_dtw at a batch of series (one call)."""
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = diffcomb.soft_dtw(xs, ys, gamma, cost=cost, bandwidth=bandwidth)
    g = torch.ones_like(out) if g is None else g
    if not torch.isfinite(out).all():
        return out.detach(), None, None
    gx, gy = torch.autograd.grad(out, (xs, ys), g)
    return out.detach(), gx, gy


def _per_pair(x, y, gamma, cost="sqeuclidean", bandwidth=None, g=None):
    """The same, pair by pair (B = 1: the per-pair sweep)."""
    g = torch.ones(x.shape[0], dtype=x.dtype) if g is None else g
    parts = [_grads(x[b:b + 1], y[b:b + 1], gamma, cost, bandwidth, g[b:b + 1]) for b in range(x.shape[0])]
    value = torch.cat([p[0] for p in parts])
    if any(p[1] is None for p in parts):
        return value, None, None
    return value, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])


def _general(x, y, gamma, cost="sqeuclidean", bandwidth=None, g=None):
    """The general route: the cost-matrix kernel and autograd through pairwise_cost."""
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = diffcomb.soft_dtw_from_cost(diffcomb.pairwise_cost(xs, ys, cost), gamma, bandwidth=bandwidth)
    g = torch.ones_like(out) if g is None else g
    gx, gy = torch.autograd.grad(out, (xs, ys), g)
    return out.detach(), gx, gy


def _close(a, b, dtype, scale=1.0):
    for p, q in zip(a, b):
        assert (p is None) == (q is None)
        if p is not None:
            tol = {k: v * scale for k, v in TOL[dtype].items()}
            torch.testing.assert_close(p, q, equal_nan=True, **tol)


def _series(batch, m, n, d, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, m, d, generator=gen, dtype=dtype),
            torch.randn(batch, n, d, generator=gen, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("gamma", [0.0, 0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("cost", COSTS)
def test_groups_match_the_per_pair_sweep(cost, gamma, dtype):
    x, y = _series(6, 9, 7, 3, dtype, seed=1)
    g = torch.randn(6, generator=torch.Generator().manual_seed(2), dtype=dtype)
    _close(_grads(x, y, gamma, cost, g=g), _per_pair(x, y, gamma, cost, g=g), dtype)


@pytest.mark.parametrize("batch", [2, 3, 4, 5, 8, 9, 17, 40])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 6, 2), (6, 1, 2), (16, 16, 2), (5, 12, 1), (3, 4, 0), (7, 7, 9)])
def test_shapes_and_group_splits(batch, shape):
    m, n, d = shape
    x, y = _series(batch, m, n, d, torch.float64, seed=batch * 100 + m)
    _close(_grads(x, y, 0.3), _per_pair(x, y, 0.3), torch.float64)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
@pytest.mark.parametrize("bandwidth", [0, 1, 3, 100])
@pytest.mark.parametrize("shape", [(10, 10), (10, 13), (13, 10)])
def test_bands(shape, bandwidth, gamma):
    m, n = shape
    x, y = _series(5, m, n, 2, torch.float64, seed=m + 7 * n + bandwidth)
    if bandwidth < abs(m - n):  # no alignment: +inf and no gradient, on every path
        value = diffcomb.soft_dtw(x, y, gamma, bandwidth=bandwidth)
        assert torch.isinf(value).all() and (value > 0).all()
        return
    _close(_grads(x, y, gamma, bandwidth=bandwidth), _per_pair(x, y, gamma, bandwidth=bandwidth), torch.float64)
    _close(_grads(x, y, gamma, bandwidth=bandwidth), _general(x, y, gamma, bandwidth=bandwidth), torch.float64,
           scale=100.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cost", COSTS)
def test_groups_match_the_general_route(cost, dtype):
    """The in-kernel costs against the cost-matrix kernel with torch's autograd through
    pairwise_cost (which forms the costs as |x|^2 + |y|^2 - 2 x y^T: rounding differs slightly)."""
    x, y = _series(4, 16, 16, 2, dtype, seed=5)
    _close(_grads(x, y, 1.0, cost), _general(x, y, 1.0, cost), dtype, scale=100.0)


def test_reference_values_and_gradients():
    x, y = _series(3, 5, 4, 2, torch.float64, seed=9)
    value, gx, gy = _grads(x, y, 0.7, "log_augmented", bandwidth=2)
    for b in range(3):
        xb, yb = x[b].numpy(), y[b].numpy()
        np.testing.assert_allclose(value[b].item(), ref.soft_dtw(xb, yb, 0.7, "log_augmented", 2), rtol=1e-12)
        rgx, rgy = ref.soft_dtw_grad(xb, yb, 0.7, "log_augmented", 2)
        np.testing.assert_allclose(gx[b].numpy(), rgx, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gy[b].numpy(), rgy, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("gamma", [0.05, 1.0])
def test_gradcheck_float64(gamma, cost):
    x, y = _series(5, 4, 3, 2, torch.float64, seed=13)
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: diffcomb.soft_dtw(a, b, gamma, cost=cost), (x, y))
    assert torch.autograd.gradgradcheck(lambda a, b: diffcomb.soft_dtw(a, b, gamma, cost=cost), (x, y))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_lean_path_matches_the_checked_path(dtype):
    x, y = _series(4, 16, 16, 2, dtype, seed=17)
    g = torch.randn(4, generator=torch.Generator().manual_seed(3), dtype=dtype)
    results = []
    for lean in (True, False):
        with lean_path(lean):
            results.append(_grads(x, y, 1.0, g=g))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_non_finite_cost_poisons_only_its_pair():
    x, y = _series(6, 8, 8, 2, torch.float64, seed=21)
    x[2, 3, 1] = float("nan")
    y[4, 0, 0] = float("inf")
    value, gx, gy = (t.detach() for t in _grads_any(x, y))
    bad = torch.tensor([False, False, True, False, True, False])
    assert torch.isnan(value[bad]).all() and torch.isnan(gx[bad]).all() and torch.isnan(gy[bad]).all()
    good_value, good_gx, good_gy = _per_pair(x[~bad], y[~bad], 1.0)
    torch.testing.assert_close(value[~bad], good_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx[~bad], good_gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gy[~bad], good_gy, rtol=1e-12, atol=1e-12)


def _grads_any(x, y):
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = diffcomb.soft_dtw(xs, ys, 1.0)
    gx, gy = torch.autograd.grad(out.sum(), (xs, ys))
    return out, gx, gy


def test_thread_count_does_not_change_results():
    x, y = _series(19, 40, 40, 3, torch.float64, seed=23)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(x, y, 0.2)
        torch.set_num_threads(2)
        two = _grads(x, y, 0.2)
    finally:
        torch.set_num_threads(threads)
    _close(one, two, torch.float64)


@pytest.mark.parametrize("side", [128, 129])
def test_largest_grouped_pairs_and_the_first_per_pair_ones(side):
    x, y = _series(2, side, side - 3, 1, torch.float64, seed=side)
    _close(_grads(x, y, 0.5), _per_pair(x, y, 0.5), torch.float64)


@pytest.mark.parametrize("lean", [True, False])
def test_divergence_module(lean):
    """normalize=True: sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2, each term a batch of 4 pairs."""
    x, y = _series(4, 10, 12, 2, torch.float64, seed=29)
    loss = diffcomb.SoftDTW(gamma=0.5, normalize=True, reduction="none")
    with lean_path(lean):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = loss(xs, ys)
        gx, gy = torch.autograd.grad(out.sum(), (xs, ys))
    pieces = []
    for a, b, w in ((x, y, 1.0), (x, x, -0.5), (y, y, -0.5)):
        pieces.append((w, _per_pair(a, b, 0.5)))
    expected = sum(w * p[0] for w, p in pieces)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-12, atol=1e-12)
    exp_gx = pieces[0][1][1] - 0.5 * (pieces[1][1][1] + pieces[1][1][2])
    exp_gy = pieces[0][1][2] - 0.5 * (pieces[2][1][1] + pieces[2][1][2])
    torch.testing.assert_close(gx, exp_gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gy, exp_gy, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b), (x[:2].clone().requires_grad_(),
                                                             y[:2].clone().requires_grad_()))


@pytest.mark.parametrize("call, error, match", [
    (lambda: diffcomb.soft_dtw(torch.randn(4, 16, 2), torch.randn(3, 16, 2)), ValueError, "broadcast"),
    (lambda: diffcomb.soft_dtw(torch.randn(4, 16, 2), torch.randn(4, 16, 3)), ValueError, "feature size"),
    (lambda: diffcomb.soft_dtw(torch.randn(4, 16, 2), torch.randn(4, 16, 2), float("nan")), ValueError, "gamma"),
    (lambda: diffcomb.soft_dtw(torch.randn(4, 0, 2), torch.randn(4, 16, 2)), ValueError, "at least one step"),
    (lambda: diffcomb.soft_dtw(torch.randn(4, 16, 2), torch.randn(4, 16, 2), bandwidth=-1), ValueError, "bandwidth"),
])
def test_bad_inputs(call, error, match):
    for lean in (True, False):
        with lean_path(lean), pytest.raises(error, match=match):
            call()


def test_raw_binding_checks_before_the_groups():
    """The native entry point validates before choosing the kernel: a batch that would take the
    groups still raises on a null output or a bad cost code."""
    from diffcomb import _native

    x = torch.randn(4, 16, 2)
    value = torch.empty(4)
    args = [x.data_ptr(), x.data_ptr(), value.data_ptr(), 0, 0, 0, 0, 4, 16, 16, 2, 0, 1.0, -1, 0, 1]
    bad_value = list(args)
    bad_value[2] = 0
    with pytest.raises(ValueError, match="value"):
        _native.cpu().softdtw_series(*bad_value)
    bad_cost = list(args)
    bad_cost[11] = 7
    with pytest.raises(ValueError, match="cost"):
        _native.cpu().softdtw_series(*bad_cost)
