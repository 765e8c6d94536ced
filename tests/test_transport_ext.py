"""diffcomb.sinkhorn's extended options: unbalanced marginals (tau_a/tau_b, reg_m) against a numpy
reference and POT, point clouds without the cost matrix against the dense solver and a reference,
relative epsilon, epsilon scaling, warm starts; gradients (gradcheck in float64), custom-op checks,
torch.compile, bad inputs, NaN and empty problems, and CUDA against the CPU."""

import math
import warnings

import numpy as np
import pytest
import torch

import diffcomb
from diffcomb import sinkhorn, sinkhorn_divergence
from tests.conftest import CUDA_SKIP_REASON, DTYPES, HAS_CUDA, assert_close
from tests.reference import transport_ext as ref

F64 = torch.float64
INF = math.inf

try:  # POT is a test peer: compared against when installed, the numpy reference always
    import ot as pot
except ImportError:  # pragma: no cover - POT is in the test environment
    pot = None


def _weights(gen, *shape, dtype=F64):
    return torch.rand(*shape, generator=gen, dtype=dtype) + 0.2


def _clouds(gen, lead, n, m, d, dtype=F64):
    return (torch.rand(*lead, n, d, generator=gen, dtype=dtype), torch.rand(*lead, m, d, generator=gen, dtype=dtype))


# ------------------------------------------------------------------------------------------------
# Unbalanced transport.

UNBALANCED = [(0.5, 0.5), (0.3, 2.0), (INF, 1.0), (0.7, INF)]


@pytest.mark.parametrize("rho", UNBALANCED, ids=str)
def test_unbalanced_matches_reference_and_pot(gen, rho):
    C = torch.rand(3, 6, 5, generator=gen, dtype=F64)
    a, b = _weights(gen, 3, 6), _weights(gen, 3, 5) * 2.0  # unequal masses
    out = sinkhorn(C, a, b, 0.1, reg_m=rho, tol=1e-12, max_iter=100000)
    assert bool(out.converged.all())
    for k in range(3):
        P, f, g, cost = ref.unbalanced_sinkhorn(C[k].numpy(), a[k].numpy(), b[k].numpy(), 0.1, *rho)
        np.testing.assert_allclose(out.plan[k].numpy(), P, atol=1e-9)
        np.testing.assert_allclose(out.f[k].numpy(), f, atol=1e-8)
        np.testing.assert_allclose(out.g[k].numpy(), g, atol=1e-8)
        assert abs(float(out.cost[k]) - cost) < 1e-9
        if pot is not None:
            Pp = pot.unbalanced.sinkhorn_knopp_unbalanced(a[k].numpy(), b[k].numpy(), C[k].numpy(), 0.1, rho,
                                                          numItermax=100000, stopThr=1e-15)
            assert np.abs(out.plan[k].numpy() - Pp).max() < 1e-6
            total = pot.unbalanced.sinkhorn_unbalanced2(a[k].numpy(), b[k].numpy(), C[k].numpy(), 0.1, rho,
                                                        numItermax=100000, stopThr=1e-15, returnCost="total")
            # POT's total omits the - p + q terms of the generalized KL divergences (documented).
            mass = P.sum()
            extra = 0.1 * (a[k].sum().item() * b[k].sum().item() - mass)
            extra += sum(r * (w.sum().item() - mass) for r, w in zip(rho, (a[k], b[k])) if r != INF)
            assert abs(float(out.cost[k]) - (float(total) + extra)) < 1e-6


def test_tau_is_reg_m_in_ott_convention(gen):
    C = torch.rand(2, 5, 4, generator=gen, dtype=F64)
    a, b = _weights(gen, 2, 5), _weights(gen, 2, 4)
    eps, tau_a, tau_b = 0.2, 0.8, 0.6
    by_tau = sinkhorn(C, a, b, eps, tau_a=tau_a, tau_b=tau_b, tol=1e-12, max_iter=100000)
    by_reg = sinkhorn(C, a, b, eps, reg_m=(eps * tau_a / (1 - tau_a), eps * tau_b / (1 - tau_b)), tol=1e-12,
                      max_iter=100000)
    assert_close(by_tau.plan, by_reg.plan, atol=1e-12)
    assert_close(by_tau.cost, by_reg.cost, atol=1e-12)


