"""Validate the float64 numpy soft-DTW reference of tests/reference/softdtw.py against SPEC.md section 3:
the reference values of SPEC 7.3, brute-force enumeration of the alignments (SPEC 3.1), central finite
differences, and the oracles of SPEC 3.6 / 3.7 / 3.9."""

import math

import numpy as np
import pytest

from tests.reference import softdtw as ref

RTOL = 1e-5  # finite differences (h = 1e-6, float64)
ATOL = 1e-7
COSTS = list(ref.COSTS)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol)


def spec_close(actual, expected, decimals):
    """SPEC 7 prints values rounded to `decimals` decimals: accept half a unit in the last place."""
    close(actual, expected, rtol=0, atol=0.5 * 10.0 ** -decimals * (1 + 1e-9))


def random_cost(rng, m, n):
    return rng.uniform(0.0, 3.0, size=(m, n))


# shapes x bands with at least one alignment (b >= |m - n|)
SHAPES_BANDS = [((1, 1), None), ((1, 4), None), ((3, 1), None), ((2, 2), 0), ((2, 3), None), ((3, 3), 1),
                ((3, 4), None), ((4, 3), 2), ((4, 4), 0), ((4, 5), 1), ((5, 3), 2)]
GAMMAS = [0.1, 1.0, 10.0]


# ------------------------------------------------------------------------------------------------
# SPEC 7.3: x = [0, 1], y = [0, 2], d = 1, cost (x - y)^2, C = [[0, 4], [1, 1]]

X73, Y73 = [0.0, 1.0], [0.0, 2.0]
C73 = np.array([[0.0, 4.0], [1.0, 1.0]])


def test_spec_7_3_cost_matrix_and_hand_check():
    np.testing.assert_array_equal(ref.cost_matrix(X73, Y73, "sqeuclidean"), C73)
    R = ref.soft_dtw_forward(C73, 1.0).R
    close(R[1:, 1:], [[0, 4], [1, 1 - math.log(math.exp(-1) + 1 + math.exp(-4))]], rtol=0, atol=1e-15)
    spec_close(R[2, 2], 0.673437, 6)


@pytest.mark.parametrize("gamma,value,E,E_decimals,sharp", [
    (1.0, 0.6734373587, [[1, 0.013213], [0.265388, 1]], 6, 1.3182394766),
    (0.1, 0.9999954601, [[1, 0], [0.000045, 1]], 6, 1.0000453979),
    (0.01, 1.0, [[1, 0], [0, 1]], 6, 1.0),
])
def test_spec_7_3_table(gamma, value, E, E_decimals, sharp):
    spec_close(ref.soft_dtw_from_cost(C73, gamma), value, 10)
    spec_close(ref.soft_dtw(X73, Y73, gamma), value, 10)
    spec_close(ref.soft_dtw_alignment(C73, gamma), E, E_decimals)
    spec_close(ref.sharp_soft_dtw_from_cost(C73, gamma), sharp, 10)
    spec_close(ref.sharp_soft_dtw(X73, Y73, gamma), sharp, 10)


def test_spec_7_3_tiny_entries():
    # E12 at gamma = 0.1 is printed with two significant digits (4.2e-18); gamma = 0.01 gives 1.0 = DTW
    close(ref.soft_dtw_alignment(C73, 0.1)[0, 1], 4.2e-18, rtol=0.02, atol=0)
    assert ref.soft_dtw_from_cost(C73, 0.01) == ref.dtw_from_cost(C73) == 1.0


def test_spec_7_3_gamma_1_extras():
    spec_close(ref.soft_dtw(X73, X73, 1.0), -0.5514447139, 10)
    spec_close(ref.soft_dtw(Y73, Y73, 1.0), -0.0359762997, 10)
    spec_close(ref.soft_dtw_divergence(X73, Y73, 1.0), 0.9671478656, 10)
    spec_close(ref.sharp_soft_dtw_divergence(X73, Y73, 1.0), 1.0356242309, 10)
    gx, _ = ref.soft_dtw_grad(X73, Y73, 1.0)
    spec_close(gx, [-0.052852, -1.469224], 6)


