"""Cross-checks against peer libraries on seeded random inputs (issue 12, item 5).

Each test imports its peer with ``pytest.importorskip`` inside the test, so this file collects
and the rest of it runs without them; a missing peer skips with the reason. Install them with
``pip install diffsort pot tslearn`` and ``pip install --no-build-isolation torchsort`` (with nvcc
off PATH; see /work/shared/PEERS.md). Conventions were matched by reading each peer's installed
source:

- torchsort 0.1.10 (``soft_rank``, ``soft_sort``): 2-D input, ascending only, same eps and l2/kl
  definitions as SPEC 1. Its soft sort uses an unstable sort, so gradients agree away from ties
  only (the draws are continuous).
- diffsort 0.2.0 (``diffsort.functional.sort(network, x, steepness, art_lambda, distribution)``):
  returns the sorted values and ``X[b, i, k]`` = weight of input i at output k (our ``matrix``),
  same sigmoid formulas (SPEC 5.2); its ``optimal`` sigmoid adds 1e-10 to |v| (differences
  ~1e-10); its gaussian backward keeps sigma in float32 (gradient differences ~1e-5). For n not a
  power of two its bitonic network drops the first N - n wires and every comparator touching
  them (SPEC 5.1).
- POT 0.9.7 (``ot.sinkhorn`` / ``ot.sinkhorn2`` with ``method="sinkhorn_log"``, ``ot.emd2``): its
  ``reg`` is our epsilon; its plan solves the same problem (the entropy and KL(P || a b^T)
  regularizations differ by a constant under the marginal constraints); ``sinkhorn2`` returns
  <P, M> only, differentiable by autograd through its iterations (which converges to the
  derivative of the converged plan); empty marginals ``[]`` are uniform.
- tslearn 0.10.0 (``tslearn.metrics.soft_dtw``, ``soft_dtw_alignment``, ``soft_dtw_normalized``,
  ``SoftDTW(D, gamma)``): squared Euclidean cost and the same gamma; with torch inputs its soft-DTW
  is computed in float64 torch and is differentiable by autograd; its Sakoe-Chiba radius widens
  by |N - M|, so bands are compared at equal lengths only.
"""

from __future__ import annotations

import math
import warnings
import zlib

import pytest
import torch

import diffcomb
from tests.conftest import flags_inexact as _flags_inexact

F64 = torch.float64
TORCHSORT_MISSING = "torchsort is not installed (pip install --no-build-isolation torchsort, with nvcc off PATH)"
SIGMOIDS = ("logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy", "optimal")


def seeded(request) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    u = float(torch.rand((), generator=g, dtype=F64))
    return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def grads_of(outputs, inputs, g: torch.Generator):
    """Gradients of sum_k <w_k, out_k> for random upstream w_k (drawn from g, same order)."""
    outputs = [o for o in outputs if o is not None]
    weights = [torch.randn(o.shape, generator=g, dtype=F64) for o in outputs]
    return torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, outputs)), inputs)


def close(actual, expected, rtol: float, msg: str = "") -> None:
    """allclose with atol = rtol * max|expected| (at least rtol)."""
    expected = expected.detach().to(F64)
    atol = rtol * max(1.0, float(expected.abs().max())) if expected.numel() else rtol
    torch.testing.assert_close(actual.detach().to(F64), expected, rtol=rtol, atol=atol, msg=msg or None)


# ------------------------------------------------------------------------------------------------
# torchsort: soft rank and soft sort, l2 and kl, values and gradients.


@pytest.mark.parametrize("case", range(10))
@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_torchsort(regularization: str, op: str, case: int, request):
    torchsort = pytest.importorskip("torchsort", reason=TORCHSORT_MISSING)
    g = seeded(request)
    batch, n = randint(g, 1, 4), randint(g, 1, 12)
    # the default strength on the first cases, then a random one
    eps = 1.0 if case < 3 else log_uniform(g, 0.05, 20.0)
    x = (torch.randn(batch, n, generator=g, dtype=F64) * log_uniform(g, 0.3, 5.0)).requires_grad_()
    ours = getattr(diffcomb, op)(x, regularization=regularization, regularization_strength=eps)
    peer = getattr(torchsort, op)(x, regularization=regularization, regularization_strength=eps)
    close(ours, peer, 1e-10, f"{op} values")
    state = g.get_state()
    (g_ours,) = grads_of([ours], x, g)
    g.set_state(state)
    (g_peer,) = grads_of([peer], x, g)
    close(g_ours, g_peer, 1e-10, f"{op} gradients")