def test_balanced_limit(gen):
    """reg_m -> inf approaches balanced transport; reg_m = inf is it exactly."""
    C = torch.rand(4, 3, generator=gen, dtype=F64)
    bal = sinkhorn(C, epsilon=0.3, tol=1e-12)
    inf = sinkhorn(C, epsilon=0.3, reg_m=INF, tol=1e-12)
    assert_close(inf.plan, bal.plan, atol=0)
    gaps = [float((sinkhorn(C, epsilon=0.3, reg_m=rho, tol=1e-9, max_iter=200000).plan - bal.plan).abs().max())
            for rho in (10.0, 100.0, 1000.0)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3, gaps


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
@pytest.mark.parametrize("kw", [dict(reg_m=0.5), dict(tau_a=0.7, tau_b=0.9), dict(tau_a=0.8)], ids=str)
def test_unbalanced_gradcheck(gen, backward, kw):
    C = torch.rand(2, 4, 3, generator=gen, dtype=F64, requires_grad=True)
    a = _weights(gen, 2, 4).requires_grad_()
    b = _weights(gen, 2, 3).requires_grad_()
    W = torch.randn(2, 4, 3, generator=gen, dtype=F64)
    implicit = backward == "implicit"

    def fn(C, a, b):
        out = sinkhorn(C, a, b, 0.2, backward=backward, tol=1e-14 if implicit else 0.0,
                       max_iter=100000 if implicit else 25, **kw)
        # unrolled: the plan only (the cost's gradient is the envelope, exact at convergence)
        return (out.plan * W).sum() + (0.7 * out.cost.sum() if implicit else 0.0)

    assert torch.autograd.gradcheck(fn, (C, a, b), atol=1e-6, rtol=1e-5)


def test_unbalanced_negative_weight_raises_but_masses_may_differ(gen):
    C = torch.rand(3, 2, generator=gen, dtype=F64)
    with pytest.raises(ValueError, match="non-negative"):
        sinkhorn(C, torch.tensor([0.5, -0.1, 0.3], dtype=F64), torch.ones(2, dtype=F64), reg_m=1.0)
    out = sinkhorn(C, torch.ones(3, dtype=F64), torch.ones(2, dtype=F64) * 5, reg_m=1.0)
    assert torch.isfinite(out.cost)


# ------------------------------------------------------------------------------------------------
# Point clouds without the cost matrix.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_clouds_match_dense_and_reference(gen, dtype, metric, d):
    x, y = _clouds(gen, (2,), 37, 21, d, dtype)
    a, b = torch.softmax(torch.randn(2, 37, generator=gen, dtype=dtype), -1), None
    tol = 1e-10 if dtype == F64 else 1e-4
    out = sinkhorn(x=x, y=y, a=a, b=b, epsilon=0.1, metric=metric, tol=tol)
    assert out.plan is None
    C = torch.stack([torch.as_tensor(ref.cloud_cost(x[k].double(), y[k].double(), metric)) for k in range(2)])
    dense = sinkhorn(C.to(dtype), a, b, 0.1, tol=tol)
    atol = 1e-9 if dtype == F64 else 2e-4
    assert_close(out.cost, dense.cost, atol=atol)
    assert_close(out.f, dense.f, atol=atol)
    assert_close(out.g, dense.g, atol=atol)
    assert torch.equal(out.converged, dense.converged)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_cloud_gradients_match_dense(gen, metric):
    x, y = _clouds(gen, (2,), 9, 7, 3)
    a, b = torch.softmax(torch.randn(2, 9, generator=gen, dtype=F64), -1), torch.full((7,), 1 / 7, dtype=F64)
    leaves = [t.clone().requires_grad_() for t in (x, y, a, b)]
    cloud = sinkhorn(x=leaves[0], y=leaves[1], a=leaves[2], b=leaves[3], epsilon=0.1, metric=metric, tol=1e-13)
    w = torch.tensor([0.3, -1.2], dtype=F64)
    got = torch.autograd.grad((cloud.cost * w).sum(), leaves)
    leaves2 = [t.clone().requires_grad_() for t in (x, y, a, b)]
    C = torch.cdist(leaves2[0], leaves2[1])
    C = C.square() if metric == "sqeuclidean" else C
    dense = sinkhorn(C, leaves2[2], leaves2[3], 0.1, tol=1e-13)
    expected = torch.autograd.grad((dense.cost * w).sum(), leaves2)
    for g1, g2 in zip(got, expected):
        assert_close(g1, g2, atol=1e-10)


@pytest.mark.parametrize("reg_m", [None, 0.5])
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_cloud_gradcheck(gen, metric, reg_m):
    """Points, and (unbalanced, where the masses may move) the weights."""
    x, y = _clouds(gen, (2,), 5, 4, 2)
    x.requires_grad_()
    y.requires_grad_()
    a = _weights(gen, 5)
    a = (a / a.sum()).requires_grad_(reg_m is not None)

    def fn(x, y, a):
        return sinkhorn(x=x, y=y, a=a, epsilon=0.3, metric=metric, reg_m=reg_m, tol=1e-14, max_iter=100000).cost

    assert torch.autograd.gradcheck(fn, (x, y, a), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_cloud_jvp_and_forward_ad(gen, metric):
    """The cost's forward-mode derivative (torch.func.jvp, forward AD) equals the reverse-mode
    gradient against the tangents and central finite differences."""
    from torch.autograd import forward_ad

    x, y = _clouds(gen, (2,), 5, 4, 3)
    tx, ty = torch.randn(x.shape, generator=gen, dtype=F64), torch.randn(y.shape, generator=gen, dtype=F64)

    def cost(x, y):
        return sinkhorn(x=x, y=y, epsilon=0.3, metric=metric, tol=1e-14, max_iter=100000).cost

    _, tangent = torch.func.jvp(cost, (x, y), (tx, ty))
    with forward_ad.dual_level():
        dual = forward_ad.unpack_dual(cost(forward_ad.make_dual(x, tx), forward_ad.make_dual(y, ty))).tangent
    leaves = [x.clone().requires_grad_(), y.clone().requires_grad_()]
    out = cost(*leaves)
    reverse = torch.stack([sum((g * t).sum() for g, t in zip(torch.autograd.grad(out[k], leaves, retain_graph=True),
                                                              (tx[k:k + 1], ty[k:k + 1]))) for k in range(2)])
    h = 1e-6
    fd = (cost(x + h * tx, y + h * ty) - cost(x - h * tx, y - h * ty)) / (2 * h)
    assert_close(tangent, reverse, atol=1e-12)
    assert_close(dual, reverse, atol=1e-12)
    assert_close(tangent, fd, atol=1e-7)


def test_cloud_unbalanced_and_warm_start_match_dense(gen):
    x, y = _clouds(gen, (), 8, 6, 3)
    a, b = _weights(gen, 8), _weights(gen, 6)
    C = torch.cdist(x, y).square()
    g0 = torch.randn(6, generator=gen, dtype=F64) * 0.1
    for kw in (dict(reg_m=(0.4, INF)), dict(init=(None, g0)), dict(epsilon_scaling=0.7)):
        cloud = sinkhorn(x=x, y=y, a=a, b=b if "reg_m" in kw else a.sum() * b / b.sum(), epsilon=0.05, tol=1e-12,
                         **kw)
        dense = sinkhorn(C, a, b if "reg_m" in kw else a.sum() * b / b.sum(), 0.05, tol=1e-12,
                         **({**kw, "epsilon_scaling": None} if "epsilon_scaling" in kw else kw))
        assert_close(cloud.cost, dense.cost, atol=1e-9)
        # balanced potentials are defined up to (f + c, g - c): compare f_i + g_j
        assert_close(cloud.f[:, None] + cloud.g[None, :], dense.f[:, None] + dense.g[None, :], atol=1e-8)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_divergence_is_three_dense_solves(gen, metric):
    x, y = _clouds(gen, (3,), 11, 7, 2)
    xg = x.clone().requires_grad_()
    div = sinkhorn_divergence(xg, y, 0.2, metric=metric, tol=1e-12)
    (gx,) = torch.autograd.grad(div.sum(), xg)

    def dense(p, q):
        C = torch.cdist(p, q)
        return sinkhorn(C.square() if metric == "sqeuclidean" else C, epsilon=0.2, tol=1e-12).cost

    xd = x.clone().requires_grad_()
    expected = dense(xd, y) - 0.5 * (dense(xd, xd) + dense(y, y))
    (gd,) = torch.autograd.grad(expected.sum(), xd)
    assert_close(div, expected, atol=1e-10)
    assert_close(gx, gd, atol=1e-9)
    assert float(div.detach().min()) > 0
    # 0 for equal clouds, to the tolerance (the cross term alternates, the debiasing terms symmetrize)
    assert float(sinkhorn_divergence(x, x, 0.2, tol=1e-12).abs().max()) < 1e-12
    assert float(sinkhorn_divergence(x, x, 0.2).abs().max()) < 1e-6


def test_cloud_memory_is_linear():
    """10^4 x 10^4 points solve with no n x m buffer: the process does not grow by the 400 MB a
    float32 cost matrix would take (the 10^5-point case is measured in benchmarks/results/ot-cpu.md)."""
    import resource

    x = torch.rand(10000, 3, generator=torch.Generator().manual_seed(0))
    y = torch.rand(10000, 3, generator=torch.Generator().manual_seed(1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    xg = x.requires_grad_()
    sinkhorn(x=xg, y=y, epsilon=0.05, max_iter=1, tol=0).cost.backward()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, grown_mb


def test_cloud_nan_and_empty(gen):
    x, y = _clouds(gen, (2,), 4, 3, 2)
    x[1, 2, 0] = math.nan
    out = sinkhorn(x=x, y=y, epsilon=0.1)
    assert torch.isfinite(out.cost[0]) and torch.isnan(out.cost[1]) and torch.isnan(out.f[1]).all()
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(sinkhorn(x=xg, y=y, epsilon=0.1).cost.sum(), xg)
    assert torch.isfinite(g[0]).all() and torch.isnan(g[1]).all()
    empty = sinkhorn(x=torch.zeros(2, 0, 2, dtype=F64), y=y, epsilon=0.1)
    assert empty.f.shape == (2, 0) and torch.isnan(empty.cost).all()


# ------------------------------------------------------------------------------------------------
# Relative epsilon, epsilon scaling, warm starts.


def test_relative_epsilon_is_epsilon_times_the_scale(gen):
    C = torch.rand(3, 5, 4, generator=gen, dtype=F64) * torch.tensor([1.0, 10.0, 100.0], dtype=F64)[:, None, None]
    for relative, scale in (("mean", C.mean((-2, -1))), ("max", C.amax((-2, -1)))):
        out = sinkhorn(C, epsilon=0.05, relative_epsilon=relative, tol=1e-12)
        for k in range(3):
            single = sinkhorn(C[k], epsilon=0.05 * float(scale[k]), tol=1e-12)
            assert_close(out.plan[k], single.plan, atol=1e-12)
    x, y = _clouds(gen, (), 6, 5, 3)
    lo, hi = torch.minimum(x.amin(0), y.amin(0)), torch.maximum(x.amax(0), y.amax(0))
    diam2 = float((hi - lo).square().sum())
    out = sinkhorn(x=x, y=y, epsilon=0.05, relative_epsilon="diameter", tol=1e-12)
    assert_close(out.cost, sinkhorn(x=x, y=y, epsilon=0.05 * diam2, tol=1e-12).cost, atol=1e-12)
    mean = float(torch.cdist(x, y).square().mean())
    out = sinkhorn(x=x, y=y, epsilon=0.05, relative_epsilon="mean", tol=1e-12)
    assert_close(out.cost, sinkhorn(x=x, y=y, epsilon=0.05 * mean, tol=1e-12).cost, atol=1e-12)


def _issue_example(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g, dtype=F64) * 100, torch.rand(n, 2, generator=g, dtype=F64) * 100


def test_issue_example_epsilon_choices():
    """Points in [0, 100]^2 (costs up to 2e4), epsilon 0.1, as a new user would: plain iterations stop
    at max_iter with a cost far from exact OT. Epsilon scaling gets the cost within 2% of exact OT
    in 2000 iterations (the marginals of so small an epsilon, 3e-5 of the mean cost, need ~1e5
    iterations to reach tol whatever the schedule); an epsilon relative to the cost's scale converges
    (documented choice), faster with epsilon scaling."""
    x, y = _issue_example()
    C = torch.cdist(x, y).square()
    exact = ref.exact_ot_uniform(C.numpy())
    with pytest.warns(UserWarning, match="did not converge"):
        plain = sinkhorn(C, epsilon=0.1)
    assert not bool(plain.converged) and abs(float(plain.cost) - exact) > 0.1 * exact
    with pytest.warns(UserWarning, match="did not converge"):
        for out in (sinkhorn(C, epsilon=0.1, epsilon_scaling=0.9, max_iter=2000),
                    sinkhorn(x=x, y=y, epsilon=0.1, epsilon_scaling=0.9, max_iter=2000)):
            assert abs(float(out.cost) - exact) < 0.02 * exact
    rel = sinkhorn(C, epsilon=0.01, relative_epsilon="mean")
    scaled = sinkhorn(C, epsilon=0.01, relative_epsilon="mean", epsilon_scaling=0.9)
    assert bool(rel.converged) and bool(scaled.converged)
    assert int(scaled.n_iter) < int(rel.n_iter)
    assert_close(scaled.plan, rel.plan, atol=1e-6)


def test_epsilon_scaling_same_solution(gen):
    C = torch.rand(2, 6, 5, generator=gen, dtype=F64)
    plain = sinkhorn(C, epsilon=0.05, tol=1e-12, max_iter=100000)
    scaled = sinkhorn(C, epsilon=0.05, epsilon_scaling=0.5, tol=1e-12, max_iter=100000)
    assert_close(scaled.plan, plain.plan, atol=1e-10)
    W = torch.randn(2, 6, 5, generator=gen, dtype=F64)
    Cg = C.clone().requires_grad_()
    (g1,) = torch.autograd.grad((sinkhorn(Cg, epsilon=0.05, epsilon_scaling=0.5, tol=1e-12).plan * W).sum(), Cg)
    (g2,) = torch.autograd.grad((sinkhorn(Cg, epsilon=0.05, tol=1e-12).plan * W).sum(), Cg)
    assert_close(g1, g2, atol=1e-8)


def test_warm_start_saves_iterations_on_a_slowly_changing_problem(gen):
    """A training-loop-like sequence of costs C_t = C_0 + 0.001 t D: restarting from the previous
    potentials takes about half the iterations (measured: 1100 against 2150), to the same solution
    (Sinkhorn converges linearly, so a start 1e-3 away saves log(1e3) of the log(1 / tol) steps)."""
    C0 = torch.rand(4, 30, 30, generator=gen, dtype=F64)
    D = torch.rand(4, 30, 30, generator=gen, dtype=F64)
    cold_iters = warm_iters = 0
    prev = None
    for t in range(6):
        C = C0 + 0.001 * t * D
        cold = sinkhorn(C, epsilon=0.02, tol=1e-6, max_iter=20000)
        warm = sinkhorn(C, epsilon=0.02, tol=1e-6, max_iter=20000, init=None if prev is None else (prev.f, prev.g))
        assert_close(warm.plan, cold.plan, atol=1e-5)
        prev = warm
        if t:
            cold_iters += int(cold.n_iter.sum())
            warm_iters += int(warm.n_iter.sum())
    assert warm_iters * 1.5 < cold_iters, (warm_iters, cold_iters)


def test_warm_start_from_f_only_and_broadcast(gen):
    C = torch.rand(3, 5, 4, generator=gen, dtype=F64)
    ref_out = sinkhorn(C, epsilon=0.1, tol=1e-12)
    from_f = sinkhorn(C, epsilon=0.1, tol=1e-12, init=(ref_out.f, None))
    assert_close(from_f.plan, ref_out.plan, atol=1e-10)
    assert int(from_f.n_iter.max()) <= 10
    shared = sinkhorn(C, epsilon=0.1, tol=1e-12, init=(None, ref_out.g[0]))  # broadcast over the batch
    assert_close(shared.plan, ref_out.plan, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Errors name the argument.


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(relative_epsilon="median"), ValueError, "relative_epsilon"),
    (dict(relative_epsilon="diameter"), ValueError, "point clouds"),
    (dict(epsilon_scaling=1.5), ValueError, "epsilon_scaling"),
    (dict(epsilon_scaling=0.0), ValueError, "epsilon_scaling"),
    (dict(tau_a=0.0), ValueError, "tau_a"),
    (dict(tau_b=1.2), ValueError, "tau_b"),
    (dict(reg_m=-1.0), ValueError, "reg_m"),
    (dict(reg_m=(1.0, 2.0, 3.0)), ValueError, "reg_m"),
    (dict(reg_m=1.0, tau_a=0.5), ValueError, "reg_m"),
    (dict(init=torch.zeros(4)), TypeError, "init"),
    (dict(init=(torch.zeros(3), None)), ValueError, "init"),
    (dict(init=(None, torch.zeros(2, 4))), ValueError, "init"),
    (dict(epsilon_scaling=0.5, backward="unroll"), ValueError, "unroll"),
])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        sinkhorn(torch.rand(3, 4, 3, dtype=F64), **kwargs)


def test_bad_clouds(gen):
    x, y = _clouds(gen, (), 4, 3, 2)
    cases = [
        (dict(cost=torch.rand(4, 3), x=x, y=y), ValueError, "either cost"),
        (dict(x=x), TypeError, "y must be a torch.Tensor"),
        (dict(x=x, y=y[:, :1]), ValueError, "point dimension"),
        (dict(x=x, y=y, metric="cosine"), ValueError, "metric"),
        (dict(x=x, y=y, relative_epsilon="max"), ValueError, "diameter"),
        (dict(x=x, y=y, metric="euclidean", relative_epsilon="mean"), ValueError, "sqeuclidean"),
        (dict(x=x, y=y, a=torch.ones(3, dtype=F64)), ValueError, "clouds"),
        (dict(), TypeError, "missing the cost"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            sinkhorn(**kwargs)


# ------------------------------------------------------------------------------------------------
# Custom ops: opcheck, torch.compile.


def test_opcheck(gen):
    C = torch.rand(2, 4, 3, generator=gen, dtype=F64)
    a, b = _weights(gen, 2, 4), _weights(gen, 2, 3)
    params = torch.tensor([[0.2, 0.2, 0.5, INF, 0.0], [0.3, 1.0, INF, INF, 0.0]], dtype=F64)
    g0 = torch.zeros(2, 3, dtype=F64)
    for unroll in (False, True):
        torch.library.opcheck(torch.ops.diffcomb.sinkhorn_ext,
                              (C.requires_grad_(), a, b, params, None, g0, 1.0, 500, 1e-9, 10, unroll, False,
                               "sinkhorn"))
    x, y = _clouds(gen, (2,), 4, 3, 2)
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn_cloud,
                          (x.requires_grad_(), y, a, b, params, None, None, 0, 0.8, 500, 1e-9, 10, False, "sinkhorn"))


def test_compile_fullgraph(gen):
    x, y = _clouds(gen, (2,), 6, 5, 3)
    C = torch.rand(2, 6, 5, generator=gen, dtype=F64)

    def fn(x, y, C):
        return (sinkhorn(x=x, y=y, epsilon=0.1).cost.sum() + sinkhorn(C, epsilon=0.1, reg_m=1.0).cost.sum()
                + sinkhorn_divergence(x, y, 0.5).sum())

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    assert_close(compiled(x, y, C), fn(x, y, C), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# CUDA agrees with the CPU (skipped without a GPU).


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(gen, dtype):
    x, y = _clouds(gen, (3,), 70, 50, 3, dtype)
    C = torch.rand(3, 40, 30, generator=gen, dtype=dtype)
    g0 = torch.randn(3, 30, generator=gen, dtype=dtype) * 0.1
    atol = 1e-9 if dtype == F64 else 1e-4
    for metric in ("sqeuclidean", "euclidean"):
        outs = []
        for dev in ("cpu", "cuda"):
            xg = x.to(dev).requires_grad_()
            out = sinkhorn(x=xg, y=y.to(dev), epsilon=0.1, metric=metric, epsilon_scaling=0.8)
            (gx,) = torch.autograd.grad(out.cost.sum(), xg)
            outs.append((out.cost.cpu(), out.f.cpu(), gx.cpu()))
        for u, v in zip(*outs):
            assert_close(u, v, atol=atol)
    W = torch.randn(3, 40, 30, generator=gen, dtype=dtype)
    for kw in (dict(reg_m=0.5), dict(tau_a=0.8, init=(None, g0)), dict(relative_epsilon="mean")):
        for backward in ("implicit", "unroll"):
            outs = []
            for dev in ("cpu", "cuda"):
                Cg = C.to(dev).requires_grad_()
                init = kw.get("init")
                kw_dev = {**kw, "init": (None, init[1].to(dev))} if init else kw
                out = sinkhorn(Cg, epsilon=0.1, backward=backward, **kw_dev)
                (gC,) = torch.autograd.grad((out.plan * W.to(dev)).sum() + out.cost.sum(), Cg)
                outs.append((out.plan.cpu(), out.cost.cpu(), gC.cpu()))
            for u, v in zip(*outs):
                assert_close(u, v, atol=atol)


# ---------------------------------------------------------------------------
# Derivatives beyond the first order: the torch formulas that the second derivatives and forward
# mode differentiate equal the native first-order kernels.

_RHOS = [(0.5, 0.7), (math.inf, 0.3), (0.4, math.inf)]


def _ext_problem(gen, rho, batch=2, n=4, m=3):
    from diffcomb._transport_ops import SOLVE as EXT
    C = torch.rand(batch, n, m, generator=gen, dtype=torch.float64)
    a = torch.rand(batch, n, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(batch, m, generator=gen, dtype=torch.float64) + 0.1
    params = torch.tensor([[0.5, 0.5, rho[0], rho[1], 0.0]] * batch, dtype=torch.float64)
    return EXT, C, a, b, params


@pytest.mark.parametrize("rho", _RHOS)
def test_torch_formulas_equal_the_native_backward(gen, rho):
    from diffcomb._transport_derivatives import implicit_first, unrolled_first
    from diffcomb._transport_ops import IMPLICIT, UNROLLED
    EXT, C, a, b, params = _ext_problem(gen, rho)
    G = torch.randn(C.shape, generator=gen, dtype=torch.float64)
    gc = torch.randn(C.shape[0], generator=gen, dtype=torch.float64)
    P, f, g = EXT(C, a, b, params, None, None, 1.0, 100000, 1e-14, 10, False, False, "sinkhorn")[:3]
    for native, formula in zip(IMPLICIT(C, a, b, params, P, f, g, G, gc),
                               implicit_first(C, a, b, params, P, f, g, G, gc)):
        assert_close(formula, native, rtol=1e-10, atol=1e-12)
    out = EXT(C, a, b, params, None, None, 1.0, 9, 0.0, 10, True, False, "sinkhorn")
    f_hist, g_hist, n_iter = out[6], out[7], out[4]
    for native, formula in zip(UNROLLED(C, a, b, params, f_hist, g_hist, n_iter, G, gc),
                               unrolled_first(C, a, b, params, g_hist[:, 0], n_iter, 9, G, gc)):
        assert_close(formula, native, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("metric", [0, 1])
def test_cloud_formula_equals_the_native_gradient(gen, metric):
    from diffcomb._transport_derivatives import cloud_first
    from diffcomb._transport_ops import CLOUD, CLOUD_GRAD
    x = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    a = torch.rand(2, 5, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(2, 4, generator=gen, dtype=torch.float64) + 0.1
    params = torch.tensor([[0.5, 0.5, 0.8, math.inf, 0.0]] * 2, dtype=torch.float64)
    f, g = CLOUD(x, y, a, b, params, None, None, metric, 1.0, 100000, 1e-14, 10, False, "sinkhorn")[:2]
    gc = torch.randn(2, generator=gen, dtype=torch.float64)
    for native, formula in zip(CLOUD_GRAD(x, y, a, b, params, f, g, gc, metric),
                               cloud_first(x, y, a, b, params, f, g, gc, metric)):
        assert_close(formula, native, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_unbalanced_second_derivatives(gen, backward):
    C = torch.rand(2, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    a = (torch.rand(4, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    b = (torch.rand(3, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    tight = dict(tol=1e-14, max_iter=100000) if backward == "implicit" else dict(tol=0, max_iter=8)

    def fn(C, a, b):
        out = diffcomb.sinkhorn(C, a, b, 0.5, reg_m=(0.6, 0.9), backward=backward, **tight)
        return out.plan, out.cost

    assert torch.autograd.gradcheck(fn, (C, a, b))
    assert torch.autograd.gradgradcheck(fn, (C, a, b))


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_divergence_hessian_matches_the_dense_solver(gen, metric):
    # between point clouds the second derivatives form the (n, m) cost; they equal those of the
    # dense solver on the same cost
    x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    tight = dict(tol=1e-14, max_iter=100000)

    def dense(x):
        d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
        cost = d2 if metric == "sqeuclidean" else d2.sqrt()
        return diffcomb.sinkhorn(cost, epsilon=0.5, reg_m=0.8, **tight).cost

    def clouds(x):
        return diffcomb.sinkhorn(x=x, y=y, epsilon=0.5, reg_m=0.8, metric=metric, **tight).cost

    assert_close(torch.func.hessian(clouds)(x), torch.func.hessian(dense)(x), rtol=1e-7, atol=1e-9)


def test_opcheck_of_the_solution_op(gen):
    # diffcomb::sinkhorn_ext_point hands out a solution with the implicit derivatives
    EXT, C, a, b, params = _ext_problem(gen, (0.5, 0.7))
    P, f, g = EXT(C, a, b, params, None, None, 1.0, 100000, 1e-14, 10, False, False, "sinkhorn")[:3]
    args = (C.requires_grad_(), a.requires_grad_(), b.requires_grad_(), params, P, f, g)
    # (its values are the given solution, so a numerical Jacobian of the op alone is 0: its derivatives
    # are checked against the solver's finite differences by the op x mode matrix)
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn_ext_point, args)
