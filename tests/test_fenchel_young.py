"""Tests of diffcomb.fenchel_young_loss over the permutahedron (l2 / kl soft ranks) and the Birkhoff
polytope (entropic Sinkhorn).

Values against the definition Omega*(theta) + Omega(y) - <theta, y> computed by the float64 numpy
references (tests/reference/ranking.py; for the Birkhoff polytope also against the dual OT value),
the conjugate's defining inequality, gradients (prediction - target) against finite differences
(gradcheck) and against the reference, exact second derivatives (gradgradcheck; the Hessian is the
prediction's Jacobian), opcheck of the two custom ops, torch.compile(fullgraph=True), reductions,
dim, modules, targets outside the polytope, NaN rows, empty inputs, convergence warnings, errors.
"""

from __future__ import annotations

import doctest
import math
import warnings

import numpy as np
import pytest
import torch

import diffcomb
import diffcomb.fenchel_young
from tests.conftest import DEVICES, DTYPES, REGULARIZATIONS, assert_close, rows_of
from tests.reference import ranking as ref

SHAPES = [
    pytest.param((1, 6), -1, id="1x6"),
    pytest.param((3, 9), -1, id="3x9"),
    pytest.param((2, 3, 5), -1, id="2x3x5"),
    pytest.param((2, 7, 3), 1, id="2x7x3-dim1"),
    pytest.param((8, 4), 0, id="8x4-dim0"),
]
REDUCTIONS = ["mean", "sum", "none"]


def ranks_target(gen, shape, dim):
    """Random permutations of 1..n along dim (float64)."""
    moved = list(shape)
    n = moved.pop(dim)
    rows = torch.stack([torch.randperm(n, generator=gen) + 1.0 for _ in range(math.prod(moved))])
    return rows.reshape(*moved, n).double().movedim(-1, dim)


def mixture_target(gen, n, parts=3):
    """A random point of P(rho): a convex combination of permutations of rho."""
    w = torch.rand(parts, generator=gen, dtype=torch.float64)
    w = w / w.sum()
    return sum(w[i] * (torch.randperm(n, generator=gen) + 1.0).double() for i in range(parts))


def permutation_matrices(gen, batch, n):
    return torch.stack([torch.eye(n, dtype=torch.float64)[torch.randperm(n, generator=gen)] for _ in range(batch)])


def fy(theta, target, **kw):
    return diffcomb.fenchel_young_loss(theta, target, **kw)


# ------------------------------------------------------------------------------------------------
# Permutahedron


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reg", REGULARIZATIONS)
@pytest.mark.parametrize("shape,dim", SHAPES)
def test_permutahedron_value_and_gradient(shape, dim, reg, dtype, device, gen):
    theta = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    y = ranks_target(gen, shape, dim)
    eps = 0.7
    t = theta.to(device, dtype).clone().requires_grad_()
    loss = fy(t, y.to(device, dtype), regularization=reg, regularization_strength=eps, reduction="none", dim=dim)
    (grad,) = torch.autograd.grad(loss.sum(), t)
    th_rows, y_rows = rows_of(theta.to(dtype), dim), rows_of(y, dim)
    want = [ref.fy_permutahedron(a, b, eps, reg) for a, b in zip(th_rows, y_rows)]
    lead = theta.movedim(dim, -1).shape[:-1]
    assert loss.shape == lead and loss.dtype == dtype
    assert_close(loss, torch.tensor([w[0] for w in want], dtype=torch.float64).reshape(lead))
    want_grad = torch.from_numpy(np.stack([w[1] for w in want])).reshape(theta.movedim(dim, -1).shape)
    assert_close(grad, want_grad.movedim(-1, dim))


@pytest.mark.parametrize("reg", REGULARIZATIONS)
@pytest.mark.parametrize("eps", [0.05, 1.0, 20.0])
def test_permutahedron_mixture_targets_and_conjugate_inequality(reg, eps, gen):
    # Targets anywhere in P(rho). The loss is >= 0 for every target (the defining inequality of the
    # conjugate, Omega*(theta) >= <theta, mu> - Omega(mu)) and equals the reference.
    n = 7
    theta = torch.randn(5, n, generator=gen, dtype=torch.float64) * 3
    y = torch.stack([mixture_target(gen, n) for _ in range(5)])
    loss = fy(theta, y, regularization=reg, regularization_strength=eps, reduction="none")
    want = torch.tensor([ref.fy_permutahedron(a, b, eps, reg)[0] for a, b in zip(theta.numpy(), y.numpy())],
                        dtype=torch.float64)
    assert_close(loss, want, rtol=1e-9, atol=1e-10)
    assert bool((loss >= 0).all())


