"""Validate the float64 numpy references of tests/reference/isotonic.py against SPEC.md:
the reference values of SPEC 7.1 / 7.2, finite differences, optimality (KKT) conditions and the
properties of SPEC 1.7 / 2."""

import itertools
import math

import numpy as np
import pytest

from tests.reference import isotonic as ref

RTOL = 1e-5
ATOL = 1e-6  # SPEC 7 rounds to 6 decimals
REGS = ["l2", "kl"]
DIRS = [False, True]  # descending?


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol)


def rank_jacobian(theta, eps, reg, desc):
    """Full Jacobian (rows = outputs) assembled from VJPs with unit upstream gradients."""
    n = len(theta)
    return np.array([ref.soft_rank_vjp(theta, e, eps, reg, desc) for e in np.eye(n)])


def sort_jacobian(theta, eps, reg, desc):
    n = len(theta)
    return np.array([ref.soft_sort_vjp(theta, e, eps, reg, desc) for e in np.eye(n)])


def separated(rng, n, scale=3.0, min_gap=0.05):
    """Random vector whose sorted values differ by at least min_gap (no ties)."""
    while True:
        x = rng.normal(size=n) * scale
        if n < 2 or np.min(np.diff(np.sort(x))) >= min_gap:
            return x


# ------------------------------------------------------------------------------------------------
# SPEC 7.1

T = [3.0, 1.0, 2.0]

TABLE_7_1 = [
    # op, reg, eps, descending, expected
    ("rank", "l2", 1, False, [3, 1, 2]),
    ("rank", "l2", 2, False, [2.5, 1.5, 2]),
    ("rank", "l2", 2, True, [1.5, 2.5, 2]),
    ("sort", "l2", 2, False, [1.5, 2, 2.5]),
    ("sort", "l2", 2, True, [2.5, 2, 1.5]),
    ("rank", "l2", 100, False, [2.01, 1.99, 2.00]),
    ("sort", "l2", 100, False, [1.99, 2.00, 2.01]),
    ("rank", "kl", 2, False, [3, 1.132622, 1.867378]),
    ("rank", "kl", 2, True, [1.132622, 3, 1.867378]),
    ("sort", "kl", 2, False, [1.272664, 1.772664, 2.272664]),
    ("sort", "kl", 2, True, [2.727336, 2.227336, 1.727336]),
    ("rank", "kl", 100, False, [2.020033, 1.980034, 1.999933]),
    ("sort", "kl", 100, False, [1.68104, 1.69104, 1.70104]),
    ("sort", "kl", 100, True, [2.31896, 2.30896, 2.29896]),
]


@pytest.mark.parametrize("op,reg,eps,desc,expected", TABLE_7_1)
def test_spec_7_1_table(op, reg, eps, desc, expected):
    f = ref.soft_rank if op == "rank" else ref.soft_sort
    close(f(T, eps, reg, desc), expected)


def test_spec_7_1_jacobians_eps2():
    third, sixth = 1 / 3, 1 / 6
    expected = {
        ("rank", "l2"): [[third, -sixth, -sixth], [-sixth, third, -sixth], [-sixth, -sixth, third]],
        ("sort", "l2"): np.full((3, 3), third),
        ("rank", "kl"): [[0, 0, 0], [0, 0.352506, -0.352506], [0, -0.352506, 0.352506]],
        ("sort", "kl"): [[0.090031, 0.665241, 0.244728]] * 3,
    }
    for (op, reg), J in expected.items():
        vjp_jac = rank_jacobian if op == "rank" else sort_jacobian
        f = ref.soft_rank if op == "rank" else ref.soft_sort
        close(vjp_jac(T, 2.0, reg, False), J)
        close(ref.numerical_jacobian(lambda x: f(x, 2.0, reg, False), T), J)