@pytest.mark.parametrize("case", range(6))
@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_torchsort_descending_via_negation(regularization: str, case: int, request):
    """torchsort is ascending only; SPEC 1.1: rank_desc(x) = rank_asc(-x), sort_desc(x) = -sort_asc(-x)."""
    torchsort = pytest.importorskip("torchsort", reason=TORCHSORT_MISSING)
    g = seeded(request)
    x = torch.randn(randint(g, 1, 4), randint(g, 1, 12), generator=g, dtype=F64) * 2
    kw = dict(regularization=regularization, regularization_strength=log_uniform(g, 0.1, 10.0))
    close(diffcomb.soft_rank(x, descending=True, **kw), torchsort.soft_rank(-x, **kw), 1e-10)
    close(diffcomb.soft_sort(x, descending=True, **kw), -torchsort.soft_sort(-x, **kw), 1e-10)


# ------------------------------------------------------------------------------------------------
# diffsort: sorting networks, values, P and gradients.


def _diffsort_case(g: torch.Generator, network: str, n: int, case: int):
    functional = pytest.importorskip("diffsort.functional", reason="diffsort is not installed (pip install diffsort)")
    networks = pytest.importorskip("diffsort.networks", reason="diffsort is not installed (pip install diffsort)")
    # the defaults (cauchy, steepness 10) on the first cases, then a random family and steepness
    sigmoid = "cauchy" if case < 2 else SIGMOIDS[randint(g, 0, len(SIGMOIDS) - 1)]
    steepness = 10.0 if case < 2 else log_uniform(g, 0.5, 50.0)
    x = (torch.randn(randint(g, 1, 3), n, generator=g, dtype=F64) * log_uniform(g, 0.1, 3.0)).requires_grad_()
    ours = diffcomb.sorting_network(x, network=network, sigmoid=sigmoid, steepness=steepness)
    values, P = functional.sort(networks.get_sorting_network(network, n, "cpu"), x, steepness, 0.25, sigmoid)
    label = f"{network}, n = {n}, {sigmoid}, steepness {steepness:.3g}"
    close(ours.values, values, 1e-8, f"values ({label})")
    close(ours.matrix, P, 1e-8, f"P ({label})")
    state = g.get_state()
    g_ours = grads_of([ours.values, ours.matrix], x, g)[0]
    g.set_state(state)
    g_peer = grads_of([values, P], x, g)[0]
    # diffsort's gaussian backward computes sigma = 1/steepness in float32
    close(g_ours, g_peer, 1e-4 if sigmoid == "gaussian" else 1e-8, f"gradients ({label})")


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
def test_diffsort_power_of_two(network: str, case: int, request):
    g = seeded(request)
    _diffsort_case(g, network, 2 ** randint(g, 1, 4), case)


@pytest.mark.parametrize("case", range(6))
def test_diffsort_odd_even_any_n(case: int, request):
    g = seeded(request)
    _diffsort_case(g, "odd_even", randint(g, 1, 12), case)


@pytest.mark.parametrize("n", [3, 5, 6, 7, 11])
def test_diffsort_bitonic_not_a_power_of_two(n: int, request):
    """SPEC 5.1: the first N - n wires and their comparators are deleted, as diffsort does."""
    g = seeded(request)
    _diffsort_case(g, "bitonic", n, 0)


# ------------------------------------------------------------------------------------------------
# POT: Sinkhorn plans, costs and gradients; the epsilon -> 0 limit against ot.emd.

POT_ITER = dict(method="sinkhorn_log", numItermax=100_000, stopThr=1e-13, warn=False)


def _transport_problem(g: torch.Generator, uniform: bool):
    n, m = randint(g, 1, 7), randint(g, 1, 7)
    C = torch.rand(n, m, generator=g, dtype=F64) * log_uniform(g, 0.3, 3.0)
    if uniform:
        return C, None, None
    a = torch.rand(n, generator=g, dtype=F64) + 0.2
    b = torch.rand(m, generator=g, dtype=F64) + 0.2
    return C, a / a.sum(), b / b.sum()


def _pot_weights(w, size):
    return torch.full((size,), 1.0 / size, dtype=F64) if w is None else w