def test_spec_7_3_mean_cost_and_sharp_limit():
    spec_close(ref.mean_cost_from_cost(C73), 2.666667, 6)
    close(ref.mean_cost_from_cost(C73), 8.0 / 3.0, rtol=1e-14, atol=0)  # (1 + 5 + 2) / 3
    spec_close(ref.mean_cost(X73, Y73), 2.666667, 6)
    spec_close(ref.sharp_soft_dtw_from_cost(C73, 1e4), 2.666378, 6)


@pytest.mark.parametrize("shape,D", [((2, 2), 3), ((3, 3), 13), ((2, 3), 5), ((4, 5), 129)])
def test_spec_7_3_zero_cost(shape, D):
    assert ref.delannoy(shape[0] - 1, shape[1] - 1) == D
    spec_close(ref.soft_dtw_from_cost(np.zeros(shape), 1.0), -math.log(D), 6)


def test_spec_7_3_single_row():
    for gamma in [0.0, 0.01, 1.0, 100.0]:
        close(ref.soft_dtw_from_cost([[1.0, 2.0, 3.0]], gamma), 6.0, rtol=1e-14, atol=0)


def test_soft_min():
    v = [1.0, 0.0, 4.0]
    for gamma in [0.01, 1.0, 30.0]:
        close(ref.soft_min(v, gamma), -gamma * math.log(sum(math.exp(-a / gamma) for a in v)), rtol=1e-14,
              atol=1e-15)
        assert ref.soft_min(v, gamma) <= min(v)
        assert ref.soft_min([2.5, math.inf, math.inf], gamma) == 2.5
        assert ref.soft_min([math.inf, math.inf], gamma) == math.inf
        assert math.isnan(ref.soft_min([1.0, math.nan], gamma))
    assert ref.soft_min(v, 0.0) == 0.0
    close(ref.soft_min([1000.0, 1000.0], 1.0), 1000.0 - math.log(2.0), rtol=1e-15, atol=0)  # shifted form
    close(1.0 + ref.soft_min(v, 1.0), 0.673437, rtol=0, atol=5e-7)  # R22 of SPEC 7.3


# ------------------------------------------------------------------------------------------------
# Delannoy numbers and the alignment set (SPEC 3.1)


def test_delannoy():
    table = [[1, 1, 1, 1, 1], [1, 3, 5, 7, 9], [1, 5, 13, 25, 41], [1, 7, 25, 63, 129]]
    for a in range(4):
        for b in range(5):
            assert ref.delannoy(a, b) == table[a][b] == ref.delannoy(b, a)
    for m in range(1, 5):
        for n in range(1, 5):
            As = ref.alignments(m, n)
            assert len(As) == ref.delannoy(m - 1, n - 1)
            assert len({A.tobytes() for A in As}) == len(As)  # all distinct
            for A in As:
                assert A[0, 0] == A[m - 1, n - 1] == 1


def test_path_counts_log_large_no_overflow():
    # Delannoy numbers exceed the float64 range near n = 400 (SPEC 3.9): counts are kept as logs
    n = 420
    assert ref.delannoy(n - 1, n - 1) > 1e308
    logN = ref.path_counts_log(n, n)
    close(logN[n, n], math.log(ref.delannoy(n - 1, n - 1)), rtol=1e-12, atol=0)
    close(logN[7, 9], math.log(ref.delannoy(6, 8)), rtol=1e-13, atol=0)


# ------------------------------------------------------------------------------------------------
# the DPs against brute-force enumeration of the alignments


