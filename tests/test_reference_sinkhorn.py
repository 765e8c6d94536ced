"""Validate the float64 numpy references of tests/reference/sinkhorn.py against SPEC.md section 4:
the reference values of SPEC 7.4, the 2x2 closed form, marginals and primal = dual at convergence,
every VJP against central finite differences, the limits and invariances of SPEC 4.4-4.6, and the
edge cases of SPEC 0 / 4.4."""

import itertools
import math
import warnings

import numpy as np
import pytest

from tests.reference import sinkhorn as ref

RTOL = 1e-5
ATOL = 1e-6  # SPEC 7 rounds to 6 decimals
TIGHT = dict(tol=1e-13, max_iter=20000, check_every=1)  # "converged" forward for FD checks
SHAPES = [(2, 3), (3, 2), (4, 3), (3, 5), (1, 3), (3, 1)]
EPSS = [0.2, 1.0, 3.0]


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol)


def problem(rng, n, m, scale=1.0):
    """Random cost in [0, scale) and positive weights summing to 1."""
    C = rng.uniform(0.0, scale, size=(n, m))
    a = rng.uniform(0.5, 1.5, size=n)
    b = rng.uniform(0.5, 1.5, size=m)
    return C, a / a.sum(), b / b.sum()


def admissible_direction(rng, n, m):
    """(da, db) with sum da = sum db, so that a + h da and b + h db stay balanced."""
    da = rng.normal(size=n)
    db = rng.normal(size=m)
    db += (da.sum() - db.sum()) / m
    return da, db


def directional(fun, a, b, da, db, h=1e-6):
    return (fun(a + h * da, b + h * db) - fun(a - h * da, b - h * db)) / (2 * h)


def normalize_ab(da, db):
    """Representative of (da, db) modulo (+c, -c), concatenated: the a-part has mean 0."""
    c = da.mean()
    return np.concatenate([da - c, db + c])


def newton_polish(C, a, b, eps, f, g, steps=30):
    """Newton's method on the dual (Hessian = H / eps of SPEC 4.3) from Sinkhorn potentials; used only to
    obtain a fully converged plan where plain Sinkhorn converges too slowly for a test."""
    n = len(a)
    for _ in range(steps):
        P = ref.plan_from_potentials(C, a, b, f, g, eps)
        res = np.concatenate([P.sum(1) - a, P.sum(0) - b])
        H = np.block([[np.diag(P.sum(1)), P], [P.T, np.diag(P.sum(0))]])
        d = np.linalg.lstsq(H, -eps * res, rcond=None)[0]
        f, g = f + d[:n], g + d[n:]
    return ref.plan_from_potentials(C, a, b, f, g, eps)


X3 = np.array([3.0, 1.0, 2.0])


# ------------------------------------------------------------------------------------------------
# SPEC 7.4


def test_spec_7_4_symmetric_2x2():
    C = [[0.0, 1.0], [1.0, 0.0]]
    r = ref.sinkhorn(C, [0.5, 0.5], [0.5, 0.5], 1.0)
    assert r.converged
    close(r.plan, [[0.365529, 0.134471], [0.134471, 0.365529]])
    close(r.cost, 0.268941)
    close(r.value, 0.379885)
    r = ref.sinkhorn(C, [0.5, 0.5], [0.5, 0.5], 0.1)
    close(r.plan[0, 0], 0.499977)
    close(r.value, 0.069310)


def test_spec_7_4_asymmetric():
    r = ref.sinkhorn([[0.0, 2.0], [1.0, 0.5]], [0.3, 0.7], [0.6, 0.4], 0.5)
    assert r.converged
    close(r.plan, [[0.297369, 0.002631], [0.302631, 0.397369]])
    close(r.value, 0.596157)


def test_spec_7_4_soft_rank_sort():
    close(ref.sinkhorn_soft_rank(X3, 0.1), [2.809709, 1.190291, 2.0])
    close(ref.sinkhorn_soft_sort(X3, 0.1), [1.190291, 2.0, 2.809709])
    close(ref.sinkhorn_soft_sort(X3, 0.1, descending=True), [2.809709, 2.0, 1.190291])
    close(ref.sinkhorn_soft_rank(X3, 1e-3), [3, 1, 2])
    close(ref.sinkhorn_soft_sort(X3, 1e-3), [1, 2, 3])
    # the 7.4 values assume the population std (ddof = 0) in the sigmoid squash; ddof = 1 differs
    xt1 = 1 / (1 + np.exp(-(X3 - X3.mean()) / (X3.std(ddof=1) + 1e-10)))
    C1 = (xt1[:, None] - np.array([0.0, 0.5, 1.0])[None, :]) ** 2
    w = np.full(3, 1 / 3)
    r1 = 3 * (ref.sinkhorn(C1, w, w, 0.1).plan @ np.cumsum(w)) / w
    close(r1, [2.773191, 1.226809, 2.0])  # what an unbiased std (torch.std's default) would give


def test_spec_7_4_soft_rank_eps_0_01():
    """SPEC 7.4 lists [3.000006, 1.000007, 1.999988] at eps = 0.01. Plain Sinkhorn converges very slowly
    here (err ~ 4e-4 after the default 1000 iterations, ~4e-6 after 1e5); the SPEC digits are the
    1e5-iteration iterate (R_1 > n = 3 is impossible once the row marginals hold). The converged values,
    [2.99999881, 1.00000119, 2.0] (Newton-polished), agree with the SPEC digits at rtol 1e-5; the
    defaults of SPEC 4.1 (max_iter = 1000, tol = 1e-6) do not."""
    xt = ref.squash(X3)
    y = np.array([0.0, 0.5, 1.0])
    C = (xt[:, None] - y[None, :]) ** 2
    w = np.full(3, 1 / 3)
    r = ref.sinkhorn(C, w, w, 0.01)  # SPEC defaults
    assert not r.converged and r.n_iter == 1000 and r.err > 1e-4
    default_ranks = ref.sinkhorn_soft_rank(X3, 0.01)
    assert np.max(np.abs(default_ranks - [3.000006, 1.000007, 1.999988])) > 5e-4
    P = newton_polish(C, w, w, 0.01, r.f, r.g)
    close(P.sum(1), w, atol=1e-14)
    close(P.sum(0), w, atol=1e-14)
    ranks = 3 * (P @ np.cumsum(w)) / w
    close(ranks, [2.99999881, 1.00000119, 2.0], atol=1e-8)
    assert np.all(ranks <= 3)
    close(ranks, [3.000006, 1.000007, 1.999988])
    close(P.T @ X3 / w, [1.000001, 2.0, 2.999999])