def test_spec_7_1_kl_sort_jacobian_is_softmax_of_values_not_rho():
    # every row = softmax of the block's sorted values w = [-1, -2, -3], mapped back to the inputs
    sm = np.exp([-1.0, -2.0, -3.0]) / np.exp([-1.0, -2.0, -3.0]).sum()
    J = sort_jacobian(T, 2.0, "kl", False)
    close(J, [[sm[2], sm[0], sm[1]]] * 3, atol=1e-12)
    # the buggy variant (softmax over rho/eps = [1.5, 1, 0.5]) differs
    buggy = np.exp([1.5, 1.0, 0.5]) / np.exp([1.5, 1.0, 0.5]).sum()
    assert np.max(np.abs(J[0] - buggy[[2, 0, 1]])) > 0.1


def test_spec_7_1_second_vector():
    t = [0, 3, 1.2, 1.0]
    close(ref.soft_rank(t, 1, "l2"), [1.266667, 4, 2.466667, 2.266667])
    close(ref.soft_sort(t, 1, "l2"), [0, 1, 1.6, 2.6])
    close(ref.soft_rank(t, 1, "kl"), [1, 4, 2.74917, 2.25083])
    close(ref.soft_sort(t, 1, "kl", True), [2.839716, 1.839716, 1, 0])
    close(ref.soft_rank(t, 0.5, "l2"), [1, 4, 2.7, 2.3])
    close(ref.soft_sort(t, 0.5, "l2"), [0, 1, 1.2, 3])
    close(ref.soft_rank(t, 0.5, "kl"), [1, 4, 2.993438, 2.006562])
    close(ref.soft_sort(t, 0.5, "kl", True), [3, 1.2, 1, 0])


def test_spec_7_1_thresholds():
    t = [0, 0.5, 3, 1]
    np.testing.assert_array_equal(ref.soft_rank(t, 0.5, "l2"), [1, 2, 4, 3])
    close(ref.soft_rank(t, 0.51, "l2"), [1.019608, 2, 4, 2.980392])
    close(ref.soft_sort(t, 0.5, "l2"), [0, 0.5, 1, 3], atol=1e-12)
    close(ref.soft_sort(t, 0.51, "l2"), [0, 0.5, 1.019608, 2.980392])
    th = 1 / math.log(2)
    close(th, 1.442695)
    close(ref.soft_rank([0, 1, 2], 0.999 * th, "kl"), [1, 2, 3], atol=1e-12)
    close(ref.soft_rank([0, 1, 2], 1.01 * th, "kl"), [1.00458, 1.99542, 3])


@pytest.mark.parametrize("reg", REGS)
def test_spec_7_1_ties_and_n1(reg):
    close(ref.soft_rank([1, 1, 2], 0.1, reg), [1.5, 1.5, 3], atol=1e-9)
    close(ref.soft_rank([7.5], 1.0, reg), [1])
    close(ref.soft_sort([7.5], 1.0, reg), [7.5])


def test_spec_7_1_topk():
    x = [0.1, 2.0, -1.0, 1.5, 0.3]
    close(ref.soft_topk_mask(x, 2, 0.1), [0, 1, 0, 1, 0], atol=1e-12)
    close(ref.soft_topk_mask(x, 2, 2.0), [0.066667, 1, 0, 0.766667, 0.166667])
    close(ref.soft_topk_mask(x, 2, 5.0), [0.304, 0.684, 0.084, 0.584, 0.344])


# ------------------------------------------------------------------------------------------------
# SPEC 7.2


def test_spec_7_2_spearman():
    pred, target = [0.1, 0.9, 0.4, 0.5], [1, 4, 2, 3]
    close(ref.spearman_correlation(pred, target, 1.0), 0.976831)
    close(ref.spearman_loss_sq(pred, target, 1.0), 1.41375)
    for eps in [0.1, 0.05, 1e-3]:
        close(ref.spearman_correlation(pred, target, eps), 1.0, atol=1e-12)
        close(ref.spearman_loss_sq(pred, target, eps), 0.0, atol=1e-12)


def test_spec_7_2_lts():
    losses = [0.1, 4.0, 0.3, 0.2, 9.0]
    close(ref.soft_lts(losses, 2, 1e-3), 0.2)
    close(ref.soft_sort(losses, 1.0, "l2", True), [4.72, 3.72, 2.72, 1.72, 0.72])
    close(ref.soft_lts(losses, 2, 1.0), 1.72)
    close(ref.soft_lts(losses, 2, 1e3), 2.719)
    for eps in [1e-3, 1.0, 1e3]:  # k = 0: mean(l) for every eps
        close(ref.soft_lts(losses, 0, eps), np.mean(losses), atol=1e-12)


