"""Float64 numpy references for SPEC.md section 6 (perturb-and-MAP, I-MLE, blackbox, MAP solvers).

Written from SPEC.md only: slow, obvious solvers (sorting, a plain O(V^2) Dijkstra, scipy's
linear_sum_assignment, brute-force enumeration for tiny instances) and exact expectations of
perturbed solvers where they have a closed form or can be enumerated (Gumbel argmax = softmax,
two-class Gaussian, Gumbel top-k inclusion probabilities by Plackett-Luce enumeration).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import erf

EULER_GAMMA = 0.5772156649015329

# SPEC.md 6.1 item 4: the backtrack's fixed neighbour order.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


# ------------------------------------------------------------------------------------------------
# Solvers (maximize form unless stated).


def argmax_onehot(theta: np.ndarray) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    y = np.zeros_like(theta)
    y[int(np.argmax(theta))] = 1.0  # numpy's argmax returns the first maximal index
    return y


def topk_mask(theta: np.ndarray, k: int) -> np.ndarray:
    """k largest, ties to the lower index (stable descending order)."""
    theta = np.asarray(theta, dtype=np.float64)
    order = np.argsort(-theta, kind="stable")
    y = np.zeros_like(theta)
    y[order[:k]] = 1.0
    return y


def ranks(theta: np.ndarray) -> np.ndarray:
    """1-based ascending ranks, stable on ties: the vertex of P(1..n) maximizing <y, theta>."""
    theta = np.asarray(theta, dtype=np.float64)
    order = np.argsort(theta, kind="stable")
    r = np.empty_like(theta)
    r[order] = np.arange(1, theta.size + 1)
    return r


def rank_matrix(theta: np.ndarray) -> np.ndarray:
    r = ranks(theta).astype(int)
    n = r.size
    p = np.zeros((n, n))
    p[np.arange(n), r - 1] = 1.0
    return p


def _grid_neighbours(i: int, j: int, h: int, w: int):
    for di, dj in NEIGHBOURS:
        a, b = i + di, j + dj
        if 0 <= a < h and 0 <= b < w:
            yield a, b


def grid_dijkstra(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex distances of the grid (SPEC.md 6.1 item 4): dist[source] = W[source], plain O(V^2) Dijkstra."""
    wts = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    h, w = wts.shape
    dist = np.full((h, w), np.inf)
    done = np.zeros((h, w), dtype=bool)
    dist[0, 0] = wts[0, 0]
    for _ in range(h * w):
        masked = np.where(done, np.inf, dist)
        flat = int(np.argmin(masked))
        i, j = divmod(flat, w)
        if not np.isfinite(masked[i, j]):
            break
        done[i, j] = True
        for a, b in _grid_neighbours(i, j, h, w):
            if not done[a, b] and dist[i, j] + wts[a, b] < dist[a, b]:
                dist[a, b] = dist[i, j] + wts[a, b]
    return dist, wts


def grid_shortest_path(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """(0/1 path mask, path cost): Dijkstra, then the SPEC backtrack from the target."""
    dist, wts = grid_dijkstra(weights)
    h, w = wts.shape
    mask = np.zeros((h, w))
    i, j = h - 1, w - 1
    mask[i, j] = 1.0
    while (i, j) != (0, 0):
        for a, b in _grid_neighbours(i, j, h, w):
            if dist[a, b] + wts[i, j] == dist[i, j]:
                i, j = a, b
                break
        else:  # pragma: no cover - consistent distances always have a predecessor
            raise AssertionError("no predecessor")
        mask[i, j] = 1.0
    return mask, float(dist[-1, -1])


def grid_path_cost(weights: np.ndarray, mask: np.ndarray) -> float:
    return float((np.maximum(np.asarray(weights, dtype=np.float64), 0.0) * mask).sum())


def is_grid_path(mask: np.ndarray) -> bool:
    """mask is a king-move path from (0,0) to (H-1,W-1) without extra cells (a connected chain)."""
    mask = np.asarray(mask) > 0.5
    h, w = mask.shape
    if not (mask[0, 0] and mask[-1, -1]):
        return False
    # Walk from the source; each visited cell must have exactly one unvisited next cell until the target.
    seen = {(0, 0)}
    stack = [(0, 0)]
    while stack:
        i, j = stack.pop()
        for a, b in _grid_neighbours(i, j, h, w):
            if mask[a, b] and (a, b) not in seen:
                seen.add((a, b))
                stack.append((a, b))
    return len(seen) == int(mask.sum()) and (h - 1, w - 1) in seen


def grid_bruteforce_cost(weights: np.ndarray) -> float:
    """Minimum path cost over all simple king-move paths (tiny grids only)."""
    wts = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    h, w = wts.shape
    best = math.inf

    def walk(i, j, visited, cost):
        nonlocal best
        if (i, j) == (h - 1, w - 1):
            best = min(best, cost)
            return
        for a, b in _grid_neighbours(i, j, h, w):
            if (a, b) not in visited:
                visited.add((a, b))
                walk(a, b, visited, cost + wts[a, b])
                visited.remove((a, b))

    walk(0, 0, {(0, 0)}, wts[0, 0])
    return best


def linear_assignment(cost: np.ndarray, maximize: bool = False) -> np.ndarray:
    cost = np.asarray(cost, dtype=np.float64)
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    y = np.zeros_like(cost)
    y[rows, cols] = 1.0
    return y


def assignment_bruteforce_value(cost: np.ndarray, maximize: bool = False) -> float:
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if n > m:
        return assignment_bruteforce_value(cost.T, maximize)
    values = [sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n)]
    return max(values) if maximize else min(values)


