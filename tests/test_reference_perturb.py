"""Self-test of the float64 numpy reference for SPEC.md section 6 (tests/reference/perturb.py):
SPEC section 7.6 values, brute force on tiny instances, finite differences, sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tests.reference import perturb as ref


def test_spec_argmax_gumbel_values():
    theta = np.array([1.0, 0.5, -0.2])
    np.testing.assert_allclose(ref.perturbed_argmax_gumbel(theta, 0.5), [0.685590, 0.252215, 0.062195], atol=1e-6)
    assert ref.perturbed_argmax_gumbel_value(theta, 0.5) == pytest.approx(1.477345, abs=1e-6)
    expected = [[0.43111, -0.34583, -0.08528], [-0.34583, 0.37720, -0.03137], [-0.08528, -0.03137, 0.11665]]
    np.testing.assert_allclose(ref.perturbed_argmax_gumbel_jacobian(theta, 0.5), expected, atol=1e-5)


def test_spec_two_class_gaussian():
    theta = np.array([0.3, 0.0])
    y = ref.perturbed_two_class_gaussian(theta, 0.5)
    assert y[0] == pytest.approx(0.664313, abs=1e-6)
    jac = ref.finite_difference_jacobian(lambda t: ref.perturbed_two_class_gaussian(t, 0.5), theta)
    np.testing.assert_allclose(jac, [[0.515630, -0.515630], [-0.515630, 0.515630]], atol=1e-6)


def test_spec_sum_of_gamma_moments():
    mean, var = ref.sum_of_gamma_moments(5, 1.0, 10)
    assert mean == pytest.approx(0.125277, abs=1e-6)
    assert var == pytest.approx(0.309954, abs=1e-6)
    # Limits: (H_s - log s)/k -> gamma_E / k, sum 1/i^2 / k -> pi^2 / (6k).
    mean, var = ref.sum_of_gamma_moments(5, 1.0, 10**6)
    assert mean == pytest.approx(ref.EULER_GAMMA / 5, abs=1e-6)
    assert var == pytest.approx(math.pi**2 / 30, abs=1e-6)


def test_sum_of_gamma_numpy_sampler_moments_and_gumbel_limit():
    rng = np.random.default_rng(0)
    x = ref.sum_of_gamma_numpy(rng, 200_000, 5, 1.0, 10)
    mean, var = ref.sum_of_gamma_moments(5, 1.0, 10)
    assert abs(x.mean() - mean) < 4 * math.sqrt(var / x.size)
    assert x.var() == pytest.approx(var, rel=0.02)
    # Sum of k SoG(k, 1, s) with large s: standard Gumbel moments.
    total = ref.sum_of_gamma_numpy(rng, (50_000, 5), 5, 1.0, 100).sum(1)
    assert total.mean() == pytest.approx(ref.EULER_GAMMA, abs=0.025)
    assert total.var() == pytest.approx(math.pi**2 / 6, rel=0.03)


def test_spec_topk_imle_and_blackbox():
    theta = np.array([0.9, 0.1, 0.5, -0.3])
    g = np.array([0.0, -1.0, 0.5, 0.0])
    solver = lambda t: ref.topk_mask(t, 2)  # noqa: E731
    np.testing.assert_array_equal(solver(theta), [1, 0, 1, 0])
    np.testing.assert_array_equal(solver(theta - g), [1, 1, 0, 0])
    np.testing.assert_array_equal(ref.imle_gradient(solver, theta, g, 1.0), [0, -1, 1, 0])
    np.testing.assert_array_equal(ref.blackbox_gradient(solver, theta, g, 1.0), [0, -1, 1, 0])


def test_spec_grid_paths():
    mask, cost = ref.grid_shortest_path(np.array([[1, 5, 1], [1, 9, 1], [5, 1, 1]], dtype=float))
    np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 0, 0], [0, 1, 1]])
    assert cost == 4
    mask, cost = ref.grid_shortest_path(np.array([[1, 1, 1], [9, 9, 1], [9, 9, 1]], dtype=float))
    np.testing.assert_array_equal(mask, [[1, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert cost == 4


def test_spec_assignment():
    theta = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]], dtype=float)
    y = ref.linear_assignment(theta, maximize=True)
    np.testing.assert_array_equal(y.argmax(1), [0, 2, 1])
    assert (y * theta).sum() == 11 == ref.assignment_bruteforce_value(theta, maximize=True)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (2, 2), (3, 3), (2, 4), (3, 4)])
def test_grid_dijkstra_matches_bruteforce(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        w = rng.uniform(0.1, 5.0, size=shape)
        mask, cost = ref.grid_shortest_path(w)
        assert ref.is_grid_path(mask)
        assert cost == pytest.approx(ref.grid_bruteforce_cost(w))
        assert ref.grid_path_cost(w, mask) == pytest.approx(cost)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (4, 4), (5, 5)])
def test_assignment_matches_bruteforce(shape):
    rng = np.random.default_rng(sum(shape))
    for maximize in (False, True):
        c = rng.integers(0, 4, size=shape).astype(float)  # many ties
        y = ref.linear_assignment(c, maximize)
        assert (y * c).sum() == ref.assignment_bruteforce_value(c, maximize)


def test_ranks_and_topk_ties():
    theta = np.array([2.0, 1.0, 2.0, 0.0])
    np.testing.assert_array_equal(ref.ranks(theta), [3, 2, 4, 1])
    np.testing.assert_array_equal(ref.topk_mask(theta, 1), [1, 0, 0, 0])
    np.testing.assert_array_equal(ref.argmax_onehot(theta), [1, 0, 0, 0])
    p = ref.rank_matrix(theta)
    np.testing.assert_array_equal(p.T @ theta, np.sort(theta))
    # ranks maximize <y, theta> over all permutations of 1..n
    best = max(np.dot(perm, theta) for perm in itertools.permutations(range(1, 5)))
    assert np.dot(ref.ranks(theta), theta) == best


def test_perturbed_topk_gumbel_enumeration():
    theta = np.array([0.3, -0.1, 0.8, 0.0])
    y = ref.perturbed_topk_gumbel(theta, 2, 0.7)
    assert y.sum() == pytest.approx(2.0)
    # k = 1 is the softmax
    np.testing.assert_allclose(ref.perturbed_topk_gumbel(theta, 1, 0.7), ref.softmax(theta / 0.7), atol=1e-12)
    # Monte Carlo with numpy's Gumbel
    rng = np.random.default_rng(1)
    z = theta + 0.7 * rng.gumbel(size=(200_000, 4))
    order = np.argsort(-z, axis=1)[:, :2]
    counts = np.zeros(4)
    np.add.at(counts, order.ravel(), 1.0)
    np.testing.assert_allclose(counts / 200_000, y, atol=4 / math.sqrt(200_000))


def test_jacobian_closed_form_matches_finite_differences():
    theta = np.array([1.0, 0.5, -0.2])
    jac = ref.finite_difference_jacobian(lambda t: ref.perturbed_argmax_gumbel(t, 0.5), theta)
    np.testing.assert_allclose(jac, ref.perturbed_argmax_gumbel_jacobian(theta, 0.5), atol=1e-8)
    # grad F_eps = y_eps
    grad = ref.finite_difference_jacobian(lambda t: [ref.perturbed_argmax_gumbel_value(t, 0.5)], theta)[0]
    np.testing.assert_allclose(grad, ref.perturbed_argmax_gumbel(theta, 0.5), atol=1e-8)


def test_imle_expected_gradient_limit():
    theta = np.array([0.4, -0.3, 0.1])
    g = np.array([1.0, -0.5, 0.2])
    lam = 1e-4
    approx = ref.imle_expected_gradient_argmax_gumbel(theta, g, lam) / lam
    exact = ref.perturbed_argmax_gumbel_jacobian(theta, 1.0).T @ g
    np.testing.assert_allclose(approx, exact, atol=1e-4)


def test_philox_known_answers():
    """Philox-4x32-10's published known-answer vectors (counter, key) -> output: zeros, all ones,
    and the digits of pi; the counter is (index low, index high, term, attempt)."""
    def words(key, index, term, attempt):
        return [int(v) for v in ref.philox4x32(key, np.array([index], dtype=np.uint64), term, attempt)[0]]

    assert words(0, 0, 0, 0) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert words(2**64 - 1, 2**64 - 1, 0xFFFFFFFF, 0xFFFFFFFF) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert words(0x299F31D0A4093822, 0x85A308D3243F6A88, 0x13198A2E, 0x03707344) == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_gumbel_stream_uniforms_are_open_and_the_values_gumbel():
    x = ref.gumbel_stream(7, 100_000, single=True)
    y = ref.gumbel_stream(7, 100_000, single=False)
    for v in (x, y):
        assert np.isfinite(v).all()
        assert abs(v.mean() - ref.EULER_GAMMA) < 4 * math.sqrt(math.pi**2 / 6 / v.size)
    # The float32 stream's extreme uniforms: (0 + 1/2) / 2^24 and (2^24 - 1/2) / 2^24.
    words = np.array([0, 0xFFFFFFFF], dtype=np.uint64)
    u = ((words >> np.uint64(8)).astype(np.float64) + 0.5) / 16777216.0
    assert 0.0 < u[0] and u[1] < 1.0 and np.isfinite(-np.log(-np.log(u))).all()
