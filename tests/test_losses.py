"""Tests of diffcomb.losses: soft_spearman / spearman_loss and soft_lts (SPEC.md sections 2.1,
2.4, 7.2), against the float64 numpy references, with gradients, gradcheck, limits, reductions,
edge cases and errors. (soft_quantile and soft_topk live in diffcomb.isotonic and are tested in
test_isotonic.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import diffcomb
from tests.conftest import (
    DEVICES,
    DTYPES,
    HALF_DTYPES,
    REGULARIZATIONS,
    assert_close,
    from_rows,
    randn,
    rows_of,
    rowwise_scalar,
    separated,
)
from tests.reference import isotonic as ref

SHAPES = [
    pytest.param((2,), -1, id="n2"),
    pytest.param((6,), -1, id="n6"),
    pytest.param((3, 7), -1, id="3x7"),
    pytest.param((2, 3, 5), -1, id="2x3x5"),
    pytest.param((2, 5, 3), 1, id="2x5x3-dim1"),
    pytest.param((6, 4), 0, id="6x4-dim0"),
]
REDUCTIONS = ["mean", "sum", "none"]


def sample(gen, shape, dim):
    moved = list(shape)
    n = moved.pop(dim)
    return separated(gen, *moved, n).movedim(-1, dim)


def reduce(values, reduction):
    return {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]


# ------------------------------------------------------------------------------------------------
# Soft Spearman


def spearman_vjp_row(pred, target, g, eps, reg):
    """d rho / d pred times g for one row (SPEC 2.1): d rho/d r = t~/(|r~||t~|) - rho r~/|r~|^2, then
    the soft-rank VJP of the reference."""
    r = ref.soft_rank(pred, eps, reg, False)
    t = ref.hard_rank_average(target)
    rc, tc = r - r.mean(), t - t.mean()
    nr, nt = np.linalg.norm(rc), np.linalg.norm(tc)
    rho = rc @ tc / (nr * nt)
    d_r = tc / (nr * nt) - rho * rc / nr**2
    return ref.soft_rank_vjp(pred, g * d_r, eps, reg, False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", SHAPES)
@pytest.mark.parametrize("reg", REGULARIZATIONS)
@pytest.mark.parametrize("eps", [0.3, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_spearman_matches_reference(device, dtype, shape, dim, reg, eps, reduction, gen):
    pred = sample(gen, shape, dim).to(dtype=dtype, device=device).requires_grad_()
    target = torch.randint(0, 4, shape, generator=gen).to(dtype=dtype, device=device)  # ties in targets
    # keep every target slice non-constant
    target.select(dim, 0).fill_(-1.0)
    target.select(dim, 1).fill_(5.0)
    rho = diffcomb.soft_spearman(pred, target, dim=dim, regularization_strength=eps, regularization=reg)
    expected_rho = rowwise_scalar(lambda p, t: ref.spearman_correlation(p, t, eps, reg), pred.detach(), dim, target)
    assert rho.dtype == dtype and rho.shape == expected_rho.shape
    assert_close(rho, expected_rho, dtype)

    loss = diffcomb.spearman_loss(pred, target, dim=dim, regularization_strength=eps, regularization=reg,
                                  reduction=reduction)
    expected_loss = reduce(1.0 - expected_rho, reduction)
    assert loss.shape == expected_loss.shape
    assert_close(loss, expected_loss, dtype)

    g = randn(gen, *loss.shape, dtype=dtype, device=device)
    (grad,) = torch.autograd.grad(loss, pred, g)
    g_rows = {"mean": -g.double().cpu() / max(1, expected_rho.numel()) * torch.ones(expected_rho.shape,
                                                                                     dtype=torch.float64),
              "sum": -g.double().cpu() * torch.ones(expected_rho.shape, dtype=torch.float64),
              "none": -g.double().cpu()}[reduction].reshape(-1).numpy()
    p_rows, t_rows = rows_of(pred, dim), rows_of(target, dim)
    expected_grad = np.stack([spearman_vjp_row(p_rows[b], t_rows[b], g_rows[b], eps, reg)
                              for b in range(p_rows.shape[0])])
    assert_close(grad, from_rows(expected_grad, pred, dim), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spec_7_2_spearman(device, dtype):
    pred = torch.tensor([0.1, 0.9, 0.4, 0.5], dtype=dtype, device=device)
    target = torch.tensor([1.0, 4.0, 2.0, 3.0], dtype=dtype, device=device)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    assert_close(diffcomb.soft_spearman(pred, target), 0.976831, **tol)
    assert_close(diffcomb.spearman_loss(pred, target), 1 - 0.976831, **tol)
    # the squared variant, 1/2 ||r - t||^2, from the public soft rank
    t = torch.tensor([1.0, 4.0, 2.0, 3.0], dtype=dtype, device=device)  # target ranks
    assert_close(0.5 * ((diffcomb.soft_rank(pred) - t) ** 2).sum(), 1.41375, **tol)
    for eps in [0.1, 0.05, 1e-3]:
        assert_close(diffcomb.soft_spearman(pred, target, regularization_strength=eps), 1.0, **tol)
        assert_close(0.5 * ((diffcomb.soft_rank(pred, regularization_strength=eps) - t) ** 2).sum(), 0.0, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reg", REGULARIZATIONS)
def test_spearman_limits(device, reg, gen):
    pred = separated(gen, 4, 9).to(device)
    target = randn(gen, 4, 9, device=device)
    ranks_t = torch.from_numpy(np.stack([ref.hard_rank_average(r) for r in target.cpu().numpy()])).to(device)
    ranks_p = torch.from_numpy(np.stack([ref.hard_rank_average(r) for r in pred.cpu().numpy()])).to(device)

    def pearson(a, b):
        a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))

    # eps -> 0: the exact Spearman correlation (Pearson of the hard ranks)
    exact = diffcomb.soft_spearman(pred, target, regularization_strength=1e-4, regularization=reg)
    torch.testing.assert_close(exact, pearson(ranks_p, ranks_t))
    if reg == "l2":  # eps -> infinity: Pearson between pred and the target ranks (SPEC 2.1)
        far = diffcomb.soft_spearman(pred, target, regularization_strength=1e6)
        torch.testing.assert_close(far, pearson(pred, ranks_t), rtol=1e-5, atol=1e-5)
    rho = diffcomb.soft_spearman(pred, target, regularization_strength=0.7, regularization=reg)
    assert bool(((rho >= -1 - 1e-12) & (rho <= 1 + 1e-12)).all())
    # invariant to a strictly increasing transform of the target
    torch.testing.assert_close(
        diffcomb.soft_spearman(pred, target.exp() * 3 - 1, regularization_strength=0.7, regularization=reg), rho)


@pytest.mark.parametrize("device", DEVICES)
def test_spearman_undefined_cases_are_nan(device):
    # n = 1 and a constant target: the correlation is undefined -> NaN (documented)
    one = diffcomb.soft_spearman(torch.tensor([[0.3]], device=device), torch.tensor([[1.0]], device=device))
    assert torch.isnan(one).all()
    pred = torch.tensor([[0.1, 0.5, 0.2], [0.1, 0.5, 0.2]], device=device)
    target = torch.tensor([[2.0, 2.0, 2.0], [1.0, 3.0, 2.0]], device=device)
    rho = diffcomb.soft_spearman(pred, target)
    assert torch.isnan(rho[0]) and torch.isfinite(rho[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_spearman_non_finite_row(device, bad, gen):
    pred = randn(gen, 3, 6, device=device)
    pred[1, 4] = bad
    pred.requires_grad_()
    target = randn(gen, 3, 6, device=device)
    loss = diffcomb.spearman_loss(pred, target, reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    (grad,) = torch.autograd.grad(loss, pred, torch.ones_like(loss))
    assert torch.isnan(grad[1]).all() and torch.isfinite(grad[[0, 2]]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reg", REGULARIZATIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_spearman_loss(device, reg, reduction, gen):
    pred = separated(gen, 3, 6, min_gap=0.1).to(device).requires_grad_()
    target = randn(gen, 3, 6, device=device)
    assert torch.autograd.gradcheck(
        lambda p: diffcomb.spearman_loss(p, target, regularization_strength=0.8, regularization=reg,
                                         reduction=reduction), (pred,))


def test_spearman_errors():
    pred = torch.randn(2, 5)
    with pytest.raises(ValueError, match="target"):
        diffcomb.spearman_loss(pred, torch.randn(2, 4))
    with pytest.raises(ValueError, match="target"):
        diffcomb.soft_spearman(pred, torch.randn(5))
    with pytest.raises(TypeError, match="target"):
        diffcomb.soft_spearman(pred, [1.0, 2.0])
    with pytest.raises(ValueError, match="reduction"):
        diffcomb.spearman_loss(pred, pred, reduction="avg")
    with pytest.raises(TypeError, match="dtype"):
        diffcomb.spearman_loss(torch.arange(5).to(torch.complex64), torch.arange(5))
    with pytest.raises(TypeError, match="target must be a real tensor"):
        diffcomb.spearman_loss(pred, pred.to(torch.complex64))
    with pytest.raises(IndexError, match="dim"):
        diffcomb.spearman_loss(pred, pred, dim=2)
    with pytest.raises(ValueError, match="regularization_strength"):
        diffcomb.spearman_loss(pred, pred, regularization_strength=0.0)
    with pytest.raises(ValueError, match="regularization"):
        diffcomb.spearman_loss(pred, pred, regularization="l1")
    with pytest.raises(ValueError, match="0-d"):
        diffcomb.spearman_loss(torch.tensor(1.0), torch.tensor(1.0))


# ------------------------------------------------------------------------------------------------
# Soft least trimmed squares


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", SHAPES + [pytest.param((1,), -1, id="n1")])
@pytest.mark.parametrize("which_k", ["zero", "one", "last"])
@pytest.mark.parametrize("eps", [0.3, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_lts_matches_reference(device, dtype, shape, dim, which_k, eps, reduction, gen):
    n = shape[dim]
    k = {"zero": 0, "one": min(1, n - 1), "last": n - 1}[which_k]
    losses = (sample(gen, shape, dim) ** 2).to(dtype=dtype, device=device).requires_grad_()
    out = diffcomb.soft_lts(losses, k, dim=dim, regularization_strength=eps, reduction=reduction)
    per_row = rowwise_scalar(lambda r: ref.soft_lts(r, k, eps), losses.detach(), dim)
    expected = reduce(per_row, reduction)
    assert out.dtype == dtype and out.shape == expected.shape
    assert_close(out, expected, dtype)

    g = randn(gen, *out.shape, dtype=dtype, device=device)
    (grad,) = torch.autograd.grad(out, losses, g)
    g_rows = {"mean": g.double().cpu() / max(1, per_row.numel()) * torch.ones(per_row.shape, dtype=torch.float64),
              "sum": g.double().cpu() * torch.ones(per_row.shape, dtype=torch.float64),
              "none": g.double().cpu()}[reduction].reshape(-1).numpy()
    rows = rows_of(losses, dim)
    upstream = np.where(np.arange(n) >= k, 1.0 / (n - k), 0.0)  # SPEC 2.4
    expected_grad = np.stack([ref.soft_sort_vjp(rows[b], g_rows[b] * upstream, eps, "l2", True)
                              for b in range(rows.shape[0])])
    assert_close(grad, from_rows(expected_grad, losses, dim), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spec_7_2_lts(device, dtype):
    losses = torch.tensor([0.1, 4.0, 0.3, 0.2, 9.0], dtype=dtype, device=device)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    assert_close(diffcomb.soft_lts(losses, 2, regularization_strength=1e-3), 0.2, **tol)
    assert_close(diffcomb.soft_sort(losses, descending=True), [4.72, 3.72, 2.72, 1.72, 0.72], **tol)
    assert_close(diffcomb.soft_lts(losses, 2, regularization_strength=1.0), 1.72, **tol)
    assert_close(diffcomb.soft_lts(losses, 2, regularization_strength=1e3), 2.719, **tol)
    for eps in [1e-3, 1.0, 1e3]:  # k = 0: the mean for every eps
        assert_close(diffcomb.soft_lts(losses, 0, regularization_strength=eps), 2.72, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_soft_lts_limits(device, gen):
    losses = separated(gen, 4, 10).abs().to(device)
    k = 3
    hard = losses.sort(-1).values[:, : 10 - k].mean(-1)  # mean of the n - k smallest
    torch.testing.assert_close(diffcomb.soft_lts(losses, k, regularization_strength=1e-4, reduction="none"), hard)
    torch.testing.assert_close(diffcomb.soft_lts(losses, k, regularization_strength=1e8, reduction="none"),
                               losses.mean(-1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("k", [0, 2, 5])
def test_gradcheck_soft_lts(device, reduction, k, gen):
    losses = separated(gen, 3, 6, min_gap=0.1).abs().to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: diffcomb.soft_lts(x, k, regularization_strength=0.6, reduction=reduction), (losses,))


@pytest.mark.parametrize("device", DEVICES)
def test_soft_lts_non_finite_row_and_empty_batch(device, gen):
    losses = randn(gen, 3, 6, device=device).abs()
    losses[2, 0] = float("inf")
    losses.requires_grad_()
    out = diffcomb.soft_lts(losses, 2, reduction="none")
    assert torch.isnan(out[2]) and torch.isfinite(out[:2]).all()
    (grad,) = torch.autograd.grad(out, losses, torch.ones_like(out))
    assert torch.isnan(grad[2]).all() and torch.isfinite(grad[:2]).all()
    empty = torch.zeros(0, 5, device=device, requires_grad=True)
    out = diffcomb.soft_lts(empty, 1, reduction="none")
    assert out.shape == (0,)
    assert diffcomb.soft_lts(empty, 1, reduction="sum").item() == 0.0
    out.sum().backward()
    assert empty.grad.shape == empty.shape


@pytest.mark.parametrize("device", DEVICES)
def test_spearman_empty_batch(device):
    pred = torch.zeros(0, 5, device=device, requires_grad=True)
    out = diffcomb.spearman_loss(pred, pred.detach(), reduction="none")
    assert out.shape == (0,)
    out.sum().backward()
    assert pred.grad.shape == pred.shape


@pytest.mark.parametrize("k,error,match", [
    (-1, ValueError, r"k must be an int in \[0, 4\], got -1"),
    (5, ValueError, r"k must be an int in \[0, 4\], got 5"),
    (6, ValueError, r"k must be an int in \[0, 4\], got 6"),
    (1.0, TypeError, "k must be an int, got float"),
    (True, TypeError, "k must be an int, got bool"),
])
def test_soft_lts_bad_k(k, error, match):
    with pytest.raises(error, match=r"soft_lts: " + match):
        diffcomb.soft_lts(torch.rand(2, 5), k)


def test_soft_lts_errors():
    with pytest.raises(ValueError, match="reduction"):
        diffcomb.soft_lts(torch.rand(2, 5), 1, reduction="max")
    with pytest.raises(TypeError, match="dtype"):
        diffcomb.soft_lts(torch.arange(5).to(torch.complex64), 1)
    with pytest.raises(IndexError, match="dim"):
        diffcomb.soft_lts(torch.rand(2, 5), 1, dim=-3)
    with pytest.raises(ValueError, match="regularization_strength"):
        diffcomb.soft_lts(torch.rand(2, 5), 1, regularization_strength=float("inf"))
    with pytest.raises(ValueError, match="0-d"):
        diffcomb.soft_lts(torch.tensor(1.0), 0)


# ------------------------------------------------------------------------------------------------
# Layout, half precision and determinism for the losses.


@pytest.mark.parametrize("device", DEVICES)
def test_losses_non_contiguous_inputs(device, gen):
    base = randn(gen, 8, 5, device=device, requires_grad=True)
    target = randn(gen, 5, 8, device=device)
    for fn in (lambda p: diffcomb.spearman_loss(p, target, reduction="none"),
               lambda p: diffcomb.soft_lts(p.abs(), 2, reduction="none")):
        out = fn(base.t())
        base2 = base.detach().clone().requires_grad_()
        out_ref = fn(base2.t().contiguous())
        torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
        (grad,) = torch.autograd.grad(out.sum(), base)
        (grad_ref,) = torch.autograd.grad(out_ref.sum(), base2)
        torch.testing.assert_close(grad, grad_ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_losses_half_precision(device, dtype, gen):
    pred = randn(gen, 4, 9, device=device, dtype=dtype, requires_grad=True)
    target = randn(gen, 4, 9, device=device, dtype=dtype)
    loss = diffcomb.spearman_loss(pred, target, reduction="none")
    assert loss.dtype == dtype
    loss32 = diffcomb.spearman_loss(pred.detach().float(), target.float(), reduction="none")
    torch.testing.assert_close(loss.float(), loss32, rtol=3e-2, atol=3e-2)
    loss.sum().backward()
    assert pred.grad.dtype == dtype
    lts = diffcomb.soft_lts(pred.detach().abs(), 3, reduction="none")
    assert lts.dtype == dtype
    torch.testing.assert_close(lts.float(), diffcomb.soft_lts(pred.detach().abs().float(), 3, reduction="none"),
                               rtol=3e-2, atol=3e-2)


def test_losses_deterministic(gen):
    pred = randn(gen, 32, 2000, scale=10.0)
    target = randn(gen, 32, 2000)
    results = []
    for _ in range(2):
        p = pred.clone().requires_grad_()
        loss = diffcomb.spearman_loss(p, target, regularization="kl") + diffcomb.soft_lts(p.abs(), 100)
        (grad,) = torch.autograd.grad(loss, p)
        results.append((loss.detach(), grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


# ------------------------------------------------------------------------------------------------
# Constant and nearly constant predictions (issue 12, item 4): spearman_loss(torch.zeros(2, 6), y)
# used to be NaN with NaN gradients. The norm of the centred soft ranks is floored at
# tau = sqrt(machine eps) * ||centred (1..n)||: rho = <r~, t~> / (max(||r~||, tau) ||t~||).


def rank_floor(n, dtype):
    return math.sqrt(torch.finfo(dtype).eps * n * (n * n - 1) / 12)


def floored_spearman_row(pred, target, eps, reg, tau):
    """(rho, d rho / d pred) of one row with the floored norm, from the float64 references."""
    r = ref.soft_rank(pred, eps, reg, False)
    t = ref.hard_rank_average(target)
    rc, tc = r - r.mean(), t - t.mean()
    nr, nt = np.linalg.norm(rc), np.linalg.norm(tc)
    if nr >= tau:
        rho = rc @ tc / (nr * nt)
        d_r = tc / (nr * nt) - rho * rc / nr**2
    else:
        rho = rc @ tc / (tau * nt)
        d_r = tc / (tau * nt)
    return rho, ref.soft_rank_vjp(pred, d_r, eps, reg, False)


PEARSON_TARGET = torch.tensor([[0.3, 2.0, -1.0, 0.7, 5.0, 1.1], [4.0, -2.0, 0.5, 0.1, 3.0, 2.5]])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reg", REGULARIZATIONS)
@pytest.mark.parametrize("eps", [1.0, 0.3])
@pytest.mark.parametrize("value", [0.0, -3.7])
def test_spearman_constant_prediction_is_zero_with_a_finite_gradient(device, dtype, reg, eps, value):
    pred = torch.full((2, 6), value, dtype=dtype, device=device, requires_grad=True)
    target = PEARSON_TARGET.to(dtype=dtype, device=device)
    loss = diffcomb.spearman_loss(pred, target, regularization_strength=eps, regularization=reg,
                                  reduction="none")
    assert torch.equal(loss, torch.ones(2, dtype=dtype, device=device))  # rho = 0 exactly
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    tau = rank_floor(6, dtype)
    expected = np.stack([-floored_spearman_row(np.full(6, value), t, eps, reg, tau)[1]
                         for t in target.double().cpu().numpy()])
    assert_close(grad, expected, dtype)
    # l2, one block: the soft-rank Jacobian is (I - 11^T / n) / eps, so the gradient is -t~ / (eps tau ||t~||)
    if reg == "l2":
        t = torch.stack([torch.from_numpy(ref.hard_rank_average(row)) for row in target.double().cpu().numpy()])
        tc = t - t.mean(-1, keepdim=True)
        assert_close(grad, -tc / (eps * tau * tc.norm(dim=-1, keepdim=True)), dtype)
    assert diffcomb.soft_spearman(pred.detach(), target).eq(0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reg", REGULARIZATIONS)
def test_spearman_float32_prediction_scaled_by_1e_7(device, reg, gen):
    # In float32 the soft ranks of 1e-7 * u are (n + 1)/2 up to rounding: inside the floor, so the
    # value is near 0 (|rho| <= ||r~|| / tau) and the gradient is the constant prediction's.
    u = randn(gen, 2, 6, dtype=torch.float32, device=device)
    target = PEARSON_TARGET.to(device)
    pred = (1e-7 * u).requires_grad_()
    rho = diffcomb.soft_spearman(pred, target, regularization=reg)
    r = diffcomb.soft_rank(pred.detach(), regularization=reg)
    rc = r - r.mean(-1, keepdim=True)
    tau = rank_floor(6, torch.float32)
    assert torch.isfinite(rho).all()
    assert (rc.norm(dim=-1) < tau).all() and (rho.abs() <= rc.norm(dim=-1) / tau + 1e-6).all()
    assert (rho.abs() < 1e-2).all()
    (grad,) = torch.autograd.grad(rho.sum(), pred)
    zero = torch.zeros(2, 6, device=device, requires_grad=True)
    (grad0,) = torch.autograd.grad(diffcomb.soft_spearman(zero, target, regularization=reg).sum(), zero)
    assert torch.isfinite(grad).all()
    assert_close(grad, grad0, torch.float32, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reg", REGULARIZATIONS)
def test_spearman_near_constant_prediction_inside_and_outside_the_floor(device, dtype, reg, gen):
    u = separated(gen, 2, 6, min_gap=0.2).numpy()
    target = PEARSON_TARGET.double().numpy()
    tau = rank_floor(6, dtype)
    # Scales that put ||r~|| at 0.2 tau (inside: rho linear in the scale) and 5 tau (outside: the plain
    # correlation, which for one l2 block is the Pearson correlation of pred and the target ranks).
    for factor in (0.2, 5.0):
        rows = []
        for b in range(2):
            r = ref.soft_rank(1e-4 * u[b], 1.0, reg, False)  # one block: r~ is linear in the scale
            h = 1e-4 * factor * tau / np.linalg.norm(r - r.mean())
            rows.append(h * u[b])
        pred = torch.tensor(np.stack(rows), dtype=dtype, device=device, requires_grad=True)
        rho = diffcomb.soft_spearman(pred, torch.tensor(target, dtype=dtype, device=device), regularization=reg)
        expected = [floored_spearman_row(rows[b], target[b], 1.0, reg, tau) for b in range(2)]
        # float32: the centred ranks near tau have lost about half of their digits (the floor's point)
        tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.float32 else dict(rtol=1e-5, atol=1e-6)
        assert_close(rho, [e[0] for e in expected], **tol)
        if factor < 1:
            assert (rho.abs() <= 0.2 + tol["atol"]).all()
        else:
            pearson = [np.corrcoef(rows[b], ref.hard_rank_average(target[b]))[0, 1] for b in range(2)]
            if reg == "l2":
                assert_close(rho, pearson, **tol)
        (grad,) = torch.autograd.grad(rho.sum(), pred)
        assert torch.isfinite(grad).all()
        if dtype == torch.float64:
            assert_close(grad, np.stack([e[1] for e in expected]), rtol=1e-4, atol=1e-6 * float(
                np.abs(np.stack([e[1] for e in expected])).max()))


def test_spearman_is_continuous_across_the_floor():
    # rho = <r~, t~> / (max(||r~||, tau) ||t~||) is continuous: just inside and just outside agree.
    u = torch.tensor([[0.3, -1.2, 0.8, 2.0, -0.4, 1.1]], dtype=torch.float64)
    target = PEARSON_TARGET[:1].double()
    tau = rank_floor(6, torch.float64)
    h = tau / (u - u.mean()).norm()  # l2, one block: ||r~|| = h ||u~|| = tau
    inside = diffcomb.soft_spearman(u * h * (1 - 1e-6), target)
    outside = diffcomb.soft_spearman(u * h * (1 + 1e-6), target)
    assert_close(inside, outside, rtol=1e-5, atol=1e-7)


def test_spearman_loss_one_sgd_step_from_a_constant_prediction_learns_the_order():
    # The point of a finite gradient: training from a constant (zero-initialized) output works.
    target = PEARSON_TARGET
    pred = torch.zeros(2, 6, requires_grad=True)
    diffcomb.spearman_loss(pred, target).backward()
    with torch.no_grad():
        stepped = pred - 1e-3 * pred.grad
    assert (diffcomb.soft_spearman(stepped, target) > 0.99).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_spearman_non_finite_target_row(device, bad, gen):
    # A target with NaN used to rank NaN last and give a finite correlation that looked fine.
    pred = randn(gen, 3, 6, device=device, requires_grad=True)
    target = randn(gen, 3, 6, device=device)
    target[1, 2] = bad
    loss = diffcomb.spearman_loss(pred, target, reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    assert torch.isnan(grad[1]).all() and torch.isfinite(grad[[0, 2]]).all()
    clean = diffcomb.spearman_loss(pred[[0, 2]], target[[0, 2]], reduction="none")
    assert torch.equal(loss[[0, 2]], clean)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_losses_accept_integer_and_bool_inputs(dtype):
    pred = torch.tensor([[3, 1, 2, 0, 5], [1, 0, 0, 4, 2]]).to(dtype)
    target = torch.tensor([[1, 4, 2, 3, 0], [2, 0, 1, 3, 4]]).to(dtype)
    default = torch.get_default_dtype()
    rho = diffcomb.soft_spearman(pred, target)
    assert rho.dtype == default
    assert torch.equal(rho, diffcomb.soft_spearman(pred.to(default), target.to(default)))
    assert torch.equal(diffcomb.spearman_loss(pred, target), diffcomb.spearman_loss(pred.to(default), target))
    lts = diffcomb.soft_lts(pred, 1, reduction="none")
    assert lts.dtype == default and torch.equal(lts, diffcomb.soft_lts(pred.to(default), 1, reduction="none"))


def test_losses_tensor_arguments_on_different_devices():
    with pytest.raises(RuntimeError, match=r"soft_spearman: .*same device.*pred on cpu and target on meta"):
        diffcomb.spearman_loss(torch.randn(2, 5), torch.randn(2, 5, device="meta"))
    with pytest.raises(RuntimeError, match=r"soft_spearman: .*same device.*pred on meta and target on cpu"):
        diffcomb.soft_spearman(torch.randn(2, 5, device="meta"), torch.randn(2, 5))


@pytest.mark.parametrize("call,name", [
    (lambda **kw: diffcomb.soft_spearman(torch.randn(2, 5), torch.randn(2, 5), **kw), "soft_spearman"),
    (lambda **kw: diffcomb.spearman_loss(torch.randn(2, 5), torch.randn(2, 5), **kw), "soft_spearman"),
    (lambda **kw: diffcomb.soft_lts(torch.rand(2, 5), 1, **kw), "soft_lts"),
])
@pytest.mark.parametrize("strength", [0.0, float("nan"), 1e-310])
def test_losses_bad_strength_errors_name_the_loss(call, name, strength):
    # they used to name the inner soft_rank / soft_sort
    with pytest.raises(ValueError, match=f"{name}: regularization_strength"):
        call(regularization_strength=strength)
