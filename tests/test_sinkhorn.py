"""Tests of the Sinkhorn family (SPEC.md section 4): diffcomb.sinkhorn, the OT soft rank / sort /
quantile, Gumbel-Sinkhorn and the Sinkhorn divergence, against the float64 numpy references in
tests/reference/sinkhorn.py, SPEC section 7.4 values, closed forms and finite differences."""

from __future__ import annotations

import doctest
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import diffcomb
import diffcomb.nn
import diffcomb.nn.sinkhorn
import diffcomb.transport
import diffcomb.transport_permutation
import diffcomb.transport_sort
from diffcomb import (
    Sinkhorn,
    gumbel_sinkhorn,
    sinkhorn,
    sinkhorn_divergence,
    sinkhorn_quantile,
    sinkhorn_rank,
    sinkhorn_sort,
)
from tests.conftest import CUDA_SKIP_REASON, DEVICES, DTYPES, HAS_CUDA, assert_close, separated
from tests.reference import sinkhorn as ref

F64 = torch.float64


def problem(gen, shape, dtype=F64, device="cpu", weights=True):
    """Random cost (shape) in [0, 1) and softmax weights a, b (float64 draws, then cast)."""
    *lead, n, m = shape
    C = torch.rand(shape, generator=gen, dtype=F64)
    a = torch.randn(*lead, n, generator=gen, dtype=F64).softmax(-1) if weights else None
    b = torch.randn(*lead, m, generator=gen, dtype=F64).softmax(-1) if weights else None
    cast = (lambda t: None if t is None else t.to(dtype=dtype, device=device))
    return cast(C), cast(a), cast(b)


def flat(t):
    return t.detach().cpu().double().reshape(-1, *t.shape[-2:]) if t.dim() >= 2 else t


# ------------------------------------------------------------------------------------------------
# Forward against the reference.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 5, 4), (2, 2, 3, 7), (2, 1, 6), (2, 6, 1), (40, 33)],
                         ids=str)
def test_forward_matches_reference(gen, device, dtype, shape):
    C, a, b = problem(gen, shape, dtype, device)
    eps = 0.2
    out = sinkhorn(C, a, b, eps)
    tol = 1e-6 if dtype == F64 else 1e-4
    n, m = shape[-2:]
    Cr, ar, br = C.cpu().double().reshape(-1, n, m), a.cpu().double().reshape(-1, n), b.cpu().double().reshape(-1, m)
    ar, br = ar / ar.sum(-1, keepdim=True), br / br.sum(-1, keepdim=True)  # float32 masses differ by rounding
    assert out.plan.shape == C.shape and out.cost.shape == C.shape[:-2]
    assert out.f.shape == a.shape and out.g.shape == b.shape and out.n_iter.dtype == torch.int64
    for k in range(Cr.shape[0]):
        r = ref.sinkhorn(Cr[k].numpy(), ar[k].numpy(), br[k].numpy(), eps, tol=tol)
        assert_close(out.plan.reshape(-1, n, m)[k], r.plan, dtype)
        assert_close(out.cost.reshape(-1)[k], r.value, dtype)
        # potentials are defined up to (f + c, g - c); compare the gauge-free sums f_i + g_j
        fg = out.f.reshape(-1, n)[k, :, None] + out.g.reshape(-1, m)[k, None, :]
        assert_close(fg, r.f[:, None] + r.g[None, :], dtype)
        if dtype == F64:
            assert int(out.n_iter.reshape(-1)[k]) == r.n_iter
            assert bool(out.converged.reshape(-1)[k]) == r.converged


def test_spec_values():
    # SPEC 7.4
    C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    out = sinkhorn(C, epsilon=1.0, tol=1e-12)
    assert_close(out.plan, [[0.365529, 0.134471], [0.134471, 0.365529]], rtol=0, atol=1e-6)
    assert abs(float(out.cost) - 0.379885) < 1e-6
    assert abs(float((out.plan * C).sum()) - 0.268941) < 1e-6
    P11 = 1 / (2 * (1 + np.exp(-1 / 0.1)))
    out = sinkhorn(C, epsilon=0.1, tol=1e-12)
    assert abs(float(out.plan[0, 0]) - P11) < 1e-12 and abs(float(out.cost) - 0.069310) < 1e-6
    C = torch.tensor([[0.0, 2.0], [1.0, 0.5]], dtype=F64)
    out = sinkhorn(C, torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([0.6, 0.4], dtype=F64), 0.5, tol=1e-12)
    assert_close(out.plan, [[0.297369, 0.002631], [0.302631, 0.397369]], rtol=0, atol=1e-6)
    assert abs(float(out.cost) - 0.596157) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_marginals_within_tol(gen, dtype):
    C, a, b = problem(gen, (4, 30, 20), dtype)
    for tol in (1e-3, 1e-5) if dtype == torch.float32 else (1e-4, 1e-8):
        out = sinkhorn(C, a, b, 0.05, tol=tol, max_iter=5000)
        assert bool(out.converged.all())
        row_err = (out.plan.double().sum(-1) - a.double()).abs().sum(-1)
        assert float(row_err.max()) <= tol * 1.01
        col_err = (out.plan.double().sum(-2) - b.double()).abs().sum(-1)
        assert float(col_err.max()) <= (1e-5 if dtype == torch.float32 else 1e-12)


def test_small_epsilon_approaches_exact_ot(gen):
    for n in (5, 8):
        C = torch.rand(n, n, generator=gen, dtype=F64)
        rows, cols = linear_sum_assignment(C.numpy())
        exact = float(C.numpy()[rows, cols].sum()) / n
        gaps = []
        for eps in (0.1, 0.01, 1e-3):
            with warnings.catch_warnings():
                # eps = 1e-3 may stop at max_iter a little above tol = 1e-10 (and warn); the gaps
                # asserted below are orders of magnitude larger than that marginal error
                warnings.simplefilter("ignore", UserWarning)
                out = sinkhorn(C, epsilon=eps, tol=1e-10, max_iter=100000)
            gaps.append(abs(float((out.plan * C).sum()) - exact))
        assert gaps[-1] < 2e-3 and gaps[-1] <= gaps[0]
        hard = torch.zeros(n, n, dtype=F64)
        hard[rows, cols] = 1.0 / n
        assert_close(out.plan, hard, rtol=0, atol=1e-2)


def test_large_epsilon_gives_independent_coupling(gen):
    C, a, b = problem(gen, (2, 4, 3))
    out = sinkhorn(C, a, b, 1e6)
    assert_close(out.plan, a[..., :, None] * b[..., None, :], rtol=1e-5, atol=1e-7)


def test_plan_invariant_to_row_and_column_shifts(gen):
    C, a, b = problem(gen, (2, 6, 5))
    u = torch.randn(2, 6, 1, generator=gen, dtype=F64)
    v = torch.randn(2, 1, 5, generator=gen, dtype=F64)
    p1 = sinkhorn(C, a, b, 0.3, tol=1e-12).plan
    p2 = sinkhorn(C + u + v, a, b, 0.3, tol=1e-12).plan
    assert_close(p2, p1, rtol=1e-9, atol=1e-12)


def test_zero_weights(gen):
    C, a, b = problem(gen, (5, 4))
    a = a.clone()
    a[2] = 0.0
    b = b.clone()
    b[1] = 0.0
    a, b = a / a.sum(), b / b.sum()
    out = sinkhorn(C, a, b, 0.2, tol=1e-10)
    r = ref.sinkhorn(C.numpy(), a.numpy(), b.numpy(), 0.2, tol=1e-10)
    assert_close(out.plan, r.plan)
    assert float(out.plan[2].abs().sum()) == 0.0 and float(out.plan[:, 1].abs().sum()) == 0.0
    assert float(out.f[2]) == 0.0 and float(out.g[1]) == 0.0
    assert_close(out.cost, r.value)


def test_one_row_or_column_is_the_product_coupling(gen):
    for shape in ((1, 5), (5, 1)):
        C, a, b = problem(gen, shape)
        out = sinkhorn(C, a, b, 0.01)
        assert_close(out.plan, a[:, None] * b[None, :])
        assert int(out.n_iter) == 1


