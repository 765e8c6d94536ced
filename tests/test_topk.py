"""Tests of diffcomb.topk: sparse_soft_topk (the p-norm regularized top-k mask), topk_routing and
the modules SparseSoftTopK / TopKRouter, following STYLE.md rule 15: values and VJPs against the
float64 numpy reference tests/reference/topk.py (itself checked against an isotonic PAV formulation
and a generic constrained solver) over device x dtype x shape x p, gradcheck, opcheck,
torch.compile, properties, edge cases, the chunked (GPU) PAV run on the CPU, errors, and the
CPU-vs-CUDA agreement (marked cuda).
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import diffcomb
import diffcomb.topk
from diffcomb.topk import _CUBIC, _POWER, _QUADRATIC
from tests.conftest import DEVICES, DTYPES, assert_close, randn, requires_cuda, rowwise, separated
from tests.reference import topk as ref

# p = 2 (mean), 4/3 (cubic), general p with an integer exponent (1.5: r = 2) and without one.
PS = [pytest.param(2.0, id="p2"), pytest.param(4.0 / 3.0, id="p4/3"), pytest.param(1.5, id="p1.5"),
      pytest.param(1.7, id="p1.7")]

SHAPES = [
    pytest.param((1,), -1, id="n1"),
    pytest.param((2,), -1, id="n2"),
    pytest.param((9,), -1, id="n9"),
    pytest.param((3, 8), -1, id="3x8"),
    pytest.param((2, 3, 6), -1, id="2x3x6"),
    pytest.param((2, 7, 3), 1, id="2x7x3-dim1"),
    pytest.param((6, 4), 0, id="6x4-dim0"),
]


def sample(gen, shape, dim, **kw):
    """Well-separated float64 values of `shape`, separated along `dim` (no ties, so no entry sits
    on the edge of the active set by accident)."""
    moved = list(shape)
    n = moved.pop(dim)
    return separated(gen, *moved, n, **kw).movedim(-1, dim)


def ks(n):
    return sorted({0, min(1, n), n // 2, max(n - 1, 0), n})


# ------------------------------------------------------------------------------------------------
# The reference itself: three independent formulations agree.


@pytest.mark.parametrize("p", PS)
def test_reference_formulations_agree(p, gen):
    for trial in range(12):
        n = 2 + trial % 6
        x = (torch.randn(n, generator=gen, dtype=torch.float64) * 2).numpy()
        k = 1 + trial % (n - 1)
        eps = [0.3, 1.0, 3.0][trial % 3]
        m = ref.sparse_topk_mask(x, k, eps, p)
        np.testing.assert_allclose(ref.sparse_topk_mask_pav(x, k, eps, p), m, atol=1e-12)
        np.testing.assert_allclose(ref.sparse_topk_mask_slsqp(x, k, eps, p), m, atol=2e-6)


@pytest.mark.parametrize("p", PS)
def test_reference_vjp_is_the_finite_difference_jacobian(p, gen):
    for trial in range(6):
        n, k, eps = 7, 1 + trial % 5, [0.5, 2.0][trial % 2]
        x = separated(gen, n, min_gap=0.05).numpy()
        g = torch.randn(n, generator=gen, dtype=torch.float64).numpy()
        h = 1e-6
        jac = np.stack([(ref.sparse_topk_mask(x + h * e, k, eps, p) - ref.sparse_topk_mask(x - h * e, k, eps, p))
                        / (2 * h) for e in np.eye(n)], axis=1)
        np.testing.assert_allclose(ref.sparse_topk_mask_vjp(x, g, k, eps, p), g @ jac, atol=1e-6)


def test_reference_p2_matches_spec_values():
    # SPEC.md 7.1: soft top-2 mask of [0.1, 2.0, -1.0, 1.5, 0.3] (p = 2 is soft_topk).
    x = [0.1, 2.0, -1.0, 1.5, 0.3]
    np.testing.assert_allclose(ref.sparse_topk_mask(x, 2, 0.1, 2.0), [0, 1, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(ref.sparse_topk_mask(x, 2, 2.0, 2.0), [0.066667, 1, 0, 0.766667, 0.166667], atol=1e-6)
    np.testing.assert_allclose(ref.sparse_topk_mask(x, 2, 5.0, 2.0), [0.304, 0.684, 0.084, 0.584, 0.344], atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Values and VJPs against the reference.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", SHAPES)
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("eps", [0.4, 3.0])
def test_matches_reference(device, dtype, shape, dim, p, eps, gen):
    x64 = sample(gen, shape, dim)
    n = shape[dim]
    g = randn(gen, *shape)
    for k in ks(n):
        x = x64.to(device=device, dtype=dtype).requires_grad_(True)
        out = diffcomb.sparse_soft_topk(x, k, dim=dim, regularization_strength=eps, p=p)
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        expected = rowwise(lambda r: ref.sparse_topk_mask(r, k, eps, p), x64, dim)
        assert_close(out, expected, dtype, msg=f"k={k}")
        (dx,) = torch.autograd.grad(out, x, g.to(device=device, dtype=dtype))
        expected_dx = rowwise(lambda r, gr: ref.sparse_topk_mask_vjp(r, gr, k, eps, p), x64, dim, g)
        assert_close(dx, expected_dx, dtype, msg=f"grad k={k}")


@pytest.mark.parametrize("p", PS)
def test_long_rows_match_reference(p, gen):
    # n = 600: a partly selected block of hundreds of entries (the O(|B|) pooling of general p).
    x64 = torch.randn(3, 600, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 600, generator=gen, dtype=torch.float64)
    for k, eps in ((60, 1.0), (300, 0.2)):
        x = x64.clone().requires_grad_(True)
        out = diffcomb.sparse_soft_topk(x, k, regularization_strength=eps, p=p)
        assert_close(out, rowwise(lambda r: ref.sparse_topk_mask(r, k, eps, p), x64, -1), rtol=1e-9, atol=1e-10)
        (dx,) = torch.autograd.grad(out, x, g)
        expected = rowwise(lambda r, gr: ref.sparse_topk_mask_vjp(r, gr, k, eps, p), x64, -1, g)
        assert_close(dx, expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", SHAPES)
def test_p2_is_soft_topk(dtype, shape, dim, gen):
    # The forward is the same arithmetic as diffcomb.soft_topk: equal to the last bit.
    x = randn(gen, *shape, dtype=dtype, scale=2.0)
    g = randn(gen, *shape, dtype=dtype)
    for k in ks(shape[dim]):
        for eps in (0.1, 1.0, 7.0):
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            a = diffcomb.sparse_soft_topk(xa, k, dim=dim, regularization_strength=eps, p=2)
            b = diffcomb.soft_topk(xb, k, dim=dim, regularization_strength=eps)
            assert torch.equal(a, b)
            (ga,), (gb,) = torch.autograd.grad(a, xa, g), torch.autograd.grad(b, xb, g)
            assert_close(ga, gb, dtype)


def test_spec_values_p2_and_sparsity():
    x = torch.tensor([0.1, 2.0, -1.0, 1.5, 0.3], dtype=torch.float64)
    top = lambda eps, p: diffcomb.sparse_soft_topk(x, 2, regularization_strength=eps, p=p)
    assert_close(top(2.0, 2.0), [0.066667, 1, 0, 0.766667, 0.166667], atol=1e-6)
    # Values of the numpy reference (capped-simplex threshold), proposed for SPEC.md section 7.
    assert_close(top(2.0, 4.0 / 3.0), [0.020772, 1, 0, 0.926541, 0.052687], atol=1e-6)
    assert_close(top(5.0, 4.0 / 3.0), [0.194993, 0.88441, 0.04661, 0.635795, 0.238192], atol=1e-6)
    assert_close(top(2.0, 1.5), [0.048822, 1, 0, 0.848164, 0.103014], atol=1e-6)
    assert_close(top(5.0, 1.5), [0.24953, 0.773573, 0.078137, 0.607667, 0.291093], atol=1e-6)
    for p in (2.0, 4.0 / 3.0, 1.5):
        assert torch.equal(top(0.1, p), torch.tensor([0.0, 1, 0, 1, 0], dtype=torch.float64))
    for p in (2.0, 4.0 / 3.0, 1.5):
        m = top(2.0, p)
        assert m[2] == 0.0 and m[1] == 1.0  # exact zero and exact one
    # p = 4/3 puts less mass on the runners-up than p = 2 at the same strength.
    assert top(2.0, 4.0 / 3.0)[3] > top(2.0, 2.0)[3]


# ------------------------------------------------------------------------------------------------
# The threshold solve (any p) agrees with the PAV block solves (p = 2, 4/3); the chunked (GPU) PAV
# equals the sequential one.


def native_topk(x, k, scale, method, exponent, chunk=0):
    out, _, starts, weights, deriv = diffcomb.topk.sparse_topk_rows(x, k, scale, method, exponent, chunk=chunk)
    return out, starts, weights, deriv


@pytest.mark.parametrize("dtype", DTYPES)
def test_general_solver_matches_closed_forms(dtype, gen):
    x = randn(gen, 8, 300, dtype=dtype)
    for k, eps in ((30, 1.0), (150, 0.3), (5, 4.0)):
        for method, exponent in ((_QUADRATIC, 1.0), (_CUBIC, 3.0)):
            closed, starts_c, weights_c, deriv_c = native_topk(x, k, 1 / eps, method, exponent)
            general, starts_g, weights_g, deriv_g = native_topk(x, k, 1 / eps, _POWER, exponent)
            assert torch.equal(starts_c, starts_g)
            assert_close(general, closed, dtype, rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=1e-12)
            assert_close(weights_g, weights_c, dtype, rtol=1e-10 if dtype == torch.float64 else 1e-5, atol=1e-12)
            assert_close(deriv_g, deriv_c, dtype, rtol=1e-10 if dtype == torch.float64 else 1e-5, atol=1e-12)


@pytest.mark.parametrize("method, exponent", [(_QUADRATIC, 1.0), (_CUBIC, 3.0)])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_pav_matches_sequential(method, exponent, chunk, gen):
    x = randn(gen, 4, 1500)
    x[1, 100:400] = 0.25  # ties pooled across chunk boundaries (exact in z = x / eps: equal block means)
    x[2, 7] = float("nan")
    for k, eps in ((150, 1.0), (700, 0.0625), (1, 8.0)):
        seq = native_topk(x, k, 1 / eps, method, exponent)
        chunked = native_topk(x, k, 1 / eps, method, exponent, chunk)
        assert torch.equal(seq[1], chunked[1])  # the same blocks
        for a, b in zip(seq[::2], chunked[::2]):
            assert_close(b, a, rtol=1e-12, atol=1e-13)
        assert_close(seq[2], chunked[2], rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [2.0, 4.0 / 3.0, 1.5, 1.25, 1.8])
@pytest.mark.parametrize("magnitude", [False, True])
def test_gradcheck(device, p, magnitude, gen):
    x = sample(gen, (3, 7), -1).to(device).requires_grad_(True)
    for k, eps in ((2, 0.7), (4, 3.0)):
        assert torch.autograd.gradcheck(
            lambda t: diffcomb.sparse_soft_topk(t, k, regularization_strength=eps, p=p, magnitude=magnitude), (x,))
    xd = sample(gen, (5, 3), 0).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: diffcomb.sparse_soft_topk(t, 2, dim=0, p=p, magnitude=magnitude), (xd,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method, exponent", [(_QUADRATIC, 1.0), (_CUBIC, 3.0), (_POWER, 2.0), (_POWER, 1.0 / 0.7)])
def test_opcheck(device, dtype, method, exponent, gen):
    x = randn(gen, 4, 9, dtype=dtype, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.diffcomb.sparse_topk.default, (x, 3, 1.3, method, exponent))


COMPILED = {
    "p4/3": lambda x: diffcomb.sparse_soft_topk(x, 3, regularization_strength=0.8),
    "p2-dim0": lambda x: diffcomb.sparse_soft_topk(x.t(), 2, dim=0, p=2.0).t(),
    "p1.7-magnitude": lambda x: diffcomb.sparse_soft_topk(x, 2, p=1.7, magnitude=True),
    "routing": lambda x: diffcomb.topk_routing(x, 2, 0.5).combine_weights,
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(COMPILED))
def test_compile_fullgraph(device, name, gen):
    fn = COMPILED[name]
    x = randn(gen, 5, 8, device=device)
    g = randn(gen, 5, 8, device=device)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_e, out_c = fn(xe), compiled(xc)
    assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
    (ge,), (gc,) = torch.autograd.grad(out_e, xe, g), torch.autograd.grad(out_c, xc, g)
    assert_close(gc, ge, rtol=1e-12, atol=1e-12)


def test_compile_dynamic_shapes(gen):
    fn = lambda x: diffcomb.sparse_soft_topk(x, 2, regularization_strength=0.5, p=1.5)
    compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for shape in ((3, 6), (4, 9), (2, 5)):
        x = randn(gen, *shape)
        assert_close(compiled(x), fn(x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("p", PS)
def test_properties(p, gen):
    x = torch.randn(20, 40, generator=gen, dtype=torch.float64) * 3
    for k, eps in ((1, 0.5), (10, 1.0), (25, 4.0), (39, 2.0)):
        m = diffcomb.sparse_soft_topk(x, k, regularization_strength=eps, p=p)
        assert bool(((m >= 0) & (m <= 1)).all())
        assert_close(m.sum(-1), torch.full((20,), float(k)), rtol=0, atol=1e-12)
        # order preserving: a larger score never gets a smaller mask entry
        order = x.argsort(-1)
        assert bool((m.gather(-1, order).diff(dim=-1) >= -1e-15).all())
        # shift invariance, scale covariance, permutation equivariance
        assert_close(diffcomb.sparse_soft_topk(x + 3.5, k, regularization_strength=eps, p=p), m, atol=1e-12)
        assert_close(diffcomb.sparse_soft_topk(2 * x, k, regularization_strength=2 * eps, p=p), m, atol=1e-12)
        perm = torch.randperm(40, generator=gen)
        assert_close(diffcomb.sparse_soft_topk(x[:, perm], k, regularization_strength=eps, p=p), m[:, perm],
                     atol=1e-12)


@pytest.mark.parametrize("p", PS)
def test_exact_zeros_and_hard_limit(p, gen):
    x = separated(gen, 6, 30, min_gap=0.01)
    k = 7
    hard = torch.from_numpy(np.stack([ref.hard_topk_mask(r, k) for r in x.numpy()]))
    # exact (not approximately) the hard mask once eps is below the gap at the k-th place
    assert torch.equal(diffcomb.sparse_soft_topk(x, k, regularization_strength=0.009, p=p), hard)
    m = diffcomb.sparse_soft_topk(x, k, regularization_strength=1.0, p=p)
    zeros = m == 0
    assert bool(zeros.any(-1).all())  # sparse: exact zeros in every row
    assert bool((zeros | (hard == 1) | (m > 0)).all())
    assert bool((m[hard == 0.0] < 1).all())
    # eps -> infinity: k / n everywhere
    assert_close(diffcomb.sparse_soft_topk(x, k, regularization_strength=1e9, p=p), torch.full_like(x, k / 30),
                 atol=1e-6)


def test_smaller_p_is_smoother_at_the_support_edge():
    # Entry 2 of x(s) = (3, 1, -1 + s, s) enters the top-2 support at some s; its derivative jumps
    # there for p = 2 and is continuous (zero on both sides) for p = 4/3.
    def mask_and_grad(s, p):
        x = torch.tensor([3.0, 1.0, -1.0 + s, s], dtype=torch.float64, requires_grad=True)
        m = diffcomb.sparse_soft_topk(x, 2, regularization_strength=1.0, p=p)
        (g,) = torch.autograd.grad(m[2], x)
        return float(m[2].detach()), float(g[2])

    for p, continuous in ((2.0, False), (4.0 / 3.0, True)):
        s = np.linspace(0.0, 4.0, 4001)
        values = [mask_and_grad(v, p) for v in s]
        first = next(i for i, (m, _) in enumerate(values) if m > 0)
        jump = abs(values[first][1] - values[first - 1][1])
        assert (jump < 1e-2) == continuous, (p, jump)


@pytest.mark.parametrize("p", PS)
def test_magnitude(p, gen):
    x = randn(gen, 4, 12, scale=2.0)
    x[0, 3] = 0.0
    g = randn(gen, 4, 12)
    xm, xa = x.clone().requires_grad_(True), x.abs().requires_grad_(True)
    m = diffcomb.sparse_soft_topk(xm, 5, regularization_strength=0.6, p=p, magnitude=True)
    expected = diffcomb.sparse_soft_topk(xa, 5, regularization_strength=0.6, p=p)
    assert torch.equal(m, expected)
    (gm,), (ga,) = torch.autograd.grad(m, xm, g), torch.autograd.grad(expected, xa, g)
    assert_close(gm, ga * x.sign(), rtol=1e-12, atol=1e-15)
    # hard limit: x * mask keeps x on the k largest |x| and is 0 elsewhere
    xs = separated(gen, 3, 10, min_gap=0.05) * torch.tensor([1.0, -1.0]).repeat(5)
    m = diffcomb.sparse_soft_topk(xs, 4, regularization_strength=1e-3, p=p, magnitude=True)
    keep = torch.from_numpy(np.stack([ref.hard_topk_mask(r, 4) for r in xs.abs().numpy()]))
    assert torch.equal(xs * m, xs * keep)


# ------------------------------------------------------------------------------------------------
# Edge cases.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", PS)
def test_k_zero_n_and_pure_ties_have_zero_gradient(device, p, gen):
    x = randn(gen, 3, 8, device=device, requires_grad=True)
    for k, fill in ((0, 0.0), (8, 1.0)):
        m = diffcomb.sparse_soft_topk(x, k, p=p)
        assert torch.equal(m, torch.full_like(m, fill))
        (dx,) = torch.autograd.grad(m, x, torch.randn_like(m))
        assert torch.equal(dx, torch.zeros_like(dx))
    # Ties well inside the selection or well outside it: the mask is constant around them (0 or 1),
    # so the gradient is exactly 0 there (pooled tie blocks must not spread gradient).
    t = torch.tensor([[5.0, 5.0, 5.0, 1.0, 0.9, -3.0, -3.0, -3.0]], dtype=torch.float64, device=device,
                     requires_grad=True)
    m = diffcomb.sparse_soft_topk(t, 4, regularization_strength=0.5, p=p)
    assert_close(m, torch.from_numpy(ref.sparse_topk_mask(t.detach().cpu()[0].numpy(), 4, 0.5, p))[None])
    assert torch.equal(m[0, :3], torch.ones(3, dtype=torch.float64, device=device))
    assert torch.equal(m[0, 5:], torch.zeros(3, dtype=torch.float64, device=device))
    (dx,) = torch.autograd.grad(m, t, torch.arange(8.0, dtype=torch.float64, device=device)[None])
    assert torch.equal(dx[0, :3], torch.zeros(3, dtype=torch.float64, device=device))
    assert torch.equal(dx[0, 5:], torch.zeros(3, dtype=torch.float64, device=device))
    assert_close(dx, torch.from_numpy(ref.sparse_topk_mask_vjp(t.detach().cpu()[0].numpy(), np.arange(8.0), 4, 0.5,
                                                               p))[None])


@pytest.mark.parametrize("p", PS)
def test_ties_at_the_boundary_share_the_mass(p):
    x = torch.tensor([3.0, 1.0, 1.0, -2.0], dtype=torch.float64)
    m = diffcomb.sparse_soft_topk(x, 2, regularization_strength=1e-3, p=p)
    assert_close(m, [1.0, 0.5, 0.5, 0.0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_and_inf_rows(device, gen):
    x = randn(gen, 4, 6, device=device)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    x = x.requires_grad_(True)
    for p in (2.0, 4.0 / 3.0, 1.5):
        m = diffcomb.sparse_soft_topk(x, 2, p=p)
        (dx,) = torch.autograd.grad(m, x, torch.ones_like(m))
        assert bool(m[1:3].isnan().all()) and bool(dx[1:3].isnan().all())
        assert bool(m[[0, 3]].isfinite().all()) and bool(dx[[0, 3]].isfinite().all())
        assert_close(m[[0, 3]], diffcomb.sparse_soft_topk(x.detach()[[0, 3]], 2, p=p))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    for shape, dim, k in (((0, 5), -1, 2), ((3, 0), -1, 0), ((2, 0, 4), 1, 0), ((0,), 0, 0)):
        x = torch.zeros(shape, dtype=torch.float64, device=device, requires_grad=True)
        m = diffcomb.sparse_soft_topk(x, k, dim=dim)
        assert m.shape == x.shape
        (dx,) = torch.autograd.grad(m.sum(), x, allow_unused=True) if m.numel() else (torch.zeros_like(x),)
        assert dx.shape == x.shape


def test_n1_and_non_contiguous(gen):
    one = torch.tensor([[0.3], [-2.0]], dtype=torch.float64)
    assert torch.equal(diffcomb.sparse_soft_topk(one, 1), torch.ones_like(one))
    assert torch.equal(diffcomb.sparse_soft_topk(one, 0), torch.zeros_like(one))
    x = randn(gen, 8, 12)[::2, ::2]
    assert not x.is_contiguous()
    assert_close(diffcomb.sparse_soft_topk(x, 3, p=1.5), diffcomb.sparse_soft_topk(x.contiguous(), 3, p=1.5),
                 rtol=0, atol=0)


def test_integer_and_half_inputs(gen):
    xi = torch.tensor([[4, 1, 3, 0, 2]])
    m = diffcomb.sparse_soft_topk(xi, 2, regularization_strength=2.0, p=2)
    assert m.dtype == torch.get_default_dtype()
    assert_close(m, diffcomb.sparse_soft_topk(xi.to(torch.get_default_dtype()), 2, regularization_strength=2.0, p=2))
    x = randn(gen, 3, 10)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        m = diffcomb.sparse_soft_topk(xh, 3)
        assert m.dtype == dtype
        expected = diffcomb.sparse_soft_topk(xh.float(), 3)
        assert_close(m.float(), expected, rtol=1e-2, atol=1e-2)


def test_errors():
    x = torch.randn(3, 5)
    f = diffcomb.sparse_soft_topk
    with pytest.raises(ValueError, match=r"sparse_soft_topk: k must be an int in \[0, 5\], got 6"):
        f(x, 6)
    with pytest.raises(ValueError, match=r"k must be an int in \[0, 5\], got -1"):
        f(x, -1)
    with pytest.raises(TypeError, match="k must be an int, got bool"):
        f(x, True)
    with pytest.raises(ValueError, match=r"p must be in \(1.0, 2.0\], got 1.0"):
        f(x, 2, p=1.0)
    with pytest.raises(ValueError, match=r"p must be in \(1.0, 2.0\]"):
        f(x, 2, p=2.5)
    with pytest.raises(TypeError, match="p must be a Python float"):
        f(x, 2, p="4/3")
    with pytest.raises(TypeError, match="p must be a Python float"):
        f(x, 2, p=torch.tensor(1.5))
    with pytest.raises(ValueError, match="regularization_strength must be positive"):
        f(x, 2, regularization_strength=0.0)
    with pytest.raises(TypeError, match="magnitude must be a bool"):
        f(x, 2, magnitude="yes")
    with pytest.raises(IndexError, match="dim=2 is out of range"):
        f(x, 2, dim=2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        f([1.0, 2.0], 1)
    with pytest.raises(TypeError, match="must be a real tensor"):
        f(torch.randn(3, dtype=torch.complex64), 1)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        f(torch.tensor(1.0), 0)


# ------------------------------------------------------------------------------------------------
# Router and modules.


def test_topk_routing(gen):
    logits = randn(gen, 6, 5, 8, requires_grad=True)
    r = diffcomb.topk_routing(logits, 2, regularization_strength=0.5)
    assert_close(r.mask, diffcomb.sparse_soft_topk(logits, 2, regularization_strength=0.5), rtol=0, atol=0)
    assert_close(r.gates, torch.softmax(logits, -1), rtol=0, atol=0)
    assert_close(r.combine_weights, r.mask * r.gates, rtol=0, atol=0)
    assert bool(((r.combine_weights == 0) == (r.mask == 0)).all())
    selected = (r.mask > 0).double().reshape(-1, 8)
    assert_close(r.load, selected.mean(0), rtol=0, atol=0)
    assert_close(r.experts_per_token, selected.sum(-1).mean(), rtol=0, atol=0)
    assert float(r.experts_per_token) >= 2
    assert_close(r.importance.sum(), torch.tensor(1.0), atol=1e-12)
    expected_balance = 8 * ((r.mask.reshape(-1, 8).mean(0) / 2) * r.gates.reshape(-1, 8).mean(0)).sum()
    assert_close(r.balance_loss, expected_balance, atol=1e-12)
    # uniform logits: a perfectly balanced router has balance loss 1
    uniform = diffcomb.topk_routing(torch.zeros(10, 4, dtype=torch.float64), 2)
    assert_close(uniform.balance_loss, torch.tensor(1.0), atol=1e-12)
    # normalize: weights sum to 1 per token
    rn = diffcomb.topk_routing(logits, 3, normalize=True)
    assert_close(rn.combine_weights.sum(-1), torch.ones(6, 5), atol=1e-12)
    # the selection is trained: the balance loss has a gradient through the mask
    (g,) = torch.autograd.grad(r.balance_loss + r.combine_weights.sum(), logits)
    assert bool(g.isfinite().all()) and float(g.abs().sum()) > 0
    assert torch.autograd.gradcheck(lambda t: diffcomb.topk_routing(t, 2, 0.7).combine_weights,
                                    (sample(gen, (3, 6), -1).requires_grad_(True),))
    with pytest.raises(ValueError, match=r"topk_routing: k must be an int in \[1, 8\], got 0"):
        diffcomb.topk_routing(logits, 0)
    with pytest.raises(TypeError, match="normalize must be a bool"):
        diffcomb.topk_routing(logits, 2, normalize=1)


def test_router_module_trains_a_moe_layer(gen):
    torch.manual_seed(0)
    router = diffcomb.TopKRouter(6, num_experts=4, k=2, regularization_strength=0.5).double()
    experts = torch.nn.ModuleList(torch.nn.Linear(6, 1) for _ in range(4)).double()
    assert "num_experts=4, k=2" in repr(router)
    x = torch.randn(64, 6, generator=gen, dtype=torch.float64)
    y = torch.where(x[:, :1] > 0, x[:, 1:2], -x[:, 2:3])  # two regimes
    params = list(router.parameters()) + list(experts.parameters())
    opt = torch.optim.Adam(params, lr=0.05)

    def loss_fn():
        r = router(x)
        out = sum(r.combine_weights[:, e, None] * experts[e](x) for e in range(4))
        return ((out - y) ** 2).mean() + 0.01 * r.balance_loss

    with torch.no_grad():
        first = float(loss_fn())
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        assert router.proj.weight.grad is not None and float(router.proj.weight.grad.abs().sum()) > 0
        opt.step()
    with torch.no_grad():
        assert float(loss_fn()) < 0.5 * first


def test_modules(gen):
    m = diffcomb.SparseSoftTopK(3, dim=0, regularization_strength=0.5, p=1.5, magnitude=True)
    x = randn(gen, 7, 2)
    assert torch.equal(m(x), diffcomb.sparse_soft_topk(x, 3, 0, 0.5, 1.5, True))
    assert "k=3, dim=0" in repr(m) and "p=1.5" in repr(m)
    with pytest.raises(ValueError, match=r"SparseSoftTopK: p must be in \(1.0, 2.0\]"):
        diffcomb.SparseSoftTopK(2, p=3.0)
    with pytest.raises(ValueError, match=r"TopKRouter: k must be an int in \[1, 4\], got 5"):
        diffcomb.TopKRouter(6, 4, k=5)
    with pytest.raises(ValueError, match="TopKRouter: in_features must be an int >= 1, got 0"):
        diffcomb.TopKRouter(0, 4, k=1)


def test_docstring_examples():
    result = doctest.testmod(diffcomb.topk, extraglobs={"torch": torch, "diffcomb": diffcomb},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------------
# CPU vs CUDA (skipped without a GPU).


@requires_cuda[0]
@requires_cuda[1]
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("rows, n", [(64, 20), (8, 3000)])  # one thread per row / the chunked kernel
def test_cuda_matches_cpu(dtype, p, rows, n, gen):
    x = randn(gen, rows, n, dtype=dtype)
    x[1, 3] = float("nan")
    g = randn(gen, rows, n, dtype=dtype)
    results = []
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_(True)
        m = diffcomb.sparse_soft_topk(xd, n // 10, regularization_strength=0.7, p=p)
        (dx,) = torch.autograd.grad(m, xd, g.to(device))
        results.append((m.cpu(), dx.cpu()))
    assert_close(results[1][0], results[0][0], dtype)
    assert_close(results[1][1], results[0][1], dtype)