def test_spec_7_2_quantile():
    x = [5, 1, 4, 2, 3]
    for eps in [1e-3, 0.5, 10]:
        close(ref.soft_quantile(x, 0.5, eps), 3.0)
    for eps in [1e-3, 0.1, 0.5]:
        close(ref.soft_quantile(x, 0.3, eps), 2.2)
    close(ref.soft_quantile(x, 0.3, 10), 2.92)


# ------------------------------------------------------------------------------------------------
# VJPs against central finite differences (float64, away from ties and block changes)


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("desc", DIRS)
@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_vjps_vs_finite_differences(reg, desc, eps):
    rng = np.random.default_rng(1234 + int(10 * eps) + 7 * desc + 3 * (reg == "kl"))
    for n in [2, 3, 5, 8]:
        theta = separated(rng, n)
        for op, vjp in [(ref.soft_rank, ref.soft_rank_vjp), (ref.soft_sort, ref.soft_sort_vjp)]:
            J = ref.numerical_jacobian(lambda x: op(x, eps, reg, desc), theta)
            g = rng.normal(size=n)
            close(vjp(theta, g, eps, reg, desc), g @ J, rtol=1e-5, atol=1e-6)
            Jv = np.array([vjp(theta, e, eps, reg, desc) for e in np.eye(n)])
            close(Jv, J, rtol=1e-5, atol=1e-6)
            if op is ref.soft_rank:
                close(Jv.sum(axis=1), 0.0, atol=1e-9)  # rank rows sum to 0
            else:
                close(Jv.sum(axis=1), 1.0, atol=1e-9)  # sort rows sum to 1
            if op is ref.soft_rank and reg == "l2":  # c * symmetric projector
                c = (-1.0 if desc else 1.0) / eps
                P = Jv / c
                close(P, P.T, atol=1e-12)
                close(P @ P, P, atol=1e-9)


@pytest.mark.parametrize("eps", [0.3, 1.0, 4.0])
def test_topk_vjp_vs_finite_differences(eps):
    rng = np.random.default_rng(99)
    for n in [2, 4, 7]:
        theta = separated(rng, n)
        for k in range(0, n + 1):
            J = ref.numerical_jacobian(lambda x: ref.soft_topk_mask(x, k, eps), theta)
            g = rng.normal(size=n)
            close(ref.soft_topk_mask_vjp(theta, g, k, eps), g @ J, atol=1e-6)


def test_rank_vjp_at_ties_is_symmetric_and_matches_fd():
    theta = np.array([1.0, 1.0, 2.0, -0.5])
    for reg in REGS:
        for desc in DIRS:
            J = rank_jacobian(theta, 0.7, reg, desc)
            close(J, ref.numerical_jacobian(lambda x: ref.soft_rank(x, 0.7, reg, desc), theta),
                  atol=1e-6)
            # swapping the tied inputs does not change the VJP (symmetric inside a block)
            g = np.array([0.3, -1.2, 0.5, 2.0])
            perm = [1, 0, 2, 3]
            close(ref.soft_rank_vjp(theta[perm], g[perm], 0.7, reg, desc)[perm],
                  ref.soft_rank_vjp(theta, g, 0.7, reg, desc), atol=1e-12)


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("desc", DIRS)
def test_sort_vjp_at_ties_is_one_sided_keeping_input_order(reg, desc):
    # theta_0 == theta_2: stable order puts input 0 before input 2 in the sorted output.
    theta = np.array([1.0, 2.0, 1.0, 0.4])
    eps, h = 0.8, 1e-7
    f = lambda x: ref.soft_sort(x, eps, reg, desc)
    J = sort_jacobian(theta, eps, reg, desc)
    for j in range(4):
        e = np.zeros(4)
        e[j] = h
        if j == 0:  # earlier tied input moves towards the front of the output
            step = e if desc else -e
        elif j == 2:  # later tied input moves towards the back
            step = -e if desc else e
        else:
            step = None
        if step is None:
            col = (f(theta + e) - f(theta - e)) / (2 * h)
        else:
            col = (f(theta + step) - f(theta)) / h * np.sign(step[j])
        close(J[:, j], col, atol=1e-5)


