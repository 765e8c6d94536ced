"""Soft-DTW under the autodiff modes, beyond the op x mode matrix (tests/autodiff_cases/softdtw.py):
second derivatives against the float64 numpy oracle (tests/reference/softdtw.py), forward mode over a
plain backward, every way of taking a third derivative raising (never a silent zero), vmap over the
lengths, and the no-gradient fast path of the ops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.func as F
from torch.autograd import forward_ad

import diffcomb
from diffcomb.softdtw import _ops
from tests.conftest import assert_close
from tests.reference import softdtw as ref

GAMMA = 0.6


def _data(seed: int = 0, shape=(2, 5, 4)):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2,
            torch.randn(shape, generator=gen, dtype=torch.float64))


def _ref_hvp(C, Z, band=None, lengths=None):
    out = np.zeros(C.shape)
    for b in range(C.shape[0]):
        n = C.shape[1] if lengths is None else int(lengths[b])
        out[b, :n] = ref.soft_dtw_hvp(C[b, :n].numpy(), GAMMA, Z[b, :n].numpy(), band)
    return torch.from_numpy(out)


@pytest.mark.parametrize("band, lengths", [(None, None), (2, [5, 3])], ids=["plain", "band_lengths"])
def test_hessian_and_forward_mode_match_the_oracle(band, lengths):
    C, Z = _data()
    lx = None if lengths is None else torch.tensor(lengths)

    def value(c):
        return diffcomb.soft_dtw_from_cost(c, GAMMA, bandwidth=band, x_lengths=lx).sum()

    HZ = _ref_hvp(C, Z, band, lengths)
    H = F.hessian(value)(C).reshape(C.numel(), C.numel())
    assert_close((H @ Z.reshape(-1)).reshape(C.shape), HZ, rtol=1e-10, atol=1e-12)
    # Forward mode of the value: <E, Z>; of the alignment: H Z.
    E = diffcomb.soft_dtw_alignment(C, GAMMA, bandwidth=band, x_lengths=lx)
    _, tangent = F.jvp(lambda c: diffcomb.soft_dtw_from_cost(c, GAMMA, bandwidth=band, x_lengths=lx), (C,), (Z,))
    assert_close(tangent, (E * Z).sum((1, 2)), rtol=1e-12, atol=1e-12)
    _, dE = F.jvp(lambda c: diffcomb.soft_dtw_alignment(c, GAMMA, bandwidth=band, x_lengths=lx), (C,), (Z,))
    assert_close(dE, HZ, rtol=1e-10, atol=1e-12)
    # The sharp variant's gradient E + H C, by forward mode.
    _, sharp = F.jvp(lambda c: diffcomb.sharp_soft_dtw_from_cost(c, GAMMA, bandwidth=band, x_lengths=lx), (C,), (Z,))
    assert_close(sharp, ((E + _ref_hvp(C, C, band, lengths)) * Z).sum((1, 2)), rtol=1e-10, atol=1e-12)


def test_forward_mode_over_a_plain_backward():
    # A backward without create_graph under a dual level: the gradient's tangent is the HVP (not None
    # from a cached, non-differentiable alignment).
    C, Z = _data(1)
    with forward_ad.dual_level():
        c = forward_ad.make_dual(C.clone().requires_grad_(), Z)
        (g,) = torch.autograd.grad(diffcomb.soft_dtw_from_cost(c, GAMMA).sum(), c)
        tangent = forward_ad.unpack_dual(g).tangent
    assert_close(tangent, _ref_hvp(C, Z), rtol=1e-10, atol=1e-12)
    x, dx = _data(2, (2, 5, 2))
    y = torch.randn(2, 4, 2, dtype=torch.float64)
    with forward_ad.dual_level():
        a = forward_ad.make_dual(x.clone().requires_grad_(), dx)
        (g,) = torch.autograd.grad(diffcomb.soft_dtw(a, y, GAMMA).sum(), a)
        tangent = forward_ad.unpack_dual(g).tangent
    expected = F.jvp(F.grad(lambda t: diffcomb.soft_dtw(t, y, GAMMA).sum()), (x,), (dx,))[1]
    assert tangent is not None
    assert_close(tangent, expected, rtol=1e-10, atol=1e-12)


def _third_derivatives():
    C, Z = _data(3)
    align = lambda c: diffcomb.soft_dtw_alignment(c, GAMMA)  # noqa: E731
    sharp = lambda c: diffcomb.sharp_soft_dtw_from_cost(c, GAMMA).sum()  # noqa: E731
    value = lambda c: diffcomb.soft_dtw_from_cost(c, GAMMA).sum()  # noqa: E731

    def eager_double_backward():
        c = C.clone().requires_grad_()
        (g,) = torch.autograd.grad((align(c) * Z).sum(), c, create_graph=True)
        g.sum().backward()

    def forward_over_plain_backward():
        with forward_ad.dual_level():
            c = forward_ad.make_dual(C.clone().requires_grad_(), Z)
            torch.autograd.grad((align(c) * Z).sum(), c)

    def raw_op():
        c = C.clone().requires_grad_()
        torch.ops.diffcomb.soft_dtw_hvp(c, Z, None, None, GAMMA, -1).sum().backward()

    return {
        "alignment jacfwd(jacfwd)": lambda: F.jacfwd(F.jacfwd(align))(C),
        "alignment jacrev(jacrev)": lambda: F.jacrev(F.jacrev(align))(C),
        "alignment jacfwd(jacrev)": lambda: F.jacfwd(F.jacrev(align))(C),
        "alignment jacrev(jacfwd)": lambda: F.jacrev(F.jacfwd(align))(C),
        "alignment eager double backward": eager_double_backward,
        "alignment forward over plain backward": forward_over_plain_backward,
        "sharp hessian": lambda: F.hessian(sharp)(C),
        "sharp jacfwd(jacfwd)": lambda: F.jacfwd(F.jacfwd(sharp))(C),
        "sharp jacrev(jacfwd)": lambda: F.jacrev(F.jacfwd(sharp))(C),
        "sharp jacrev(jacrev)": lambda: F.jacrev(F.jacrev(sharp))(C),
        "value jacfwd(hessian)": lambda: F.jacfwd(F.hessian(value))(C),
        "value jacrev(hessian)": lambda: F.jacrev(F.hessian(value))(C),
        "value jacfwd^3": lambda: F.jacfwd(F.jacfwd(F.jacfwd(value)))(C),
        "value jacrev^3": lambda: F.jacrev(F.jacrev(F.jacrev(value)))(C),
        "raw soft_dtw_hvp backward in C": raw_op,
    }


_NESTED_FORWARD = "forward mode over forward mode .* is not supported"


@pytest.mark.parametrize("name", list(_third_derivatives()))
def test_third_derivatives_raise(name):
    # A third derivative of soft-DTW has no kernel: every route to one raises instead of returning the
    # partial (silently wrong) derivative that the cached first derivatives would give. Routes through
    # forward over forward raise earlier, for any op (diffcomb._autodiff).
    nested = {"alignment jacfwd(jacfwd)", "sharp jacfwd(jacfwd)", "value jacfwd(hessian)", "value jacfwd^3"}
    match = _NESTED_FORWARD if name in nested else "third derivatives of soft-DTW are not implemented"
    with pytest.raises(RuntimeError, match=match):
        _third_derivatives()[name]()


def test_second_derivatives_agree_across_compositions():
    C, _ = _data(4)

    def value(c):
        return diffcomb.soft_dtw_from_cost(c, GAMMA, bandwidth=3).sum()

    reference = F.hessian(value)(C)
    for compose in (lambda f: F.jacrev(F.jacrev(f)), lambda f: F.jacrev(F.jacfwd(f))):
        assert_close(compose(value)(C), reference, rtol=1e-10, atol=1e-12)
    # Forward over forward would miss the inner jvp formula's own derivative (a zero Hessian, silently,
    # in PyTorch's autograd.Function): it raises instead.
    with pytest.raises(RuntimeError, match="diffcomb.soft_dtw_cost: " + _NESTED_FORWARD):
        F.jacfwd(F.jacfwd(value))(C)
    x = C[..., :2].contiguous()
    with pytest.raises(RuntimeError, match="diffcomb.soft_dtw_series: " + _NESTED_FORWARD):
        F.jvp(lambda a: F.jvp(lambda b: diffcomb.soft_dtw(b, x, GAMMA), (a,), (x,))[1], (x,), (x,))


def test_vmap_over_lengths_equals_the_loop():
    gen = torch.Generator().manual_seed(5)
    C = torch.rand(3, 2, 5, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(3, 2, 5, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 2, 4, 2, generator=gen, dtype=torch.float64)
    L = torch.tensor([[5, 3], [4, 4], [2, 5]])
    cost = lambda c, lx: diffcomb.soft_dtw_from_cost(c, GAMMA, bandwidth=2, x_lengths=lx)  # noqa: E731
    series = lambda a, b, lx: diffcomb.soft_dtw_divergence(a, b, GAMMA, x_lengths=lx)  # noqa: E731
    mean = lambda lx: diffcomb.mean_cost_from_cost(C[0], x_lengths=lx)  # noqa: E731
    gradient = F.grad(lambda a, b, lx: series(a, b, lx).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f, args in ((cost, (C, L)), (series, (x, y, L)), (mean, (L,)), (gradient, (x, y, L))):
            looped = torch.stack([f(*(a[i] for a in args)) for i in range(3)])
            assert_close(F.vmap(f)(*args), looped, rtol=1e-12, atol=1e-12)
        # A vmapped dimension that is not the first.
        assert_close(F.vmap(cost, in_dims=(2, 0))(C.movedim(0, 2), L), F.vmap(cost)(C, L), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"x_lengths must lie in \[1, 5\], got values in \[6, 9\]"):
        F.vmap(cost)(C, L + 4)


def test_calls_without_a_derivative_skip_the_autograd_function():
    C, Z = _data(6)
    direct = _ops._soft_dtw_impl(C, None, None, GAMMA, 2, True)
    for out in (_ops.SOFT_DTW(C, None, None, GAMMA, 2, True), _ops.SOFT_DTW.function.apply(C, None, None, GAMMA,
                                                                                          2, True)):
        assert_close(out[0], direct[0], rtol=0, atol=0)
        assert_close(out[1], direct[1], rtol=0, atol=0)
    with torch.inference_mode():
        assert_close(diffcomb.soft_dtw_from_cost(C, GAMMA, bandwidth=2), direct[0], rtol=0, atol=0)
    c = C.clone().requires_grad_()
    assert diffcomb.soft_dtw_from_cost(c, GAMMA).grad_fn is not None
    with torch.no_grad():
        assert diffcomb.soft_dtw_from_cost(c, GAMMA).grad_fn is None
    with forward_ad.dual_level():  # a dual input must reach the formula even without requires_grad
        out = diffcomb.soft_dtw_from_cost(forward_ad.make_dual(C, Z), GAMMA)
        assert_close(forward_ad.unpack_dual(out).tangent, (diffcomb.soft_dtw_alignment(C, GAMMA) * Z).sum((1, 2)),
                     rtol=1e-12, atol=1e-12)


def test_guard_op_opcheck():
    C, _ = _data(7)
    torch.library.opcheck(torch.ops.diffcomb.soft_dtw_third_derivative.default, (C,))
    assert_close(_ops.THIRD(C), torch.zeros(2, dtype=torch.float64), rtol=0, atol=0)
