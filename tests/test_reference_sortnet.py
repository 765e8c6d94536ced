"""Validate the float64 numpy reference of tests/reference/sortnet.py against SPEC.md section 5:
the reference values of SPEC 7.5, the layouts (depths, comparator counts, 0-1 principle), the
properties of P, the VJPs against central finite differences, the sigmoid facts of SPEC 5.2 and the
edge cases of SPEC 0 / 5.5."""

import itertools
import math

import numpy as np
import pytest

from tests.reference import sortnet as ref

RTOL = 1e-5
ATOL = 1e-6  # SPEC 7 rounds to 6 decimals
SIGMOIDS = list(ref.SIGMOIDS)
NETWORKS = list(ref.NETWORKS)
PADDINGS = list(ref.BITONIC_PADDINGS)
LAYOUTS = [("odd_even", "prune"), ("bitonic", "prune"), ("bitonic", "inf")]  # odd-even ignores the padding
MONOTONE = ["reciprocal", "cauchy", "optimal"]  # SPEC 5.2


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol)


def separated(rng, n, scale=2.0, min_gap=0.05):
    """Random vector whose sorted values differ by at least min_gap (no ties)."""
    while True:
        x = rng.normal(size=n) * scale
        if n < 2 or np.min(np.diff(np.sort(x))) >= min_gap:
            return x


def values_jacobian(x, network, padding, sigmoid, beta):
    """J[k, i] = d sorted_k / d x_i, assembled from values-only VJPs with unit upstream gradients."""
    n = len(x)
    return np.array([ref.sorting_network_vjp(x, e, None, network, sigmoid, beta, bitonic_padding=padding)
                     for e in np.eye(n)])


def hard_permutation(x):
    """Q with Q[i, k] = 1 iff x_i is the k-th smallest (stable)."""
    return ref.ranking_targets(x)


# ------------------------------------------------------------------------------------------------
# SPEC 7.5


ALPHA_N2 = {"logistic": 0.268941, "logistic_phi": 0.268941, "gaussian": 0.158655,
            "reciprocal": 0.333333, "cauchy": 0.25, "optimal": 0.0625}


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_spec_7_5_n2(sigmoid, network):
    alpha = ALPHA_N2[sigmoid]
    assert ref.network_layers(network, 2)[0] == [(0, 1)]
    assert sum(len(layer) for layer in ref.network_layers(network, 2)) == 1  # one comparator
    close(ref.sigmoid(sigmoid, -1.0, 1.0), alpha)
    s, P = ref.sorting_network([1.0, 0.0], network, sigmoid, 1.0)
    close(s, [alpha, 1 - alpha])
    close(P, [[alpha, 1 - alpha], [1 - alpha, alpha]])


SPEC_7_5_N3 = {
    "cauchy": ([0.537310, 0.972528, 1.490162],
               [[0.177087, 0.230116, 0.592796], [0.639777, 0.257589, 0.102634],
                [0.183135, 0.512295, 0.304570]]),
    "logistic": ([0.507635, 0.973187, 1.519179],
                 [[0.162417, 0.237144, 0.600439], [0.654782, 0.263957, 0.081261],
                  [0.182800, 0.498899, 0.318300]]),
}


@pytest.mark.parametrize("sigmoid", sorted(SPEC_7_5_N3))
def test_spec_7_5_n3(sigmoid):
    assert ref.odd_even_layers(3) == [[(0, 1)], [(1, 2)], [(0, 1)]]
    s, P = ref.sorting_network([2.0, 0.0, 1.0], "odd_even", sigmoid, 1.0)
    close(s, SPEC_7_5_N3[sigmoid][0])
    close(P, SPEC_7_5_N3[sigmoid][1])


def test_spec_7_5_ranking_loss():
    close(ref.ranking_targets([30.0, 10.0, 20.0]), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=0)
    close(ref.ranking_loss([2.0, 0.0, 1.0], [30.0, 10.0, 20.0], "odd_even", "cauchy", 1.0), 0.340718)


