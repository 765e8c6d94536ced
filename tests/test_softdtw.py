"""Soft-DTW (diffcomb/softdtw.py, csrc/softdtw) against SPEC.md section 3 and 7.3 and the
numpy reference in tests/reference/softdtw.py, on the CPU (tests/test_softdtw_cuda.py compares CUDA with it)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import diffcomb
import diffcomb.softdtw as softdtw_module
from tests.conftest import assert_close
from tests.reference import softdtw as ref

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
C_SPEC = [[0.0, 4.0], [1.0, 1.0]]


def delannoy(a: int, b: int) -> int:
    table = [[1] * (b + 1) for _ in range(a + 1)]
    for i in range(1, a + 1):
        for j in range(1, b + 1):
            table[i][j] = table[i - 1][j] + table[i][j - 1] + table[i - 1][j - 1]
    return table[a][b]


# ------------------------------------------------------------------------------------------------
# SPEC 7.3 reference values.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma, value, E", [
    (1.0, 0.6734373587, [[1, 0.013213], [0.265388, 1]]),
    (0.1, 0.9999954601, [[1, 4.2e-18], [0.000045, 1]]),
    (0.01, 1.0, [[1, 0], [0, 1]]),
    (0.0, 1.0, [[1, 0], [0, 1]]),
])
def test_spec_values(dtype, gamma, value, E):
    C = torch.tensor(C_SPEC, dtype=dtype)
    assert_close(diffcomb.soft_dtw_from_cost(C, gamma), value, rtol=1e-6 if dtype == torch.float64 else 1e-5)
    assert_close(diffcomb.soft_dtw_alignment(C, gamma), E, rtol=0, atol=1e-6)


def test_spec_series_values_and_gradient():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    value = diffcomb.soft_dtw(x, y)
    value.backward()
    assert_close(value, 0.6734373587)
    assert_close(x.grad.flatten(), [-0.052852, -1.469224], rtol=0, atol=1e-6)
    assert_close(diffcomb.soft_dtw(x.detach(), x.detach()), -0.5514447139)
    assert_close(diffcomb.soft_dtw(y, y), -0.0359762997)


@pytest.mark.parametrize("m, n", [(1, 1), (2, 2), (3, 3), (2, 3), (4, 5), (7, 3)])
def test_zero_cost_is_minus_gamma_log_delannoy(m, n):
    for gamma in (0.5, 1.0, 3.0):
        value = diffcomb.soft_dtw_from_cost(torch.zeros(m, n, dtype=torch.float64), gamma)
        assert_close(value, -gamma * math.log(delannoy(m - 1, n - 1)))


def test_single_row_and_band_zero():
    for gamma in (0.0, 0.1, 1.0, 10.0):
        assert_close(diffcomb.soft_dtw_from_cost(torch.tensor([[1.0, 2.0, 3.0]]), gamma), 6.0)
        assert_close(diffcomb.soft_dtw_alignment(torch.tensor([[1.0], [2.0], [3.0]]), gamma), [[1.0]] * 3)
    C = torch.rand(6, 6, dtype=torch.float64)
    assert_close(diffcomb.soft_dtw_from_cost(C, 1.0, bandwidth=0), C.trace())


# ------------------------------------------------------------------------------------------------
# Against the numpy reference.

SHAPES = [(1, 1), (1, 6), (6, 1), (2, 2), (7, 4), (4, 9), (33, 40)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n", SHAPES)
@pytest.mark.parametrize("gamma", [0.0, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("bandwidth", [None, 0, 2, 5])
def test_matches_reference(dtype, m, n, gamma, bandwidth):
    gen = torch.Generator().manual_seed(m * 1000 + n * 10 + int(gamma * 7) + (bandwidth or 0))
    C = torch.rand(3, m, n, generator=gen, dtype=torch.float64) * 3
    value = diffcomb.soft_dtw_from_cost(C.to(dtype), gamma, bandwidth=bandwidth)
    E = diffcomb.soft_dtw_alignment(C.to(dtype), gamma, bandwidth=bandwidth)
    for b in range(3):
        expected = ref.soft_dtw_from_cost(C[b].numpy(), gamma, bandwidth)
        if math.isinf(expected):
            assert math.isinf(value[b].item()) and value[b].item() > 0
            assert torch.all(E[b] == 0)
            continue
        assert_close(value[b], expected)
        if gamma > 0:
            assert_close(E[b], ref.soft_dtw_alignment(C[b].numpy(), gamma, bandwidth), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("m, n", [(5, 5), (8, 3), (12, 17)])
def test_small_gamma_is_hard_dtw_and_bounds_hold(m, n):
    gen = torch.Generator().manual_seed(m * n)
    C = torch.rand(m, n, generator=gen, dtype=torch.float64)
    dtw = ref.dtw_from_cost(C.numpy())
    assert_close(diffcomb.soft_dtw_from_cost(C, 0.0), dtw)
    assert_close(diffcomb.soft_dtw_from_cost(C, 1e-4), dtw, rtol=0, atol=1e-3)
    for gamma in (0.01, 0.5, 2.0):
        value = diffcomb.soft_dtw_from_cost(C, gamma).item()
        assert dtw - gamma * math.log(delannoy(m - 1, n - 1)) - 1e-12 <= value <= dtw + 1e-12


def test_symmetry_and_swap():
    gen = torch.Generator().manual_seed(3)
    C = torch.rand(2, 6, 9, generator=gen, dtype=torch.float64)
    assert_close(diffcomb.soft_dtw_from_cost(C.transpose(-1, -2)), diffcomb.soft_dtw_from_cost(C))
    assert_close(diffcomb.soft_dtw_alignment(C.transpose(-1, -2)), diffcomb.soft_dtw_alignment(C).transpose(-1, -2))
    x = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64)
    assert_close(diffcomb.soft_dtw(x, y, 0.5), diffcomb.soft_dtw(y, x, 0.5))


@pytest.mark.parametrize("cost", ["sqeuclidean", "half_sqeuclidean", "log_augmented"])
def test_pairwise_cost_matches_reference(cost):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    assert_close(diffcomb.pairwise_cost(x, y, cost), ref.cost_matrix(x.numpy(), y.numpy(), cost))


# ------------------------------------------------------------------------------------------------
# Batching, lengths, gradients.


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_leading_dims(lead):
    gen = torch.Generator().manual_seed(len(lead))
    C = torch.rand(*lead, 5, 4, generator=gen, dtype=torch.float64)
    value = diffcomb.soft_dtw_from_cost(C, 0.5)
    assert value.shape == lead
    flat = C.reshape(-1, 5, 4)
    for k, v in enumerate(value.reshape(-1)):
        assert_close(v, ref.soft_dtw_from_cost(flat[k].numpy(), 0.5, None))


@pytest.mark.parametrize("dtype", DTYPES)
def test_variable_lengths_equal_each_pair_alone(dtype):
    gen = torch.Generator().manual_seed(11)
    C = (torch.rand(4, 9, 7, generator=gen, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    lx = torch.tensor([9, 4, 1, 6])
    ly = torch.tensor([7, 7, 3, 1])
    value = diffcomb.soft_dtw_from_cost(C, 0.3, x_lengths=lx, y_lengths=ly)
    value.sum().backward()
    for b in range(4):
        alone = C.detach()[b, : lx[b], : ly[b]].clone().requires_grad_()
        v = diffcomb.soft_dtw_from_cost(alone, 0.3)
        v.backward()
        assert_close(value[b], v)
        assert_close(C.grad[b, : lx[b], : ly[b]], alone.grad)
        padding = torch.ones_like(C.grad[b], dtype=torch.bool)
        padding[: lx[b], : ly[b]] = False
        assert torch.all(C.grad[b][padding] == 0)


def test_gradcheck_cost_band_lengths():
    gen = torch.Generator().manual_seed(2)
    C = torch.rand(3, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    lx = torch.tensor([6, 3, 1])
    assert gradcheck(lambda c: diffcomb.soft_dtw_from_cost(c, 0.7), (C,))
    assert gradcheck(lambda c: diffcomb.soft_dtw_from_cost(c, 0.4, bandwidth=2), (C,))
    assert gradcheck(lambda c: diffcomb.soft_dtw_from_cost(c, 1.3, x_lengths=lx), (C,))


@pytest.mark.parametrize("cost", ["sqeuclidean", "half_sqeuclidean", "log_augmented"])
def test_gradcheck_series(cost):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: diffcomb.soft_dtw(a, b, 0.5, cost=cost), (x, y))


def test_infeasible_band_gives_inf_and_zero_gradient():
    C = torch.rand(3, 8, dtype=torch.float64, requires_grad=True)
    value = diffcomb.soft_dtw_from_cost(C, 1.0, bandwidth=2)
    assert value.item() == math.inf
    value.backward()
    assert torch.all(C.grad == 0)


def test_nan_pair_gives_nan_for_that_pair_only():
    C = torch.rand(3, 4, 5, dtype=torch.float64)
    C[1, 2, 3] = float("nan")
    C[2, 0, 4] = float("inf")
    C.requires_grad_()
    value = diffcomb.soft_dtw_from_cost(C, 1.0)
    value.sum().backward()
    assert torch.isfinite(value[0]) and torch.isnan(value[1]) and torch.isnan(value[2])
    assert torch.isfinite(C.grad[0]).all() and torch.isnan(C.grad[1]).all() and torch.isnan(C.grad[2]).all()


def test_long_series_and_half_precision():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 2048, 1, generator=gen)
    y = torch.randn(2, 1500, 1, generator=gen)
    value = diffcomb.soft_dtw(x, y, 0.1)
    assert torch.isfinite(value).all()
    half = diffcomb.soft_dtw_from_cost(diffcomb.pairwise_cost(x[:, :64], y[:, :64]).to(torch.bfloat16), 1.0)
    assert half.dtype == torch.bfloat16
    full = diffcomb.soft_dtw_from_cost(diffcomb.pairwise_cost(x[:, :64], y[:, :64]).to(torch.bfloat16).float(), 1.0)
    assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_opcheck_and_compile():
    gen = torch.Generator().manual_seed(8)
    C = torch.rand(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_cost.default, (C, None, None, 0.5, -1, True))
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_cost.default, (C, None, None, 0.0, -1, True))
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_cost.default, (C, None, None, 0.5, -1, False))
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_cost.default, (C, torch.tensor([5, 2]), None, 0.5, 1, True))
    compiled = torch.compile(lambda c: diffcomb.soft_dtw_from_cost(c, 0.5, bandwidth=3).sum(), backend="aot_eager",
                             fullgraph=True)
    eager = diffcomb.soft_dtw_from_cost(C, 0.5, bandwidth=3).sum()
    (g_eager,) = torch.autograd.grad(eager, C)
    out = compiled(C)
    (g_compiled,) = torch.autograd.grad(out, C)
    assert_close(out, eager)
    assert_close(g_compiled, g_eager)


def test_compiled_out_of_range_lengths_are_clamped():
    # Under torch.compile the lengths' range is not checked on the host (a sync); the kernels
    # clamp it to [1, N] so that no length reaches outside a pair's memory.
    gen = torch.Generator().manual_seed(81)
    C = torch.rand(3, 6, 5, generator=gen, dtype=torch.float64)
    x, y = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64), torch.randn(3, 5, 2, generator=gen,
                                                                                dtype=torch.float64)
    bad_x, bad_y = torch.tensor([9, 0, 4]), torch.tensor([-3, 5, 700])
    good_x, good_y = bad_x.clamp(1, 6), bad_y.clamp(1, 5)
    from_cost = torch.compile(lambda c, lx, ly: diffcomb.soft_dtw_from_cost(c, 0.5, x_lengths=lx, y_lengths=ly),
                              backend="aot_eager", fullgraph=True)
    assert_close(from_cost(C, bad_x, bad_y), diffcomb.soft_dtw_from_cost(C, 0.5, x_lengths=good_x, y_lengths=good_y))
    series = torch.compile(lambda a, b, lx, ly: diffcomb.soft_dtw(a, b, 0.5, x_lengths=lx, y_lengths=ly),
                           backend="aot_eager", fullgraph=True)
    assert_close(series(x, y, bad_x, bad_y), diffcomb.soft_dtw(x, y, 0.5, x_lengths=good_x, y_lengths=good_y))


# ------------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="same feature size"):
        diffcomb.soft_dtw(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        diffcomb.soft_dtw(x, x, -0.1)
    with pytest.raises(ValueError, match="gamma"):
        diffcomb.soft_dtw(x, x, float("nan"))
    with pytest.raises(ValueError, match="bandwidth"):
        diffcomb.soft_dtw(x, x, bandwidth=-1)
    with pytest.raises(ValueError, match=r"x_lengths must lie in \[1, 5\]"):
        diffcomb.soft_dtw(x, x, x_lengths=torch.tensor(6))
    with pytest.raises(ValueError, match="y_lengths must lie"):
        diffcomb.soft_dtw(x, x, y_lengths=torch.tensor(0))
    with pytest.raises(TypeError, match="integer tensor"):
        diffcomb.soft_dtw(x, x, x_lengths=torch.tensor(2.0))
    with pytest.raises(TypeError, match="floating-point"):
        diffcomb.soft_dtw_from_cost(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"C must have at least 2 dimension\(s\), got shape \(3,\)"):
        diffcomb.soft_dtw_from_cost(torch.ones(3))
    with pytest.raises(ValueError, match="at least one step"):
        diffcomb.soft_dtw_from_cost(torch.ones(0, 3))
    with pytest.raises(ValueError, match="cost must be one of"):
        diffcomb.soft_dtw(x, x, cost="l1")


# ------------------------------------------------------------------------------------------------
# Divergence and modules.


@pytest.mark.parametrize("cost", ["sqeuclidean", "half_sqeuclidean", "log_augmented"])
@pytest.mark.parametrize("bandwidth", [None, 3])
def test_divergence_matches_reference(cost, bandwidth):
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    value = diffcomb.soft_dtw_divergence(x, y, 0.7, cost=cost, bandwidth=bandwidth)
    value.backward()
    xn, yn = x.detach().numpy(), y.detach().numpy()
    assert_close(value, ref.soft_dtw_divergence(xn, yn, 0.7, cost, bandwidth))
    gx, gy = ref.soft_dtw_divergence_grad(xn, yn, 0.7, cost, bandwidth)
    assert_close(x.grad, gx)
    assert_close(y.grad, gy)


def test_divergence_properties_and_gradcheck():
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(3, 7, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert_close(diffcomb.soft_dtw_divergence(x, x, 0.5), torch.zeros(3), atol=1e-12)
    assert_close(diffcomb.soft_dtw_divergence(x, y, 0.5), diffcomb.soft_dtw_divergence(y, x, 0.5))
    assert bool((diffcomb.soft_dtw_divergence(x, y, 0.5, cost="log_augmented") >= 0).all())
    assert gradcheck(lambda a, b: diffcomb.soft_dtw_divergence(a, b, 0.5), (x, y))
    lx = torch.tensor([7, 3, 5])
    ly = torch.tensor([6, 6, 2])
    value = diffcomb.soft_dtw_divergence(x, y, 0.5, x_lengths=lx, y_lengths=ly)
    for b in range(3):
        alone = diffcomb.soft_dtw_divergence(x[b, : lx[b]], y[b, : ly[b]], 0.5)
        assert_close(value[b], alone)


def test_modules():
    gen = torch.Generator().manual_seed(23)
    x = torch.randn(4, 6, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 5, 2, generator=gen, dtype=torch.float64)
    loss = diffcomb.SoftDTW(gamma=0.3, bandwidth=None)
    assert "gamma=0.3" in repr(loss)
    assert_close(loss(x, y), diffcomb.soft_dtw(x, y, 0.3).mean())
    div = diffcomb.SoftDTWDivergence(gamma=0.3, reduction="none")
    assert_close(div(x, y), diffcomb.soft_dtw_divergence(x, y, 0.3))
    assert_close(diffcomb.SoftDTW(0.3, normalize=True, reduction="sum")(x, y),
                 diffcomb.soft_dtw_divergence(x, y, 0.3).sum())
    with pytest.raises(ValueError, match="gamma"):
        diffcomb.SoftDTW(gamma=-1.0)
    with pytest.raises(ValueError, match="cost"):
        diffcomb.SoftDTW(cost="l1")
    with pytest.raises(ValueError, match="reduction"):
        diffcomb.SoftDTW(reduction="max")


# ------------------------------------------------------------------------------------------------
# Sharp soft-DTW, its divergence, and the differentiable alignment (second order, SPEC 3.8).


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma, sharp", [(1.0, 1.3182394766), (0.1, 1.0000453979), (0.01, 1.0),
                                          (1e4, 2.666378)])
def test_sharp_spec_values(dtype, gamma, sharp):
    C = torch.tensor(C_SPEC, dtype=dtype)
    assert_close(diffcomb.sharp_soft_dtw_from_cost(C, gamma), sharp, rtol=1e-6 if dtype == torch.float64 else 1e-5)


def test_spec_divergences():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    assert_close(diffcomb.soft_dtw_divergence(x, y, 1.0), 0.9671478656)
    assert_close(diffcomb.sharp_soft_dtw_divergence(x, y, 1.0), 1.0356242309)


@pytest.mark.parametrize("m, n", [(1, 1), (1, 4), (5, 1), (6, 5), (9, 12)])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("bandwidth", [None, 1, 4])
def test_sharp_and_hvp_match_reference(m, n, gamma, bandwidth):
    gen = torch.Generator().manual_seed(m * 31 + n)
    C0 = torch.rand(m, n, generator=gen, dtype=torch.float64) * 2
    Z = torch.randn(m, n, generator=gen, dtype=torch.float64)
    expected = ref.sharp_soft_dtw_from_cost(C0.numpy(), gamma, bandwidth)
    C = C0.clone().requires_grad_()
    value = diffcomb.sharp_soft_dtw_from_cost(C, gamma, bandwidth=bandwidth)
    value.backward()
    if math.isinf(expected):
        assert value.item() == math.inf and torch.all(C.grad == 0)
        return
    assert_close(value, expected)
    if gamma > 0:
        assert_close(C.grad, ref.sharp_soft_dtw_from_cost_grad(C0.numpy(), gamma, bandwidth))
        C = C0.clone().requires_grad_()
        E = diffcomb.soft_dtw_alignment(C, gamma, bandwidth=bandwidth)
        (E * Z).sum().backward()
        assert_close(C.grad, ref.soft_dtw_hvp(C0.numpy(), gamma, Z.numpy(), bandwidth))


@pytest.mark.parametrize("cost", ["sqeuclidean", "log_augmented"])
def test_sharp_divergence_matches_reference(cost):
    gen = torch.Generator().manual_seed(41)
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    value = diffcomb.sharp_soft_dtw_divergence(x, y, 0.8, cost=cost)
    value.backward()
    xn, yn = x.detach().numpy(), y.detach().numpy()
    assert_close(value, ref.sharp_soft_dtw_divergence(xn, yn, 0.8, cost))
    gx, gy = ref.sharp_soft_dtw_divergence_grad(xn, yn, 0.8, cost)
    assert_close(x.grad, gx)
    assert_close(y.grad, gy)
    assert_close(diffcomb.sharp_soft_dtw_divergence(x, x, 0.8, cost=cost), 0.0, atol=1e-12)


def test_sharp_bounds_lengths_and_gradcheck():
    gen = torch.Generator().manual_seed(42)
    C = torch.rand(3, 7, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    for gamma in (0.1, 1.0, 5.0):
        assert bool((diffcomb.sharp_soft_dtw_from_cost(C, gamma) >= diffcomb.soft_dtw_from_cost(C, gamma) - 1e-12).all())
    lx = torch.tensor([7, 2, 5])
    ly = torch.tensor([6, 6, 1])
    value = diffcomb.sharp_soft_dtw_from_cost(C, 0.5, x_lengths=lx, y_lengths=ly)
    for b in range(3):
        assert_close(value[b], diffcomb.sharp_soft_dtw_from_cost(C[b, : lx[b], : ly[b]], 0.5))
    assert gradcheck(lambda c: diffcomb.sharp_soft_dtw_from_cost(c, 0.6, bandwidth=3), (C,))
    assert gradcheck(lambda c: diffcomb.soft_dtw_alignment(c, 0.6, x_lengths=lx), (C,))
    x = torch.randn(2, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: diffcomb.sharp_soft_dtw(a, b, 0.5), (x, y))


def test_second_order_opcheck():
    gen = torch.Generator().manual_seed(43)
    C = torch.rand(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.diffcomb.sharp_soft_dtw_cost.default, (C, None, None, 0.5, -1))
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_alignment_cost.default, (C, torch.tensor([5, 3]), None, 0.5, 2))
    Z = torch.rand(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    C0 = C.detach()
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_hvp.default, (C0, Z, None, torch.tensor([4, 2]), 0.5, 3))
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_hvp.default, (C0, Z, None, None, 0.0, -1))
    gradcheck(lambda z: torch.ops.diffcomb.soft_dtw_hvp(C0, z, None, None, 0.5, 1), (Z,))
    with pytest.raises(NotImplementedError, match="third derivatives"):
        torch.ops.diffcomb.soft_dtw_hvp(C, Z, None, None, 0.5, -1).sum().backward()


@pytest.mark.parametrize("grads", [(True, True), (True, False), (False, False)])
def test_series_op_opcheck_and_compile(grads):
    gen = torch.Generator().manual_seed(44)
    x = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64, requires_grad=grads[0])
    y = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=grads[1])
    for cost in range(3):
        torch.library.opcheck(torch.ops.diffcomb.soft_dtw_series.default,
                              (x, y, torch.tensor([6, 4]), None, 0.5, 2, cost, *grads))
    if not grads[0]:
        return
    compiled = torch.compile(lambda a, b: diffcomb.soft_dtw_divergence(a, b, 0.5, bandwidth=2).sum(),
                             backend="aot_eager", fullgraph=True)
    (g_compiled,) = torch.autograd.grad(compiled(x, y), x)
    (g_eager,) = torch.autograd.grad(diffcomb.soft_dtw_divergence(x, y, 0.5, bandwidth=2).sum(), x)
    assert_close(g_compiled, g_eager)


# ------------------------------------------------------------------------------------------------
# Mean cost and barycenter.


@pytest.mark.parametrize("m, n", [(1, 1), (2, 2), (5, 7), (40, 33)])
@pytest.mark.parametrize("bandwidth", [None, 2])
def test_mean_cost_matches_reference(m, n, bandwidth):
    gen = torch.Generator().manual_seed(m + 100 * n)
    C0 = torch.rand(m, n, generator=gen, dtype=torch.float64)
    C = C0.clone().requires_grad_()
    value = diffcomb.mean_cost_from_cost(C, bandwidth=bandwidth)
    expected = ref.mean_cost_from_cost(C0.numpy(), bandwidth)
    value.backward()
    if math.isinf(expected):
        assert value.item() == math.inf and torch.all(C.grad == 0)
        return
    assert_close(value, expected)
    assert_close(C.grad, ref.mean_alignment(m, n, bandwidth))


def test_mean_cost_spec_and_limits():
    C = torch.tensor(C_SPEC, dtype=torch.float64)
    assert_close(diffcomb.mean_cost_from_cost(C), 8.0 / 3.0)
    # Long series: the path counts overflow float64 near n = 400; the log domain does not.
    big = torch.rand(600, 500, dtype=torch.float64)
    assert torch.isfinite(diffcomb.mean_cost_from_cost(big))
    gen = torch.Generator().manual_seed(51)
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    value = diffcomb.mean_cost_divergence(x, y)
    value.backward()
    assert_close(value, ref.mean_cost_divergence(x.detach().numpy(), y.numpy()))
    assert_close(x.grad, ref.mean_cost_divergence_grad(x.detach().numpy(), y.numpy())[0])


def test_barycenter():
    gen = torch.Generator().manual_seed(52)
    y = torch.randn(1, 12, 2, generator=gen, dtype=torch.float64)
    # K = 1 with the divergence: the series itself is a stationary point (SPEC 3.10).
    X = diffcomb.soft_dtw_barycenter(y, 0.5, divergence=True, init=y[0].clone())
    assert_close(X, y[0], atol=1e-6)
    Y = torch.randn(4, 12, 2, generator=gen, dtype=torch.float64)
    X = diffcomb.soft_dtw_barycenter(Y, 0.5, max_iter=50)
    start = diffcomb.soft_dtw(Y.mean(0).expand(4, 12, 2), Y, 0.5).mean()
    end = diffcomb.soft_dtw(X.expand(4, 12, 2), Y, 0.5).mean()
    assert end < start
    Xg = X.clone().requires_grad_()
    (grad,) = torch.autograd.grad(diffcomb.soft_dtw(Xg.expand(4, 12, 2), Y, 0.5).mean(), Xg)
    assert grad.abs().max() < 1e-4  # L-BFGS reached a stationary point


def test_sharp_module():
    gen = torch.Generator().manual_seed(53)
    x = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    assert_close(diffcomb.SharpSoftDTW(0.4)(x, y), diffcomb.sharp_soft_dtw(x, y, 0.4).mean())
    assert_close(diffcomb.SharpSoftDTW(0.4, normalize=True, reduction="none")(x, y),
                 diffcomb.sharp_soft_dtw_divergence(x, y, 0.4))
    assert "gamma=0.4" in repr(diffcomb.SharpSoftDTW(0.4))


# ------------------------------------------------------------------------------------------------
# The anti-diagonal engine at sizes beyond the parametrized reference tests above.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, bandwidth", [(1, 9, None), (9, 1, None), (2, 2, 0), (17, 17, 0), (31, 40, 9),
                                             (64, 48, None), (150, 140, None), (150, 140, 12), (101, 100, 1)])
@pytest.mark.parametrize("gamma", [0.0, 0.01, 0.1, 1.0])
def test_engine_matches_reference(dtype, m, n, bandwidth, gamma):
    gen = torch.Generator().manual_seed(m + n + int(100 * gamma))
    C = (torch.rand(2, m, n, generator=gen, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    value = diffcomb.soft_dtw_from_cost(C, gamma, bandwidth=bandwidth)
    (grad,) = torch.autograd.grad(value.sum(), C)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for b in range(2):
        c = C[b].detach().double().numpy()
        assert_close(value[b].double(), ref.soft_dtw_from_cost(c, gamma, bandwidth), rtol=tol["rtol"],
                     atol=1e-6 * m)
        expected = ref.soft_dtw_alignment(c, gamma, bandwidth)
        assert_close(grad[b].double(), expected, **tol)


@pytest.mark.parametrize("bandwidth", [None, 80])
def test_engine_long_pairs_transpose_symmetry(bandwidth):
    # sdtw(C^T) = sdtw(C) and E(C^T) = E(C)^T (SPEC 3.7) on long, unequal pairs: the transposed
    # problem runs on a different diagonal layout, and on all threads in tiles.
    gen = torch.Generator().manual_seed(2)
    C = torch.rand(1, 700, 650, generator=gen, dtype=torch.float64, requires_grad=True)
    CT = C.detach().transpose(-1, -2).contiguous().requires_grad_()
    v, vt = (diffcomb.soft_dtw_from_cost(c, 0.1, bandwidth=bandwidth) for c in (C, CT))
    (E,), (ET,) = torch.autograd.grad(v, C), torch.autograd.grad(vt, CT)
    assert_close(v, vt, rtol=1e-12, atol=0)
    assert_close(E, ET.transpose(-1, -2), rtol=1e-9, atol=1e-12)
    assert torch.all(E >= 0) and torch.all(E <= 1 + 1e-12) and E[0, -1, -1] == 1
    assert_close(E[0, 0, 0], 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bandwidth", [None, 40])
def test_engine_tiles_match_one_thread(bandwidth):
    # A batch smaller than the thread count runs each pair on all threads in tiles; every cell
    # gets the same formula (only where a SIMD loop's scalar remainder falls may differ, by an ulp).
    gen = torch.Generator().manual_seed(3)
    C = torch.rand(1, 400, 330, generator=gen, dtype=torch.float64, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            value = diffcomb.soft_dtw_from_cost(C, 0.1, bandwidth=bandwidth)
            results.append((value.detach(), torch.autograd.grad(value.sum(), C)[0]))
    finally:
        torch.set_num_threads(before)
    assert_close(results[0][0], results[1][0], rtol=1e-14, atol=0)
    assert_close(results[0][1], results[1][1], rtol=0, atol=1e-14)


def test_engine_extreme_costs_and_small_gamma():
    # Costs whose soft-min exponents underflow (differences / gamma far below -708) and large
    # magnitudes: the value is the hard DTW up to the bounds, the gradient a path indicator.
    gen = torch.Generator().manual_seed(4)
    C = torch.rand(12, 15, generator=gen, dtype=torch.float64) * 1e4
    dtw = ref.dtw_from_cost(C.numpy())
    C.requires_grad_()
    value = diffcomb.soft_dtw_from_cost(C, 1e-3)
    (E,) = torch.autograd.grad(value, C)
    assert dtw - 1e-3 * math.log(delannoy(11, 14)) - 1e-9 <= value.item() <= dtw + 1e-9
    assert_close(E, diffcomb.soft_dtw_alignment(C.detach(), 0.0), rtol=0, atol=1e-12)


def test_double_backward_is_the_hessian():
    gen = torch.Generator().manual_seed(5)
    C = torch.rand(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradgradcheck(lambda c: diffcomb.soft_dtw_from_cost(c, 0.7, bandwidth=2), (C,))
    x = torch.randn(2, 6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 2, generator=gen, dtype=torch.float64)
    torch.autograd.gradgradcheck(lambda a: diffcomb.soft_dtw(a, y, 0.5), (x,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", ["sqeuclidean", "half_sqeuclidean", "log_augmented"])
@pytest.mark.parametrize("bandwidth, lengths", [(None, False), (6, False), (None, True), (9, True)])
def test_series_engine_matches_cost_matrix_path(dtype, cost, bandwidth, lengths):
    # soft_dtw on series computes the costs inside the kernel and returns gradients for x and y
    # directly; the cost-matrix path (pairwise_cost + soft_dtw_from_cost) is the independent check.
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 1, 23, 3, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    y = torch.randn(1, 2, 19, 3, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    kw = dict(bandwidth=bandwidth)
    if lengths:
        kw.update(x_lengths=torch.tensor([[23, 17], [20, 21], [12, 23]]), y_lengths=torch.tensor([[19, 11], [19, 15],
                                                                                                  [19, 19]]))
    value = diffcomb.soft_dtw(x, y, 0.3, cost=cost, **kw)
    gx, gy = torch.autograd.grad(value.sum(), (x, y))
    expected = diffcomb.soft_dtw_from_cost(diffcomb.pairwise_cost(x, y, cost), 0.3, **kw)
    ex, ey = torch.autograd.grad(expected.sum(), (x, y))
    assert value.shape == (3, 2) and value.dtype == dtype
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(value))
    rtol = 1e-9 if dtype == torch.float64 else 2e-4
    assert_close(value[finite], expected[finite], rtol=rtol, atol=rtol)
    assert_close(gx, ex, rtol=rtol, atol=rtol * 10)
    assert_close(gy, ey, rtol=rtol, atol=rtol * 10)


def test_series_engine_nan_and_no_grad_paths():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 8, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64)
    x[1, 7, 0] = float("nan")
    x.requires_grad_()
    value = diffcomb.soft_dtw(x, y, 0.5)
    (gx,) = torch.autograd.grad(value.sum(), x)
    assert torch.isnan(value[1]) and torch.isfinite(value[[0, 2]]).all()
    assert torch.isnan(gx[1]).all() and torch.isfinite(gx[[0, 2]]).all()
    with torch.no_grad():
        torch.testing.assert_close(diffcomb.soft_dtw(x, y, 0.5), value.detach(), equal_nan=True)
    # Only y requires a gradient.
    yg = y.clone().requires_grad_()
    (gy,) = torch.autograd.grad(diffcomb.soft_dtw(x.detach()[[0, 2]], yg[[0, 2]], 0.5).sum(), yg)
    ref_y = y.clone().requires_grad_()
    expected = diffcomb.soft_dtw_from_cost(diffcomb.pairwise_cost(x.detach()[[0, 2]], ref_y[[0, 2]]), 0.5)
    (ey,) = torch.autograd.grad(expected.sum(), ref_y)
    assert_close(gy, ey, rtol=1e-9, atol=1e-9)


def test_padding_may_hold_nan_in_every_series_and_mean_cost_function():
    # Steps past a length and out-of-band cells "may hold anything": NaN there changes no value
    # and no gradient of the functions on series (sharp variants and mean cost included).
    gen = torch.Generator().manual_seed(82)
    x = torch.randn(2, 6, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 5, 2, generator=gen, dtype=torch.float64)
    lx, ly = torch.tensor([4, 6]), torch.tensor([5, 3])
    x_nan, y_nan = x.clone(), y.clone()
    x_nan[0, 4:] = math.nan
    y_nan[1, 3:] = math.nan
    kw = dict(x_lengths=lx, y_lengths=ly)
    for fn in (diffcomb.soft_dtw, diffcomb.sharp_soft_dtw, diffcomb.mean_cost):
        results = []
        for a, b in ((x, y), (x_nan, y_nan)):
            a = a.clone().requires_grad_(True)
            b = b.clone().requires_grad_(True)
            value = fn(a, b, **kw) if fn is diffcomb.mean_cost else fn(a, b, 0.5, **kw)
            value.sum().backward()
            results.append((value.detach(), a.grad, b.grad))
        for clean, padded in zip(*results):
            assert bool(torch.isfinite(padded).all()), fn.__name__
            assert_close(padded, clean)
    C = torch.rand(4, 4, generator=gen, dtype=torch.float64)
    C_nan = C.clone()
    C_nan[3, 0] = math.nan  # outside the band
    assert_close(diffcomb.mean_cost_from_cost(C_nan, bandwidth=1), diffcomb.mean_cost_from_cost(C, bandwidth=1))
    C_nan[1, 1] = math.inf  # a used cell: NaN (SPEC 0)
    assert math.isnan(float(diffcomb.mean_cost_from_cost(C_nan, bandwidth=1)))


# ------------------------------------------------------------------------------------------------
# Issue 12, item 4: huge costs, huge bands, broadcast lengths in the divergences, boundary checks.


@pytest.mark.parametrize("shape", [(21, 3), (3, 21), (9, 6)])
def test_alignment_is_a_probability_flow_for_huge_tied_costs(shape):
    # Constant costs 1e15 with gamma = 1: only the shortest alignments count and they tie. The
    # weights recomputed in the backward used to sum to e^{+-ulp/gamma} instead of 1 per cell
    # (E reached 5.58); they are now the normalized softmax of the stored R, so E stays in
    # [0, 1], E[0, 0] = E[-1, -1] = 1, and every row (or column, for N < M) of a shortest-path
    # flow sums to 1. The split among the tied paths carries the rounding of R (ulp(2e16) = 4 >
    # gamma), so only these invariants are asserted at this scale (see the closed-form test).
    m, n = shape
    C = torch.full((2, m, n), 1e15, dtype=torch.float64)
    C[1] *= 3.0
    E = diffcomb.soft_dtw_alignment(C, 1.0)
    assert float(E.min()) >= 0.0 and float(E.max()) <= 1.0 + 1e-12
    assert_close(E[:, 0, 0], [1.0, 1.0], rtol=0, atol=1e-12)
    assert_close(E[:, -1, -1], [1.0, 1.0], rtol=0, atol=1e-12)
    sums = E.sum(-1) if m >= n else E.sum(-2)
    assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-12)
    # The same through the gradient of the value and of the series path, and the sharp value
    # <E, C> = c max(m, n) (it was 3.2 times that).
    Cg = C.clone().requires_grad_()
    (grad,) = torch.autograd.grad(diffcomb.soft_dtw_from_cost(Cg, 1.0).sum(), Cg)
    assert_close(grad, E, rtol=0, atol=1e-12)
    assert_close(diffcomb.sharp_soft_dtw_from_cost(C, 1.0), C[:, 0, 0] * max(m, n), rtol=1e-12)
    x = torch.zeros(m, 1, dtype=torch.float64, requires_grad=True)
    y = torch.full((n, 1), 1e7, dtype=torch.float64, requires_grad=True)  # costs (1e7)^2 = 1e14
    gx, gy = torch.autograd.grad(diffcomb.soft_dtw(x, y, 1.0), (x, y))
    # d/dx_i = -2e7 (row sum of E): every row of the flow sums to 1 for m >= n.
    if m >= n:
        assert_close(gx.flatten(), torch.full((m,), -2e7, dtype=torch.float64), rtol=1e-12)
    else:
        assert_close(gy.flatten(), torch.full((n,), 2e7, dtype=torch.float64), rtol=1e-12)


@pytest.mark.parametrize("scale", [1e3, 1e8, 1e14, 1e100])
@pytest.mark.parametrize("bandwidth", [None, 7])
def test_alignment_flow_conserved_at_any_cost_scale(scale, bandwidth):
    # Many ties at every scale (integer costs times scale): E[0, 0] = 1 is the whole flow that
    # leaves (N, M); it drifted to 0.87 at 1e14 before. The far branch of the weights (a
    # diagonal predecessor more than 1024 gamma above the best one) is exercised here.
    gen = torch.Generator().manual_seed(int(math.log10(scale)))
    C = torch.randint(0, 3, (3, 40, 34), generator=gen).to(torch.float64) * scale
    E = diffcomb.soft_dtw_alignment(C, 1.0, bandwidth=bandwidth)
    assert float(E.min()) >= 0.0 and float(E.max()) <= 1.0 + 1e-12
    assert_close(E[:, 0, 0], torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert bool((E.sum(-1) >= 1.0 - 1e-12).all())  # every alignment visits every row


@pytest.mark.parametrize("shape", [(21, 3), (4, 9), (7, 7), (12, 5)])
@pytest.mark.parametrize("c", [100.0, 1e4, 1e8])
def test_tied_paths_match_the_closed_form(shape, c):
    # At moderate scale the tied split is computable: uniform over the shortest alignments
    # (tests/reference tied_alignment). The error allowed is the conditioning of E at this
    # scale, a few ulps of the soft-DTW table relative to gamma.
    m, n = shape
    C = torch.full((m, n), c, dtype=torch.float64)
    E = diffcomb.soft_dtw_alignment(C, 1.0)
    expected = ref.tied_alignment(m, n)
    atol = 1e-13 + 64 * 2.0**-52 * c * (m + n)
    assert_close(E, expected, rtol=0, atol=atol)
    if c == 100.0:
        assert_close(E, ref.soft_dtw_alignment(C.numpy(), 1.0), rtol=0, atol=1e-12)
        assert_close(diffcomb.sharp_soft_dtw_from_cost(C, 1.0), c * max(m, n), rtol=1e-13)


def test_huge_costs_match_reference_and_hvp():
    # Differences far beyond 1024 gamma between predecessors (the far branch), ties included:
    # values, E and Hessian-vector products against the float64 reference.
    gen = torch.Generator().manual_seed(121)
    for trial in range(40):
        m, n = (int(v) for v in torch.randint(1, 7, (2,), generator=gen))
        C = torch.randint(0, 3, (m, n), generator=gen).to(torch.float64) * [1e3, 1e5][trial % 2]
        C = C + torch.rand(m, n, generator=gen, dtype=torch.float64) * (trial % 3 == 0)
        gamma = [1.0, 0.3][trial % 2]
        band = None if trial % 3 or abs(m - n) > 1 else 1
        assert_close(diffcomb.soft_dtw_alignment(C, gamma, bandwidth=band),
                     ref.soft_dtw_alignment(C.numpy(), gamma, band), rtol=0, atol=1e-11)
        Z = torch.randn(m, n, generator=gen, dtype=torch.float64)
        Cg = C.clone().requires_grad_()
        (hvp,) = torch.autograd.grad((diffcomb.soft_dtw_alignment(Cg, gamma, bandwidth=band) * Z).sum(), Cg)
        expected = ref.soft_dtw_hvp(C.numpy(), gamma, Z.numpy(), band)
        assert_close(hvp, expected, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(expected).max())))


def test_overflowing_costs_give_nan_derivatives():
    # Finite costs whose sums overflow double: the value is +inf (as a sum would be) and no
    # weight can be formed from R, so the derivatives are NaN, never a plausible number
    # (they were E entries of 7 before). Other pairs are unaffected.
    C = torch.full((2, 3, 3), 1e308, dtype=torch.float64)
    C[1] = torch.rand(3, 3, dtype=torch.float64)
    C.requires_grad_()
    value = diffcomb.soft_dtw_from_cost(C, 1.0)
    (grad,) = torch.autograd.grad(value.sum(), C)
    assert value[0].item() == math.inf and math.isfinite(value[1].item())
    assert torch.isnan(grad[0]).all() and torch.isfinite(grad[1]).all()
    sharp = diffcomb.sharp_soft_dtw_from_cost(C, 1.0)
    (sgrad,) = torch.autograd.grad(sharp.sum(), C)
    assert math.isnan(sharp[0].item()) and torch.isnan(sgrad[0]).all() and torch.isfinite(sgrad[1]).all()
    x = torch.full((50, 1), 1e153, dtype=torch.float64, requires_grad=True)  # costs 4e306, 50 of them overflow
    y = -x.detach()
    v = diffcomb.soft_dtw(x, y, 1.0)
    (gx,) = torch.autograd.grad(v, x)
    assert v.item() == math.inf and torch.isnan(gx).all()


@pytest.mark.parametrize("bandwidth", [9, 10, 1000, 2**62, sys.maxsize, 2**70])
def test_any_bandwidth_at_least_max_n_m_is_no_band(bandwidth):
    # sys.maxsize used to overflow k + band in csrc/softdtw/softdtw.h (value 0, zero gradient);
    # 2**70 did not fit the op's int64.
    gen = torch.Generator().manual_seed(122)
    C = torch.rand(2, 9, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 9, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 7, 2, generator=gen, dtype=torch.float64)
    lx, ly = torch.tensor([9, 4]), torch.tensor([7, 6])
    calls = [
        (C, lambda b: diffcomb.soft_dtw_from_cost(C, 0.5, bandwidth=b)),
        (C, lambda b: diffcomb.soft_dtw_from_cost(C, 0.5, bandwidth=b, x_lengths=lx, y_lengths=ly)),
        (C, lambda b: diffcomb.soft_dtw_alignment(C, 0.5, bandwidth=b)),
        (C, lambda b: diffcomb.sharp_soft_dtw_from_cost(C, 0.5, bandwidth=b)),
        (C, lambda b: diffcomb.mean_cost_from_cost(C, bandwidth=b)),
        (x, lambda b: diffcomb.soft_dtw(x, y, 0.5, bandwidth=b)),
        (x, lambda b: diffcomb.soft_dtw(x, y, 0.0, bandwidth=b, x_lengths=lx, y_lengths=ly)),
        (x, lambda b: diffcomb.soft_dtw_divergence(x, y, 0.5, bandwidth=b)),
        (x, lambda b: diffcomb.sharp_soft_dtw(x, y, 0.5, bandwidth=b)),
        (x, lambda b: diffcomb.mean_cost(x, y, bandwidth=b)),
        (x, lambda b: diffcomb.SoftDTW(0.5, bandwidth=b, reduction="none")(x, y)),
    ]
    for leaf, call in calls:
        wide, free = call(bandwidth), call(None)
        assert_close(wide, free, rtol=1e-14, atol=1e-14)
        (g_wide,), (g_free,) = torch.autograd.grad(wide.sum(), leaf), torch.autograd.grad(free.sum(), leaf)
        assert_close(g_wide, g_free, rtol=1e-14, atol=1e-14)
    # The raw ops and the engine take any band: a band >= max(N, M) is none there too.
    for band in (9, sys.maxsize):
        assert_close(torch.ops.diffcomb.soft_dtw_cost(C.detach(), None, None, 0.5, band, True)[1],
                     torch.ops.diffcomb.soft_dtw_cost(C.detach(), None, None, 0.5, -1, True)[1], rtol=0, atol=0)
    # A band at least the used lengths but below N, M is none for that pair only.
    assert_close(diffcomb.soft_dtw_from_cost(C, 0.5, bandwidth=6, x_lengths=lx, y_lengths=ly)[1],
                 diffcomb.soft_dtw_from_cost(C[1, :4, :6], 0.5))



DIVERGENCES = [
    pytest.param(lambda a, b, **kw: diffcomb.soft_dtw_divergence(a, b, 0.5, **kw), "soft_dtw_divergence", id="sdtw"),
    pytest.param(lambda a, b, **kw: diffcomb.sharp_soft_dtw_divergence(a, b, 0.5, **kw), "sharp_soft_dtw_divergence",
                 id="sharp"),
    pytest.param(lambda a, b, **kw: diffcomb.mean_cost_divergence(a, b, **kw), "mean_cost_divergence", id="mean"),
]


@pytest.mark.parametrize("divergence, name", DIVERGENCES)
def test_divergences_take_the_lengths_soft_dtw_takes(divergence, name):
    # x (3, 1, 10, 2), y (1, 2, 9, 2) with lengths (3, 2): soft_dtw accepts them; the self term
    # f(x, x) used to run on x's batch shape (3, 1) and raise, naming soft_dtw.
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(3, 1, 10, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 2, 9, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    lx = torch.tensor([[10, 4], [7, 10], [1, 6]])
    ly = torch.tensor([[9, 9], [3, 5], [8, 2]])
    assert diffcomb.soft_dtw(x, y, 0.5, x_lengths=lx, y_lengths=ly).shape == (3, 2)
    value = divergence(x, y, x_lengths=lx, y_lengths=ly)
    assert value.shape == (3, 2)
    gx, gy = torch.autograd.grad(value.sum(), (x, y))
    for a in range(3):
        for b in range(2):
            xa = x[a, 0, : lx[a, b]].detach().clone().requires_grad_()
            yb = y[0, b, : ly[a, b]].detach().clone().requires_grad_()
            alone = divergence(xa, yb)
            assert_close(value[a, b], alone)
    # Gradients: the same as with the series expanded to the batch shape first.
    xe = x.detach().expand(3, 2, 10, 2).clone().requires_grad_()
    ye = y.detach().expand(3, 2, 9, 2).clone().requires_grad_()
    ex, ey = torch.autograd.grad(divergence(xe, ye, x_lengths=lx, y_lengths=ly).sum(), (xe, ye))
    assert_close(gx, ex.sum(1, keepdim=True))
    assert_close(gy, ey.sum(0, keepdim=True))
    # Lengths that do not match the batch shape: the error names the divergence.
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: x_lengths of shape \(4,\)"):
        divergence(x, y, x_lengths=torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: y_lengths must lie in \[1, 9\]"):
        divergence(x, y, y_lengths=torch.tensor(10))


@pytest.mark.parametrize("fn, call", [
    ("soft_dtw", lambda **kw: diffcomb.soft_dtw(torch.randn(5, 2), torch.randn(4, 2), **kw)),
    ("soft_dtw_divergence", lambda **kw: diffcomb.soft_dtw_divergence(torch.randn(5, 2), torch.randn(4, 2), **kw)),
    ("sharp_soft_dtw", lambda **kw: diffcomb.sharp_soft_dtw(torch.randn(5, 2), torch.randn(4, 2), **kw)),
    ("sharp_soft_dtw_divergence",
     lambda **kw: diffcomb.sharp_soft_dtw_divergence(torch.randn(5, 2), torch.randn(4, 2), **kw)),
    ("mean_cost", lambda **kw: diffcomb.mean_cost(torch.randn(5, 2), torch.randn(4, 2), **kw)),
    ("mean_cost_divergence", lambda **kw: diffcomb.mean_cost_divergence(torch.randn(5, 2), torch.randn(4, 2), **kw)),
    ("soft_dtw_from_cost", lambda **kw: diffcomb.soft_dtw_from_cost(torch.rand(5, 4), **kw)),
    ("soft_dtw_alignment", lambda **kw: diffcomb.soft_dtw_alignment(torch.rand(5, 4), **kw)),
    ("sharp_soft_dtw_from_cost", lambda **kw: diffcomb.sharp_soft_dtw_from_cost(torch.rand(5, 4), **kw)),
    ("mean_cost_from_cost", lambda **kw: diffcomb.mean_cost_from_cost(torch.rand(5, 4), **kw)),
])
def test_errors_name_the_called_function(fn, call):
    # The series and mean-cost functions are built on others; their errors used to name those
    # (soft_dtw, sharp_soft_dtw_from_cost, soft_dtw_from_cost).
    prefix = rf"diffcomb\.{fn}: "
    with pytest.raises(ValueError, match=prefix + "bandwidth"):
        call(bandwidth=-2)
    with pytest.raises(ValueError, match=prefix + "x_lengths must lie"):
        call(x_lengths=torch.tensor(6))
    with pytest.raises(TypeError, match=prefix + "y_lengths must be an integer tensor"):
        call(y_lengths=torch.tensor(2.0))
    if "mean_cost" not in fn:
        with pytest.raises(ValueError, match=prefix + "gamma"):
            call(gamma=-1.0)
        with pytest.raises(ValueError, match=prefix + "gamma must be 0 .hard DTW. or at least"):
            call(gamma=1e-320)  # subnormal: 1 / gamma overflows and the weights were NaN
    if "from_cost" not in fn and fn != "soft_dtw_alignment":  # the functions on series
        with pytest.raises(ValueError, match=prefix + "cost must be one of"):
            call(cost="l1")
        with pytest.raises(RuntimeError, match=prefix + "all tensor arguments must be on the same device"):
            call(x_lengths=torch.tensor(2, device="meta"))


def test_series_need_steps_and_matching_batches():
    with pytest.raises(ValueError, match=r"diffcomb\.soft_dtw: both series need at least one step"):
        diffcomb.soft_dtw(torch.randn(0, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"diffcomb\.sharp_soft_dtw_divergence: both series need at least one"):
        diffcomb.sharp_soft_dtw_divergence(torch.randn(3, 2), torch.randn(0, 2))
    with pytest.raises(ValueError, match=r"diffcomb\.soft_dtw: the batch dimensions of x \(3,\) and y \(2,\)"):
        diffcomb.soft_dtw(torch.randn(3, 5, 2), torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match=r"diffcomb\.pairwise_cost: x and y must have the same feature size"):
        diffcomb.pairwise_cost(torch.randn(5, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"diffcomb\.pairwise_cost: cost must be one of"):
        diffcomb.pairwise_cost(torch.randn(5, 2), torch.randn(4, 2), "l1")


def test_inputs_on_different_devices_raise():
    # soft_dtw(x_cpu, y_meta) used to read a meta tensor's (absent) memory and return garbage
    # with a gradient.
    x, y = torch.randn(5, 2), torch.randn(4, 2)
    C = torch.rand(5, 4)
    meta = dict(device="meta")
    calls = {
        "soft_dtw": lambda: diffcomb.soft_dtw(x, y.to(**meta)),
        "soft_dtw_divergence": lambda: diffcomb.soft_dtw_divergence(x.to(**meta), y),
        "sharp_soft_dtw": lambda: diffcomb.sharp_soft_dtw(x, y.to(**meta)),
        "sharp_soft_dtw_divergence": lambda: diffcomb.sharp_soft_dtw_divergence(x, y.to(**meta)),
        "mean_cost": lambda: diffcomb.mean_cost(x, y.to(**meta)),
        "mean_cost_divergence": lambda: diffcomb.mean_cost_divergence(x, y.to(**meta)),
        "pairwise_cost": lambda: diffcomb.pairwise_cost(x, y.to(**meta)),
        "soft_dtw_from_cost": lambda: diffcomb.soft_dtw_from_cost(C, y_lengths=torch.tensor(3, **meta)),
        "soft_dtw_alignment": lambda: diffcomb.soft_dtw_alignment(C, x_lengths=torch.tensor(3, **meta)),
        "sharp_soft_dtw_from_cost": lambda: diffcomb.sharp_soft_dtw_from_cost(C, x_lengths=torch.tensor(3, **meta)),
        "mean_cost_from_cost": lambda: diffcomb.mean_cost_from_cost(C, x_lengths=torch.tensor(3, **meta)),
        "soft_dtw_barycenter": lambda: diffcomb.soft_dtw_barycenter(y[None], init=x.to(**meta)),
    }
    for fn, call in calls.items():
        with pytest.raises(RuntimeError, match=rf"diffcomb\.{fn}: all tensor arguments must be on the same device"):
            call()
    with pytest.raises(RuntimeError, match=r"diffcomb\.SoftDTW|diffcomb\.soft_dtw: all tensor arguments"):
        diffcomb.SoftDTW()(x[None], y[None].to(**meta))


def test_integer_and_bool_series_are_computed_as_float():
    x = torch.tensor([[0, 1], [2, 2], [3, 1], [1, 0]])
    y = torch.tensor([[1, 1], [2, 0], [0, 3]])
    xf, yf = x.to(torch.get_default_dtype()), y.to(torch.get_default_dtype())
    for fn in (lambda a, b: diffcomb.soft_dtw(a, b, 0.7), lambda a, b: diffcomb.soft_dtw_divergence(a, b, 0.7),
               lambda a, b: diffcomb.sharp_soft_dtw(a, b, 0.7), lambda a, b: diffcomb.sharp_soft_dtw_divergence(a, b),
               lambda a, b: diffcomb.mean_cost(a, b), lambda a, b: diffcomb.mean_cost_divergence(a, b),
               diffcomb.pairwise_cost, lambda a, b: diffcomb.SoftDTW(0.7)(a[None], b[None])):
        out = fn(x, y)
        assert out.dtype == torch.get_default_dtype()
        assert_close(out, fn(xf, yf), rtol=0, atol=0)
    xb = torch.tensor([[True], [False], [True]])
    assert_close(diffcomb.soft_dtw(xb, xb[:2], 0.5), diffcomb.soft_dtw(xb.float(), xb[:2].float(), 0.5),
                 rtol=0, atol=0)
    Y = torch.tensor([[[0], [1], [2], [1]], [[0], [2], [2], [0]]])
    bary = diffcomb.soft_dtw_barycenter(Y, 0.5, weights=torch.tensor([1, 3]), max_iter=20)
    assert bary.dtype == torch.get_default_dtype() and bary.shape == (4, 1)
    assert_close(bary, diffcomb.soft_dtw_barycenter(Y.float(), 0.5, weights=torch.tensor([1.0, 3.0]), max_iter=20))


def test_bool_flags_must_be_bools():
    # A truthy string used to count as True.
    with pytest.raises(TypeError, match=r"diffcomb\.SoftDTW: normalize must be a bool"):
        diffcomb.SoftDTW(normalize="no")
    with pytest.raises(TypeError, match=r"diffcomb\.SharpSoftDTW: normalize must be a bool"):
        diffcomb.SharpSoftDTW(normalize=1)
    with pytest.raises(TypeError, match=r"diffcomb\.soft_dtw_barycenter: divergence must be a bool"):
        diffcomb.soft_dtw_barycenter(torch.randn(2, 4, 1), divergence="no")


def test_barycenter_checks_its_arguments():
    Y = torch.randn(3, 5, 2, dtype=torch.float64)
    fn = r"diffcomb\.soft_dtw_barycenter: "
    with pytest.raises(ValueError, match=fn + "Y must be \\(K, M, D\\) with K >= 1"):
        diffcomb.soft_dtw_barycenter(torch.randn(0, 5, 2))  # was a ZeroDivisionError
    with pytest.raises(ValueError, match=fn + "Y must be \\(K, M, D\\)"):
        diffcomb.soft_dtw_barycenter(torch.randn(3, 0, 2))
    with pytest.raises(ValueError, match=fn + "Y must be \\(K, M, D\\)"):
        diffcomb.soft_dtw_barycenter(torch.randn(2, 3, 5, 2))
    with pytest.raises(ValueError, match=fn + r"weights must be a real tensor of shape \(3,\)"):
        diffcomb.soft_dtw_barycenter(Y, weights=torch.ones(2))  # was a raw broadcasting error
    with pytest.raises(ValueError, match=fn + r"init must be \(L, 2\)"):
        diffcomb.soft_dtw_barycenter(Y, init=torch.randn(4, 3))  # named soft_dtw before
    with pytest.raises(ValueError, match=fn + "max_iter must be an int >= 1"):
        diffcomb.soft_dtw_barycenter(Y, max_iter=0)  # silently returned the start before
    with pytest.raises(ValueError, match=fn + "tol must be >= 0 and finite"):
        diffcomb.soft_dtw_barycenter(Y, tol=-1.0)
    with pytest.raises(ValueError, match=fn + "cost must be one of"):
        diffcomb.soft_dtw_barycenter(Y, cost="l1")
    with pytest.raises(ValueError, match=fn + "y_lengths must lie in"):
        diffcomb.soft_dtw_barycenter(Y, y_lengths=torch.tensor([5, 6, 5]), init=Y[0])
    with pytest.raises(ValueError, match=fn + "gamma"):
        diffcomb.soft_dtw_barycenter(Y, -1.0)
    # A huge band is no band; the K = 1 divergence barycenter of Y_1 stays at Y_1 with it.
    X = diffcomb.soft_dtw_barycenter(Y[:1], 0.5, divergence=True, init=Y[0].clone(), bandwidth=sys.maxsize)
    assert_close(X, Y[0], atol=1e-6)
    # Lengths and the divergence together, with uniform weights as explicit integers.
    lengths = torch.tensor([5, 3, 4])
    X = diffcomb.soft_dtw_barycenter(Y, 0.5, y_lengths=lengths, init=Y[0].clone(), divergence=True,
                                     weights=torch.tensor([1, 1, 1]), max_iter=30)
    Xg = X.clone().requires_grad_()
    loss = diffcomb.soft_dtw_divergence(Xg.expand(3, 5, 2), Y, 0.5, y_lengths=lengths).sum()
    (grad,) = torch.autograd.grad(loss, Xg)
    assert grad.abs().max() < 1e-4


def _raw_calls():
    """Every raw soft-DTW op with each kind of bad argument: (name, call) pairs."""
    C = torch.rand(2, 5, 4, dtype=torch.float64)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    y = torch.randn(2, 4, 3, dtype=torch.float64)
    L = torch.tensor([5, 3])
    ops = torch.ops.diffcomb
    bad_costs = {
        "rank": C[0],
        "dtype": C.to(torch.int64),
        "half": C.to(torch.float16),
        "non-contiguous": torch.rand(2, 4, 5, dtype=torch.float64).transpose(1, 2),
        "empty N": C[:, :0],
        "empty M": C[:, :, :0],
    }
    bad_lengths = {
        "short": torch.tensor([5]),
        "long": torch.tensor([5, 3, 2]),
        "rank": torch.tensor([[5, 3]]),
        "int32": L.to(torch.int32),
        "float": L.double(),
        "non-contiguous": torch.tensor([5, 0, 3, 0])[::2],
        "device": L.to("meta"),
    }
    bad_scalars = {"gamma < 0": (-1.0, -1), "gamma nan": (math.nan, -1), "gamma inf": (math.inf, -1),
                   "gamma subnormal": (1e-320, -1), "band < -1": (0.5, -2), "band huge": (0.5, 2**70)}
    calls = []
    cost_ops = {
        "soft_dtw_cost": lambda c, lx, ly, g, b: ops.soft_dtw_cost(c, lx, ly, g, b, True),
        "sharp_soft_dtw_cost": lambda c, lx, ly, g, b: ops.sharp_soft_dtw_cost(c, lx, ly, g, b),
        "soft_dtw_alignment_cost": lambda c, lx, ly, g, b: ops.soft_dtw_alignment_cost(c, lx, ly, g, b),
        "soft_dtw_hvp": lambda c, lx, ly, g, b: ops.soft_dtw_hvp(c, torch.ones_like(c) if c.shape == C.shape and
                                                                 c.dtype == C.dtype else C, lx, ly, g, b),
    }
    for op, call in cost_ops.items():
        for what, bad in bad_costs.items():
            calls.append((f"{op}: C {what}", lambda call=call, bad=bad: call(bad, None, None, 0.5, -1)))
        for what, bad in bad_lengths.items():
            calls.append((f"{op}: lengths_x {what}", lambda call=call, bad=bad: call(C, bad, None, 0.5, -1)))
            calls.append((f"{op}: lengths_y {what}", lambda call=call, bad=bad: call(C, None, bad, 0.5, -1)))
        for what, (g, b) in bad_scalars.items():
            calls.append((f"{op}: {what}", lambda call=call, g=g, b=b: call(C, None, None, g, b)))
    for what, Z in {"short": C[:, :4], "dtype": C.float(), "non-contiguous": torch.rand(2, 4, 5).double().mT,
                    "rank": C[0], "device": C.to("meta")}.items():
        calls.append((f"soft_dtw_hvp: Z {what}", lambda Z=Z: ops.soft_dtw_hvp(C, Z, None, None, 0.5, -1)))
    series = lambda a, b, lx=None, ly=None, g=0.5, band=-1, cost=0: ops.soft_dtw_series(  # noqa: E731
        a, b, lx, ly, g, band, cost, True, True)
    bad_series = {
        "x rank": lambda: series(x[0], y),
        "y rank": lambda: series(x, y[0]),
        "x dtype": lambda: series(x.to(torch.int64), y),
        "y dtype": lambda: series(x, y.float()),
        "x non-contiguous": lambda: series(torch.randn(2, 3, 5, dtype=torch.float64).mT, y),
        "y non-contiguous": lambda: series(x, torch.randn(2, 3, 4, dtype=torch.float64).mT),
        "short batch": lambda: series(x, y[:1]),
        "feature size": lambda: series(x, y[..., :2].contiguous()),
        "empty N": lambda: series(x[:, :0], y),
        "empty M": lambda: series(x, y[:, :0]),
        "y device": lambda: series(x, y.to("meta")),
        "cost code": lambda: series(x, y, cost=3),
        "negative cost code": lambda: series(x, y, cost=-1),
        "grad flag": lambda: ops.soft_dtw_series(x, y, None, None, 0.5, -1, 0, "no", True),
    }
    for what, call in bad_series.items():
        calls.append((f"soft_dtw_series: {what}", call))
    for what, bad in bad_lengths.items():
        calls.append((f"soft_dtw_series: lengths_x {what}", lambda bad=bad: series(x, y, lx=bad)))
        calls.append((f"soft_dtw_series: lengths_y {what}", lambda bad=bad: series(x, y, ly=bad)))
    for what, (g, b) in bad_scalars.items():
        calls.append((f"soft_dtw_series: {what}", lambda g=g, b=b: series(x, y, g=g, band=b)))
    return calls


@pytest.mark.parametrize("name, call", _raw_calls(), ids=[name for name, _ in _raw_calls()])
def test_raw_ops_reject_bad_arguments(name, call):
    # The ops under torch.ops.diffcomb used to trust their inputs: a short lengths tensor or an
    # empty series read out of bounds, a non-contiguous or int32 input was read with the wrong
    # layout. Each now raises before the native call.
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        call()


def test_raw_ops_accept_good_arguments_and_clamp_lengths():
    # The checks read no values: out-of-range lengths are clamped by the kernels (no crash).
    C = torch.rand(2, 5, 4, dtype=torch.float64)
    value, E = torch.ops.diffcomb.soft_dtw_cost(C, torch.tensor([9, -4]), torch.tensor([4, 0]), 0.5, -1, True)
    assert_close(value, diffcomb.soft_dtw_from_cost(C, 0.5, x_lengths=torch.tensor([5, 1]),
                                                    y_lengths=torch.tensor([4, 1])))
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    y = torch.randn(2, 4, 3, dtype=torch.float64)
    v = torch.ops.diffcomb.soft_dtw_series(x, y, torch.tensor([100, 2]), None, 0.5, 1, 2, False, False)[0]
    assert_close(v, diffcomb.soft_dtw(x, y, 0.5, cost="log_augmented", bandwidth=1, x_lengths=torch.tensor([5, 2])))


def test_divergence_with_broadcast_lengths_compiles():
    gen = torch.Generator().manual_seed(124)
    x = torch.randn(3, 1, 8, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 2, 7, 2, generator=gen, dtype=torch.float64)
    lx, ly = torch.tensor([[8, 4], [7, 8], [1, 6]]), torch.tensor([[7, 7], [3, 5], [6, 2]])
    fn = lambda a, b, la, lb: diffcomb.soft_dtw_divergence(a, b, 0.5, x_lengths=la, y_lengths=lb,  # noqa: E731
                                                           bandwidth=sys.maxsize).sum()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    out = compiled(x, y, lx, ly)
    (g_compiled,) = torch.autograd.grad(out, x)
    expected = fn(x, y, lx, ly)
    (g_eager,) = torch.autograd.grad(expected, x)
    assert_close(out, expected)
    assert_close(g_compiled, g_eager)