@pytest.mark.parametrize("shape,band", SHAPES_BANDS)
def test_dp_vs_brute_force(shape, band):
    rng = np.random.default_rng(10 * shape[0] + shape[1] + (0 if band is None else 100 * (band + 1)))
    C = random_cost(rng, *shape)
    Z = rng.normal(size=shape)
    for gamma in GAMMAS:
        bf = ref.brute_force(C, gamma, band)
        close(ref.soft_dtw_from_cost(C, gamma, band), bf.value, rtol=1e-12, atol=1e-12)
        close(ref.soft_dtw_alignment(C, gamma, band), bf.alignment, rtol=1e-10, atol=1e-12)
        close(ref.sharp_soft_dtw_from_cost(C, gamma, band), bf.sharp, rtol=1e-10, atol=1e-12)
        close(ref.soft_dtw_hvp(C, gamma, Z, band), (bf.hessian @ Z.ravel()).reshape(shape),
              rtol=1e-9, atol=1e-11)
    bf = ref.brute_force(C, 0.0, band)
    close(ref.mean_cost_from_cost(C, band), bf.mean_cost, rtol=1e-12, atol=1e-12)
    close(ref.mean_alignment(*shape, bandwidth=band), bf.mean_alignment, rtol=1e-12, atol=1e-12)
    close(ref.dtw_from_cost(C, band), bf.value, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("shape,band", [((2, 2), None), ((3, 3), None), ((2, 3), None), ((4, 5), None),
                                        ((4, 4), 1), ((5, 3), 2), ((3, 6), 4)])
def test_zero_cost_closed_form(gamma, shape, band):
    count = len(ref.alignments(*shape, bandwidth=band))
    if band is None:
        assert count == ref.delannoy(shape[0] - 1, shape[1] - 1)
    C = np.zeros(shape)
    close(ref.soft_dtw_from_cost(C, gamma, band), -gamma * math.log(count), rtol=1e-13, atol=1e-13)
    # E = mean alignment (uniform Gibbs distribution), sharp = mean cost = 0
    close(ref.soft_dtw_alignment(C, gamma, band), ref.mean_alignment(*shape, bandwidth=band), rtol=1e-12,
          atol=1e-14)
    close(ref.sharp_soft_dtw_from_cost(C, gamma, band), 0.0, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# edge cases of SPEC 3.4 / 3.6


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (1, 6), (4, 1)])
def test_single_alignment(shape):
    rng = np.random.default_rng(sum(shape))
    C = rng.normal(size=shape)
    for gamma in [0.0, 0.01, 1.0, 100.0]:
        close(ref.soft_dtw_from_cost(C, gamma), C.sum(), rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(ref.soft_dtw_alignment(C, gamma), np.ones(shape))
        close(ref.sharp_soft_dtw_from_cost(C, gamma), C.sum(), rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(ref.soft_dtw_hvp(C, gamma, rng.normal(size=shape)), np.zeros(shape))
    close(ref.mean_cost_from_cost(C), C.sum(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_band_zero_is_trace(n):
    rng = np.random.default_rng(n)
    C = rng.normal(size=(n, n))
    for gamma in [0.0, 0.1, 1.0, 10.0]:
        close(ref.soft_dtw_from_cost(C, gamma, bandwidth=0), np.trace(C), rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(ref.soft_dtw_alignment(C, gamma, bandwidth=0), np.eye(n))
        close(ref.sharp_soft_dtw_from_cost(C, gamma, bandwidth=0), np.trace(C), rtol=1e-13, atol=1e-13)
    assert ref.dtw_from_cost(C, bandwidth=0) == pytest.approx(np.trace(C), rel=1e-13)


def test_band_wide_equals_no_band():
    rng = np.random.default_rng(5)
    C = random_cost(rng, 4, 6)
    for gamma in [0.0, 1.0]:
        assert ref.soft_dtw_from_cost(C, gamma, bandwidth=5) == ref.soft_dtw_from_cost(C, gamma)
        np.testing.assert_array_equal(ref.soft_dtw_alignment(C, gamma, 5), ref.soft_dtw_alignment(C, gamma))
    # a narrower band only removes alignments: the value cannot decrease
    assert ref.soft_dtw_from_cost(C, 1.0, bandwidth=2) >= ref.soft_dtw_from_cost(C, 1.0)
    E = ref.soft_dtw_alignment(C, 1.0, bandwidth=2)
    for i in range(4):
        for j in range(6):
            if abs(i - j) > 2:
                assert E[i, j] == 0.0


@pytest.mark.parametrize("shape,band", [((2, 4), 1), ((5, 2), 2), ((1, 3), 0), ((3, 1), 1)])
def test_infeasible_band(shape, band):
    rng = np.random.default_rng(3)
    C = random_cost(rng, *shape)
    x, y = rng.normal(size=(shape[0], 2)), rng.normal(size=(shape[1], 2))
    zero = np.zeros(shape)
    assert ref.alignments(*shape, bandwidth=band) == []
    for gamma in [0.0, 1.0]:
        assert ref.soft_dtw_from_cost(C, gamma, band) == math.inf
        np.testing.assert_array_equal(ref.soft_dtw_alignment(C, gamma, band), zero)
        np.testing.assert_array_equal(ref.soft_dtw_hvp(C, gamma, C, band), zero)
        assert ref.sharp_soft_dtw_from_cost(C, gamma, band) == math.inf
        np.testing.assert_array_equal(ref.sharp_soft_dtw_from_cost_grad(C, gamma, band), zero)
        assert ref.soft_dtw_jvp(C, gamma, C, band) == 0.0
        for value, grad in [(ref.soft_dtw, ref.soft_dtw_grad), (ref.sharp_soft_dtw, ref.sharp_soft_dtw_grad)]:
            assert value(x, y, gamma, "sqeuclidean", band) == math.inf
            for g in grad(x, y, gamma, "sqeuclidean", band):
                assert not g.any()
        assert ref.soft_dtw_divergence(x, y, gamma, "sqeuclidean", band) == math.inf
    assert ref.dtw_from_cost(C, band) == math.inf
    assert ref.mean_cost_from_cost(C, band) == math.inf
    np.testing.assert_array_equal(ref.mean_alignment(*shape, bandwidth=band), zero)
    assert ref.mean_cost(x, y, "sqeuclidean", band) == math.inf


def test_infeasible_band_divergence_gradient_is_the_literal_formula():
    # SPEC 3.9 composes the gradient: the XY term contributes 0 (SPEC 3.4), the XX term does not vanish
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(4, 1)), rng.normal(size=(1, 1))
    gx, gy = ref.soft_dtw_divergence_grad(x, y, 1.0, "sqeuclidean", 1)
    G_xx = ref.soft_dtw_alignment(ref.cost_matrix(x, x), 1.0, 1)
    close(gx, -ref.cost_matrix_vjp(x, x, G_xx)[0], rtol=1e-14, atol=1e-14)
    close(gy, np.zeros_like(y), atol=0)  # y has one point: the YY term's gradient is zero


def test_nonfinite_inputs_give_nan():
    for bad in [np.nan, np.inf, -np.inf]:
        C = np.array([[0.0, 1.0, 2.0], [bad, 1.0, 0.5]])
        for gamma in [0.0, 1.0]:
            assert math.isnan(ref.soft_dtw_from_cost(C, gamma))
            assert np.isnan(ref.soft_dtw_alignment(C, gamma)).all()
            assert math.isnan(ref.sharp_soft_dtw_from_cost(C, gamma))
            assert np.isnan(ref.sharp_soft_dtw_from_cost_grad(C, gamma)).all()
            assert np.isnan(ref.soft_dtw_hvp(C, gamma, np.ones_like(C))).all()
            assert math.isnan(ref.soft_dtw_jvp(C, gamma, np.ones_like(C)))
        assert math.isnan(ref.dtw_from_cost(C))
        assert math.isnan(ref.mean_cost_from_cost(C))
        x, y = np.array([[0.0, 1.0], [bad, 2.0]]), np.array([[1.0, 1.0]])
        for cost in COSTS:
            assert np.isnan(ref.cost_matrix(x, y, cost)).all()
            for value, grad in [(ref.soft_dtw, ref.soft_dtw_grad), (ref.sharp_soft_dtw, ref.sharp_soft_dtw_grad),
                                (ref.soft_dtw_divergence, ref.soft_dtw_divergence_grad),
                                (ref.sharp_soft_dtw_divergence, ref.sharp_soft_dtw_divergence_grad)]:
                assert math.isnan(value(x, y, 1.0, cost))
                assert math.isnan(value(y, x, 1.0, cost))
                for g in grad(x, y, 1.0, cost) + grad(y, x, 1.0, cost):
                    assert np.isnan(g).all()
            assert math.isnan(ref.mean_cost(x, y, cost))
            assert math.isnan(ref.mean_cost_divergence(x, y, cost))
            for g in ref.mean_cost_grad(x, y, cost) + ref.mean_cost_divergence_grad(y, x, cost):
                assert np.isnan(g).all()


def test_errors():
    with pytest.raises(ValueError):
        ref.soft_dtw_from_cost(np.zeros((0, 3)), 1.0)
    with pytest.raises(ValueError):
        ref.soft_dtw_from_cost(np.zeros((2, 0)), 1.0)
    with pytest.raises(ValueError):
        ref.soft_dtw(np.zeros((0, 1)), np.zeros((2, 1)), 1.0)
    with pytest.raises(ValueError):
        ref.soft_dtw_from_cost(np.zeros((2, 2)), -0.1)
    with pytest.raises(ValueError):
        ref.soft_dtw_from_cost(np.zeros((2, 2)), math.nan)
    with pytest.raises(ValueError):
        ref.soft_dtw_from_cost(np.zeros((2, 2)), 1.0, bandwidth=-1)
    with pytest.raises(ValueError):
        ref.soft_dtw_from_cost(np.zeros((2, 2)), 1.0, bandwidth=1.5)
    with pytest.raises(ValueError):
        ref.soft_dtw([0.0], [1.0], 1.0, cost="euclidean")
    with pytest.raises(ValueError):
        ref.soft_dtw(np.zeros((2, 2)), np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError):
        ref.soft_dtw_from_cost(np.zeros(3), 1.0)


# ------------------------------------------------------------------------------------------------
# hard DTW and the gamma -> 0 limit (SPEC 3.6, 3.7)


@pytest.mark.parametrize("shape,band", SHAPES_BANDS)
def test_gamma_zero_and_bounds(shape, band):
    rng = np.random.default_rng(7 * shape[0] + shape[1])
    C = random_cost(rng, *shape)
    dtw = ref.dtw_from_cost(C, band)
    close(ref.soft_dtw_from_cost(C, 0.0, band), dtw, rtol=1e-14, atol=1e-14)
    count = len(ref.alignments(*shape, bandwidth=band))
    for gamma in [1e-4, 0.01, 0.3, 1.0, 10.0]:
        v = ref.soft_dtw_from_cost(C, gamma, band)
        assert dtw - gamma * math.log(count) - 1e-12 <= v <= dtw + 1e-12
        assert v <= ref.sharp_soft_dtw_from_cost(C, gamma, band) + 1e-12  # entropy >= 0
    close(ref.soft_dtw_from_cost(C, 1e-4, band), dtw, rtol=0, atol=1e-4 * math.log(count) + 1e-12)
    # sharp -> DTW and E -> the optimal path, once gamma is well below the gap to the second-best alignment
    costs = sorted(np.sum(A * C) for A in ref.alignments(*shape, bandwidth=band))
    small = (costs[1] - costs[0]) / 40 if len(costs) > 1 else 1e-3
    close(ref.sharp_soft_dtw_from_cost(C, small, band), dtw, rtol=0, atol=1e-12 + costs[-1] * count * math.exp(-40))
    # gamma = 0: E is the indicator of one argmin path
    E0 = ref.soft_dtw_alignment(C, 0.0, band)
    assert any(np.array_equal(E0, A) for A in ref.alignments(*shape, bandwidth=band))
    close(np.sum(E0 * C), dtw, rtol=1e-14, atol=1e-14)
    close(ref.sharp_soft_dtw_from_cost(C, 0.0, band), dtw, rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(ref.sharp_soft_dtw_from_cost_grad(C, 0.0, band), E0)
    close(ref.soft_dtw_alignment(C, small, band), E0, atol=count * math.exp(-40))


def test_gamma_zero_tie_break_diag_up_left():
    # all ties (C = 0): diagonal first
    np.testing.assert_array_equal(ref.soft_dtw_alignment(np.zeros((2, 3)), 0.0), [[1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(ref.soft_dtw_alignment(np.zeros((3, 2)), 0.0), [[1, 0], [1, 0], [0, 1]])
    # at (2, 2): up R[1,2] = -1 ties left R[2,1] = -1 < diag R[1,1] = 0: up wins
    np.testing.assert_array_equal(ref.soft_dtw_alignment([[0.0, -1.0], [-1.0, 0.0]], 0.0), [[1, 1], [0, 1]])


def test_sharp_tends_to_mean_cost():
    rng = np.random.default_rng(11)
    for shape in [(2, 2), (3, 4), (4, 3)]:
        C = random_cost(rng, *shape)
        mc = ref.mean_cost_from_cost(C)
        close(ref.sharp_soft_dtw_from_cost(C, 1e5), mc, rtol=0, atol=1e-3)
        gaps = [abs(ref.sharp_soft_dtw_from_cost(C, g) - mc) for g in [10.0, 100.0, 1000.0]]
        assert gaps[0] > gaps[1] > gaps[2]


# ------------------------------------------------------------------------------------------------
# symmetry, scale, range of E (SPEC 3.6, 3.7)


@pytest.mark.parametrize("shape,band", SHAPES_BANDS)
def test_transpose_symmetry_and_range(shape, band):
    rng = np.random.default_rng(3 * shape[0] + shape[1])
    C = rng.normal(size=shape)
    for gamma in [0.0, 0.5, 2.0]:
        close(ref.soft_dtw_from_cost(C.T, gamma, band), ref.soft_dtw_from_cost(C, gamma, band), rtol=1e-13,
              atol=1e-13)
        E = ref.soft_dtw_alignment(C, gamma, band)
        if gamma > 0:  # (at gamma = 0 the tie-break order is not transpose-symmetric; C has no ties here)
            close(ref.soft_dtw_alignment(C.T, gamma, band), E.T, rtol=1e-12, atol=1e-14)
            close(ref.sharp_soft_dtw_from_cost(C.T, gamma, band), ref.sharp_soft_dtw_from_cost(C, gamma, band),
                  rtol=1e-12, atol=1e-13)
        assert np.all(E >= 0) and np.all(E <= 1 + 1e-12)
        assert E[0, 0] == pytest.approx(1.0, abs=1e-12) and E[-1, -1] == 1.0


def test_scale():
    rng = np.random.default_rng(2)
    C = rng.normal(size=(3, 4))
    for c in [0.5, 3.0]:
        for gamma in [0.1, 1.0]:
            close(ref.soft_dtw_from_cost(c * C, gamma), c * ref.soft_dtw_from_cost(C, gamma / c), rtol=1e-12,
                  atol=1e-12)


@pytest.mark.parametrize("cost", COSTS)
def test_swap_series(cost):
    rng = np.random.default_rng(len(cost))
    for m, n, d, band in [(3, 5, 1, None), (4, 2, 3, 2), (1, 3, 2, None), (4, 4, 2, 1)]:
        x, y = rng.normal(size=(m, d)), rng.normal(size=(n, d))
        np.testing.assert_array_equal(ref.cost_matrix(y, x, cost), ref.cost_matrix(x, y, cost).T)
        for gamma in [0.3, 1.0]:
            close(ref.soft_dtw(y, x, gamma, cost, band), ref.soft_dtw(x, y, gamma, cost, band), rtol=1e-12,
                  atol=1e-12)
            close(ref.sharp_soft_dtw(y, x, gamma, cost, band), ref.sharp_soft_dtw(x, y, gamma, cost, band),
                  rtol=1e-12, atol=1e-12)
            gx, gy = ref.soft_dtw_grad(x, y, gamma, cost, band)
            gy2, gx2 = ref.soft_dtw_grad(y, x, gamma, cost, band)
            close(gx2, gx, rtol=1e-12, atol=1e-12)
            close(gy2, gy, rtol=1e-12, atol=1e-12)
        close(ref.mean_cost(y, x, cost, band), ref.mean_cost(x, y, cost, band), rtol=1e-12, atol=1e-12)


def test_one_dimensional_series_equal_d1():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=4), rng.normal(size=3)
    for cost in COSTS:
        assert ref.soft_dtw(x, y, 0.7, cost) == ref.soft_dtw(x[:, None], y[:, None], 0.7, cost)
        gx, gy = ref.soft_dtw_grad(x, y, 0.7, cost)
        gx2, gy2 = ref.soft_dtw_grad(x[:, None], y[:, None], 0.7, cost)
        assert gx.shape == (4,) and gy.shape == (3,)
        np.testing.assert_array_equal(gx, gx2[:, 0])
        np.testing.assert_array_equal(gy, gy2[:, 0])


def test_cost_matrix_closed_forms():
    x = np.array([[0.0, 1.0], [2.0, -1.0]])
    y = np.array([[1.0, 1.0]])
    sq = np.array([[1.0], [5.0]])
    np.testing.assert_array_equal(ref.cost_matrix(x, y, "sqeuclidean"), sq)
    np.testing.assert_array_equal(ref.cost_matrix(x, y, "half_sqeuclidean"), sq / 2)
    c = sq / 2
    close(ref.cost_matrix(x, y, "log_augmented"), c + np.log(2 - np.exp(-c)), rtol=1e-15, atol=0)
    close(ref.cost_matrix(x, x, "log_augmented").diagonal(), 0.0, atol=0)


# ------------------------------------------------------------------------------------------------
# derivatives against central finite differences


@pytest.mark.parametrize("shape,band", SHAPES_BANDS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_alignment_is_gradient_wrt_C(shape, band, gamma):
    rng = np.random.default_rng(13 * shape[0] + shape[1] + int(10 * gamma))
    C = random_cost(rng, *shape)
    E = ref.soft_dtw_alignment(C, gamma, band)
    close(E, ref.numerical_gradient(lambda c: ref.soft_dtw_from_cost(c, gamma, band), C))
    Z = rng.normal(size=shape)
    close(ref.soft_dtw_jvp(C, gamma, Z, band), np.sum(E * Z), rtol=1e-12, atol=1e-12)
    # the weights recomputed from R and C (SPEC 3.2) equal the stored ones
    fwd = ref.soft_dtw_forward(C, gamma, band)
    close(ref.transition_weights_from_R(C, fwd.R, gamma, band), fwd.P, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape,band", SHAPES_BANDS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_hvp_and_sharp_gradient(shape, band, gamma):
    rng = np.random.default_rng(17 * shape[0] + shape[1] + int(10 * gamma))
    C = random_cost(rng, *shape)
    Z1, Z2 = rng.normal(size=shape), rng.normal(size=shape)
    HZ1 = ref.soft_dtw_hvp(C, gamma, Z1, band)
    h = 1e-6
    fd = (ref.soft_dtw_alignment(C + h * Z1, gamma, band) - ref.soft_dtw_alignment(C - h * Z1, gamma, band)) / (2 * h)
    close(HZ1, fd)
    # H is symmetric
    close(np.sum(Z2 * HZ1), np.sum(Z1 * ref.soft_dtw_hvp(C, gamma, Z2, band)), rtol=1e-10, atol=1e-12)
    # sharp = <E, C> and its gradient E + H C
    close(ref.sharp_soft_dtw_from_cost(C, gamma, band), np.sum(ref.soft_dtw_alignment(C, gamma, band) * C),
          rtol=1e-12, atol=1e-12)
    close(ref.sharp_soft_dtw_from_cost_grad(C, gamma, band),
          ref.numerical_gradient(lambda c: ref.sharp_soft_dtw_from_cost(c, gamma, band), C))


@pytest.mark.parametrize("shape,band", SHAPES_BANDS)
def test_mean_cost_gradient(shape, band):
    rng = np.random.default_rng(19 * shape[0] + shape[1])
    C = random_cost(rng, *shape)
    Ebar = ref.mean_alignment(*shape, bandwidth=band)
    close(Ebar, ref.numerical_gradient(lambda c: ref.mean_cost_from_cost(c, band), C))
    close(ref.mean_cost_from_cost(C, band), np.sum(Ebar * C), rtol=1e-12, atol=1e-12)  # linear in C


SERIES_CASES = [(1, 1, 1, None), (1, 3, 2, None), (3, 1, 1, None), (3, 4, 1, None), (4, 3, 2, 1), (3, 3, 3, 0)]


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("m,n,d,band", SERIES_CASES)
def test_series_gradients(cost, m, n, d, band):
    rng = np.random.default_rng(m * 100 + n * 10 + d + len(cost))
    x, y = rng.normal(size=(m, d)), rng.normal(size=(n, d))
    G = rng.normal(size=(m, n))
    gx, gy = ref.cost_matrix_vjp(x, y, G, cost)
    close(gx, ref.numerical_gradient(lambda a: np.sum(G * ref.cost_matrix(a, y, cost)), x))
    close(gy, ref.numerical_gradient(lambda b: np.sum(G * ref.cost_matrix(x, b, cost)), y))
    for value, grad, gamma in [(ref.soft_dtw, ref.soft_dtw_grad, 0.5), (ref.soft_dtw, ref.soft_dtw_grad, 2.0),
                               (ref.sharp_soft_dtw, ref.sharp_soft_dtw_grad, 0.5),
                               (ref.soft_dtw_divergence, ref.soft_dtw_divergence_grad, 1.0),
                               (ref.sharp_soft_dtw_divergence, ref.sharp_soft_dtw_divergence_grad, 1.0)]:
        gx, gy = grad(x, y, gamma, cost, band)
        close(gx, ref.numerical_gradient(lambda a: value(a, y, gamma, cost, band), x))
        close(gy, ref.numerical_gradient(lambda b: value(x, b, gamma, cost, band), y))
    for value, grad in [(ref.mean_cost, ref.mean_cost_grad), (ref.mean_cost_divergence, ref.mean_cost_divergence_grad)]:
        gx, gy = grad(x, y, cost, band)
        close(gx, ref.numerical_gradient(lambda a: value(a, y, cost, band), x))
        close(gy, ref.numerical_gradient(lambda b: value(x, b, cost, band), y))


# ------------------------------------------------------------------------------------------------
# divergences (SPEC 3.9, 3.10)


def _divergences(x, y, gamma, cost, band):
    return [ref.soft_dtw_divergence(x, y, gamma, cost, band), ref.sharp_soft_dtw_divergence(x, y, gamma, cost, band),
            ref.mean_cost_divergence(x, y, cost, band)]


def _divergence_grads(x, y, gamma, cost, band):
    return [ref.soft_dtw_divergence_grad(x, y, gamma, cost, band),
            ref.sharp_soft_dtw_divergence_grad(x, y, gamma, cost, band),
            ref.mean_cost_divergence_grad(x, y, cost, band)]


@pytest.mark.parametrize("cost", COSTS)
def test_divergences_vanish_at_equal_series_and_are_symmetric(cost):
    rng = np.random.default_rng(21 + len(cost))
    for m, n, d, band in [(1, 1, 1, None), (3, 5, 1, None), (4, 4, 2, 1), (2, 3, 3, None)]:
        x, y = rng.normal(size=(m, d)), rng.normal(size=(n, d))
        for gamma in [0.0, 0.2, 1.0, 5.0]:
            for D in _divergences(x, x, gamma, cost, band):
                assert D == 0.0  # exactly
            # zero gradient at x = y (the barycenter stationarity test of SPEC 3.10)
            for gx, gy in _divergence_grads(x, x, gamma, cost, band):
                close(gx, np.zeros_like(x), atol=1e-13)
                close(gy, np.zeros_like(x), atol=1e-13)
            close(_divergences(y, x, gamma, cost, band), _divergences(x, y, gamma, cost, band), rtol=1e-12,
                  atol=1e-12)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0, 2.0, 10.0])
def test_log_augmented_divergence_nonnegative(gamma):
    # SPEC 3.9: guaranteed for the log-augmented cost only (not asserted for the other costs)
    rng = np.random.default_rng(int(100 * gamma))
    for _ in range(40):
        m, n, d = rng.integers(1, 5), rng.integers(1, 5), rng.integers(1, 3)
        scale = rng.choice([0.1, 0.5, 1.0, 3.0])
        x, y = scale * rng.normal(size=(m, d)), scale * rng.normal(size=(n, d))
        assert ref.soft_dtw_divergence(x, y, gamma, "log_augmented") >= -1e-12


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 3), (5, 3), (3, 6), (6, 4)])
def test_tied_alignment_closed_form(shape):
    # Constant costs with c / gamma large: the brute-force Gibbs expectation is the uniform
    # average of the shortest alignments, the closed form (longer ones weigh e^{-60} each).
    m, n = shape
    C = np.full((m, n), 60.0)
    E = ref.tied_alignment(m, n)
    neglected = ref.delannoy(m - 1, n - 1) * math.exp(-60.0)  # every longer alignment's weight bound
    np.testing.assert_allclose(ref.brute_force(C, 1.0).alignment, E, rtol=0, atol=neglected + 1e-13)
    np.testing.assert_allclose(ref.soft_dtw_alignment(C, 1.0), E, rtol=0, atol=1e-12)
    axis = 1 if m >= n else 0
    np.testing.assert_allclose(E.sum(axis=axis), 1.0, rtol=0, atol=1e-15)