def test_spec_7_5_bitonic_depths():
    for padding in PADDINGS:
        for n, depth in [(2, 1), (4, 3), (8, 6), (16, 10)]:
            layers = ref.bitonic_layers(n, padding)
            assert len(layers) == depth
            assert sum(len(layer) for layer in layers) == depth * n // 2  # full layers, nothing pruned
    # n = 5, pruned (SPEC 5.1): the network on 8 wires without the 13 comparators that touch wires
    # 0..2, renumbered, 11 left
    layers = ref.bitonic_layers(5)
    assert len(layers) == 6 and ref.network_wires("bitonic", 5) == 5
    assert layers == [[(1, 2), (4, 3)], [(3, 1), (4, 2)], [(2, 1), (4, 3)], [(0, 4)], [(1, 3), (2, 4)],
                      [(1, 2), (3, 4)]]
    # n = 5 padded: runs on 8 wires with three +inf pads; 11 of its 24 comparators meet two real values
    layers = ref.bitonic_layers(5, "inf")
    assert len(layers) == 6 and ref.network_wires("bitonic", 5, "inf") == 8
    assert sum(len(layer) for layer in layers) == 24
    _, _, tape = ref._forward(np.array([0.3, -1.0, 2.0, 0.5, 0.1]), "bitonic", "cauchy", 1.0, ref.ART_LAMBDA, False,
                              "inf")
    assert sum(not exact for *_, exact, _, _ in tape) == 11


# ------------------------------------------------------------------------------------------------
# layouts (SPEC 5.1)


def test_layout_shapes():
    for n in range(0, 21):
        oe = ref.odd_even_layers(n)
        assert len(oe) == n  # depth n (taken literally: the 2nd layer is empty for n = 2)
        assert sum(len(layer) for layer in oe) == n * (n - 1) // 2
        k = math.ceil(math.log2(n)) if n > 1 else 0
        bi = ref.bitonic_layers(n, "inf")
        N = ref.network_wires("bitonic", n, "inf")
        assert N == (2**k if n > 1 else n) and ref.network_wires("odd_even", n, "inf") == n
        pruned = ref.bitonic_layers(n)
        assert ref.network_wires("bitonic", n) == n
        for layers, wires_of in ((oe, n), (bi, N), (pruned, n)):
            for layer in layers:
                wires = [w for c in layer for w in c]
                assert len(wires) == len(set(wires))  # disjoint comparators
                assert all(0 <= w < wires_of for w in wires)
        assert len(bi) == len(pruned) == k * (k + 1) // 2
        assert all(len(layer) == N // 2 for layer in bi)  # every padded bitonic layer is full
        # pruned: exactly the padded network's comparators between wires >= N - n, renumbered
        p = N - n
        assert pruned == [[(lo - p, hi - p) for lo, hi in layer if min(lo, hi) >= p] for layer in bi]


def _apply_hard_batch(X, layers, wires):
    """The hard network on every row of X, padded to `wires` with values that sort last."""
    X = np.concatenate([X, np.full((len(X), wires - X.shape[1]), X.max(initial=0) + 1, X.dtype)], axis=1)
    return ref.apply_hard(X, [c for layer in layers for c in layer])


@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_zero_one_principle(network, padding):
    for n in range(1, 13):
        X = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int8)
        Y = _apply_hard_batch(X, ref.network_layers(network, n, padding), ref.network_wires(network, n, padding))
        np.testing.assert_array_equal(Y[:, :n], np.sort(X, axis=1), err_msg=f"{network}, {padding}, n = {n}")


@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_hard_network_sorts_reals(network, padding):
    rng = np.random.default_rng(7)
    for n in range(0, 22):
        x = rng.normal(size=n)
        x[rng.random(n) < 0.3] = 0.5  # some ties
        np.testing.assert_array_equal(ref.hard_sorting_network(x, network, padding), np.sort(x))


def test_pruned_bitonic_network_does_not_sort_n22():
    """SPEC 5.1's pruned bitonic network is not a sorting network for every n: n = 22 (32 wires,
    10 deleted) is the smallest that it leaves unsorted (tests/test_sortnet.py pins the others).
    The padded network sorts the same input."""
    rng = np.random.default_rng(22)
    found = None
    for _ in range(200):
        x = rng.normal(size=22)
        if not np.array_equal(ref.hard_sorting_network(x, "bitonic"), np.sort(x)):
            found = x
            break
    assert found is not None
    np.testing.assert_array_equal(ref.hard_sorting_network(found, "bitonic", "inf"), np.sort(found))
    s, _ = ref.sorting_network(found, "bitonic", "cauchy", 1e12)
    assert np.max(np.abs(s - np.sort(found))) > 0.01  # its steep limit is not the sort