def test_batch_independence_and_team_path(gen):
    # One problem alone runs on a team of threads (rows and columns split); in a batch, one
    # problem per thread. Both give the same numbers (fixed-order reductions).
    C, a, b = problem(gen, (3, 150, 140))
    batch = sinkhorn(C, a, b, 0.05)
    for k in range(3):
        alone = sinkhorn(C[k], a[k], b[k], 0.05)
        assert int(alone.n_iter) == int(batch.n_iter[k])
        assert_close(alone.plan, batch.plan[k], rtol=1e-12, atol=1e-15)


def test_iteration_limit_and_fixed_count(gen):
    C, a, b = problem(gen, (2, 6, 6))
    out = sinkhorn(C, a, b, 0.01, max_iter=7, tol=0.0)
    assert out.n_iter.tolist() == [7, 7] and not bool(out.converged.any())
    for k in range(2):
        P, _, _ = ref.sinkhorn_iterations(C[k].numpy(), a[k].numpy(), b[k].numpy(), 0.01, 7)
        assert_close(out.plan[k], P)


def test_noncontiguous_and_broadcast_weights(gen):
    C, a, _ = problem(gen, (3, 5, 6))
    b = torch.randn(6, generator=gen, dtype=F64).softmax(-1)
    Ct = C.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not Ct.is_contiguous()
    out = sinkhorn(Ct, a, b, 0.2)
    expected = sinkhorn(C, a, b.expand(3, 6).contiguous(), 0.2)
    assert_close(out.plan, expected.plan, rtol=0, atol=0)


def test_float32_close_to_float64(gen):
    C, a, b = problem(gen, (4, 50, 40))
    o64 = sinkhorn(C, a, b, 0.1, tol=1e-6)
    o32 = sinkhorn(C.float(), a.float(), b.float(), 0.1, tol=1e-6)
    assert o32.plan.dtype == torch.float32
    assert_close(o32.plan, o64.plan, rtol=1e-3, atol=1e-6)


def test_half_input_computes_in_float32(gen):
    C, _, _ = problem(gen, (2, 8, 8))
    out = sinkhorn(C.half(), epsilon=0.2)
    assert out.plan.dtype == torch.float16
    ref32 = sinkhorn(C.half().float(), epsilon=0.2)
    assert_close(out.plan.float(), ref32.plan, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (3, 4, 0)], ids=str)
def test_empty(shape):
    C = torch.zeros(shape, dtype=F64, requires_grad=True)
    a = None if shape[1] == 0 else torch.full(shape[:1] + shape[1:2], 1.0 / max(shape[1], 1), dtype=F64)
    out = sinkhorn(C, epsilon=0.1) if a is None else sinkhorn(C, epsilon=0.1)
    assert out.plan.shape == shape and out.cost.shape == shape[:1]
    out.plan.sum().backward()
    assert C.grad.shape == shape


def test_empty_layers():
    x = torch.zeros(3, 0, dtype=F64, requires_grad=True)
    assert sinkhorn_rank(x).shape == (3, 0) and sinkhorn_sort(x).shape == (3, 0)
    sinkhorn_sort(x).sum().backward()
    assert x.grad.shape == (3, 0)
    X = torch.zeros(2, 0, 0, dtype=F64)
    assert gumbel_sinkhorn(X).shape == (2, 0, 0) and gumbel_sinkhorn(X, hard=True).shape == (2, 0, 0)
    assert sinkhorn_quantile(torch.zeros(0, 5), 0.5).shape == (0,)
    y = torch.randn(4, 5, 7, dtype=F64)
    assert sinkhorn_quantile(y, [0.3, 0.5], 0.1, dim=1).shape == (4, 7, 2)


def test_nan_and_inf_give_nan_rows(gen):
    C, a, b = problem(gen, (3, 4, 5))
    C = C.clone()
    C[1, 2, 3] = float("nan")
    C[2, 0, 0] = float("inf")
    out = sinkhorn(C, a, b, 0.2)
    assert bool(out.plan[1:].isnan().all()) and bool(out.cost[1:].isnan().all())
    assert not bool(out.plan[0].isnan().any())
    assert_close(out.plan[0], sinkhorn(C[0], a[0], b[0], 0.2).plan)
    Cg = C.clone().requires_grad_()
    G = torch.randn(3, 4, 5, generator=gen, dtype=F64)
    for mode in ("implicit", "unroll"):
        (grad,) = torch.autograd.grad((sinkhorn(Cg, a, b, 0.2, backward=mode).plan * G).nansum(), Cg)
        assert bool(grad[1:].isnan().all()) and bool(grad[0].isfinite().all())


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors.


def test_bad_input():
    C = torch.rand(2, 3, 4)
    a = torch.full((2, 3), 1 / 3)
    b = torch.full((2, 4), 1 / 4)
    with pytest.raises(ValueError, match="non-negative"):
        sinkhorn(C, torch.tensor([[0.5, 0.6, -0.1]] * 2), b)
    with pytest.raises(ValueError, match="equal mass"):
        sinkhorn(C, a * 2, b)
    with pytest.raises(ValueError, match=r"a must have shape \(\.\.\., 3\)"):
        sinkhorn(C, torch.full((2, 4), 0.25), b)
    with pytest.raises(ValueError, match="b must have shape"):
        sinkhorn(C, a, torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="does not broadcast"):
        sinkhorn(C, torch.full((5, 3), 1 / 3), b)
    for eps in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="epsilon must be positive"):
            sinkhorn(C, epsilon=eps)
    with pytest.raises(TypeError, match="epsilon must be a Python float"):
        sinkhorn(C, epsilon=torch.tensor(0.1))
    with pytest.raises(ValueError, match="max_iter"):
        sinkhorn(C, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        sinkhorn(C, tol=-1.0)
    with pytest.raises(ValueError, match="backward must be one of"):
        sinkhorn(C, backward="adjoint")
    with pytest.raises(ValueError, match="at least 2 dimension"):
        sinkhorn(torch.rand(3))
    with pytest.raises(TypeError, match="floating-point"):
        sinkhorn(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="square"):
        gumbel_sinkhorn(torch.rand(3, 4))
    with pytest.raises(ValueError, match="tau"):
        gumbel_sinkhorn(torch.rand(3, 3), tau=0.0)
    with pytest.raises(ValueError, match="width/2 <= q"):
        sinkhorn_quantile(torch.rand(5), 0.01, width=0.1)
    with pytest.raises(ValueError, match="squash"):
        sinkhorn_rank(torch.rand(5), squash="tanh")
    with pytest.raises(IndexError, match="dim"):
        sinkhorn_sort(torch.rand(5), dim=1)
    with pytest.raises(ValueError, match="point dimension"):
        sinkhorn_divergence(torch.rand(4, 2), torch.rand(4, 3))
    with pytest.raises(ValueError, match="epsilon"):
        Sinkhorn(epsilon=0.0)


def test_nan_weights_are_not_errors():
    C = torch.rand(2, 3, 3, dtype=F64)
    a = torch.full((2, 3), 1 / 3, dtype=F64)
    a[1, 0] = float("nan")
    out = sinkhorn(C, a, None, 0.2)
    assert bool(out.plan[1].isnan().all()) and not bool(out.plan[0].isnan().any())


# ------------------------------------------------------------------------------------------------
# Boundary (issue 12, item 4): empty inputs, flags, devices, integer values, raw ops.


def test_empty_problems_give_nan_not_numbers():
    """No points on one side: no transport between masses 0 and 1 (SPEC 0: NaN, not a number that
    looks fine; the quantile used to be 0 and the divergence -0.069)."""
    q = sinkhorn_quantile(torch.zeros(2, 0), 0.5)
    assert q.shape == (2,) and bool(q.isnan().all())
    assert bool(sinkhorn_quantile(torch.zeros(3, 0, 4), [0.3, 0.5], dim=1).isnan().all())
    x = torch.zeros(0, 2, dtype=F64, requires_grad=True)
    y = torch.rand(5, 2, dtype=F64, requires_grad=True)
    for p, q in ((x, y), (y, x), (x, x)):
        d = sinkhorn_divergence(p, q)
        assert d.shape == () and bool(d.isnan())
    sinkhorn_divergence(x, y).backward()
    assert x.grad.shape == (0, 2) and y.grad.shape == (5, 2)
    out = sinkhorn(torch.zeros(3, 0, 4, dtype=F64))
    assert out.plan.shape == (3, 0, 4) and bool(out.cost.isnan().all()) and not bool(out.converged.any())
    assert bool(out.g.isnan().all()) and out.n_iter.tolist() == [0, 0, 0]
    S = sinkhorn_sort(torch.zeros(2, 0, dtype=F64), num_targets=3)
    assert S.shape == (2, 3) and bool(S.isnan().all())
    assert sinkhorn_rank(torch.zeros(2, 0, dtype=F64), num_targets=3).shape == (2, 0)
    # an empty batch stays empty
    assert sinkhorn_quantile(torch.zeros(0, 5), 0.5).shape == (0,)
    assert sinkhorn_divergence(torch.zeros(0, 3, 2), torch.zeros(0, 4, 2)).shape == (0,)


def test_flags_must_be_bools():
    x = torch.rand(2, 5)
    with pytest.raises(TypeError, match=r"diffcomb.sinkhorn_rank: descending must be a bool"):
        sinkhorn_rank(x, descending="no")
    with pytest.raises(TypeError, match=r"diffcomb.sinkhorn_sort: descending must be a bool"):
        sinkhorn_sort(x, descending=1)
    X = torch.rand(3, 3)
    with pytest.raises(TypeError, match=r"diffcomb.gumbel_sinkhorn: noise must be a bool"):
        gumbel_sinkhorn(X, noise="no")
    with pytest.raises(TypeError, match=r"diffcomb.gumbel_sinkhorn: hard must be a bool"):
        gumbel_sinkhorn(X, hard=None)


def test_tensors_on_different_devices_raise():
    C = torch.rand(3, 4)
    with pytest.raises(RuntimeError, match=r"diffcomb.sinkhorn: all tensor arguments must be on the same device, "
                                           r"got cost on cpu and a on meta"):
        sinkhorn(C, torch.full((3,), 1 / 3, device="meta"))
    with pytest.raises(RuntimeError, match=r"got cost on cpu and b on meta"):
        sinkhorn(C, None, torch.full((4,), 0.25, device="meta"))
    with pytest.raises(RuntimeError, match=r"diffcomb.sinkhorn_divergence: .* got x on cpu and y on meta"):
        sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2, device="meta"))
    with pytest.raises(RuntimeError, match=r"got x on cpu and a on meta"):
        sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2), a=torch.full((3,), 1 / 3, device="meta"))