@pytest.mark.parametrize("case", range(12))
def test_pot_sinkhorn_plan_and_cost(case: int, request):
    ot = pytest.importorskip("ot", reason="POT is not installed (pip install pot)")
    g = seeded(request)
    C, a, b = _transport_problem(g, uniform=case % 3 == 0)
    eps = 0.1 if case < 4 else log_uniform(g, 0.05, 1.0)
    n, m = C.shape
    ours = diffcomb.sinkhorn(C, a, b, eps, tol=1e-12, max_iter=100_000)
    aw, bw = _pot_weights(a, n), _pot_weights(b, m)
    P = ot.sinkhorn([] if a is None else a, [] if b is None else b, C, eps, **POT_ITER)
    close(ours.plan, P, 1e-9, "plan")
    close((ours.plan * C).sum(), ot.sinkhorn2(aw, bw, C, eps, **POT_ITER), 1e-9, "<P, C>")
    # our cost is <P, C> + eps KL(P || a b^T) (SPEC 4.1), evaluated on POT's plan
    kl = torch.where(P > 0, P * torch.log(P / (aw[:, None] * bw[None, :])), torch.zeros_like(P)).sum()
    close(ours.cost, (P * C).sum() + eps * kl, 1e-9, "regularized cost")
    # at the default tolerance the plan is within the tolerance's reach of the converged one
    close(diffcomb.sinkhorn(C, a, b, eps).plan, P, 1e-5, "plan at the default tol")


@pytest.mark.parametrize("case", range(16))
def test_pot_sinkhorn_gradients_at_default_arguments(case: int, request):
    """d<P, C>/d(C, a, b) of our default call (epsilon = 0.1, tol = 1e-6, implicit backward) against
    autograd through POT's converged iterations: the derivative of the converged plan, which the
    implicit backward claims (exact at convergence). The gradients in a and b are compared after
    centering (both are defined up to additive constants). A run that the library reports as
    unconverged (the library's non-convergence warning, or converged = False) is exempt."""
    ot = pytest.importorskip("ot", reason="POT is not installed (pip install pot)")
    g = seeded(request)
    C, a, b = _transport_problem(g, uniform=False)
    C, a, b = (t.clone().requires_grad_() for t in (C, a, b))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = diffcomb.sinkhorn(C, a, b)
        ours = torch.autograd.grad((out.plan * C).sum(), (C, a, b))
    if not bool(out.converged) or any(_flags_inexact(w) for w in caught):
        return
    peer = torch.autograd.grad(ot.sinkhorn2(a, b, C, 0.1, **POT_ITER), (C, a, b))
    close(ours[0], peer[0], 1e-4, "dL/dC")
    for name, mine, theirs in (("a", ours[1], peer[1]), ("b", ours[2], peer[2])):
        close(mine - mine.mean(), theirs - theirs.mean(), 1e-4, f"dL/d{name} (centered)")


@pytest.mark.parametrize("case", range(8))
def test_pot_emd_small_epsilon_limit(case: int, request):
    """For every epsilon: OT <= <P_eps, C> <= OT + eps * min(H(a), H(b)) and
    OT <= OT_eps <= OT + eps * min(H(a), H(b)) (P_eps minimizes <P, C> + eps KL(P || a b^T), and the
    optimal unregularized plan has KL(P* || a b^T) <= min(H(a), H(b))). Checked at small epsilon."""
    ot = pytest.importorskip("ot", reason="POT is not installed (pip install pot)")
    g = seeded(request)
    C, a, b = _transport_problem(g, uniform=case % 2 == 0)
    n, m = C.shape
    aw, bw = _pot_weights(a, n), _pot_weights(b, m)
    exact = float(ot.emd2(aw, bw, C))
    entropy = min(float(-(aw * aw.log()).sum()), float(-(bw * bw.log()).sum()))
    scale = float(C.max() - C.min()) + 1e-12
    # (smaller epsilon can need millions of iterations on these draws: Sinkhorn's convergence slows
    # down sharply when the unregularized optimum is nearly degenerate)
    for eps in (5e-2 * scale, 2e-2 * scale):
        out = diffcomb.sinkhorn(C, a, b, eps, tol=1e-12, max_iter=100_000)
        assert bool(out.converged), f"no convergence at eps = {eps:.3g}"
        slack = 1e-9 * max(1.0, abs(exact))
        primal = float((out.plan * C).sum())
        assert exact - slack <= primal <= exact + eps * entropy + slack, (exact, primal, eps * entropy)
        assert exact - slack <= float(out.cost) <= exact + eps * entropy + slack, (exact, float(out.cost))


# ------------------------------------------------------------------------------------------------
# tslearn: soft-DTW values, gradients, alignments, divergence, band.


def _series(g: torch.Generator, equal: bool = False):
    d = randint(g, 1, 3)
    n = randint(g, 1, 8)
    m = n if equal else randint(g, 1, 8)
    scale = log_uniform(g, 0.3, 3.0)
    return torch.randn(n, d, generator=g, dtype=F64) * scale, torch.randn(m, d, generator=g, dtype=F64) * scale