# ------------------------------------------------------------------------------------------------
# sigmoids and the relaxed swap (SPEC 5.2)


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_sigmoid_basic_properties(sigmoid):
    for beta in [0.3, 1.0, 10.0]:
        assert ref.sigmoid(sigmoid, 0.0, beta) == 0.5  # ties: perfect blend
        ds = np.linspace(-5, 5, 201)
        f = np.array([ref.sigmoid(sigmoid, d, beta) for d in ds])
        assert np.all(np.diff(f) >= 0) and f[101] > f[100] > f[99]  # non-decreasing (saturates in float64)
        assert np.all((f >= 0) & (f <= 1))
        close(f + f[::-1], 1.0, atol=1e-14)  # f(-d) = 1 - f(d)
        assert ref.sigmoid(sigmoid, 1e12, beta) > 0.999
        assert ref.sigmoid(sigmoid, -1e12, beta) < 0.001


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_sigmoid_grad_vs_finite_differences(sigmoid):
    # away from the non-smooth points (d = 0 for logistic_phi and reciprocal, |beta d| = 1/4 for optimal)
    for beta in [0.5, 1.0, 3.0]:
        for d in [-3.1, -0.9, -0.2, -0.03, 0.04, 0.3, 1.7, 4.2]:
            fd = ref.numerical_gradient(lambda z: ref.sigmoid(sigmoid, z[0], beta), [d])[0]
            close(ref.sigmoid_grad(sigmoid, d, beta), fd, rtol=1e-6, atol=1e-8)
    # derivative at a tie is finite for every family (SPEC 5.5)
    assert math.isfinite(ref.sigmoid_grad(sigmoid, 0.0, 1.0))


def test_logistic_phi_art_lambda():
    # lambda = 0 is the plain logistic; the default lambda is 0.25
    for d in [-2.0, -0.5, 0.7, 3.0]:
        close(ref.logistic_phi(d, 2.0, 0.0), ref.logistic(d, 2.0), atol=1e-12)
        close(ref.logistic_phi(d, 2.0), 1 / (1 + math.exp(-2.0 * d / (abs(d) + 1e-10) ** 0.25)), atol=1e-15)
    for lam in [0.0, 0.5, 1.0]:
        for d in [-1.3, 0.2, 2.5]:
            fd = ref.numerical_gradient(lambda z: ref.logistic_phi(z[0], 1.5, lam), [d])[0]
            close(ref.sigmoid_grad("logistic_phi", d, 1.5, lam), fd, rtol=1e-6, atol=1e-8)


def test_sigmoids_stable_far_out():
    for sigmoid in SIGMOIDS:
        for d in [-1e300, -800.0, 800.0, 1e300]:
            f = ref.sigmoid(sigmoid, d, 10.0)
            g = ref.sigmoid_grad(sigmoid, d, 10.0)
            assert 0.0 <= f <= 1.0 and math.isfinite(g) and g >= 0.0


@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_relaxed_swap(sigmoid):
    rng = np.random.default_rng(3)
    for _ in range(50):
        a, b = rng.normal(size=2) * 3
        beta = float(rng.uniform(0.2, 5))
        lo, hi, alpha = ref.relaxed_swap(a, b, sigmoid, beta)
        close(alpha, ref.sigmoid(sigmoid, b - a, beta), atol=0)
        close(lo + hi, a + b, atol=1e-14)  # the swap is a mix: the sum is kept
        assert min(a, b) - 1e-14 <= lo <= hi <= max(a, b) + 1e-14


SWAP_ERROR_BOUND = {"cauchy": 1 / math.pi, "reciprocal": 1.0, "optimal": 1 / 16}  # times 1/beta