def test_n0_n1_vjps():
    for reg in REGS:
        for desc in DIRS:
            assert ref.soft_rank_vjp([], [], 1.0, reg, desc).shape == (0,)
            assert ref.soft_sort_vjp([], [], 1.0, reg, desc).shape == (0,)
            close(ref.soft_rank_vjp([2.0], [3.0], 1.0, reg, desc), [0.0], atol=0)
            close(ref.soft_sort_vjp([2.0], [3.0], 1.0, reg, desc), [3.0], atol=0)


# ------------------------------------------------------------------------------------------------
# isotonic regression: optimality (KKT), scikit-learn, VJP


def kkt_nonincreasing(v, grad, tol=1e-9):
    """KKT of min f(v) s.t. v_1 >= ... >= v_n, with grad = f'(v): the prefix sums mu_j of grad are
    >= 0, the total is 0, and mu_j = 0 wherever v_j > v_{j+1} (complementary slackness)."""
    assert np.all(np.diff(v) <= tol), "not non-increasing"
    mu = np.cumsum(grad)
    scale = 1.0 + np.sum(np.abs(grad))
    assert abs(mu[-1]) <= tol * scale
    assert np.all(mu >= -tol * scale)
    strict = np.diff(v) < -tol
    assert np.all(np.abs(mu[:-1][strict]) <= tol * scale)


@pytest.mark.parametrize("seed", range(6))
def test_isotonic_l2_kkt(seed):
    rng = np.random.default_rng(seed)
    for n in [1, 2, 5, 12]:
        y = rng.normal(size=n) + (rng.normal() * np.arange(n))
        c = rng.uniform(0.2, 3.0, size=n)
        y[rng.integers(0, n)] = y[0]  # sprinkle a tie
        v = ref.isotonic_nonincreasing_l2(y, c)
        kkt_nonincreasing(v, c * (v - y))
        close(v, ref.isotonic_regression(y, c, increasing=False), atol=0)
        # increasing: v non-decreasing  <=>  -v non-increasing fit of -y
        vi = ref.isotonic_regression(y, c, increasing=True)
        kkt_nonincreasing(-vi, c * (-vi - (-y)))
        # unweighted
        vu = ref.isotonic_nonincreasing_l2(y)
        kkt_nonincreasing(vu, vu - y)


@pytest.mark.parametrize("seed", range(6))
def test_isotonic_kl_kkt(seed):
    rng = np.random.default_rng(100 + seed)
    for n in [1, 2, 5, 12]:
        s = np.sort(rng.normal(size=n) * 2)[::-1]
        w = np.sort(rng.normal(size=n))[::-1]
        v = ref.isotonic_nonincreasing_kl(s, w)
        kkt_nonincreasing(v, np.exp(w) - np.exp(s - v))
        # stability: huge shifts do not overflow (block values shift exactly)
        close(ref.isotonic_nonincreasing_kl(s + 800, w - 800), v + 1600, atol=1e-9)


def test_isotonic_kl_merge_rule():
    s = np.array([0.0, 1.0, 3.0])
    w = np.array([0.5, 0.0, -1.0])
    lse = lambda a: math.log(np.sum(np.exp(a)))
    close(ref.isotonic_nonincreasing_kl(s, w), [lse(s) - lse(w)] * 3, atol=1e-12)


def test_isotonic_regression_vs_sklearn():
    sk = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(5)
    for n in [1, 3, 10, 30]:
        y = rng.normal(size=n) + 0.3 * np.arange(n)
        c = rng.uniform(0.1, 2.0, size=n)
        for inc in [True, False]:
            close(ref.isotonic_regression(y, c, increasing=inc),
                  sk.isotonic_regression(y, sample_weight=c, increasing=inc), atol=1e-10)