def test_integer_values_are_used_as_default_float(gen):
    xi = torch.randperm(7, generator=gen).reshape(1, 7) * 3
    xf = xi.to(torch.get_default_dtype())
    for fn in (lambda x: sinkhorn_rank(x, 0.05), lambda x: sinkhorn_sort(x, 0.05, descending=True),
               lambda x: sinkhorn_quantile(x, [0.25, 0.5], 0.05, width=0.2)):
        out = fn(xi)
        assert out.dtype == torch.get_default_dtype()
        assert torch.equal(out, fn(xf))
    b = torch.tensor([[True, False, True, True]])
    assert torch.equal(sinkhorn_rank(b, 0.05), sinkhorn_rank(b.float(), 0.05))
    p = torch.randint(0, 5, (4, 2), generator=gen)
    q = torch.randint(0, 5, (3, 2), generator=gen)
    assert torch.equal(sinkhorn_divergence(p, q, 1.0), sinkhorn_divergence(p.float(), q.float(), 1.0))
    # a cost matrix and scores are not value inputs: they stay floating-point only
    with pytest.raises(TypeError, match="floating-point"):
        gumbel_sinkhorn(torch.ones(3, 3, dtype=torch.int64))


def _raw_inputs(batch=2, n=4, m=3, dtype=F64):
    C = torch.rand(batch, n, m, dtype=dtype)
    a = torch.full((batch, n), 1 / n, dtype=dtype)
    b = torch.full((batch, m), 1 / m, dtype=dtype)
    return C, a, b


def test_raw_ops_reject_bad_arguments():
    """Direct calls of torch.ops.diffcomb.sinkhorn* with each kind of bad argument raise (they used to
    read and write out of bounds); nothing here may crash the process."""
    ops = torch.ops.diffcomb
    C, a, b = _raw_inputs()
    ok = (C, a, b, 0.3, 50, 1e-9, 10, True)
    P, f, g, _, n_iter, _, fh, gh = ops.sinkhorn(*ok)
    G = torch.randn_like(C)
    gc = torch.randn(2, dtype=F64)
    bad_forward = [
        (C[0], a, b),                                   # wrong rank
        (C, a[:, :3], b),                                # short side input
        (C, a, b[:1]),                                   # short batch
        (C, a.float(), b),                               # wrong dtype
        (C.half(), a.half(), b.half()),                  # unsupported dtype
        (C.transpose(1, 2).contiguous().transpose(1, 2), a, b),  # non-contiguous
        (C, a[:, ::1].repeat(1, 2)[:, ::2], b),          # non-contiguous side input
        (C, a.to("meta"), b),                            # another device
    ]
    for args in bad_forward:
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            ops.sinkhorn(*args, 0.3, 50, 1e-9, 10, False)
    for eps, max_iter, tol, check_every in ((0.0, 50, 1e-9, 10), (-1.0, 50, 1e-9, 10), (math.inf, 50, 1e-9, 10),
                                            (0.3, 0, 1e-9, 10), (0.3, -5, 1e-9, 10), (0.3, 50, 1e-9, 0),
                                            (0.3, 50, math.nan, 10), (0.3, 50, math.inf, 10)):
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            ops.sinkhorn(C, a, b, eps, max_iter, tol, check_every, False)
    implicit = (C, a, b, P, f, g, G, gc, 0.3)
    for k, bad in ((0, C[:, :3]), (3, P[:, :, :2]), (4, f[:, :2]), (5, g.float()), (6, G[:1]), (7, gc[:1]),
                   (6, G.transpose(1, 2).contiguous().transpose(1, 2)), (8, 0.0), (8, -2.0)):
        args = list(implicit)
        args[k] = bad
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            ops.sinkhorn_implicit_backward(*args)
    unrolled = (C, a, b, fh, gh, n_iter, G, gc, 0.3)
    for k, bad in ((3, fh[:, :, :2]), (3, fh[0]), (4, gh[:, :-1]), (5, n_iter.int()), (5, n_iter[:1]),
                   (6, G.float()), (8, math.nan)):
        args = list(unrolled)
        args[k] = bad
        with pytest.raises((RuntimeError, ValueError, IndexError)):
            ops.sinkhorn_unrolled_backward(*args)
    # iteration counts beyond the recorded history are clamped, not read out of bounds
    far = torch.tensor([10**9, -(10**9)], dtype=torch.int64)
    dC, da, db = ops.sinkhorn_unrolled_backward(C, a, b, fh, gh, far, G, gc, 0.3)
    expected = ops.sinkhorn_unrolled_backward(C[:1], a[:1], b[:1], fh[:1], gh[:1],
                                              torch.tensor([fh.shape[1]]), G[:1], gc[:1], 0.3)
    assert torch.equal(dC[:1], expected[0]) and bool(dC[1].isnan().all())


# ------------------------------------------------------------------------------------------------
# Gradients.


def _softmax_problem(gen, shape):
    *lead, n, m = shape
    C = torch.rand(shape, generator=gen, dtype=F64, requires_grad=True)
    al = torch.randn(*lead, n, generator=gen, dtype=F64, requires_grad=True)
    be = torch.randn(*lead, m, generator=gen, dtype=F64, requires_grad=True)
    return C, al, be


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_gradcheck(gen, backward):
    C, al, be = _softmax_problem(gen, (2, 4, 3))

    def fn(C, al, be):
        out = sinkhorn(C, al.softmax(-1), be.softmax(-1), 0.3, tol=1e-13, max_iter=10000, backward=backward)
        return out.plan, out.cost

    assert torch.autograd.gradcheck(fn, (C, al, be))