@pytest.mark.parametrize("reg", REGULARIZATIONS)
def test_permutahedron_zero_at_prediction(reg, gen):
    theta = torch.randn(4, 9, generator=gen, dtype=torch.float64) * 5
    pred = diffcomb.soft_rank(theta, regularization_strength=0.8, regularization=reg)
    loss = fy(theta, pred, regularization=reg, regularization_strength=0.8, reduction="none")
    assert_close(loss, torch.zeros(4), rtol=0, atol=1e-12)
    assert bool((loss >= 0).all())


def test_permutahedron_no_cancellation(gen):
    # Large scores, correct target: the non-negative form gives exactly 0, not a difference of
    # two huge numbers (float32 included).
    theta = torch.sort(torch.randn(3, 50, generator=gen), -1).values * 1e4 + 1e5
    y = torch.arange(1.0, 51.0).expand(3, 50)
    for dtype in (torch.float32, torch.float64):
        loss = fy(theta.to(dtype), y.to(dtype), regularization_strength=1e-3, reduction="none")
        assert bool((loss == 0).all())


@pytest.mark.parametrize("reg", REGULARIZATIONS)
def test_permutahedron_gradcheck_and_gradgradcheck(reg, gen):
    theta = (torch.randn(2, 6, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    y = ranks_target(gen, (2, 6, 3), 1)

    def f(t):
        return fy(t, y, regularization=reg, regularization_strength=0.9, reduction="none", dim=1)

    assert torch.autograd.gradcheck(f, (theta,))
    assert torch.autograd.gradgradcheck(f, (theta,))


@pytest.mark.parametrize("reg", REGULARIZATIONS)
def test_permutahedron_hessian_is_soft_rank_jacobian(reg, gen):
    theta = torch.randn(8, generator=gen, dtype=torch.float64) * 2
    y = (torch.randperm(8, generator=gen) + 1.0).double()
    hess = torch.autograd.functional.hessian(
        lambda t: fy(t, y, regularization=reg, regularization_strength=0.6), theta)
    jac = torch.autograd.functional.jacobian(
        lambda t: diffcomb.soft_rank(t, regularization_strength=0.6, regularization=reg), theta)
    assert_close(hess, jac, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# Birkhoff polytope


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.3, 1.0])
@pytest.mark.parametrize("lead,n", [((1,), 3), ((4,), 5), ((2, 3), 4)])
def test_birkhoff_value_and_gradient(lead, n, eps, dtype, device, gen):
    theta = torch.randn(*lead, n, n, generator=gen, dtype=torch.float64)
    Y = permutation_matrices(gen, math.prod(lead), n).reshape(*lead, n, n)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    t = theta.to(device, dtype).clone().requires_grad_()
    loss = fy(t, Y.to(device, dtype), polytope="birkhoff", regularization_strength=eps, reduction="none", tol=tol)
    (grad,) = torch.autograd.grad(loss.sum(), t)
    want = [ref.fy_birkhoff(a, b, eps) for a, b in zip(theta.to(dtype).double().reshape(-1, n, n).numpy(),
                                                         Y.reshape(-1, n, n).numpy())]
    assert loss.shape == tuple(lead) and loss.dtype == dtype
    assert_close(loss, torch.tensor([w[0] for w in want], dtype=torch.float64).reshape(lead))
    # the dual form of the conjugate agrees with the primal one
    assert_close(torch.tensor([w[2] for w in want], dtype=torch.float64), torch.tensor([w[0] for w in want], dtype=torch.float64), rtol=1e-10, atol=1e-12)
    assert_close(grad, torch.from_numpy(np.stack([w[1] for w in want])).reshape(*lead, n, n))


def test_birkhoff_doubly_stochastic_targets(gen):
    # A convex combination of permutation matrices as target: the entropy of Y enters the loss.
    n = 4
    theta = torch.randn(3, n, n, generator=gen, dtype=torch.float64)
    Y = 0.6 * permutation_matrices(gen, 3, n) + 0.4 * permutation_matrices(gen, 3, n)
    loss = fy(theta, Y, polytope="birkhoff", regularization_strength=0.5, reduction="none", tol=1e-12)
    want = torch.tensor([ref.fy_birkhoff(a, b, 0.5)[0] for a, b in zip(theta.numpy(), Y.numpy())],
                        dtype=torch.float64)
    assert_close(loss, want, rtol=1e-10, atol=1e-12)
    assert bool((loss >= 0).all())


def test_birkhoff_zero_at_prediction(gen):
    theta = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64)
    P = 5 * diffcomb.sinkhorn(-theta, epsilon=0.7, tol=1e-13).plan
    loss = fy(theta, P, polytope="birkhoff", regularization_strength=0.7, reduction="none", tol=1e-13)
    assert_close(loss, torch.zeros(2), rtol=0, atol=1e-11)