@pytest.mark.parametrize("case", range(12))
def test_tslearn_soft_dtw_value_and_gradients(case: int, request):
    metrics = pytest.importorskip("tslearn.metrics", reason="tslearn is not installed (pip install tslearn)")
    g = seeded(request)
    x, y = (t.requires_grad_() for t in _series(g))
    gamma = 1.0 if case < 4 else log_uniform(g, 0.01, 10.0)
    ours = diffcomb.soft_dtw(x, y, gamma)
    peer = metrics.soft_dtw(x, y, gamma=gamma)
    close(ours, peer, 1e-10, f"value, gamma = {gamma:.3g}")
    for name, mine, theirs in zip("xy", torch.autograd.grad(ours, (x, y)), torch.autograd.grad(peer, (x, y))):
        close(mine, theirs, 1e-9, f"gradient in {name}, gamma = {gamma:.3g}")


@pytest.mark.parametrize("case", range(10))
def test_tslearn_soft_dtw_alignment_and_cost_matrix(case: int, request):
    metrics = pytest.importorskip("tslearn.metrics", reason="tslearn is not installed (pip install tslearn)")
    g = seeded(request)
    gamma = 1.0 if case < 3 else log_uniform(g, 0.01, 10.0)
    x, y = _series(g)
    # torch inputs: tslearn's float64 torch code path (its numpy path first JIT-compiles for ~20 s)
    A, value = metrics.soft_dtw_alignment(x, y, gamma=gamma)
    C = diffcomb.pairwise_cost(x, y)
    close(diffcomb.soft_dtw_alignment(C, gamma), torch.as_tensor(A), 1e-9, "alignment of the series")
    close(diffcomb.soft_dtw_from_cost(C, gamma), torch.as_tensor(value), 1e-10, "value of the series")
    # a given cost matrix on a random scale (up to large costs)
    C = torch.rand(randint(g, 1, 8), randint(g, 1, 8), generator=g, dtype=F64) * log_uniform(g, 1e-2, 1e6)
    sdtw = metrics.SoftDTW(C, gamma=gamma, be="pytorch", compute_with_backend=True)
    value = torch.as_tensor(sdtw.compute())
    close(diffcomb.soft_dtw_from_cost(C, gamma), value, 1e-10, "value of a cost matrix")
    close(diffcomb.soft_dtw_alignment(C, gamma), torch.as_tensor(sdtw.grad()), 1e-9, "alignment of a cost matrix")
    Cg = C.clone().requires_grad_()
    (E,) = torch.autograd.grad(diffcomb.soft_dtw_from_cost(Cg, gamma), Cg)
    close(E, torch.as_tensor(sdtw.grad()), 1e-9, "gradient of a cost matrix")


@pytest.mark.parametrize("case", range(8))
def test_tslearn_soft_dtw_divergence(case: int, request):
    metrics = pytest.importorskip("tslearn.metrics", reason="tslearn is not installed (pip install tslearn)")
    g = seeded(request)
    x, y = (t.requires_grad_() for t in _series(g))
    ours = diffcomb.soft_dtw_divergence(x, y)
    peer = metrics.soft_dtw_normalized(x, y, gamma=1.0)
    close(ours, peer, 1e-10, "divergence")
    for name, mine, theirs in zip("xy", torch.autograd.grad(ours, (x, y)), torch.autograd.grad(peer, (x, y))):
        close(mine, theirs, 1e-9, f"divergence gradient in {name}")


@pytest.mark.parametrize("case", range(8))
def test_tslearn_sakoe_chiba_band(case: int, request):
    """Values always; gradients where tslearn's are finite: its autograd through the masked
    recursion gives NaN for the first steps of x when the radius is small (0 or 1 here), while
    ours stays finite (and agrees with finite differences, tests/test_random_gradients.py)."""
    metrics = pytest.importorskip("tslearn.metrics", reason="tslearn is not installed (pip install tslearn)")
    g = seeded(request)
    x, y = (t.requires_grad_() for t in _series(g, equal=True))
    radius = randint(g, 0, x.shape[0])
    ours = diffcomb.soft_dtw(x, y, bandwidth=radius)
    peer = metrics.soft_dtw(x, y, gamma=1.0, global_constraint="sakoe_chiba", sakoe_chiba_radius=radius)
    close(ours, peer, 1e-10, f"value, radius {radius}")
    for name, mine, theirs in zip("xy", torch.autograd.grad(ours, (x, y)), torch.autograd.grad(peer, (x, y))):
        assert torch.isfinite(mine).all(), f"gradient in {name}, radius {radius}: {mine}"
        finite = torch.isfinite(theirs)
        close(mine[finite], theirs[finite], 1e-9, f"gradient in {name}, radius {radius}")