def test_gradcheck_unrolled_truncated(gen):
    C, al, be = _softmax_problem(gen, (2, 4, 5))

    def fn(C, al, be):
        return sinkhorn(C, al.softmax(-1), be.softmax(-1), 0.2, tol=0.0, max_iter=6, backward="unroll").plan

    assert torch.autograd.gradcheck(fn, (C, al, be))


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_modes_match_references(gen, dtype):
    C, a, b = problem(gen, (3, 6, 5), dtype)
    G = torch.randn(3, 6, 5, generator=gen, dtype=F64).to(dtype)
    eps = 0.25
    tol = 1e-12 if dtype == F64 else 1e-6
    grads = {}
    for mode in ("implicit", "unroll"):
        Cg, ag, bg = (t.clone().requires_grad_() for t in (C, a, b))
        out = sinkhorn(Cg, ag, bg, eps, tol=tol, max_iter=5000, backward=mode)
        grads[mode] = torch.autograd.grad((out.plan * G).sum(), (Cg, ag, bg))
    for k in range(3):
        Cn, an, bn, Gn = (t[k].double().numpy() for t in (C, a, b, G))
        an, bn = an / an.sum(), bn / bn.sum()
        r = ref.sinkhorn(Cn, an, bn, eps, tol=1e-12, max_iter=5000)
        rc, ra, rb = ref.sinkhorn_implicit_vjp(Cn, an, bn, eps, Gn, r)
        for mode in ("implicit", "unroll"):
            dC, da, db = (t[k].double() for t in grads[mode])
            assert_close(dC, rc, dtype, atol=1e-3 if dtype == torch.float32 else None)
            # a- and b-gradients are defined up to (+c, -c): compare the centred values
            assert_close(da - da.mean(), ra - ra.mean(), dtype, atol=1e-3 if dtype == torch.float32 else None)
            assert_close(db - db.mean(), rb - rb.mean(), dtype, atol=1e-3 if dtype == torch.float32 else None)
    # both modes also agree on the un-centred sum (the gauge is common)
    assert_close(grads["implicit"][0], grads["unroll"][0], dtype, atol=1e-3 if dtype == torch.float32 else None)


def test_unrolled_matches_reference_at_few_iterations(gen):
    C, a, b = problem(gen, (2, 5, 4))
    G = torch.randn(2, 5, 4, generator=gen, dtype=F64)
    Cg, ag, bg = (t.clone().requires_grad_() for t in (C, a, b))
    out = sinkhorn(Cg, ag, bg, 0.2, tol=0.0, max_iter=7, backward="unroll")
    dC, da, db = torch.autograd.grad((out.plan * G).sum(), (Cg, ag, bg))
    for k in range(2):
        rc, ra, rb = ref.sinkhorn_unrolled_vjp(C[k].numpy(), a[k].numpy(), b[k].numpy(), 0.2, 7, G[k].numpy())
        assert_close(dC[k], rc)
        assert_close(da[k], ra)
        assert_close(db[k], rb)