@pytest.mark.parametrize("increasing", [True, False])
def test_isotonic_regression_vjp_vs_finite_differences(increasing):
    rng = np.random.default_rng(7 + increasing)
    for n in [1, 2, 4, 9]:
        y = rng.normal(size=n) + (0.2 if increasing else -0.2) * np.arange(n)
        c = rng.uniform(0.3, 2.0, size=n)
        g = rng.normal(size=n)
        dy, dc = ref.isotonic_regression_vjp(y, c, increasing, g)
        Jy = ref.numerical_jacobian(lambda x: ref.isotonic_regression(x, c, increasing), y)
        Jc = ref.numerical_jacobian(lambda x: ref.isotonic_regression(y, x, increasing), c)
        close(dy, g @ Jy, atol=1e-6)
        close(dc, g @ Jc, atol=1e-6)
        dy1, dc1 = ref.isotonic_regression_vjp(y, None, increasing, g)
        Jy1 = ref.numerical_jacobian(lambda x: ref.isotonic_regression(x, None, increasing), y)
        close(dy1, g @ Jy1, atol=1e-6)
        close(dc1, ref.isotonic_regression_vjp(y, np.ones(n), increasing, g)[1], atol=0)


# ------------------------------------------------------------------------------------------------
# projections: optimality over all vertices of the permutahedron (small n, enumeration)


@pytest.mark.parametrize("seed", range(4))
def test_projections_variational_inequality(seed):
    rng = np.random.default_rng(200 + seed)
    for n in [1, 2, 3, 5]:
        z = rng.normal(size=n) * 2
        w = rng.normal(size=n)
        # L2: <z - P, mu - P> <= 0 for every vertex mu = w_pi; P in P(w)
        P = ref.projection_l2(z, w)
        assert_in_permutahedron(P, w)
        for perm in itertools.permutations(range(n)):
            assert np.dot(z - P, w[list(perm)] - P) <= 1e-9
        # KL: mu* = exp(P_E) minimizes KL(mu, e^z) over P(e^w): <P_E - z, e^{w_pi} - mu*> >= 0
        PE = ref.projection_kl(z, w)
        mu = np.exp(PE)
        assert_in_permutahedron(mu, np.exp(w))
        for perm in itertools.permutations(range(n)):
            assert np.dot(PE - z, np.exp(w[list(perm)]) - mu) >= -1e-9
        # w in any order: sorted inside
        close(ref.projection_l2(z, w[::-1]), P, atol=0)
        close(ref.projection_kl(z, w[::-1]), PE, atol=0)


def assert_in_permutahedron(x, w, tol=1e-9):
    """x in P(w) iff sum x = sum w and every prefix sum of sort_desc(x) <= that of sort_desc(w)."""
    xs = np.cumsum(np.sort(x)[::-1])
    ws = np.cumsum(np.sort(w)[::-1])
    assert abs(xs[-1] - ws[-1]) <= tol * (1 + abs(ws[-1]))
    assert np.all(xs <= ws + tol * (1 + np.abs(ws)))


# ------------------------------------------------------------------------------------------------
# SPEC 1.7 properties