def test_birkhoff_gradcheck_and_gradgradcheck(gen):
    theta = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64).requires_grad_()
    Y = permutation_matrices(gen, 2, 4)

    def f(t):
        return fy(t, Y, polytope="birkhoff", regularization_strength=0.5, reduction="none", tol=1e-13)

    assert torch.autograd.gradcheck(f, (theta,))
    assert torch.autograd.gradgradcheck(f, (theta,), atol=1e-6)


def test_birkhoff_small_strength_learns_the_permutation(gen):
    # theta maximized by the target permutation: P -> Y as eps -> 0, and the loss -> 0.
    n = 5
    Y = permutation_matrices(gen, 1, n)
    theta = 3 * Y + 0.1 * torch.randn(1, n, n, generator=gen, dtype=torch.float64)
    loss = fy(theta, Y, polytope="birkhoff", regularization_strength=0.05, tol=1e-10)
    assert 0 <= float(loss) < 1e-10


def test_birkhoff_warns_when_not_converged(gen):
    theta = torch.randn(2, 6, 6, generator=gen, dtype=torch.float64) * 10
    Y = permutation_matrices(gen, 2, 6)
    with pytest.warns(RuntimeWarning, match="fenchel_young_loss: Sinkhorn did not converge"):
        fy(theta, Y, polytope="birkhoff", regularization_strength=0.01, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fy(theta, Y, polytope="birkhoff", regularization_strength=1.0)


# ------------------------------------------------------------------------------------------------
# Both polytopes: targets outside the polytope, NaN rows, empty inputs, reductions, modules


def test_target_outside_polytope_gives_inf_and_nan_gradient(gen):
    theta = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = ranks_target(gen, (3, 5), -1)
    y[1] -= 1.0  # 0-based ranks: not in P(rho)
    loss = fy(theta, y, reduction="none")
    assert math.isinf(float(loss[1].detach())) and torch.isfinite(loss[[0, 2]]).all()
    (g,) = torch.autograd.grad(loss.sum(), theta)
    assert torch.isnan(g[1]).all() and torch.isfinite(g[[0, 2]]).all()
    y2 = y.clone()
    y2[1] = torch.tensor([5.0, 5.0, 3.0, 1.0, 1.0])  # right sum, but two items above the top rank
    assert math.isinf(float(fy(theta, y2, reduction="none")[1].detach()))
    T = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    Y = permutation_matrices(gen, 2, 3)
    Y[0, 0, 0] += 0.5
    loss = fy(T, Y, polytope="birkhoff", reduction="none")
    assert math.isinf(float(loss[0].detach())) and math.isfinite(float(loss[1].detach()))
    (g,) = torch.autograd.grad(loss.sum(), T)
    assert torch.isnan(g[0]).all() and torch.isfinite(g[1]).all()


def test_float32_average_rank_targets_are_inside(gen):
    from diffcomb.losses import average_ranks

    scores = torch.randint(0, 30, (4, 2000), generator=gen).float()  # many ties, n = 2000
    y = average_ranks(scores).float()
    theta = torch.randn(4, 2000, generator=gen)
    assert torch.isfinite(fy(theta, y, reduction="none")).all()


@pytest.mark.parametrize("polytope", ["permutahedron", "birkhoff"])
def test_nan_row_is_isolated(polytope, gen):
    if polytope == "permutahedron":
        theta = torch.randn(3, 6, generator=gen, dtype=torch.float64)
        y = ranks_target(gen, (3, 6), -1)
    else:
        theta = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
        y = permutation_matrices(gen, 3, 4)
    clean = fy(theta, y, polytope=polytope, reduction="none")
    theta = theta.clone()
    theta[1].view(-1)[2] = math.nan
    theta.requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the NaN problem does not converge
        loss = fy(theta, y, polytope=polytope, reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    assert_close(loss[[0, 2]], clean[[0, 2]], rtol=1e-12)
    (g,) = torch.autograd.grad(loss[[0, 2]].sum(), theta)
    assert torch.isfinite(g[[0, 2]]).all()


def test_empty_inputs():
    for shape in [(3, 0), (0, 4)]:
        theta = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        loss = fy(theta, torch.zeros(shape), reduction="none")
        assert loss.shape == shape[:-1] and bool((loss == 0).all())
        loss.sum().backward()
        assert theta.grad.shape == shape
    for shape in [(2, 0, 0), (0, 3, 3)]:
        theta = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        loss = fy(theta, torch.zeros(shape), polytope="birkhoff", reduction="none")
        assert loss.shape == shape[:-2] and bool((loss == 0).all())
        loss.sum().backward()
        assert theta.grad.shape == shape


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions_and_modules(reduction, gen):
    theta = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    y = ranks_target(gen, (2, 3, 5), -1)
    per = fy(theta, y, regularization="kl", regularization_strength=0.5, reduction="none")
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    assert_close(fy(theta, y, regularization="kl", regularization_strength=0.5, reduction=reduction), want,
                 rtol=1e-14)
    m = diffcomb.FenchelYoungLoss(regularization="kl", regularization_strength=0.5, reduction=reduction)
    assert_close(m(theta, y), want, rtol=1e-14)
    assert "polytope='permutahedron'" in repr(m) and "regularization='kl'" in repr(m)
    T = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    Y = permutation_matrices(gen, 3, 4)
    per = fy(T, Y, polytope="birkhoff", reduction="none")
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    mb = diffcomb.FenchelYoungLoss("birkhoff", reduction=reduction)
    assert_close(mb(T, Y), want, rtol=1e-14)
    assert "max_iter=1000" in repr(mb)


def test_integer_targets_and_float32(gen):
    theta = torch.randn(4, 7, generator=gen)
    y = torch.stack([torch.randperm(7, generator=gen) + 1 for _ in range(4)])  # int64 ranks
    out32 = fy(theta, y, reduction="none")
    out64 = fy(theta.double(), y.double(), reduction="none")
    assert out32.dtype == torch.float32
    assert_close(out32, out64, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# opcheck and torch.compile


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kl", [False, True])
def test_opcheck_permutahedron(kl, dtype, device, gen):
    theta = torch.randn(3, 6, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()
    y = ranks_target(gen, (3, 6), -1).to(device, dtype)
    torch.library.opcheck(torch.ops.diffcomb.fenchel_young_permutahedron.default, (theta, y, 0.7, kl))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_birkhoff(dtype, device, gen):
    theta = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()
    Y = permutation_matrices(gen, 2, 4).to(device, dtype)
    torch.library.opcheck(torch.ops.diffcomb.fenchel_young_birkhoff.default, (theta, Y, 0.5, 1000, 1e-6))


@pytest.mark.parametrize("case", ["perm-l2", "perm-kl-dim0", "birkhoff"])
def test_compile_fullgraph(case, gen):
    torch._dynamo.reset()
    if case == "birkhoff":
        theta = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
        y = permutation_matrices(gen, 3, 4)

        def fn(t):
            return fy(t, y, polytope="birkhoff", regularization_strength=0.5, reduction="none")
    else:
        dim = 0 if case == "perm-kl-dim0" else -1
        reg = "kl" if case == "perm-kl-dim0" else "l2"
        theta = torch.randn(6, 3, generator=gen, dtype=torch.float64)
        y = ranks_target(gen, (6, 3), dim)

        def fn(t):
            return fy(t, y, regularization=reg, regularization_strength=0.5, reduction="none", dim=dim)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    te, tc = theta.clone().requires_grad_(), theta.clone().requires_grad_()
    out_e, out_c = fn(te), compiled(tc)
    assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
    g = torch.rand(out_e.shape, generator=gen, dtype=torch.float64)
    assert_close(torch.autograd.grad(out_c, tc, g)[0], torch.autograd.grad(out_e, te, g)[0], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Errors


def test_errors():
    theta = torch.randn(2, 4)
    y = torch.arange(1.0, 5.0).expand(2, 4)
    with pytest.raises(ValueError, match=r"fenchel_young_loss: polytope must be"):
        fy(theta, y, polytope="simplex")
    with pytest.raises(ValueError,
                       match=r"fenchel_young_loss: target must have the shape of theta \(2, 4\), got \(2, 3\)"):
        fy(theta, y[:, :3])
    with pytest.raises(TypeError, match=r"fenchel_young_loss: target must be a torch.Tensor"):
        fy(theta, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"fenchel_young_loss: target requires grad"):
        fy(theta, y.clone().requires_grad_())
    with pytest.raises(ValueError, match=r"fenchel_young_loss: regularization must be"):
        fy(theta, y, regularization="entropy")
    with pytest.raises(ValueError, match=r"fenchel_young_loss: regularization_strength must be positive"):
        fy(theta, y, regularization_strength=-1.0)
    with pytest.raises(ValueError, match=r"fenchel_young_loss: reduction must be"):
        fy(theta, y, reduction="batchmean")
    with pytest.raises(IndexError, match=r"fenchel_young_loss: dim=3 is out of range"):
        fy(theta, y, dim=3)
    with pytest.raises(RuntimeError, match=r"fenchel_young_loss: all tensor arguments must be on the same device"):
        fy(theta, y.to("meta"))
    T = torch.randn(2, 3, 3)
    Y = torch.eye(3).expand(2, 3, 3)
    with pytest.raises(ValueError, match=r"Birkhoff polytope supports regularization='kl'"):
        fy(T, Y, polytope="birkhoff", regularization="l2")
    with pytest.raises(ValueError, match=r"polytope='birkhoff' needs square score matrices"):
        fy(torch.randn(2, 3, 4), torch.zeros(2, 3, 4), polytope="birkhoff")
    with pytest.raises(ValueError, match=r"polytope='birkhoff' uses the last two dimensions"):
        fy(T, Y, polytope="birkhoff", dim=0)
    with pytest.raises(ValueError, match=r"fenchel_young_loss: max_iter must be an int >= 1"):
        fy(T, Y, polytope="birkhoff", max_iter=0)
    with pytest.raises(ValueError, match=r"fenchel_young_loss: tol must be positive"):
        fy(T, Y, polytope="birkhoff", tol=0.0)
    with pytest.raises(ValueError, match=r"FenchelYoungLoss: polytope must be"):
        diffcomb.FenchelYoungLoss("cube")
    with pytest.raises(ValueError, match=r"FenchelYoungLoss: the Birkhoff polytope supports"):
        diffcomb.FenchelYoungLoss("birkhoff", regularization="l2")


def test_docstring_examples():
    result = doctest.testmod(diffcomb.fenchel_young, extraglobs={"torch": torch},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, gen):
    # Computed in float32 inside; the result has the input's dtype.
    theta = torch.randn(3, 6, generator=gen).to(dtype)
    y = ranks_target(gen, (3, 6), -1)
    out = fy(theta, y, reduction="none")
    assert out.dtype == dtype
    assert_close(out.float(), fy(theta.float(), y.float(), reduction="none"), rtol=1e-2, atol=1e-2)
    T = torch.randn(2, 4, 4, generator=gen).to(dtype)
    Y = permutation_matrices(gen, 2, 4)
    out = fy(T, Y, polytope="birkhoff", reduction="none")
    assert out.dtype == dtype
    assert_close(out.float(), fy(T.float(), Y.float(), polytope="birkhoff", reduction="none"), rtol=1e-2, atol=1e-2)