def test_spec_7_4_soft_median():
    close(ref.sinkhorn_soft_quantile(np.arange(1.0, 11.0), 0.5, 0.2, eps=1e-3), 5.5)


def test_spec_7_4_sinkhorn_operator():
    close(ref.sinkhorn_operator([[1.0, 0.0], [0.0, 0.0]], 1.0)[0, 0], 0.622459)
    X = [[1.0, 0.0, 0.0], [0.0, 2.0, 3.0], [0.0, 3.0, 1.0]]
    close(ref.sinkhorn_operator(X, 1.0, 200), [[0.790524, 0.085084, 0.124392], [0.085084, 0.183937, 0.730979],
                                               [0.124392, 0.730979, 0.144630]])
    close(ref.sinkhorn_operator(X, 0.05, 200), [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    # 2x2, tau = 1: P11 = e^{1/2} / (1 + e^{1/2}) (SPEC 4.6)
    close(ref.sinkhorn_operator([[1.0, 0.0], [0.0, 0.0]], 1.0, 50)[0, 0],
          math.exp(0.5) / (1 + math.exp(0.5)), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# SPEC 4.1 / 4.4: closed form, marginals, primal = dual, invariances, limits


@pytest.mark.parametrize("eps", [0.05, 0.2, 0.5, 1.0, 2.0, 10.0])
def test_symmetric_2x2_closed_form(eps):
    r = ref.sinkhorn([[0.0, 1.0], [1.0, 0.0]], [0.5, 0.5], [0.5, 0.5], eps, tol=1e-14, check_every=1)
    p11 = 1 / (2 * (1 + math.exp(-1 / eps)))
    p12 = 0.5 - p11
    close(r.plan, [[p11, p12], [p12, p11]], atol=1e-13)
    close(r.cost, 2 * p12, atol=1e-13)
    kl = 2 * p11 * math.log(4 * p11) + 2 * p12 * math.log(4 * p12)
    close(r.value, 2 * p12 + eps * kl, atol=1e-12)
    close(r.dual, r.value, atol=1e-12)


@pytest.mark.parametrize("n,m", SHAPES + [(5, 5), (6, 4)])
@pytest.mark.parametrize("eps", [0.05, 0.3, 2.0])
def test_marginals_and_primal_dual(n, m, eps):
    rng = np.random.default_rng(10 * n + m + int(100 * eps))
    C, a, b = problem(rng, n, m)
    r = ref.sinkhorn(C, a, b, eps, tol=1e-12)
    assert r.converged and r.err <= 1e-12
    assert r.n_iter % 10 == 0 or min(n, m) == 1
    close(r.plan.sum(axis=1), a, atol=1e-12)
    close(r.plan.sum(axis=0), b, atol=1e-14)  # exact after the g-update
    close(r.value, r.dual, atol=1e-11)
    close(r.value, np.sum(r.plan * C) + eps * np.sum(r.plan * np.log(r.plan / np.outer(a, b))), atol=1e-12)
    close(r.cost, np.sum(r.plan * C), atol=1e-15)
    # P = a_i b_j exp((f_i + g_j - C_ij)/eps)
    close(r.plan, np.outer(a, b) * np.exp((r.f[:, None] + r.g[None, :] - C) / eps), atol=1e-15)
    # the truncated algorithm with the same iteration count gives the same plan
    P, f, g = ref.sinkhorn_iterations(C, a, b, eps, r.n_iter)
    close(P, r.plan, atol=1e-15)
    close(f, r.f, atol=1e-15)
    # the "entropy" convention f~ = f + eps log a, g~ = g + eps log b gives the same plan
    ft, gt = r.f + eps * np.log(a), r.g + eps * np.log(b)
    close(np.exp((ft[:, None] + gt[None, :] - C) / eps), r.plan, atol=1e-14)


def test_check_every_and_iteration_counts():
    rng = np.random.default_rng(3)
    C, a, b = problem(rng, 4, 3)
    r1 = ref.sinkhorn(C, a, b, 0.3, tol=1e-10, check_every=1)
    r10 = ref.sinkhorn(C, a, b, 0.3, tol=1e-10)
    assert r10.n_iter == 10 * math.ceil(r1.n_iter / 10)
    r = ref.sinkhorn(C, a, b, 0.3, tol=1e-10, max_iter=7)  # stops at max_iter, checked there
    assert r.n_iter == 7 and not r.converged and r.err > 1e-10
    # warm start from the converged potentials: converged at the first check
    w = ref.sinkhorn(C, a, b, 0.3, tol=1e-10, check_every=1, g_init=r1.g)
    assert w.n_iter == 1 and w.converged
    close(w.plan, r1.plan, atol=1e-10)


def test_n_or_m_equal_one_is_outer_product():
    rng = np.random.default_rng(4)
    for n, m in [(1, 4), (4, 1), (1, 1)]:
        C, a, b = problem(rng, n, m)
        r = ref.sinkhorn(C, a, b, 0.01)
        assert r.n_iter == 1 and r.converged
        close(r.plan, np.outer(a, b), atol=1e-15)
        close(r.cost, np.sum(np.outer(a, b) * C), atol=1e-15)
    # with total mass M != 1 the plan is a b^T / M
    r = ref.sinkhorn([[1.0, 2.0, 0.5]], [2.0], [0.5, 1.0, 0.5], 0.3)
    close(r.plan, np.outer([2.0], [0.5, 1.0, 0.5]) / 2.0, atol=1e-15)


def test_shift_invariance():
    rng = np.random.default_rng(5)
    C, a, b = problem(rng, 4, 5)
    u, v = rng.normal(size=4), rng.normal(size=5)
    r = ref.sinkhorn(C, a, b, 0.4, tol=1e-13)
    # rows: f_i shifts by u_i at every iteration, P unchanged
    ru = ref.sinkhorn(C + u[:, None], a, b, 0.4, tol=1e-13)
    close(ru.plan, r.plan, atol=1e-13)
    close(ru.f, r.f + u, atol=1e-12)
    close(ru.g, r.g, atol=1e-12)
    # rows and columns: P unchanged at convergence, OT_eps shifts by <u, a> + <v, b>
    ruv = ref.sinkhorn(C + u[:, None] + v[None, :], a, b, 0.4, tol=1e-13)
    close(ruv.plan, r.plan, atol=1e-12)
    close(ruv.value, r.value + u @ a + v @ b, atol=1e-11)


def test_eps_limits():
    rng = np.random.default_rng(6)
    # eps -> 0: the optimal (unregularized) plan; uniform square weights: a permutation / n
    n = 4
    C = rng.uniform(0, 1, size=(n, n))
    best = min(itertools.permutations(range(n)), key=lambda p: sum(C[i, p[i]] for i in range(n)))
    hard = np.zeros((n, n))
    hard[range(n), best] = 1 / n
    gap = sorted(sum(C[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))
    assert gap[1] - gap[0] > 0.02
    r = ref.sinkhorn(C, None, None, 1e-3, tol=1e-10)  # rounding floor ~3e-12 here (C/eps up to 1e3)
    assert r.converged
    close(r.plan, hard, atol=1e-6)
    close(r.cost, np.sum(hard * C), atol=1e-6)
    close(r.value, np.sum(hard * C), atol=1e-2)  # OT_eps -> OT (entropy term is O(eps log n))
    # eps -> infinity: a b^T
    C, a, b = problem(rng, 3, 4)
    r = ref.sinkhorn(C, a, b, 1e7)
    close(r.plan, np.outer(a, b), atol=1e-7)


# ------------------------------------------------------------------------------------------------
# SPEC 4.2: envelope gradients of OT_eps


@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("eps", EPSS)
def test_value_gradients_vs_finite_differences(n, m, eps):
    rng = np.random.default_rng(100 + 10 * n + m + int(10 * eps))
    C, a, b = problem(rng, n, m)
    r = ref.sinkhorn(C, a, b, eps, **TIGHT)
    dC, da, db = ref.sinkhorn_value_vjp(r, eps, 2.5)
    num = ref.numerical_gradient(lambda c: ref.sinkhorn(c, a, b, eps, **TIGHT).value, C)
    close(dC, 2.5 * num, rtol=1e-6, atol=1e-8)
    value = lambda aa, bb: ref.sinkhorn(C, aa, bb, eps, **TIGHT).value
    for _ in range(3):  # a- and b-gradients up to constants: zero-sum directions
        ua = rng.normal(size=n)
        ub = rng.normal(size=m)
        ua -= ua.mean()
        ub -= ub.mean()
        close(da @ ua + db @ ub, 2.5 * directional(value, a, b, ua, ub), rtol=1e-6, atol=1e-8)


def test_value_gradient_along_mass_changing_directions():
    """With KL(P || a b^T) = sum P log(P / (a b)) (the convention under which OT_eps = <f, a> + <g, b> holds
    for any total mass), the derivative of OT_eps along (da, db) with sum da = sum db = s is
    <f, da> + <g, db> - eps s, not <f, da> + <g, db>: (f, g) of SPEC 4.2 is exact only for zero-sum
    directions (or for the generalized KL, which adds eps (M^2 - M) at mass M and equals it at M = 1)."""
    rng = np.random.default_rng(17)
    C, a, b = problem(rng, 3, 4)
    eps = 0.7
    r = ref.sinkhorn(C, a, b, eps, **TIGHT)
    da, db = admissible_direction(rng, 3, 4)
    s = da.sum()
    assert abs(s) > 0.1
    fd = directional(lambda aa, bb: ref.sinkhorn(C, aa, bb, eps, **TIGHT).value, a, b, da, db)
    close(fd, r.f @ da + r.g @ db - eps * s, rtol=1e-6, atol=1e-8)
    _, ga, gb = ref.sinkhorn_value_vjp(r, eps)  # the gradient diffcomb returns (SPEC 4.2)
    close(fd, ga @ da + gb @ db, rtol=1e-6, atol=1e-8)
    gen_kl = lambda aa, bb: (ref.sinkhorn(C, aa, bb, eps, **TIGHT).value + eps * (aa.sum() ** 2 - aa.sum()))
    close(directional(gen_kl, a, b, da, db), r.f @ da + r.g @ db, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# SPEC 4.3: VJPs of losses L(P) = <G, P>


@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("eps", EPSS)
def test_implicit_vjp_vs_finite_differences(n, m, eps):
    rng = np.random.default_rng(200 + 10 * n + m + int(10 * eps))
    C, a, b = problem(rng, n, m)
    G = rng.normal(size=(n, m))
    r = ref.sinkhorn(C, a, b, eps, **TIGHT)
    dC, da, db = ref.sinkhorn_implicit_vjp(C, a, b, eps, G, r)
    loss = lambda c, aa=a, bb=b: float(np.sum(G * ref.sinkhorn(c, aa, bb, eps, **TIGHT).plan))
    close(dC, ref.numerical_gradient(loss, C), rtol=1e-6, atol=1e-8)
    for _ in range(4):  # admissible directions, mass changes included
        ua, ub = admissible_direction(rng, n, m)
        close(da @ ua + db @ ub, directional(lambda aa, bb: loss(C, aa, bb), a, b, ua, ub),
              rtol=1e-6, atol=1e-8)
    # the three solvers agree (a, b gradients modulo (+c, -c))
    for solver in ["schur", "cg"]:
        dC2, da2, db2 = ref.sinkhorn_implicit_vjp(C, a, b, eps, G, r, solver=solver)
        close(dC2, dC, rtol=1e-8, atol=1e-10)
        close(normalize_ab(da2, db2), normalize_ab(da, db), rtol=1e-8, atol=1e-10)
    # G = 1: L = sum P = total mass, independent of C
    dC1 = ref.sinkhorn_implicit_vjp(C, a, b, eps, np.ones((n, m)), r)[0]
    close(dC1, 0.0, atol=1e-12)


@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("eps", EPSS)
@pytest.mark.parametrize("T", [0, 1, 7])
def test_unrolled_vjp_vs_finite_differences(n, m, eps, T):
    rng = np.random.default_rng(300 + 10 * n + m + int(10 * eps) + T)
    C, a, b = problem(rng, n, m)
    G = rng.normal(size=(n, m))
    g0 = rng.normal(size=m) * 0.3
    dC, da, db = ref.sinkhorn_unrolled_vjp(C, a, b, eps, T, G, g_init=g0)
    loss = lambda c, aa=a, bb=b: float(np.sum(G * ref.sinkhorn_iterations(c, aa, bb, eps, T, g_init=g0)[0]))
    close(dC, ref.numerical_gradient(loss, C), rtol=1e-6, atol=1e-8)
    # the truncated algorithm is defined for any a, b: per-coordinate differences
    close(da, ref.numerical_gradient(lambda aa: loss(C, aa, b), a), rtol=1e-6, atol=1e-8)
    close(db, ref.numerical_gradient(lambda bb: loss(C, a, bb), b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n,m", [(3, 4), (5, 2)])
def test_unrolled_tends_to_implicit(n, m):
    rng = np.random.default_rng(400 + n)
    C, a, b = problem(rng, n, m)
    G = rng.normal(size=(n, m))
    r = ref.sinkhorn(C, a, b, 0.5, **TIGHT)
    dC, da, db = ref.sinkhorn_implicit_vjp(C, a, b, 0.5, G, r)
    dCu, dau, dbu = ref.sinkhorn_unrolled_vjp(C, a, b, 0.5, 300, G)
    close(dCu, dC, atol=1e-9)
    close(normalize_ab(dau, dbu), normalize_ab(da, db), atol=1e-9)


def test_implicit_vjp_warns_when_not_converged():
    rng = np.random.default_rng(7)
    C, a, b = problem(rng, 3, 3)
    r = ref.sinkhorn(C, a, b, 0.05, max_iter=2)
    assert not r.converged
    with pytest.warns(RuntimeWarning):
        ref.sinkhorn_implicit_vjp(C, a, b, 0.05, np.ones((3, 3)), r)


def test_spec_defaults_implicit_vjp_of_an_unconverged_plan():
    """SPEC 4.5 defaults (eps = 1e-2, m = n) with SPEC 4.1 defaults (max_iter = 1000, tol = 1e-6) do not
    converge on the SPEC 7.4 example. The ranks are saturated there (within 1e-5 of the hard ranks
    once converged), so their gradient is tiny (about 1e-5): implicit differentiation of the returned
    plan with its own marginals (SPEC 4.3 b) stays below 1e-4 (with a and b in H it gave more than 1);
    the unrolled VJP is exact for the executed iterations."""
    g = np.array([1.0, 0.0, 0.0])
    with pytest.warns(RuntimeWarning):
        implicit = ref.sinkhorn_soft_rank_vjp(X3, g, 0.01)
    unrolled = ref.sinkhorn_soft_rank_vjp(X3, g, 0.01, mode="unrolled")
    num = ref.numerical_gradient(lambda z: ref.sinkhorn_soft_rank(z, 0.01, tol=0.0) @ g, X3)
    close(unrolled, num, rtol=1e-4, atol=1e-8)
    assert np.max(np.abs(unrolled)) < 1e-3 and np.max(np.abs(implicit)) < 1e-4


def test_implicit_vjp_is_exact_for_the_returned_plan():
    """SPEC 4.3 b: a plan P returned at a finite tol has the Gibbs form, so it is the exact entropic plan
    of its own marginals r = P 1, c = P^T 1. The implicit VJP of P (computed with r and c) is therefore
    the exact derivative of C -> plan(C, r, c): it matches finite differences of that map and the VJP
    of the converged (r, c) problem, however far P is from a and b."""
    rng = np.random.default_rng(41)
    C, a, b = problem(rng, 4, 5)
    eps = 0.1
    G = rng.normal(size=(4, 5))
    res = ref.sinkhorn(C, a, b, eps, max_iter=3)
    assert not res.converged and res.err > 1e-3
    r, c = res.plan.sum(1), res.plan.sum(0)
    exact = ref.sinkhorn(C, r, c, eps, **TIGHT)
    close(exact.plan, res.plan, rtol=0, atol=1e-12)  # the same plan
    with pytest.warns(RuntimeWarning):
        dC, da, db = ref.sinkhorn_implicit_vjp(C, a, b, eps, G, res)
    dC_r, da_r, db_r = ref.sinkhorn_implicit_vjp(C, r, c, eps, G, exact)
    close(dC, dC_r, rtol=1e-8, atol=1e-10)
    close(normalize_ab(da, db), normalize_ab(da_r, db_r), rtol=1e-8, atol=1e-10)
    loss = lambda cc: float(np.sum(G * ref.sinkhorn(cc, r, c, eps, **TIGHT).plan))
    close(dC, ref.numerical_gradient(loss, C), rtol=1e-6, atol=1e-8)
    # with a and b in H (inconsistent system) the same plan's VJP is visibly wrong
    H = np.block([[np.diag(a), res.plan], [res.plan.T, np.diag(b)]])
    Q = G * res.plan
    uv = np.linalg.lstsq(H, np.concatenate([Q.sum(1), Q.sum(0)]), rcond=None)[0]
    dC_ab = (res.plan * (uv[:4, None] + uv[None, 4:]) - Q) / eps
    assert np.max(np.abs(dC_ab - dC)) > 1e-2 * np.max(np.abs(dC))


# ------------------------------------------------------------------------------------------------
# zero weights (SPEC 4.4)


def test_zero_weights_forward_and_vjps():
    rng = np.random.default_rng(8)
    C = rng.uniform(0, 1, size=(4, 3))
    a = np.array([0.3, 0.0, 0.5, 0.2])
    b = np.array([0.6, 0.4, 0.0])
    eps = 0.4
    r = ref.sinkhorn(C, a, b, eps, **TIGHT)
    assert r.converged
    assert np.all(r.plan[1] == 0) and np.all(r.plan[:, 2] == 0)
    assert r.f[1] == 0 and r.g[2] == 0
    close(r.plan.sum(1), a, atol=1e-13)
    close(r.plan.sum(0), b, atol=1e-13)
    close(r.value, r.dual, atol=1e-12)
    # the support problem gives the same plan
    rs = ref.sinkhorn(C[[0, 2, 3]][:, :2], a[[0, 2, 3]], b[:2], eps, **TIGHT)
    close(r.plan[[0, 2, 3]][:, :2], rs.plan, atol=1e-13)
    G = rng.normal(size=(4, 3))
    loss = lambda c, aa=a, bb=b: float(np.sum(G * ref.sinkhorn(c, aa, bb, eps, **TIGHT).plan))
    for solver in ["lstsq", "schur", "cg"]:
        dC, da, db = ref.sinkhorn_implicit_vjp(C, a, b, eps, G, r, solver=solver)
        close(dC, ref.numerical_gradient(loss, C), rtol=1e-6, atol=1e-8)
        assert np.all(np.isfinite(da)) and np.all(np.isfinite(db))
        # one-sided (second-order) differences into the zero weights: a_1 up, a_0 down (b fixed)
        h = 1e-5
        d = np.array([-1.0, 1.0, 0.0, 0.0])
        fd = (-3 * loss(C) + 4 * loss(C, a + h * d) - loss(C, a + 2 * h * d)) / (2 * h)
        close(da @ d, fd, rtol=1e-5, atol=1e-7)
        e = np.array([0.0, -1.0, 1.0])
        fd = (-3 * loss(C) + 4 * loss(C, a, b + h * e) - loss(C, a, b + 2 * h * e)) / (2 * h)
        close(db @ e, fd, rtol=1e-5, atol=1e-7)
    # unrolled: exact for the truncated algorithm, one-sided at zero weights
    T = 6
    dC, da, db = ref.sinkhorn_unrolled_vjp(C, a, b, eps, T, G)
    lt = lambda c, aa=a, bb=b: float(np.sum(G * ref.sinkhorn_iterations(c, aa, bb, eps, T)[0]))
    close(dC, ref.numerical_gradient(lt, C), rtol=1e-6, atol=1e-8)
    h = 1e-5
    for i in range(4):
        d = np.eye(4)[i]
        fd = (-3 * lt(C) + 4 * lt(C, a + h * d) - lt(C, a + 2 * h * d)) / (2 * h)
        close(da[i], fd, rtol=1e-5, atol=1e-7)
    for j in range(3):
        e = np.eye(3)[j]
        fd = (-3 * lt(C) + 4 * lt(C, a, b + h * e) - lt(C, a, b + 2 * h * e)) / (2 * h)
        close(db[j], fd, rtol=1e-5, atol=1e-7)


def test_zero_weight_envelope_gradient_is_not_f():
    """SPEC 4.4 sets f_i = 0 where a_i = 0 and SPEC 4.2 returns grad_a OT_eps = f "as computed". The
    one-sided derivative into a zero weight is the LSE (c-transform) value of f_i instead, so f_i = 0 is a
    wrong gradient entry (this test documents the discrepancy; the reference follows the SPEC)."""
    C = np.array([[0.0, 1.0], [2.0, 0.5], [1.0, 1.0]])
    a = np.array([0.5, 0.5, 0.0])
    b = np.array([0.5, 0.5])
    eps = 0.5
    r = ref.sinkhorn(C, a, b, eps, **TIGHT)
    assert r.f[2] == 0.0
    f_star = -eps * math.log(np.sum(b * np.exp((r.g - C[2]) / eps)))
    h = 1e-6
    d = np.array([-1.0, 0.0, 1.0])  # move mass from a_0 to the zero weight a_2
    value = lambda aa: ref.sinkhorn(C, aa, b, eps, **TIGHT).value
    fd = (-3 * value(a) + 4 * value(a + h * d) - value(a + 2 * h * d)) / (2 * h)
    close(fd, f_star - r.f[0], rtol=1e-5, atol=1e-7)
    assert abs(fd - (r.f[2] - r.f[0])) > 0.1


# ------------------------------------------------------------------------------------------------
# SPEC 4.5: soft ranks, sort, quantiles, top-k


def test_soft_rank_sort_hard_limits():
    # Near a permutation plain Sinkhorn converges slowly (error ~ 1/iterations, see the eps = 0.01 test
    # above), so the small-eps results are compared with a tolerance that 5000 iterations reach.
    rng = np.random.default_rng(9)
    for n in [2, 4, 6]:
        x = rng.permutation(n).astype(float) + rng.uniform(-0.2, 0.2, n)
        hard = np.argsort(np.argsort(x)) + 1.0
        eps, atol = 1e-3, 1e-3
        close(ref.sinkhorn_soft_rank(x, eps, max_iter=5000), hard, atol=atol)
        close(ref.sinkhorn_soft_sort(x, eps, max_iter=5000), np.sort(x), atol=atol * n)
        close(ref.sinkhorn_soft_sort(x, eps, descending=True, max_iter=5000), np.sort(x)[::-1], atol=atol * n)
        # "none" squash with targets on the scale of x
        close(ref.sinkhorn_soft_rank(x, eps, y=np.sort(x), squash="none", max_iter=5000), hard, atol=atol)
        # the distance to the hard ranks shrinks with eps
        dist = [np.abs(ref.sinkhorn_soft_rank(x, e, max_iter=5000) - hard).max() for e in [1.0, 0.1, 0.01]]
        assert dist[0] > dist[1] > dist[2]


@pytest.mark.parametrize("eps", [0.1, 0.3, 3.0])
def test_soft_rank_sort_properties(eps):
    rng = np.random.default_rng(10 + int(100 * eps))
    for n in [1, 3, 5]:
        x = rng.normal(size=n)
        R = ref.sinkhorn_soft_rank(x, eps, tol=1e-12)
        S = ref.sinkhorn_soft_sort(x, eps, tol=1e-12)
        close(R.sum(), n * (n + 1) / 2, atol=1e-12)  # exact once columns hold
        close(S.mean(), x.mean(), atol=1e-11)  # sum_j S_j b_j = sum_i x_i a_i
        close(ref.sinkhorn_soft_sort(x, eps, descending=True, tol=1e-12), S[::-1], atol=0)
        if n > 1:
            assert np.all(np.diff(S) > 0)  # y increasing: soft sort is increasing
        p = rng.permutation(n)
        close(ref.sinkhorn_soft_rank(x[p], eps, tol=1e-12), R[p], atol=1e-9)
        close(ref.sinkhorn_soft_sort(x[p], eps, tol=1e-12), S, atol=1e-9)
    # non-uniform weights, m != n
    x = rng.normal(size=5)
    a = rng.uniform(0.5, 1.5, 5)
    a /= a.sum()
    b = np.array([0.2, 0.5, 0.3])
    S = ref.sinkhorn_soft_sort(x, eps, a=a, b=b, tol=1e-12)
    close(S @ b, x @ a, atol=1e-11)
    R = ref.sinkhorn_soft_rank(x, eps, a=a, b=b, tol=1e-12)
    close(R @ a / 5, np.cumsum(b) @ b, atol=1e-11)  # sum_i a_i R_i / n = <b, bbar>


def test_soft_quantile_and_topk():
    x = np.array([0.1, 2.0, -1.0, 1.5, 0.3])
    for k in range(6):
        mask = ref.sinkhorn_soft_topk_mask(x, k, 1e-3, max_iter=5000)
        hard = np.zeros(5)
        hard[np.argsort(-x)[:k]] = 1
        close(mask, hard, atol=1e-3)
        for eps in [0.1, 1.0]:
            mk = ref.sinkhorn_soft_topk_mask(x, k, eps, tol=1e-12)
            close(mk.sum(), k, atol=1e-11)
            assert np.all(mk >= 0) and np.all(mk <= 1 + 1e-12)
    xs = np.arange(1.0, 11.0)
    rng = np.random.default_rng(11)
    perm = rng.permutation(10)
    for tau, expect in [(0.5, 5.5), (0.25, 3.0), (0.75, 8.0), (0.42, 4.7)]:
        # eps -> 0: the mean of the quantile function over [tau - t/2, tau + t/2] (t = 0.2); e.g. tau = 0.25
        # takes half of x = 2, all of x = 3 and half of x = 4
        close(ref.sinkhorn_soft_quantile(xs[perm], tau, 0.2, eps=1e-3), expect, atol=1e-4)
    # b_1 = 0 (a zero target weight); slow convergence again: 5000 iterations leave ~3e-4
    close(ref.sinkhorn_soft_quantile(xs, 0.1, 0.2, eps=1e-3, max_iter=5000), 1.5, atol=1e-3)


SORT_CASES = [
    ("rank", dict()),
    ("rank", dict(b=[0.2, 0.5, 0.3])),  # m = 3 != n
    ("sort", dict()),
    ("sort", dict(descending=True)),
    ("sort", dict(a=[0.1, 0.3, 0.2, 0.25, 0.15], b=[0.4, 0.6], y=[0.2, 0.9])),  # m = 2
    ("rank", dict(squash="none", y=[-1.0, 0.0, 1.0], b=[0.3, 0.4, 0.3])),
    ("quantile", dict(tau=0.4, width=0.3)),
    ("topk", dict(k=2)),
]


def _sort_fn(op):
    return {"rank": (ref.sinkhorn_soft_rank, ref.sinkhorn_soft_rank_vjp),
            "sort": (ref.sinkhorn_soft_sort, ref.sinkhorn_soft_sort_vjp),
            "quantile": (ref.sinkhorn_soft_quantile, ref.sinkhorn_soft_quantile_vjp),
            "topk": (ref.sinkhorn_soft_topk_mask, ref.sinkhorn_soft_topk_mask_vjp)}[op]


def _call(fn, op, x, *args, **kw):
    kw = dict(kw)
    if op == "quantile":
        return fn(x, *args, kw.pop("tau"), kw.pop("width"), **kw)
    if op == "topk":
        return fn(x, *args, kw.pop("k"), **kw)
    return fn(x, *args, **kw)


@pytest.mark.parametrize("op,kw", SORT_CASES)
@pytest.mark.parametrize("eps", [0.1, 1.0])
@pytest.mark.parametrize("mode", ["implicit", "unrolled"])
def test_sort_ops_vjp_vs_finite_differences(op, kw, eps, mode):
    rng = np.random.default_rng(500 + len(kw) + int(10 * eps))
    x = rng.normal(size=5)
    fwd, vjp = _sort_fn(op)
    if mode == "implicit":
        it = dict(tol=1e-13, max_iter=20000, check_every=1)
    else:  # fixed T iterations: tol = 0 never stops early
        it = dict(tol=0.0, max_iter=6)
    out = np.atleast_1d(_call(fwd, op, x, eps=eps, **kw, **it))
    g = rng.normal(size=out.shape)
    dx = _call(vjp, op, x, g if op != "quantile" else float(g[0]), eps=eps, mode=mode, **kw, **it)
    num = ref.numerical_gradient(lambda xx: float(np.atleast_1d(_call(fwd, op, xx, eps=eps, **kw, **it)) @ g), x)
    close(dx, num, rtol=1e-6, atol=1e-8)


def test_squash():
    x = np.array([3.0, 1.0, 2.0])
    z = (x - 2.0) / (math.sqrt(2 / 3) + 1e-10)
    close(ref.squash(x), 1 / (1 + np.exp(-z)), atol=1e-15)
    close(ref.squash([4.2]), [0.5], atol=0)
    close(ref.squash([1.0, 1.0]), [0.5, 0.5], atol=0)
    rng = np.random.default_rng(12)
    for n in [2, 3, 6]:
        x = rng.normal(size=n)
        g = rng.normal(size=n)
        close(ref.squash_vjp(x, g), ref.numerical_gradient(lambda xx: ref.squash(xx) @ g, x), rtol=1e-6, atol=1e-9)
        close(ref.squash_vjp(x, g, "none"), g, atol=0)


# ------------------------------------------------------------------------------------------------
# SPEC 4.6: Sinkhorn operator / Gumbel-Sinkhorn


def test_sinkhorn_operator_properties():
    close(ref.sinkhorn_operator([[3.7]], 0.2), [[1.0]], atol=0)
    close(ref.sinkhorn_operator(np.full((4, 4), 2.5), 0.7), np.full((4, 4), 0.25), atol=1e-15)
    rng = np.random.default_rng(13)
    X = rng.normal(size=(4, 4))
    P = ref.sinkhorn_operator(X, 0.5, 20)
    close(P.sum(axis=0), 1.0, atol=1e-14)  # columns exact
    close(P.sum(axis=1), 1.0, atol=1e-3)  # rows approximately
    close(ref.sinkhorn_operator(X, 0.5, 0), np.exp(X / 0.5), atol=0)
    # L -> infinity: the entropic OT plan with C = -X, eps = tau, a = b = 1
    r = ref.sinkhorn(-X, np.ones(4), np.ones(4), 0.5, tol=1e-13)
    close(ref.sinkhorn_operator(X, 0.5, 500), r.plan, atol=1e-12)
    # tau -> 0: the linear assignment (maximize <P, X>), brute force
    best = max(itertools.permutations(range(4)), key=lambda p: sum(X[i, p[i]] for i in range(4)))
    M = np.zeros((4, 4))
    M[range(4), best] = 1
    P = ref.sinkhorn_operator(X, 0.01, 2000)
    close(P, M, atol=5e-3)  # slow convergence near a permutation
    assert np.array_equal(np.round(P), M)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("tau", [0.3, 1.0])
@pytest.mark.parametrize("L", [1, 5, 20])
def test_sinkhorn_operator_vjp_vs_finite_differences(n, tau, L):
    rng = np.random.default_rng(600 + n + L + int(10 * tau))
    X = rng.normal(size=(n, n))
    G = rng.normal(size=(n, n))
    dX = ref.sinkhorn_operator_vjp(X, G, tau, L)
    close(dX, ref.numerical_gradient(lambda xx: np.sum(G * ref.sinkhorn_operator(xx, tau, L)), X),
          rtol=1e-6, atol=1e-8)


def test_sinkhorn_operator_unrolled_tends_to_implicit():
    rng = np.random.default_rng(14)
    X = rng.normal(size=(4, 4))
    G = rng.normal(size=(4, 4))
    tau = 0.7
    r = ref.sinkhorn(-X, np.ones(4), np.ones(4), tau, tol=1e-13)
    dC = ref.sinkhorn_implicit_vjp(-X, np.ones(4), np.ones(4), tau, G, r)[0]
    close(ref.sinkhorn_operator_vjp(X, G, tau, 400), -dC, atol=1e-9)


def test_gumbel_sinkhorn():
    rng = np.random.default_rng(15)
    U = rng.uniform(size=(3, 3))
    G = ref.gumbel_noise(U)
    close(G, -np.log(-np.log(U + 1e-20) + 1e-20), atol=0)
    X = rng.normal(size=(3, 3))
    close(ref.gumbel_sinkhorn(X, 0.5, 10, noise=G, noise_factor=0.3), ref.sinkhorn_operator(X + 0.3 * G, 0.5, 10),
          atol=0)
    close(ref.gumbel_sinkhorn(X, 0.5, 10), ref.sinkhorn_operator(X, 0.5, 10), atol=0)
    # the Gumbel transform of uniforms has the standard Gumbel mean (Euler-Mascheroni) and variance pi^2/6
    g = ref.gumbel_noise(rng.uniform(size=200000))
    assert abs(g.mean() - 0.5772156649) < 0.01
    assert abs(g.var() - math.pi**2 / 6) < 0.03


# ------------------------------------------------------------------------------------------------
# edge cases (SPEC 0, 4.4) and errors


def test_empty_inputs():
    for n, m in [(0, 0), (0, 3), (3, 0)]:
        r = ref.sinkhorn(np.zeros((n, m)), None, None, 1.0)
        assert r.plan.shape == (n, m) and r.f.shape == (n,) and r.g.shape == (m,)
        assert r.value == 0.0 and r.converged
        P, f, g = ref.sinkhorn_iterations(np.zeros((n, m)), None, None, 1.0, 5)
        assert P.shape == (n, m)
        for vjp in [ref.sinkhorn_implicit_vjp(np.zeros((n, m)), None, None, 1.0, np.zeros((n, m)), r),
                    ref.sinkhorn_unrolled_vjp(np.zeros((n, m)), None, None, 1.0, 5, np.zeros((n, m)))]:
            assert vjp[0].shape == (n, m) and vjp[1].shape == (n,) and vjp[2].shape == (m,)
    e = np.zeros(0)
    assert ref.sinkhorn_soft_rank(e).shape == (0,)
    assert ref.sinkhorn_soft_sort(e).shape == (0,)
    assert ref.sinkhorn_soft_topk_mask(e, 0).shape == (0,)
    assert math.isnan(ref.sinkhorn_soft_quantile(e, 0.5, 0.2))
    assert ref.sinkhorn_soft_rank_vjp(e, e).shape == (0,)
    assert ref.sinkhorn_operator(np.zeros((0, 0))).shape == (0, 0)
    assert ref.sinkhorn_operator_vjp(np.zeros((0, 0)), np.zeros((0, 0))).shape == (0, 0)
    assert ref.numerical_gradient(lambda x: 0.0, np.zeros((0, 2))).shape == (0, 2)


def test_n1():
    close(ref.sinkhorn_soft_rank([4.2], 0.01), [1.0], atol=0)
    close(ref.sinkhorn_soft_sort([4.2], 0.01), [4.2], atol=1e-15)
    close(ref.sinkhorn_soft_topk_mask([4.2], 1, 0.01), [1.0], atol=1e-15)
    close(ref.sinkhorn_soft_topk_mask([4.2], 0, 0.01), [0.0], atol=0)
    close(ref.sinkhorn_soft_rank_vjp([4.2], [1.0], 0.01), [0.0], atol=1e-12)
    close(ref.sinkhorn_soft_sort_vjp([4.2], [1.0], 0.01), [1.0], atol=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_inputs_give_nan(bad):
    rng = np.random.default_rng(16)
    C, a, b = problem(rng, 3, 4)
    allnan = lambda x: bool(np.all(np.isnan(x)))
    G = np.ones((3, 4))
    Cb = C.copy()
    Cb[1, 2] = bad
    ab = a.copy()
    ab[0] = bad
    bb = b.copy()
    bb[3] = bad
    for args in [(Cb, a, b), (C, ab, b), (C, a, bb)]:
        r = ref.sinkhorn(*args, 0.5)
        assert allnan(r.plan) and allnan(r.f) and allnan(r.g) and math.isnan(r.value) and not r.converged
        assert all(allnan(v) for v in ref.sinkhorn_iterations(*args, 0.5, 3))
        assert all(allnan(v) for v in ref.sinkhorn_implicit_vjp(*args, 0.5, G, r))
        assert all(allnan(v) for v in ref.sinkhorn_unrolled_vjp(*args, 0.5, 3, G))
    r = ref.sinkhorn(C, a, b, 0.5)
    Gb = G.copy()
    Gb[0, 0] = bad
    assert all(allnan(v) for v in ref.sinkhorn_implicit_vjp(C, a, b, 0.5, Gb, r))
    assert all(allnan(v) for v in ref.sinkhorn_unrolled_vjp(C, a, b, 0.5, 3, Gb))
    x = np.array([0.5, bad, -1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own warnings on inf - inf
        assert allnan(ref.sinkhorn_soft_rank(x, 0.1))
        assert allnan(ref.sinkhorn_soft_sort(x, 0.1))
        assert allnan(ref.sinkhorn_soft_topk_mask(x, 2, 0.1))
        assert math.isnan(ref.sinkhorn_soft_quantile(x, 0.5, 0.2, 0.1))
        assert allnan(ref.sinkhorn_soft_rank_vjp(x, np.ones(4), 0.1))
        assert allnan(ref.sinkhorn_soft_sort_vjp(x, np.ones(4), 0.1, mode="unrolled"))
    X = np.eye(3)
    X[2, 1] = bad
    assert allnan(ref.sinkhorn_operator(X, 1.0))
    assert allnan(ref.sinkhorn_operator_vjp(X, np.ones((3, 3)), 1.0))


def test_errors():
    C = np.zeros((2, 3))
    for eps in [0.0, -1.0, math.inf, math.nan]:
        with pytest.raises(ValueError):
            ref.sinkhorn(C, None, None, eps)
    with pytest.raises(ValueError):
        ref.sinkhorn(C, [0.5, 0.5], [0.5, 0.6, 0.0])  # sum a != sum b
    with pytest.raises(ValueError):
        ref.sinkhorn(C, [1.5, -0.5], [0.5, 0.5, 0.0])  # negative weight
    with pytest.raises(ValueError):
        ref.sinkhorn(C, [0.5, 0.5, 0.0], None)  # wrong length
    with pytest.raises(ValueError):
        ref.sinkhorn(np.zeros(3))  # not a matrix
    with pytest.raises(ValueError):
        ref.sinkhorn(C, max_iter=0)
    with pytest.raises(ValueError):
        ref.sinkhorn_implicit_vjp(C, None, None, 1.0, np.zeros((2, 2)), ref.sinkhorn(C))
    with pytest.raises(ValueError):
        ref.sinkhorn_implicit_vjp(C, None, None, 1.0, np.zeros((2, 3)), ref.sinkhorn(C), solver="qr")
    with pytest.raises(ValueError):
        ref.sinkhorn_soft_quantile([1.0, 2.0], 0.05, 0.2)  # tau < width/2
    with pytest.raises(ValueError):
        ref.sinkhorn_soft_topk_mask([1.0, 2.0], 3)
    with pytest.raises(ValueError):
        ref.sinkhorn_soft_rank([1.0, 2.0], squash="tanh")
    with pytest.raises(ValueError):
        ref.sinkhorn_operator(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        ref.sinkhorn_operator(np.zeros((2, 2)), tau=0.0)


def test_numerical_gradient():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    close(ref.numerical_gradient(lambda z: np.sum(z**3), x), 3 * x**2, atol=1e-8)