@pytest.mark.parametrize("seed", range(5))
def test_properties_1_7(seed):
    rng = np.random.default_rng(300 + seed)
    for n in [2, 3, 6]:
        theta = separated(rng, n, scale=2.0)
        for eps in [0.2, 1.0, 5.0]:
            for reg in REGS:
                for desc in DIRS:
                    r = ref.soft_rank(theta, eps, reg, desc)
                    s = ref.soft_sort(theta, eps, reg, desc)
                    # conservation
                    close(r.sum(), n * (n + 1) / 2, atol=1e-9)
                    if reg == "l2":
                        close(s.sum(), theta.sum(), atol=1e-9)
                    elif desc:
                        close(np.exp(s).sum(), np.exp(theta).sum(), atol=1e-9)
                    else:
                        close(np.exp(-s).sum(), np.exp(-theta).sum(), atol=1e-9)
                    # order preservation: ranks ordered like theta, sort output monotone
                    order = np.argsort(theta)
                    diffs = np.diff(r[order])
                    assert np.all(diffs <= 1e-12) if desc else np.all(diffs >= -1e-12)
                    assert np.all(np.diff(s) <= 1e-12) if desc else np.all(np.diff(s) >= -1e-12)
                    # shift invariance
                    close(ref.soft_rank(theta + 1.7, eps, reg, desc), r, atol=1e-9)
                    close(ref.soft_sort(theta + 1.7, eps, reg, desc), s + 1.7, atol=1e-9)
                    # scale: r_eps(c theta) = r_{eps/c}(theta); L2: sort_eps(c theta) = c sort_{c eps}
                    close(ref.soft_rank(2.5 * theta, eps, reg, desc),
                          ref.soft_rank(theta, eps / 2.5, reg, desc), atol=1e-9)
                    if reg == "l2":
                        close(ref.soft_sort(2.5 * theta, eps, reg, desc),
                              2.5 * ref.soft_sort(theta, 2.5 * eps, reg, desc), atol=1e-9)
                    # permutation equivariance / invariance
                    p = rng.permutation(n)
                    close(ref.soft_rank(theta[p], eps, reg, desc), r[p], atol=1e-12)
                    close(ref.soft_sort(theta[p], eps, reg, desc), s, atol=1e-12)
                # direction relations (L2 only)
                if reg == "l2":
                    close(ref.soft_rank(theta, eps, "l2", True),
                          n + 1 - ref.soft_rank(theta, eps, "l2", False), atol=1e-9)
                    close(ref.soft_sort(theta, eps, "l2", True),
                          ref.soft_sort(theta, eps, "l2", False)[::-1], atol=1e-9)
        # top-k mask: entries in [0, 1], sum k
        for k in range(n + 1):
            m = ref.soft_topk_mask(theta, k, 0.7)
            assert np.all(m >= -1e-12) and np.all(m <= 1 + 1e-12)
            close(m.sum(), k, atol=1e-9)


def test_direction_relations_fail_for_kl():
    assert not np.allclose(ref.soft_rank(T, 2.0, "kl", True), 4 - ref.soft_rank(T, 2.0, "kl", False))
    assert not np.allclose(ref.soft_sort(T, 2.0, "kl", True), ref.soft_sort(T, 2.0, "kl", False)[::-1])


@pytest.mark.parametrize("seed", range(3))
def test_hard_limits(seed):
    rng = np.random.default_rng(400 + seed)
    theta = separated(rng, 6, min_gap=0.05)
    hard_rank = np.argsort(np.argsort(theta)) + 1.0
    for reg in REGS:
        close(ref.soft_rank(theta, 1e-3, reg), hard_rank, atol=1e-9)
        close(ref.soft_rank(theta, 1e-3, reg, True), 7 - hard_rank, atol=1e-9)
        close(ref.soft_sort(theta, 1e-3, reg), np.sort(theta), atol=1e-9)
        close(ref.soft_sort(theta, 1e-3, reg, True), np.sort(theta)[::-1], atol=1e-9)
    # exact thresholds
    s = np.sort(theta)[::-1]
    gaps = s[:-1] - s[1:]
    close(ref.soft_rank(theta, gaps.min(), "l2"), hard_rank, atol=1e-9)
    assert not np.allclose(ref.soft_rank(theta, 1.01 * gaps.min(), "l2"), hard_rank, atol=1e-9)
    close(ref.soft_sort(theta, 1 / gaps.max(), "l2"), np.sort(theta), atol=1e-9)
    assert not np.allclose(ref.soft_sort(theta, 1.01 / gaps.max(), "l2"), np.sort(theta), atol=1e-9)
    rho = np.arange(6, 0, -1.0)
    kl_th = np.min(gaps / np.log(rho[:-1] / rho[1:]))
    close(ref.soft_rank(theta, 0.999 * kl_th, "kl"), hard_rank, atol=1e-9)
    assert not np.allclose(ref.soft_rank(theta, 1.01 * kl_th, "kl"), hard_rank, atol=1e-9)