@pytest.mark.parametrize("sigmoid", sorted(SWAP_ERROR_BOUND))
def test_swap_error_bounds(sigmoid):
    # |soft min - min| = |d| (1 - f(|d|)) <= bound / beta for every gap d, approached as |d| -> infinity
    def err(d, beta):
        return abs(ref.relaxed_swap(0.0, d, sigmoid, beta)[0] - min(0.0, d))

    for beta in [0.5, 1.0, 10.0]:
        bound = SWAP_ERROR_BOUND[sigmoid] / beta
        assert max(err(d, beta) for d in np.linspace(-50, 50, 1001)) <= bound * (1 + 1e-12)
        for d in [1e6, -1e6]:
            close(err(d, beta), bound, rtol=1e-5, atol=0)
    if sigmoid == "optimal":  # attained from beta |d| = 1/4 on (SPEC 5.2 names beta d = 1/4)
        for beta in [0.5, 1.0, 10.0]:
            for v in [0.25, 0.5, 3.0, -0.25, -3.0]:
                close(err(v / beta, beta), 1 / (16 * beta), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------------
# P (SPEC 5.3)


@pytest.mark.parametrize("network, padding", LAYOUTS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_P_doubly_stochastic_and_sorted_is_PT_x(sigmoid, network, padding):
    rng = np.random.default_rng(11)
    for n in range(1, 10):
        x = rng.normal(size=n) * 2
        for beta in [0.5, 3.0]:
            s, P = ref.sorting_network(x, network, sigmoid, beta, bitonic_padding=padding)
            assert np.all(P >= 0) and np.all(P <= 1)
            close(P.sum(axis=0), 1.0, atol=1e-12)
            close(P.sum(axis=1), 1.0, atol=1e-12)
            close(P.T @ x, s, atol=1e-12)  # sorted_k = sum_i P[i, k] x_i
            close(s.sum(), x.sum(), atol=1e-12)
            sd, Pd = ref.sorting_network(x, network, sigmoid, beta, descending=True, bitonic_padding=padding)
            close(sd, s[::-1], atol=0)
            close(Pd, P[:, ::-1], atol=0)


@pytest.mark.parametrize("network, padding", LAYOUTS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_large_beta_is_hard_sort(sigmoid, network, padding):
    rng = np.random.default_rng(5)
    for n in [2, 3, 5, 8, 9]:
        x = separated(rng, n, min_gap=0.05)
        s, P = ref.sorting_network(x, network, sigmoid, 1e9, bitonic_padding=padding)
        close(s, np.sort(x), rtol=0, atol=1e-6)
        close(P, hard_permutation(x), rtol=0, atol=1e-6)
        # and the error shrinks with beta
        s_lo = ref.sorting_network(x, network, sigmoid, 1.0, bitonic_padding=padding)[0]
        s_hi = ref.sorting_network(x, network, sigmoid, 1e3, bitonic_padding=padding)[0]
        assert np.max(np.abs(s_hi - np.sort(x))) < np.max(np.abs(s_lo - np.sort(x)))


@pytest.mark.parametrize("network, padding", LAYOUTS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_large_beta_sorts_zero_one_vectors(sigmoid, network, padding):
    for n in range(1, 7):
        for bits in itertools.product([0.0, 1.0], repeat=n):
            s, _ = ref.sorting_network(bits, network, sigmoid, 1e12, bitonic_padding=padding)
            close(s, np.sort(bits), rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# VJPs (SPEC 5.4) against central finite differences


def _fd_case(rng, n):
    x = separated(rng, n, min_gap=0.1)
    g = rng.normal(size=n)
    G = rng.normal(size=(n, n))
    return x, g, G


@pytest.mark.parametrize("network, padding", LAYOUTS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_vjp_values_mode(sigmoid, network, padding):
    rng = np.random.default_rng(21)
    for n in range(1, 7):
        for beta in [1.0, 2.5]:
            x, g, _ = _fd_case(rng, n)
            kw = dict(bitonic_padding=padding)
            fd = ref.numerical_gradient(lambda z: g @ ref.sorting_network(z, network, sigmoid, beta, **kw)[0], x)
            close(ref.sorting_network_vjp(x, g, None, network, sigmoid, beta, **kw), fd, atol=1e-7)
            # descending
            fd = ref.numerical_gradient(
                lambda z: g @ ref.sorting_network(z, network, sigmoid, beta, descending=True, **kw)[0], x)
            close(ref.sorting_network_vjp(x, g, None, network, sigmoid, beta, descending=True, **kw), fd, atol=1e-7)


@pytest.mark.parametrize("network, padding", LAYOUTS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_vjp_P_mode(sigmoid, network, padding):
    rng = np.random.default_rng(22)
    for n in range(1, 7):
        for beta in [1.0, 2.5]:
            x, g, G = _fd_case(rng, n)

            def loss(z, desc=False):
                s, P = ref.sorting_network(z, network, sigmoid, beta, descending=desc, bitonic_padding=padding)
                return g @ s + np.sum(G * P)

            close(ref.sorting_network_vjp(x, g, G, network, sigmoid, beta, bitonic_padding=padding),
                  ref.numerical_gradient(loss, x), atol=1e-7)
            close(ref.sorting_network_vjp(x, g, G, network, sigmoid, beta, descending=True,
                                          bitonic_padding=padding),
                  ref.numerical_gradient(lambda z: loss(z, True), x), atol=1e-7)
            # P only (no upstream gradient for the values)
            close(ref.sorting_network_vjp(x, None, G, network, sigmoid, beta, bitonic_padding=padding),
                  ref.numerical_gradient(lambda z: np.sum(G * ref.sorting_network(
                      z, network, sigmoid, beta, bitonic_padding=padding)[1]), x), atol=1e-7)


def test_vjp_at_ties_is_finite():
    for sigmoid in SIGMOIDS:
        for network in NETWORKS:
            x = [0.3, 0.3, -1.0, 0.3]
            s, P = ref.sorting_network(x, network, sigmoid, 1.0)
            assert np.all(np.isfinite(s)) and np.all(np.isfinite(P))
            gx = ref.sorting_network_vjp(x, np.arange(4.0), np.ones((4, 4)), network, sigmoid, 1.0)
            assert np.all(np.isfinite(gx))
    # a single tie: alpha = 1/2, a perfect blend
    s, P = ref.sorting_network([2.0, 2.0], "odd_even", "cauchy", 1.0)
    close(s, [2.0, 2.0], atol=0)
    close(P, np.full((2, 2), 0.5), atol=0)


@pytest.mark.parametrize("network, padding", LAYOUTS)
def test_monotonicity(network, padding):
    rng = np.random.default_rng(31)
    for sigmoid in MONOTONE:
        for n in range(2, 7):
            for scale in [0.3, 1.0, 4.0]:
                x = rng.normal(size=n) * scale
                assert values_jacobian(x, network, padding, sigmoid, 1.0).min() >= -1e-12
    # logistic is not monotone (SPEC 5.2): for n = 2, d sorted_0 / d x_0 = f(d) + d f'(d) < 0 at d = -3
    J = values_jacobian(np.array([3.0, 0.0]), network, padding, "logistic", 1.0)
    assert J[0, 0] < -0.05


# ------------------------------------------------------------------------------------------------
# ranking-supervision loss (SPEC 5.5)


def test_ranking_targets_ties_are_stable():
    close(ref.ranking_targets([5.0, 1.0, 5.0, 1.0]),
          [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]], atol=0)


def test_ranking_loss_grad_P_formula():
    rng = np.random.default_rng(41)
    n = 4
    P = rng.uniform(0.05, 0.95, size=(n, n))
    Q = ref.ranking_targets(rng.normal(size=n))

    def bce(flat):
        return ref._bce(flat.reshape(n, n), Q)

    fd = ref.numerical_gradient(bce, P.ravel()).reshape(n, n)
    close(ref.ranking_loss_grad_P(P, Q), fd, atol=1e-8)
    close(ref.ranking_loss_grad_P(P, Q), (P - Q) / (n * n * P * (1 - P)), atol=1e-14)
    # at the ends the denominator is max(P (1 - P), 1e-12): a confidently wrong entry still gets a
    # gradient; outside [0, 1] (rounding) none
    P2 = P.copy()
    P2[0, 0], P2[1, 1], P2[2, 2], P2[3, 3] = 0.0, 1.0, -1e-17, 1.0 + 2e-16
    G2 = ref.ranking_loss_grad_P(P2, Q)
    assert G2[0, 0] == -Q[0, 0] / (n * n * 1e-12) and G2[1, 1] == (1.0 - Q[1, 1]) / (n * n * 1e-12)
    assert G2[2, 2] == 0.0 and G2[3, 3] == 0.0
    # the floor of the logs: -100 per entry at most
    close(ref._bce(np.zeros((2, 2)), np.eye(2)), 50.0, atol=0)
    close(ref._bce(np.eye(2), np.eye(2)), 0.0, atol=0)


@pytest.mark.parametrize("network, padding", LAYOUTS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
def test_ranking_loss_vjp(sigmoid, network, padding):
    rng = np.random.default_rng(42)
    for n in [2, 3, 5]:
        x = separated(rng, n, min_gap=0.1)
        t = rng.normal(size=n)
        kw = dict(bitonic_padding=padding)
        fd = ref.numerical_gradient(lambda z: ref.ranking_loss(z, t, network, sigmoid, 1.5, **kw), x)
        close(ref.ranking_loss_vjp(x, t, 1.0, network, sigmoid, 1.5, **kw), fd, atol=1e-7)
        close(ref.ranking_loss_vjp(x, t, -2.0, network, sigmoid, 1.5, **kw), -2.0 * fd, atol=2e-7)


def test_ranking_loss_decreases_towards_targets():
    # predictions ordered like the targets give a smaller loss than reversed ones; large beta -> ~0
    t = np.array([0.0, 3.0, 1.0, 2.0])
    good = 10 * t
    bad = -10 * t
    for network in NETWORKS:
        assert ref.ranking_loss(good, t, network) < ref.ranking_loss(bad, t, network)
        assert ref.ranking_loss(good, t, network, "cauchy", 1e9) < 1e-6


# ------------------------------------------------------------------------------------------------
# edge cases: n = 0, n = 1, n = 2, NaN / inf rows (SPEC 0, 5.5)


def test_empty_inputs():
    for network in NETWORKS:
        assert ref.network_layers(network, 0) == []
        s, P = ref.sorting_network([], network)
        assert s.shape == (0,) and P.shape == (0, 0)
        assert ref.sorting_network_vjp([], [], None, network).shape == (0,)
        assert ref.sorting_network_vjp([], [], np.zeros((0, 0)), network).shape == (0,)
        assert math.isnan(ref.ranking_loss([], [], network))
        assert ref.ranking_loss_vjp([], [], 1.0, network).shape == (0,)
    assert ref.ranking_targets([]).shape == (0, 0)
    assert ref.numerical_gradient(lambda z: 0.0, []).shape == (0,)


def test_n1():
    for network in NETWORKS:
        assert sum(len(layer) for layer in ref.network_layers(network, 1)) == 0  # no comparators
        for sigmoid in SIGMOIDS:
            s, P = ref.sorting_network([4.2], network, sigmoid, 3.0)
            np.testing.assert_array_equal(s, [4.2])
            np.testing.assert_array_equal(P, [[1.0]])
            np.testing.assert_array_equal(ref.sorting_network_vjp([4.2], [0.7], [[5.0]], network, sigmoid), [0.7])
            np.testing.assert_array_equal(ref.ranking_loss_vjp([4.2], [1.0], 1.0, network, sigmoid), [0.0])
            # P = [[1]] = Q: the loss is exactly 0
            assert ref.ranking_loss([4.2], [1.0], network, sigmoid) == 0.0


def test_n2_closed_form():
    # one comparator: sorted = [alpha a + (1-alpha) b, (1-alpha) a + alpha b], alpha = f(b - a)
    for network in NETWORKS:
        for sigmoid in SIGMOIDS:
            a, b = 0.7, -0.4
            alpha = ref.sigmoid(sigmoid, b - a, 2.0)
            s, P = ref.sorting_network([a, b], network, sigmoid, 2.0)
            close(s, [alpha * a + (1 - alpha) * b, (1 - alpha) * a + alpha * b], atol=1e-15)
            close(P, [[alpha, 1 - alpha], [1 - alpha, alpha]], atol=1e-15)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_rows_give_nan(bad):
    x = np.array([0.5, bad, -1.0, 2.0])
    t = np.array([1.0, 2.0, 3.0, 4.0])
    g = np.ones(4)
    allnan = lambda a: bool(np.all(np.isnan(a)))
    for network in NETWORKS:
        for sigmoid in SIGMOIDS:
            s, P = ref.sorting_network(x, network, sigmoid)
            assert allnan(s) and allnan(P) and P.shape == (4, 4)
            assert allnan(ref.sorting_network_vjp(x, g, None, network, sigmoid))
            assert allnan(ref.sorting_network_vjp(x, g, np.ones((4, 4)), network, sigmoid))
        assert math.isnan(ref.ranking_loss(x, t, network))
        assert math.isnan(ref.ranking_loss(t, x, network))
        assert allnan(ref.ranking_loss_vjp(x, t, 1.0, network))
        assert allnan(ref.ranking_loss_vjp(t, x, 1.0, network))


def test_hyperparameter_errors():
    with pytest.raises(ValueError):
        ref.sorting_network([1.0, 2.0], "odd_even", "cauchy", 0.0)
    with pytest.raises(ValueError):
        ref.sorting_network([1.0, 2.0], "odd_even", "cauchy", -1.0)
    with pytest.raises(ValueError):
        ref.sorting_network([1.0, 2.0], "bubble")
    with pytest.raises(ValueError):
        ref.sorting_network([1.0, 2.0], "odd_even", "tanh")
    with pytest.raises(ValueError):
        ref.sorting_network([1.0, 2.0], "odd_even", "logistic_phi", 1.0, art_lambda=1.5)
    with pytest.raises(ValueError):
        ref.sorting_network_vjp([1.0, 2.0], [1.0], None)
    with pytest.raises(ValueError):
        ref.ranking_loss([1.0, 2.0], [1.0])