def test_cost_gradient_is_the_envelope(gen):
    C, a, b = problem(gen, (2, 5, 4))
    Cg, ag, bg = (t.clone().requires_grad_() for t in (C, a, b))
    out = sinkhorn(Cg, ag, bg, 0.3, tol=1e-12)
    dC, da, db = torch.autograd.grad(out.cost.sum(), (Cg, ag, bg))
    assert_close(dC, out.plan)
    assert_close(da - da.mean(-1, keepdim=True), out.f - out.f.mean(-1, keepdim=True))
    num = ref.numerical_gradient(lambda c: ref.sinkhorn(c, a[0].numpy(), b[0].numpy(), 0.3, tol=1e-13).value,
                                 C[0].numpy())
    assert_close(dC[0], num, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# The implicit backward is exact for the plan the forward returned (issue 12, item 1): the plan of a
# run stopped at a finite tol is the exact entropic plan of its own marginals r = P 1, c = P^T 1, and
# SPEC 4.3 b's system is solved with those (with a and b it is inconsistent, and the gradients were
# off by up to 85% (float64) and 430% (float32) with converged = True).


def _vjp(C, a, b, eps, G, **kw):
    """(result, (dC, da, db)) of <G, plan> for sinkhorn(C, a, b, eps, **kw)."""
    Cg, ag, bg = (t.clone().requires_grad_() for t in (C, a, b))
    out = sinkhorn(Cg, ag, bg, eps, **kw)
    return out, torch.autograd.grad((out.plan * G).sum(), (Cg, ag, bg))


def _centred(t):
    return t - t.mean(-1, keepdim=True)


def _relative(x, y):
    """Per-problem relative error ||x - y|| / ||y|| over the trailing dimensions."""
    return (x.double() - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)


RANDOM_SEED = 20240612
RANDOM_GROUPS, RANDOM_PER_GROUP = 40, 5  # 200 problems, one batched call per group
FD_STEP, FD_TOL, REF_TOL = 1e-6, 1e-13, 1e-10


def _random_problems():
    """40 groups of 5 seeded problems: n, m uniform in 2..50 and epsilon log-uniform in [0.01, 1] per
    group (one batched call each), costs uniform in [0, 1), uniform marginals for problems 0, 2, 4 and
    softmax(randn) ones for 1, 3; an upstream gradient G and a direction (D, Da, Db) with
    sum(Da) = sum(Db) = 0, all float64."""
    g = torch.Generator().manual_seed(RANDOM_SEED)
    per = RANDOM_PER_GROUP
    for _ in range(RANDOM_GROUPS):
        n, m = (int(v) for v in torch.randint(2, 51, (2,), generator=g))
        eps = float(10.0 ** (-2.0 + 2.0 * torch.rand((), generator=g, dtype=F64)))
        C = torch.rand(per, n, m, generator=g, dtype=F64)
        a = torch.randn(per, n, generator=g, dtype=F64).softmax(-1)
        b = torch.randn(per, m, generator=g, dtype=F64).softmax(-1)
        a[0::2], b[0::2] = 1.0 / n, 1.0 / m
        G = torch.randn(per, n, m, generator=g, dtype=F64)
        D = torch.randn(per, n, m, generator=g, dtype=F64)
        Da = torch.randn(per, n, generator=g, dtype=F64) * a
        Db = torch.randn(per, m, generator=g, dtype=F64) * b
        Da, Db = Da - Da.sum(-1, keepdim=True) * a, Db - Db.sum(-1, keepdim=True) * b
        yield eps, C, a, b, G, D, Da, Db


def _converged_unrolled_vjp(C, a, b, eps, G):
    """The exact VJP of <G, plan> for float64 problems: backward="unroll" through a run converged to
    tol 1e-10 (its own derivative differs from the exact one by about 1e-10 / epsilon); max_iter is
    the run's iteration count, so that the recorded history is no longer than needed."""
    steps = int(sinkhorn(C, a, b, eps, tol=REF_TOL, max_iter=100000).n_iter.max())
    out, grads = _vjp(C, a, b, eps, G, tol=REF_TOL, max_iter=steps, backward="unroll")
    assert bool(out.converged.all())
    return grads


def _vjp_error(grads, exact):
    """Per-problem relative error of a VJP (dC, da, db); the weights' gradients are defined up to
    (+c, -c), so their centred values are compared."""
    (dC, da, db), (rC, ra, rb) = grads, exact
    return torch.stack([_relative(dC, rC), _relative(_centred(da), _centred(ra)),
                        _relative(_centred(db), _centred(rb))]).amax(0)


@pytest.fixture(scope="module")
def random_problems():
    """The problems with their float64 references, computed once for both dtypes:
    - the exact VJP of the transport between a and b (_converged_unrolled_vjp);
    - the directional derivative of the map (C, a, b) -> <G, plan> along (D, Da, Db) by central
      differences (step 1e-6) of forwards converged to tol 1e-13: the plan's error, 1e-13, is far
      below the step, so the difference quotient measures the derivative of the transport plan
      itself (to about 1e-8), not the jitter of a stopping rule. Finite differences of the forward
      at its default tol would not: its plan moves by up to tol (1e-6) when the data move, and
      tol / step = 1 swamps the derivative."""
    cases = []
    for eps, C, a, b, G, D, Da, Db in _random_problems():
        exact = _converged_unrolled_vjp(C, a, b, eps, G)
        loss = lambda s: (sinkhorn(C + s * D, a + s * Da, b + s * Db, eps, tol=FD_TOL,  # noqa: E731
                                   max_iter=100000).plan * G).sum((-1, -2))
        fd = (loss(FD_STEP) - loss(-FD_STEP)) / (2 * FD_STEP)
        cases.append((eps, C, a, b, G, D, Da, Db, exact, fd))
    return cases


# Measured with the seed above (largest / median relative error):
#   exact for the returned plan        float64 6.2e-7 / 2.1e-10   float32 1.6e-5 / 2.0e-7
#   exact transport, unrolled VJP      float64 2.5e-3 / 5.0e-7    float32 8.9e-2 / 3.1e-5
#   exact transport, finite diff.      float64 1.7e-4 / 1.2e-7    float32 9.9e-3 / 8.6e-6
# The last two rows are the forward's own error: a plan stopped at tol is up to about
# tol * n_iter / epsilon (relative) away from the exact one in this derivative (the slow-converging,
# ill-conditioned problems have both a large n_iter and the largest errors; the largest measured
# ratio error / (tol * n_iter / epsilon) is 0.1), and backpropagating through the same iterations
# (backward="unroll") is off by as much. Before the fix, on the same problems: largest errors 7.8
# (float64) and 12 (float32) against unrolling, medians 2.1e-4 and 1.8e-3, 73 and 68 of the 200
# problems more than 1% off, ratios up to 18000 (float64) and 210 (float32).
OWN_PLAN_RTOL = {torch.float64: 1e-5, torch.float32: 1e-3}
MEDIAN_RTOL = {torch.float64: 1e-5, torch.float32: 1e-3}


@pytest.mark.parametrize("dtype", DTYPES)
def test_default_implicit_gradient_is_exact_on_random_problems(random_problems, dtype):
    """200 problems per dtype, default tol and backward (converged): the implicit VJP is
    - the exact derivative of the returned plan P, that is of the transport between P's own
      marginals r = P 1, c = P^T 1 (float64 unrolled VJP converged on (C, r, c)), to OWN_PLAN_RTOL;
    - within tol * n_iter / epsilon (relative) of the exact derivative of the transport between a
      and b, computed by unrolling at convergence and by finite differences, with a median error
      below MEDIAN_RTOL."""
    tol = 1e-6 if dtype == F64 else 1e-4  # the defaults (SPEC 4.1)
    own, to_unroll, to_fd, bound = [], [], [], []
    for eps, C, a, b, G, D, Da, Db, exact, fd in random_problems:
        out, grads = _vjp(C.to(dtype), a.to(dtype), b.to(dtype), eps, G.to(dtype), max_iter=20000)
        assert bool(out.converged.all()) and grads[0].dtype == dtype
        P = out.plan.detach().double()
        r, c = P.sum(-1), P.sum(-2)
        c = c * (r.sum(-1) / c.sum(-1))[:, None]  # equal masses in float64 (float32 sums differ by rounding)
        own.append(_vjp_error(grads, _converged_unrolled_vjp(C, r, c, eps, G)))
        to_unroll.append(_vjp_error(grads, exact))
        # the directional derivative, relative to its value or, where the terms cancel, to the size
        # sqrt(sum of squared terms) that a random direction gives
        dC, da, db = grads
        terms = torch.cat([(dC.double() * D).flatten(1), da.double() * Da, db.double() * Db], 1)
        to_fd.append((terms.sum(1) - fd).abs() / torch.maximum(fd.abs(), terms.norm(dim=1)))
        bound.append(tol * out.n_iter.double() / eps)
    own, to_unroll, to_fd, bound = (torch.cat(v) for v in (own, to_unroll, to_fd, bound))
    assert own.numel() == RANDOM_GROUPS * RANDOM_PER_GROUP
    assert float(own.max()) < OWN_PLAN_RTOL[dtype], f"returned plan: worst relative error {float(own.max()):.3g}"
    for name, err in (("unrolling", to_unroll), ("finite differences", to_fd)):
        worst = int((err / bound).argmax())
        assert bool((err <= bound).all()), \
            f"{name}: relative error {float(err[worst]):.3g} above tol * n_iter / epsilon = {float(bound[worst]):.3g}"
        assert float(err.median()) < MEDIAN_RTOL[dtype], f"{name}: median relative error {float(err.median()):.3g}"


def test_finite_differences_of_the_references_agree(random_problems):
    """The two float64 references agree with each other (measured: 2.7e-7 at most), so either one's
    own error is negligible against the tolerances above."""
    worst = 0.0
    for eps, C, a, b, G, D, Da, Db, (rC, ra, rb), fd in random_problems:
        terms = torch.cat([(rC * D).flatten(1), ra * Da, rb * Db], 1)
        err = (terms.sum(1) - fd).abs() / torch.maximum(fd.abs(), terms.norm(dim=1))
        worst = max(worst, float(err.max()))
    assert worst < 1e-6


def test_implicit_gradient_regression_issue_examples():
    # the issue's reproducer: 1.27 before the fix
    x = torch.tensor([0.87622805, 0.24082872, 0.98065093, 0.43868119, 0.60824134], dtype=F64)
    J = lambda **kw: torch.autograd.functional.jacobian(lambda z: sinkhorn_rank(z, 0.1, **kw), x)  # noqa: E731
    assert float((J() - J(tol=1e-12)).abs().max()) < 1e-6
    # 20 x 20 costs at epsilon 0.05, converged at the default tol: before the fix more than 1% off in
    # about a quarter of the instances (now 2.4e-6 for float64 and 2.9e-4 for float32 at most)
    g = torch.Generator().manual_seed(0)
    C = torch.rand(40, 20, 20, generator=g, dtype=F64)
    G = torch.randn(40, 20, 20, generator=g, dtype=F64)
    uniform = torch.full((40, 20), 1 / 20, dtype=F64)
    _, (exact, _, _) = _vjp(C, uniform, uniform, 0.05, G, tol=1e-12, max_iter=100000)
    for dtype, rtol in ((F64, 1e-5), (torch.float32, 2e-3)):
        out, (dC, _, _) = _vjp(C.to(dtype), uniform.to(dtype), uniform.to(dtype), 0.05, G.to(dtype))
        assert bool(out.converged.all())
        assert float(_relative(dC, exact).max()) < rtol


@pytest.mark.parametrize("dtype", DTYPES)
def test_implicit_gradient_is_exact_for_an_unconverged_plan(gen, dtype):
    """Stopped after 3 iterations, far from a and b: the implicit VJP is still the exact derivative of
    the returned plan's own optimality conditions, i.e. the converged VJP of the problem with the
    plan's marginals (r, c), which has the same plan."""
    C, a, b = problem(gen, (3, 6, 5))
    G = torch.randn(3, 6, 5, generator=gen, dtype=F64)
    with pytest.warns(UserWarning, match="did not converge"):
        out, (dC, da, db) = _vjp(C.to(dtype), a.to(dtype), b.to(dtype), 0.1, G.to(dtype), max_iter=3, tol=1e-9)
    P = out.plan.detach().double()
    r, c = P.sum(-1), P.sum(-2)
    assert float((r - a).abs().sum(-1).min()) > 1e-3  # far from converged
    same, (rC, ra, rb) = _vjp(C, r, c, 0.1, G, tol=1e-13, max_iter=10000)
    assert_close(same.plan, P, dtype)
    atol = 1e-4 if dtype == torch.float32 else None
    assert_close(dC, rC, dtype, atol=atol)
    assert_close(_centred(da), _centred(ra), dtype, atol=atol)
    assert_close(_centred(db), _centred(rb), dtype, atol=atol)


def test_implicit_gradient_at_zero_weights_matches_reference(gen):
    """Zero weights: the plan's row (column) is 0 and the a- (b-) gradient is the one-sided limit
    through the row's (column's) conditional plan, as in the reference."""
    C, a, b = problem(gen, (5, 4))
    a, b = a.clone(), b.clone()
    a[2], b[1] = 0.0, 0.0
    a, b = a / a.sum(), b / b.sum()
    G = torch.randn(5, 4, generator=gen, dtype=F64)
    for tol in (None, 1e-12):
        _, (dC, da, db) = _vjp(C, a, b, 0.2, G, tol=tol)
        r = ref.sinkhorn(C.numpy(), a.numpy(), b.numpy(), 0.2, tol=1e-6 if tol is None else tol)
        rc, ra, rb = ref.sinkhorn_implicit_vjp(C.numpy(), a.numpy(), b.numpy(), 0.2, G.numpy(), r)
        assert bool(dC.isfinite().all() & da.isfinite().all() & db.isfinite().all())
        assert_close(dC, rc)
        assert_close(torch.cat([da - da.mean(), db + da.mean()]), np.concatenate([ra - ra.mean(), rb + ra.mean()]))


# ------------------------------------------------------------------------------------------------
# A forward that did not converge says so (issue 12, item 2).


def test_forward_warns_once_when_not_converged(gen):
    C, a, b = problem(gen, (3, 5, 5))
    Cg = C.clone().requires_grad_()
    with pytest.warns(UserWarning) as record:
        out = sinkhorn(Cg, a, b, 0.01, max_iter=3, tol=1e-9)
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller's line
    message = str(record[0].message)
    err = (out.plan.detach().sum(-1) - a).abs().sum(-1)
    assert "diffcomb.sinkhorn: Sinkhorn did not converge in 3 of 3 problem(s)" in message
    assert f"{float(err.max()):.3g} > tol=1e-09" in message
    assert "max_iter=3" in message and "Increase max_iter, or epsilon" in message
    assert out.converged.tolist() == [False, False, False]
    with warnings.catch_warnings():  # the backward does not warn again
        warnings.simplefilter("error")
        (out.plan * C).sum().backward()
    # converged stays per problem: only the problems that stop above tol are counted
    mixed = torch.stack([C[0], C[1] * 400.0])  # a large cost at epsilon 0.1 converges slowly
    with pytest.warns(UserWarning, match="in 1 of 2 problem"):
        out = sinkhorn(mixed, a[:2], b[:2], 0.1, max_iter=50)
    assert out.converged.tolist() == [True, False]


def test_no_warning_when_converged_or_fixed_count(gen):
    C, a, b = problem(gen, (2, 6, 5))
    X = torch.randn(2, 4, 4, generator=gen, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bool(sinkhorn(C, a, b, 0.1).converged.all())
        sinkhorn(C, a, b, 0.01, max_iter=3, tol=0.0)  # exactly max_iter iterations, as asked
        gumbel_sinkhorn(X, 0.05, 3, noise=False)  # a fixed number of iterations by design
        sinkhorn_rank(C[:, 0], 0.1)


def test_issue_example_warns():
    # 2-D points uniform in [0, 100]^2, squared Euclidean cost, default epsilon 0.1: the plan's
    # row-marginal error stays at about 0.4 after max_iter iterations
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100, 2, generator=g, dtype=F64) * 100
    y = torch.rand(100, 2, generator=g, dtype=F64) * 100
    C = (x[:, None] - y[None]).square().sum(-1)
    with pytest.warns(UserWarning, match="did not converge in 1 of 1") as record:
        out = sinkhorn(C)
    err = float((out.plan.sum(-1) - 0.01).abs().sum())
    assert err > 0.1 and not bool(out.converged) and f"{err:.3g}" in str(record[0].message)
    with pytest.warns(UserWarning, match="sinkhorn_divergence: Sinkhorn did not converge"):
        sinkhorn_divergence(x, y)


@pytest.mark.parametrize("fn", ["sinkhorn_rank", "sinkhorn_sort", "sinkhorn_quantile"])
def test_layers_warn_in_their_name(gen, fn):
    x = torch.randn(4, 30, generator=gen, dtype=F64)
    call = {"sinkhorn_rank": lambda: sinkhorn_rank(x, 1e-3, max_iter=20),
            "sinkhorn_sort": lambda: sinkhorn_sort(x, 1e-3, max_iter=20),
            "sinkhorn_quantile": lambda: sinkhorn_quantile(x, 0.5, 1e-3, max_iter=20)}[fn]
    with pytest.warns(UserWarning, match=f"diffcomb.{fn}: Sinkhorn did not converge in 4 of 4") as record:
        call()
    assert len(record) == 1


def test_compiled_graph_warns_and_checks_weights_like_eager(gen):
    """The warning and the weights' value checks run inside the custom op, so a compiled
    (fullgraph) call warns and raises exactly as an eager one (it used to accept negative weights
    and unequal masses)."""
    C, a, b = problem(gen, (2, 5, 4))

    def plan(C, a, b, max_iter):
        return sinkhorn(C, a, b, 0.01, max_iter=max_iter, tol=1e-9).plan

    compiled = torch.compile(plan, fullgraph=True, backend="aot_eager")
    with pytest.warns(UserWarning, match="did not converge in 2 of 2"):
        compiled(C, a, b, 3)
    bad_a = a.clone()
    bad_a[0, 0] = -bad_a[0, 0]
    for f in (plan, compiled):
        with pytest.raises(ValueError, match="non-negative"):
            f(C, bad_a, b, 50)
        with pytest.raises(ValueError, match="equal mass"):
            f(C, a * 2, b, 50)


# ------------------------------------------------------------------------------------------------
# Soft rank / sort / quantile through OT (SPEC 4.5).


def test_rank_and_sort_spec_values():
    x = torch.tensor([3.0, 1.0, 2.0], dtype=F64)
    assert_close(sinkhorn_rank(x, 0.1, tol=1e-12), [2.809709, 1.190291, 2.0], rtol=0, atol=1e-6)
    assert_close(sinkhorn_sort(x, 0.1, tol=1e-12), [1.190291, 2.0, 2.809709], rtol=0, atol=1e-6)
    # SPEC 7.4's eps = 0.01 values are those of the converged problem (not reached with the default
    # max_iter = 1000, tol = 1e-6, where the ranks are still 6.6e-4 away)
    with pytest.warns(UserWarning, match="did not converge"):  # stops 4e-6 above tol = 1e-10
        out = sinkhorn_rank(x, 0.01, tol=1e-10, max_iter=100000)
    assert_close(out, [3.000006, 1.000007, 1.999988], rtol=0, atol=1e-6)
    with pytest.warns(UserWarning, match="sinkhorn_rank: Sinkhorn did not converge"):
        assert float((sinkhorn_rank(x, 0.01) - out).abs().max()) > 1e-4
    assert_close(sinkhorn_rank(x, 1e-3), [3.0, 1.0, 2.0], rtol=0, atol=1e-6)
    assert_close(sinkhorn_sort(x, 1e-3), [1.0, 2.0, 3.0], rtol=0, atol=1e-6)
    # the median's boundaries fall between points: the transport is degenerate and converges
    # sublinearly (marginal error 1.6e-6 after 200000 iterations), so the default run warns
    with pytest.warns(UserWarning, match="sinkhorn_quantile: Sinkhorn did not converge"):
        assert_close(sinkhorn_quantile(torch.arange(1.0, 11.0, dtype=F64), 0.5, 1e-3, width=0.2), 5.5, rtol=0,
                     atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rank_sort_match_reference(gen, dtype):
    x = torch.randn(3, 2, 7, generator=gen, dtype=F64)
    eps = 0.05
    R = sinkhorn_rank(x.to(dtype), eps, dim=1)
    S = sinkhorn_sort(x.to(dtype), eps, dim=1, descending=True)
    assert R.shape == x.shape and S.shape == x.shape and R.dtype == dtype
    tol = 1e-6 if dtype == F64 else 1e-4
    xr = x.movedim(1, -1).reshape(-1, 2)
    Rr, Sr = R.movedim(1, -1).reshape(-1, 2), S.movedim(1, -1).reshape(-1, 2)
    for k in range(xr.shape[0]):
        assert_close(Rr[k], ref.sinkhorn_soft_rank(xr[k].numpy(), eps, tol=tol), dtype, atol=1e-3)
        assert_close(Sr[k], ref.sinkhorn_soft_sort(xr[k].numpy(), eps, tol=tol, descending=True), dtype, atol=1e-3)
    # sum of ranks n(n+1)/2 (columns exact) and mass conservation
    R = sinkhorn_rank(x, eps)
    assert_close(R.sum(-1), torch.full((3, 2), 28.0, dtype=F64), rtol=0, atol=1e-9)
    assert_close(sinkhorn_sort(x, eps).mean(-1), x.mean(-1), rtol=0, atol=1e-5)


def test_rank_tends_to_hard_rank(gen):
    x = separated(gen, 4, 6, min_gap=0.3, scale=1.0)
    hard = (x.argsort(-1).argsort(-1) + 1).double()
    with warnings.catch_warnings():
        # some rows stop at max_iter up to 4e-5 above tol (and warn); the limits asserted are 1e-2
        warnings.simplefilter("ignore", UserWarning)
        errors = [float((sinkhorn_rank(x, eps, max_iter=20000) - hard).abs().max()) for eps in (0.1, 0.01, 1e-3)]
        assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-2
        assert_close(sinkhorn_rank(x, 1e-3, descending=True, max_iter=20000), 7 - hard, rtol=0, atol=1e-2)
        assert_close(sinkhorn_sort(x, 1e-3, max_iter=20000), x.sort(-1).values, rtol=0, atol=1e-2)


def test_num_targets_and_quantile_levels(gen):
    x = torch.randn(2, 9, generator=gen, dtype=F64)
    S = sinkhorn_sort(x, 0.05, num_targets=4)
    assert S.shape == (2, 4)
    b = np.full(4, 0.25)
    for k in range(2):
        assert_close(S[k], ref.sinkhorn_soft_sort(x[k].numpy(), 0.05, b=b))
        assert_close(sinkhorn_rank(x, 0.05, num_targets=4)[k], ref.sinkhorn_soft_rank(x[k].numpy(), 0.05, b=b))
    Q = sinkhorn_quantile(x, [0.25, 0.5, 0.75], 0.05, width=0.2)
    assert Q.shape == (2, 3)
    for k in range(2):
        for j, q in enumerate((0.25, 0.5, 0.75)):
            assert_close(Q[k, j], ref.sinkhorn_soft_quantile(x[k].numpy(), q, 0.2, 0.05))
    assert sinkhorn_quantile(x, 0.5, 0.05).shape == (2,)


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_rank_sort_quantile_gradcheck(gen, backward):
    x = torch.randn(2, 5, generator=gen, dtype=F64, requires_grad=True)
    kw = dict(tol=1e-13, max_iter=10000, backward=backward)
    assert torch.autograd.gradcheck(lambda x: sinkhorn_rank(x, 0.1, **kw), (x,))
    assert torch.autograd.gradcheck(lambda x: sinkhorn_sort(x, 0.1, num_targets=3, **kw), (x,))
    assert torch.autograd.gradcheck(lambda x: sinkhorn_quantile(x, [0.3, 0.6], 0.1, width=0.2, **kw), (x,))


def test_rank_gradient_matches_reference(gen):
    x = torch.randn(6, generator=gen, dtype=F64, requires_grad=True)
    g = torch.randn(6, generator=gen, dtype=F64)
    (dx,) = torch.autograd.grad((sinkhorn_rank(x, 0.1, tol=1e-12) * g).sum(), x)
    assert_close(dx, ref.sinkhorn_soft_rank_vjp(x.detach().numpy(), g.numpy(), 0.1, tol=1e-12))
    (dx,) = torch.autograd.grad((sinkhorn_sort(x, 0.1, tol=1e-12) * g).sum(), x)
    assert_close(dx, ref.sinkhorn_soft_sort_vjp(x.detach().numpy(), g.numpy(), 0.1, tol=1e-12))


def test_constant_row_and_single_element():
    x = torch.ones(2, 4, dtype=F64, requires_grad=True)
    R = sinkhorn_rank(x, 0.1)
    assert bool(R.isfinite().all())
    R.sum().backward()
    assert bool(x.grad.isfinite().all())
    assert_close(sinkhorn_sort(torch.tensor([[2.5]], dtype=F64), 0.1), [[2.5]])


# ------------------------------------------------------------------------------------------------
# Gumbel-Sinkhorn (SPEC 4.6).


def test_gumbel_sinkhorn_spec_values():
    X = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)
    e = np.exp(0.5) / (1 + np.exp(0.5))
    assert_close(gumbel_sinkhorn(X, noise=False)[0, 0], e, rtol=0, atol=1e-7)
    X = torch.tensor([[1.0, 0, 0], [0, 2, 3], [0, 3, 1]], dtype=F64)
    assert_close(gumbel_sinkhorn(X, 1.0, 200, noise=False),
                 [[0.790524, 0.085084, 0.124392], [0.085084, 0.183937, 0.730979],
                  [0.124392, 0.730979, 0.144630]], rtol=0, atol=1e-6)
    assert_close(gumbel_sinkhorn(X, 0.05, 200, noise=False), [[1.0, 0, 0], [0, 0, 1], [0, 1, 0]], rtol=0,
                 atol=1e-6)
    assert_close(gumbel_sinkhorn(torch.zeros(4, 4), noise=False), torch.full((4, 4), 0.25))
    assert_close(gumbel_sinkhorn(torch.tensor([[3.0]]), noise=False), [[1.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gumbel_sinkhorn_matches_reference(gen, dtype):
    X = torch.randn(2, 3, 5, 5, generator=gen, dtype=F64)
    out = gumbel_sinkhorn(X.to(dtype), 0.7, 12, noise=False)
    assert out.dtype == dtype and out.shape == X.shape
    Xr = X.reshape(-1, 5, 5)
    for k in range(6):
        assert_close(out.reshape(-1, 5, 5)[k], ref.sinkhorn_operator(Xr[k].numpy(), 0.7, 12), dtype)
    assert_close(out.sum(-2), torch.ones(2, 3, 5), dtype)  # columns exact
    assert_close(gumbel_sinkhorn(X, 0.7, 0, noise=False), (X / 0.7).exp())


def test_gumbel_sinkhorn_noise_is_reproducible_and_matches_reference():
    X = torch.randn(2, 4, 4, dtype=F64)
    g1 = torch.Generator().manual_seed(3)
    out = gumbel_sinkhorn(X, 0.5, 10, generator=g1, noise_factor=0.7)
    g2 = torch.Generator().manual_seed(3)
    U = torch.rand(X.shape, generator=g2, dtype=F64)
    for k in range(2):
        expected = ref.gumbel_sinkhorn(X[k].numpy(), 0.5, 10, noise=ref.gumbel_noise(U[k].numpy()),
                                       noise_factor=0.7)
        assert_close(out[k], expected)
    torch.manual_seed(0)
    s1 = gumbel_sinkhorn(X, n_samples=3)
    torch.manual_seed(0)
    s2 = gumbel_sinkhorn(X, n_samples=3)
    assert s1.shape == (3, 2, 4, 4) and torch.equal(s1, s2) and not torch.equal(s1[0], s1[1])


def test_gumbel_sinkhorn_gradients(gen):
    X = torch.randn(2, 4, 4, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: gumbel_sinkhorn(X, 0.6, 9, noise=False), (X,))
    G = torch.randn(2, 4, 4, generator=gen, dtype=F64)
    (dX,) = torch.autograd.grad((gumbel_sinkhorn(X, 0.6, 9, noise=False) * G).sum(), X)
    for k in range(2):
        assert_close(dX[k], ref.sinkhorn_operator_vjp(X[k].detach().numpy(), G[k].numpy(), 0.6, 9))


def test_gumbel_sinkhorn_hard_is_the_assignment_with_straight_through_gradient(gen):
    X = torch.randn(3, 6, 6, generator=gen, dtype=F64, requires_grad=True)
    H = gumbel_sinkhorn(X, 1.0, 20, noise=False, hard=True)
    for k in range(3):
        rows, cols = linear_sum_assignment(X[k].detach().numpy(), maximize=True)
        expected = torch.zeros(6, 6, dtype=F64)
        expected[rows, cols] = 1.0
        assert torch.equal(H[k].detach(), expected)
    G = torch.randn(3, 6, 6, generator=gen, dtype=F64)
    (d_hard,) = torch.autograd.grad((H * G).sum(), X)
    (d_soft,) = torch.autograd.grad((gumbel_sinkhorn(X, 1.0, 20, noise=False) * G).sum(), X)
    assert_close(d_hard, d_soft)
    # SPEC 7.6 assignment example
    T = torch.tensor([[4.0, 1, 3], [2, 0, 5], [3, 2, 2]])
    assert gumbel_sinkhorn(T, noise=False, hard=True).argmax(-1).tolist() == [0, 2, 1]
    T[1, 1] = float("nan")
    assert bool(gumbel_sinkhorn(T, noise=False, hard=True).isnan().all())


# ------------------------------------------------------------------------------------------------
# Sinkhorn divergence and the module.


def test_sinkhorn_divergence(gen):
    x = torch.randn(2, 7, 3, generator=gen, dtype=F64)
    y = torch.randn(2, 5, 3, generator=gen, dtype=F64) + 1.0
    d = sinkhorn_divergence(x, y, 0.5, tol=1e-12, max_iter=50000)
    assert d.shape == (2,) and bool((d > 0).all())
    assert_close(sinkhorn_divergence(x, x, 0.5, tol=1e-12, max_iter=50000), torch.zeros(2), rtol=0, atol=1e-10)
    for k in range(2):
        C = lambda p, q: ((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)  # noqa: E731
        xs, ys = x[k].numpy(), y[k].numpy()
        expected = (ref.sinkhorn(C(xs, ys), eps=0.5, tol=1e-12, max_iter=50000).value
                    - 0.5 * ref.sinkhorn(C(xs, xs), eps=0.5, tol=1e-12, max_iter=50000).value
                    - 0.5 * ref.sinkhorn(C(ys, ys), eps=0.5, tol=1e-12, max_iter=50000).value)
        assert_close(d[k], expected)
    xg = x[:, :4].clone().requires_grad_()
    yg = y[:, :3].clone().requires_grad_()
    # tol = 1e-12: 1e-13 is below float64's rounding of the marginals here (it never converges)
    assert torch.autograd.gradcheck(lambda p, q: sinkhorn_divergence(p, q, 0.5, tol=1e-12, max_iter=50000), (xg, yg))


def test_module(gen):
    C, a, b = problem(gen, (2, 4, 3))
    layer = Sinkhorn(epsilon=0.3, tol=1e-10, backward="unroll")
    assert "epsilon=0.3" in repr(layer) and "unroll" in repr(layer)
    out = layer(C, a, b)
    assert isinstance(out, diffcomb.SinkhornResult)
    assert_close(out.plan, sinkhorn(C, a, b, 0.3, tol=1e-10).plan)


@pytest.mark.parametrize("module", [diffcomb.transport, diffcomb.transport_sort, diffcomb.transport_permutation,
                                    diffcomb.nn.sinkhorn], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": torch, "diffcomb": diffcomb},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------------
# torch.compile and opcheck.


def test_compile_fullgraph(gen):
    C, a, b = problem(gen, (2, 5, 4))
    G = torch.randn(2, 5, 4, generator=gen, dtype=F64)

    def loss(C, a, b):
        out = sinkhorn(C, a, b, 0.3, tol=1e-10)
        return (out.plan * G).sum() + out.cost.sum() + sinkhorn_rank(C[:, 0], 0.1).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    Cg = C.clone().requires_grad_()
    Ce = C.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v1 = compiled(Cg, a, b)
        v1.backward()
    v2 = loss(Ce, a, b)
    v2.backward()
    assert_close(v1, v2)
    assert_close(Cg.grad, Ce.grad)


def test_compile_dynamic_and_gumbel(gen):
    x = torch.randn(3, 6, generator=gen, dtype=F64)
    X = torch.randn(2, 4, 4, generator=gen, dtype=F64)

    def fn(x, X):
        return (sinkhorn_sort(x, 0.1, backward="unroll").sum() + gumbel_sinkhorn(X, 0.5, 8, noise=False).sum()
                + (gumbel_sinkhorn(X, 0.5, 8, noise=False, hard=True) * X).sum())

    compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
    xe, Xe = x.clone().requires_grad_(), X.clone().requires_grad_()
    xc, Xc = x.clone().requires_grad_(), X.clone().requires_grad_()
    ve, vc = fn(xe, Xe), compiled(xc, Xc)
    assert_close(vc, ve)
    assert_close(torch.autograd.grad(vc, (xc, Xc))[1], torch.autograd.grad(ve, (xe, Xe))[1])


def test_opcheck(gen):
    C, a, b = problem(gen, (2, 4, 3))
    G = torch.randn(2, 4, 3, generator=gen, dtype=F64)
    gc = torch.randn(2, generator=gen, dtype=F64)
    for unroll in (False, True):
        torch.library.opcheck(torch.ops.diffcomb.sinkhorn, (C.requires_grad_(), a, b, 0.3, 50, 1e-9, 10, unroll))
    C = C.detach()
    P, f, g, _, n_iter, _, fh, gh = torch.ops.diffcomb.sinkhorn(C, a, b, 0.3, 50, 1e-9, 10, True)
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn_implicit_backward, (C, a, b, P, f, g, G, gc, 0.3))
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn_implicit_backward, (C, a, b, P, f, g, None, gc, 0.3))
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn_unrolled_backward, (C, a, b, fh, gh, n_iter, G, gc, 0.3))
    # the weights' value check and the caller's name (both run in the op)
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn, (C.requires_grad_(), a, b, 0.3, 50, 1e-9, 10, False, True,
                                                        "sinkhorn_rank"))
    torch.library.opcheck(torch.ops.diffcomb.linear_assignment, (torch.randn(3, 5, 5, generator=gen), True))


# ------------------------------------------------------------------------------------------------
# CUDA agrees with the CPU (skipped without a GPU).


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backward", ["implicit", "unroll"])
@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 300, 200), (1, 1, 4)], ids=str)
def test_cuda_matches_cpu(gen, dtype, backward, shape):
    C, a, b = problem(gen, shape, dtype)
    G = torch.randn(shape, generator=gen, dtype=F64).to(dtype)
    res = {}
    for device in ("cpu", "cuda"):
        Cg, ag, bg = (t.to(device).clone().requires_grad_() for t in (C, a, b))
        out = sinkhorn(Cg, ag, bg, 0.1, backward=backward)
        grads = torch.autograd.grad((out.plan * G.to(device)).sum() + out.cost.sum(), (Cg, ag, bg))
        res[device] = (out, grads)
    (oc, gc), (og, gg) = res["cpu"], res["cuda"]
    assert torch.equal(oc.n_iter, og.n_iter.cpu()) or dtype == torch.float32
    assert_close(og.plan, oc.plan, dtype, atol=1e-3 if dtype == torch.float32 else None)
    assert_close(og.cost, oc.cost, dtype)
    for x, y in zip(gg, gc):
        assert_close(x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True), dtype,
                     atol=1e-2 if dtype == torch.float32 else 1e-7)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_implicit_gradient_of_returned_plan_and_warning(gen, dtype):
    """CUDA uses the plan's marginals too (an unconverged plan, zero weights) and agrees with the CPU;
    it warns like the CPU (one synchronization) and checks given weights like the CPU."""
    C, a, b = problem(gen, (3, 7, 5), dtype)
    a, b = a.clone(), b.clone()
    a[1, 2], b[2, 4] = 0.0, 0.0
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    G = torch.randn(3, 7, 5, generator=gen, dtype=F64).to(dtype)
    with pytest.warns(UserWarning, match="did not converge"):
        _, cpu = _vjp(C, a, b, 0.1, G, max_iter=3, tol=1e-9)
    with pytest.warns(UserWarning, match="did not converge"):
        out, gpu = _vjp(C.cuda(), a.cuda(), b.cuda(), 0.1, G.cuda(), max_iter=3, tol=1e-9)
    assert not bool(out.converged.any())
    atol = 1e-3 if dtype == torch.float32 else 1e-9
    assert_close(gpu[0], cpu[0], dtype, atol=atol)
    for x, y in zip(gpu[1:], cpu[1:]):  # the weights' gradients up to (+c, -c)
        assert_close(_centred(x), _centred(y), dtype, atol=atol)
    with pytest.raises(ValueError, match="non-negative"):
        sinkhorn(C.cuda(), -a.cuda(), b.cuda())


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
def test_cuda_rank_and_gumbel():
    x = torch.randn(4, 9, dtype=F64)
    assert_close(sinkhorn_rank(x.cuda(), 0.05), sinkhorn_rank(x, 0.05))
    X = torch.randn(3, 6, 6, dtype=F64)
    assert_close(gumbel_sinkhorn(X.cuda(), 0.5, 15, noise=False), gumbel_sinkhorn(X, 0.5, 15, noise=False))
    H = gumbel_sinkhorn(X.cuda(), noise=False, hard=True)
    assert H.device.type == "cuda" and torch.equal(H.cpu(), gumbel_sinkhorn(X, noise=False, hard=True))


def test_squashed_rank_of_large_values():
    # The standardization's variance is taken on scaled deviations: large finite inputs squash
    # like small ones (it used to overflow to inf and flatten every rank to the mean).
    x = torch.tensor([[3.0, 1.0, 2.0, -0.5]], dtype=torch.float64)
    # epsilon = 1e-3 stops at max_iter (the same iterations for every scale): it warns each time
    with pytest.warns(UserWarning, match="did not converge"):
        small = diffcomb.sinkhorn_rank(x, 1e-3)
    for dtype, factor in ((torch.float32, 3e19), (torch.float64, 1e154)):
        with pytest.warns(UserWarning, match="did not converge"):
            assert_close(diffcomb.sinkhorn_rank((x * factor).to(dtype), 1e-3), small.to(dtype))