def test_large_eps_limits():
    theta = np.array([0.3, -1.2, 2.0, 0.7, 0.1])
    n, eps = 5, 1e3
    rho = np.arange(n, 0, -1.0)
    mid = (n + 1) / 2
    close(ref.soft_rank(theta, eps, "l2"), (theta - theta.mean()) / eps + mid, atol=1e-12)
    close(ref.soft_rank(theta, eps, "l2", True), -(theta - theta.mean()) / eps + mid, atol=1e-12)
    close(ref.soft_sort(theta, eps, "l2", True), theta.mean() + (rho - mid) / eps, atol=1e-12)
    z = theta / eps
    close(ref.soft_rank(theta, eps, "kl"), n * (n + 1) / 2 * np.exp(z) / np.exp(z).sum(), atol=1e-9)
    lme = math.log(np.exp(theta).sum()) - math.log(n)
    close(ref.soft_sort(theta, 1e6, "kl", True), lme, atol=1e-5)
    close(ref.soft_sort(theta, 1e6, "kl", False), -(math.log(np.exp(-theta).sum()) - math.log(n)),
          atol=1e-5)


# ------------------------------------------------------------------------------------------------
# SPEC 2 oracles


def test_loss_oracles():
    rng = np.random.default_rng(11)
    x = separated(rng, 7)
    for q in [0.0, 0.1, 0.5, 0.73, 1.0]:
        close(ref.soft_quantile(x, q, 1e-4), np.quantile(x, q), atol=1e-9)
        close(ref.soft_quantile(x, q, 1e7), np.mean(x), atol=1e-5)
    losses = np.abs(x)
    for k in range(7):
        close(ref.soft_lts(losses, k, 1e-4), np.mean(np.sort(losses)[: 7 - k]), atol=1e-9)
        close(ref.soft_lts(losses, k, 1e7), np.mean(losses), atol=1e-5)
    y = rng.normal(size=7)
    t = ref.hard_rank_average(y)
    # eps -> 0: exact Spearman; classic formula when untied
    d2 = np.sum((ref.soft_rank(x, 1e-4) - t) ** 2)
    close(ref.spearman_correlation(x, y, 1e-4), 1 - 6 * d2 / (7 * 48), atol=1e-9)
    close(ref.spearman_loss_sq(x, y, 1e-4), d2 / 2, atol=1e-9)
    # eps -> infinity: Pearson correlation between theta and t
    close(ref.spearman_correlation(x, y, 1e7), np.corrcoef(x, t)[0, 1], atol=1e-9)
    # invariance to strictly increasing transforms of the target
    close(ref.spearman_correlation(x, y, 0.5), ref.spearman_correlation(x, np.exp(3 * y), 0.5),
          atol=1e-12)
    for reg in REGS:
        assert -1 <= ref.spearman_correlation(x, y, 0.5, reg) <= 1


def test_hard_rank_average():
    close(ref.hard_rank_average([10, 30, 20, 20, 5]), [2, 5, 3.5, 3.5, 1], atol=0)
    close(ref.hard_rank_average([1, 1, 1]), [2, 2, 2], atol=0)


def test_spearman_undefined_is_nan():
    assert math.isnan(ref.spearman_correlation([1.0], [2.0], 1.0))
    assert math.isnan(ref.spearman_correlation([], [], 1.0))
    assert math.isnan(ref.spearman_correlation([1.0, 2.0, 3.0], [5, 5, 5], 1.0))  # constant target
    assert math.isnan(ref.spearman_correlation([1.0, 1.0, 1.0], [1, 2, 3], 1.0))  # ||r~|| = 0


# ------------------------------------------------------------------------------------------------
# edge cases: n = 0, n = 1, NaN / inf rows (SPEC 0, 1.6)