# ------------------------------------------------------------------------------------------------
# Noise (SPEC.md 6.2, 6.4).


def sum_of_gamma_moments(k: float, tau: float, s: int) -> tuple[float, float]:
    """Mean and variance of SoG(k, tau, s)."""
    harmonic = sum(1.0 / i for i in range(1, s + 1))
    mean = tau * (harmonic - math.log(s)) / k
    var = tau**2 * sum(1.0 / i**2 for i in range(1, s + 1)) / k
    return mean, var


def sum_of_gamma_numpy(rng: np.random.Generator, size, k: float, tau: float, s: int) -> np.ndarray:
    """An independent sampler (numpy's Gamma) of SoG(k, tau, s)."""
    total = np.zeros(size)
    for i in range(1, s + 1):
        total += rng.gamma(shape=1.0 / k, scale=k / i, size=size)
    return tau / k * (total - math.log(s))


# ------------------------------------------------------------------------------------------------
# Exact expectations of perturbed solvers.


def softmax(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    e = np.exp(v - v.max())
    return e / e.sum()


def logsumexp(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    m = v.max()
    return float(m + np.log(np.exp(v - m).sum()))


def perturbed_argmax_gumbel(theta: np.ndarray, eps: float) -> np.ndarray:
    """y_eps = E[argmax onehot(theta + eps G)] = softmax(theta / eps)."""
    return softmax(np.asarray(theta) / eps)


def perturbed_argmax_gumbel_value(theta: np.ndarray, eps: float) -> float:
    """F_eps = E[max_i theta_i + eps G_i] = eps LSE(theta / eps) + eps gamma_E."""
    return eps * logsumexp(np.asarray(theta) / eps) + eps * EULER_GAMMA


def perturbed_argmax_gumbel_jacobian(theta: np.ndarray, eps: float) -> np.ndarray:
    s = perturbed_argmax_gumbel(theta, eps)
    return (np.diag(s) - np.outer(s, s)) / eps


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def perturbed_two_class_gaussian(theta: np.ndarray, eps: float) -> np.ndarray:
    d = float(theta[0] - theta[1])
    p = normal_cdf(d / (eps * math.sqrt(2.0)))
    return np.array([p, 1.0 - p])


def perturbed_topk_gumbel(theta: np.ndarray, k: int, eps: float) -> np.ndarray:
    """E[topk_mask(theta + eps G)]: Gumbel top-k draws k items without replacement with
    probabilities softmax(theta / eps) (Plackett-Luce); enumerate every ordered k-prefix."""
    p = softmax(np.asarray(theta) / eps)
    n = p.size
    y = np.zeros(n)
    for seq in itertools.permutations(range(n), k):
        prob, left = 1.0, 1.0
        for i in seq:
            prob *= p[i] / left
            left -= p[i]
        y[list(seq)] += prob
    return y


def finite_difference_jacobian(f, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """J[i, j] = d f_i / d theta_j by central differences."""
    theta = np.asarray(theta, dtype=np.float64)
    cols = []
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        cols.append((np.asarray(f(theta + e)) - np.asarray(f(theta - e))) / (2 * h))
    return np.stack(cols, axis=1)


# ------------------------------------------------------------------------------------------------
# Estimators (SPEC.md 6.3 - 6.5).


def fenchel_young_argmax_gumbel(theta: np.ndarray, y: np.ndarray, eps: float) -> tuple[float, np.ndarray]:
    """(loss value up to the theta-independent constant, gradient) for one-hot + Gumbel."""
    value = perturbed_argmax_gumbel_value(theta, eps) - float(np.dot(theta, y))
    return value, perturbed_argmax_gumbel(theta, eps) - np.asarray(y)


def imle_gradient(solver, theta: np.ndarray, g: np.ndarray, lambda_: float, alpha: float = 1.0,
                  noise: np.ndarray | None = None, tau: float = 1.0, tau_target: float = 1.0) -> np.ndarray:
    """One I-MLE estimate z - z' with the given noise sample (zero when None)."""
    theta = np.asarray(theta, dtype=np.float64)
    eps = np.zeros_like(theta) if noise is None else np.asarray(noise)
    z = solver(theta + tau * eps)
    z_target = solver(alpha * theta - lambda_ * np.asarray(g) + tau_target * eps)
    return z - z_target


def imle_expected_gradient_argmax_gumbel(theta: np.ndarray, g: np.ndarray, lambda_: float, alpha: float = 1.0,
                                         tau: float = 1.0) -> np.ndarray:
    """E[z - z'] for argmax with Gumbel noise: softmax(theta/tau) - softmax((alpha theta - lambda g)/tau)."""
    theta = np.asarray(theta, dtype=np.float64)
    return softmax(theta / tau) - softmax((alpha * theta - lambda_ * np.asarray(g)) / tau)


def blackbox_gradient(solver, theta: np.ndarray, g: np.ndarray, lambda_: float) -> np.ndarray:
    """Maximize form: (y(theta) - y(theta - lambda g)) / lambda."""
    theta = np.asarray(theta, dtype=np.float64)
    return (solver(theta) - solver(theta - lambda_ * np.asarray(g))) / lambda_


# ------------------------------------------------------------------------------------------------
# The noise stream (csrc/perturb/perturb.h): Philox-4x32-10 (Salmon et al., SC 2011) of the
# counter (index, term, attempt) under the 64-bit key, and the Gumbel variates drawn from it.

_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(key: int, index: np.ndarray, term: int = 0, attempt: int = 0) -> np.ndarray:
    """The four 32-bit words (as uint64, shape index.shape + (4,)) of Philox-4x32-10 for the
    counter (index low, index high, term, attempt) and the key (key low, key high)."""
    index = np.asarray(index, dtype=np.uint64)
    c0, c1 = index & _MASK32, index >> np.uint64(32)
    c2 = np.full_like(index, term)
    c3 = np.full_like(index, attempt)
    k0, k1 = np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        p0, p1 = m0 * c0, m1 * c2  # < 2^64: exact in uint64
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _MASK32, (p0 >> np.uint64(32)) ^ c3 ^ k1,
                          p0 & _MASK32)
        k0 = (k0 + np.uint64(0x9E3779B9)) & _MASK32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _MASK32
    return np.stack([c0, c1, c2, c3], axis=-1)


def gumbel_stream(key: int, numel: int, single: bool) -> np.ndarray:
    """The first numel Gumbel values of the stream of `key`, in float64 before the rounding to the
    output dtype: float32 output (single) takes one uniform (top 24 bits + 1/2) / 2^24 per word,
    four per Philox block; float64 output one 53-bit uniform per two words, two per block."""
    per = 4 if single else 2
    words = philox4x32(key, np.arange(-(-numel // per), dtype=np.uint64))
    if single:
        u = ((words >> np.uint64(8)).astype(np.float64) + 0.5) / 16777216.0
    else:
        pairs = words.reshape(-1, 2, 2)
        bits = ((pairs[..., 0] << np.uint64(21)) ^ (pairs[..., 1] >> np.uint64(11))) & np.uint64((1 << 53) - 1)
        u = (bits.astype(np.float64) + 0.5) / 9007199254740992.0
    return -np.log(-np.log(u.reshape(-1)[:numel]))