def test_empty_inputs():
    e = np.zeros(0)
    for reg in REGS:
        for desc in DIRS:
            assert ref.soft_rank(e, 1.0, reg, desc).shape == (0,)
            assert ref.soft_sort(e, 1.0, reg, desc).shape == (0,)
    assert ref.isotonic_nonincreasing_l2(e).shape == (0,)
    assert ref.isotonic_regression(e).shape == (0,)
    assert ref.isotonic_nonincreasing_kl(e, e).shape == (0,)
    assert ref.projection_l2(e, e).shape == (0,)
    assert ref.projection_kl(e, e).shape == (0,)
    assert ref.soft_topk_mask(e, 0, 1.0).shape == (0,)
    assert ref.soft_topk_mask_vjp(e, e, 0, 1.0).shape == (0,)
    dy, dc = ref.isotonic_regression_vjp(e, None, True, e)
    assert dy.shape == dc.shape == (0,)
    assert ref.spearman_loss_sq(e, e, 1.0) == 0.0
    assert math.isnan(ref.soft_quantile(e, 0.5, 1.0))
    assert math.isnan(ref.soft_lts(e, 0, 1.0))
    assert ref.numerical_jacobian(lambda x: 2 * x, e).shape == (0, 0)


def test_n1():
    for reg in REGS:
        for desc in DIRS:
            np.testing.assert_array_equal(ref.soft_rank([4.2], 0.3, reg, desc), [1.0])
            np.testing.assert_array_equal(ref.soft_sort([4.2], 0.3, reg, desc), [4.2])
    close(ref.isotonic_regression([3.0], [2.0]), [3.0], atol=0)
    close(ref.projection_l2([3.0], [1.0]), [1.0], atol=0)
    close(ref.projection_kl([3.0], [1.0]), [1.0], atol=0)
    close(ref.soft_topk_mask([3.0], 1, 1.0), [1.0], atol=0)
    close(ref.soft_topk_mask([3.0], 0, 1.0), [0.0], atol=0)
    close(ref.soft_quantile([3.0], 0.4, 1.0), 3.0, atol=0)
    close(ref.soft_lts([3.0], 0, 1.0), 3.0, atol=0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_rows_give_nan(bad):
    x = np.array([0.5, bad, -1.0, 2.0])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    g = np.ones(4)
    allnan = lambda a: np.all(np.isnan(a))
    for reg in REGS:
        for desc in DIRS:
            assert allnan(ref.soft_rank(x, 1.0, reg, desc))
            assert allnan(ref.soft_sort(x, 1.0, reg, desc))
            assert allnan(ref.soft_rank_vjp(x, g, 1.0, reg, desc))
            assert allnan(ref.soft_sort_vjp(x, g, 1.0, reg, desc))
        assert math.isnan(ref.soft_quantile(x, 0.5, 1.0, reg))
        assert math.isnan(ref.spearman_correlation(x, w, 1.0, reg))
        assert math.isnan(ref.spearman_correlation(w, x, 1.0, reg))
    assert allnan(ref.isotonic_nonincreasing_l2(x))
    assert allnan(ref.isotonic_nonincreasing_l2(w, x))
    assert allnan(ref.isotonic_regression(x, None, True))
    assert allnan(ref.isotonic_nonincreasing_kl(x, w))
    assert allnan(ref.isotonic_nonincreasing_kl(w, x))
    assert allnan(ref.projection_l2(x, w))
    assert allnan(ref.projection_kl(w, x))
    for k in [0, 2, 4]:
        assert allnan(ref.soft_topk_mask(x, k, 1.0))
        assert allnan(ref.soft_topk_mask_vjp(x, g, k, 1.0))
    dy, dc = ref.isotonic_regression_vjp(x, None, False, g)
    assert allnan(dy) and allnan(dc)
    assert math.isnan(ref.spearman_loss_sq(x, w, 1.0))
    assert math.isnan(ref.soft_lts(x, 1, 1.0))
    assert allnan(ref.hard_rank_average(x))


def test_hyperparameter_errors():
    with pytest.raises(ValueError):
        ref.soft_rank([1.0, 2.0], 0.0)
    with pytest.raises(ValueError):
        ref.soft_sort([1.0, 2.0], 1.0, "l1")
    with pytest.raises(ValueError):
        ref.soft_topk_mask([1.0, 2.0], 3, 1.0)
    with pytest.raises(ValueError):
        ref.soft_lts([1.0, 2.0], 2, 1.0)
    with pytest.raises(ValueError):
        ref.soft_quantile([1.0, 2.0], 1.5, 1.0)
