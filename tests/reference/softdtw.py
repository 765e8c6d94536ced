"""Float64 numpy references for SPEC.md section 3: soft-DTW, its backward (expected alignment),
tangent / Hessian-vector passes, the sharp and mean-cost variants and the divergences.

Written only from SPEC.md, as plain Python loops over the dynamic programs: slow and obvious on
purpose. Everything acts on one pair of series at a time: x (m, d), y (n, d) (a 1-D series is taken as
d = 1 and its gradient is returned 1-D), or on one cost matrix C (m, n).

Conventions (SPEC 0, 3.4, 3.6):
- m = 0 or n = 0 raises ValueError (no alignment); so do a negative gamma, a bad bandwidth or cost name.
- A NaN or +/-inf anywhere in x, y or C gives NaN values and all-NaN gradients (SPEC 0; SPEC 3.6 only
  restates it for NaN, so +/-inf entries of a user cost matrix follow the global rule too).
- Sakoe-Chiba band b (None = no band): cells with |i - j| > b are excluded. When b < |m - n| the value is
  +inf and the gradient w.r.t. C is zero (SPEC 3.4). SPEC 3.4 speaks of sdtw only; this file applies the
  same "+inf value, zero gradient" rule to the sharp value and to the mean cost (an expectation over an
  empty set of alignments). A divergence composes its three terms literally as SPEC 3.9 says
  (value +inf; gradient from the finite XX (and YY) terms).
- gamma = 0 is hard DTW; its alignment is the indicator of one argmin path, chosen with the tie-break
  order diag, up, left (SPEC 3.6); all gamma-derivatives (tangent of the weights) are zero there.

Indices: the DP tables are (m + 1, n + 1) with the 1-based cells of the SPEC; row 0 / column 0 are the
boundary. Returned R has that padded shape; E, gradients and Hessian-vector products are (m, n).
"""

import itertools
import math
from typing import NamedTuple, Optional

import numpy as np

__all__ = [
    "COSTS",
    "SoftDTWForward",
    "BruteForce",
    "delannoy",
    "alignments",
    "brute_force",
    "cost_matrix",
    "cost_matrix_vjp",
    "soft_min",
    "soft_dtw_forward",
    "transition_weights_from_R",
    "soft_dtw_from_cost",
    "dtw_from_cost",
    "soft_dtw_alignment",
    "soft_dtw_jvp",
    "soft_dtw_hvp",
    "sharp_soft_dtw_from_cost",
    "sharp_soft_dtw_from_cost_grad",
    "path_counts_log",
    "mean_alignment",
    "mean_cost_from_cost",
    "soft_dtw",
    "soft_dtw_grad",
    "sharp_soft_dtw",
    "sharp_soft_dtw_grad",
    "mean_cost",
    "mean_cost_grad",
    "soft_dtw_divergence",
    "soft_dtw_divergence_grad",
    "sharp_soft_dtw_divergence",
    "sharp_soft_dtw_divergence_grad",
    "mean_cost_divergence",
    "mean_cost_divergence_grad",
    "numerical_gradient",
]

COSTS = ("sqeuclidean", "half_sqeuclidean", "log_augmented")

# predecessor k of cell (i, j): 0 = left (i, j-1), 1 = diagonal (i-1, j-1), 2 = up (i-1, j) (SPEC 3.2)
LEFT, DIAG, UP = 0, 1, 2
_OFFSETS = {LEFT: (0, -1), DIAG: (-1, -1), UP: (-1, 0)}
_TIE_BREAK = (DIAG, UP, LEFT)  # gamma = 0: first minimal predecessor in this order (SPEC 3.6)


class SoftDTWForward(NamedTuple):
    """Forward tables. R: (m + 1, n + 1), R[0, 0] = 0, +inf on the rest of the boundary, outside the
    band and at unreachable cells. P: (m + 1, n + 1, 3), P[i, j, k] = weight cell (i, j) puts on its
    predecessor k (LEFT, DIAG, UP); zero rows at boundary / excluded / unreachable cells."""
    R: np.ndarray
    P: np.ndarray


class BruteForce(NamedTuple):
    """Quantities computed by enumerating every alignment (SPEC 3.1), for small m, n only."""
    count: int                 # number of (in-band) alignments
    value: float               # min^gamma over alignments of <A, C>
    alignment: np.ndarray      # E = E_p[A] (m, n)
    sharp: float               # E_p[<A, C>]
    mean_cost: float           # average of <A, C> over the alignments
    mean_alignment: np.ndarray  # average of A (m, n)
    hessian: Optional[np.ndarray]  # -(1/gamma) Cov_p(vec A), (m n, m n); None for gamma = 0


# ------------------------------------------------------------------------------------------------
# checks and small helpers


def _series(x, name):
    """x as a float64 (len, d) array; a 1-D input is one feature (d = 1). Returns (array, was_1d)."""
    a = np.array(x, dtype=np.float64)
    if a.ndim == 1:
        return a[:, None], True
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (len,) or (len, d), got {a.shape}")
    return a, False


def _pair(x, y):
    xs, x1 = _series(x, "x")
    ys, y1 = _series(y, "y")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {xs.shape[1]} and {ys.shape[1]}")
    if xs.shape[0] == 0 or ys.shape[0] == 0:
        raise ValueError(f"soft-DTW needs non-empty series, got lengths {xs.shape[0]} and {ys.shape[0]}")
    return xs, x1, ys, y1


def _matrix(C):
    C = np.array(C, dtype=np.float64)
    if C.ndim != 2:
        raise ValueError(f"C must be a matrix (m, n), got shape {C.shape}")
    if C.shape[0] == 0 or C.shape[1] == 0:
        raise ValueError(f"soft-DTW needs m, n >= 1 (no alignment otherwise), got {C.shape}")
    return C


def _check_gamma(gamma):
    if not (isinstance(gamma, (int, float, np.floating, np.integer)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")


def _check_band(bandwidth):
    if bandwidth is None:
        return
    if not (isinstance(bandwidth, (int, np.integer)) and not isinstance(bandwidth, bool) and bandwidth >= 0):
        raise ValueError(f"bandwidth must be None or an integer >= 0, got {bandwidth!r}")


def _check_cost(cost):
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")


def _finite(*arrays):
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def _in_band(i, j, bandwidth):
    """1-based cell (i, j) is inside the Sakoe-Chiba band |i - j| <= b (always, for b = None)."""
    return bandwidth is None or abs(i - j) <= bandwidth


def _feasible(m, n, bandwidth):
    return bandwidth is None or bandwidth >= abs(m - n)


def _lse(v):
    """log sum exp(v), stably (SPEC 0); -inf for an empty or all -inf list."""
    M = max(v) if len(v) else -math.inf
    if M == -math.inf:
        return -math.inf
    return M + math.log(sum(math.exp(a - M) for a in v))


def _logaddexp(a, b):
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def delannoy(a, b):
    """Delannoy number D(a, b) = D(a-1, b) + D(a, b-1) + D(a-1, b-1), D(a, 0) = D(0, b) = 1 (exact int).
    |A(m, n)| = D(m - 1, n - 1) (SPEC 3.1)."""
    if a < 0 or b < 0:
        raise ValueError(f"delannoy needs a, b >= 0, got {a}, {b}")
    D = [[1] * (b + 1) for _ in range(a + 1)]
    for i in range(1, a + 1):
        for j in range(1, b + 1):
            D[i][j] = D[i - 1][j] + D[i][j - 1] + D[i - 1][j - 1]
    return D[a][b]


def soft_min(values, gamma):
    """min^gamma(a_1..a_k) = -gamma log sum_i exp(-a_i / gamma) (gamma > 0), min for gamma = 0 (SPEC 3.1).
    +inf entries contribute nothing; all +inf gives +inf."""
    _check_gamma(gamma)
    v = [float(a) for a in np.asarray(values, dtype=np.float64).ravel()]
    if not v:
        raise ValueError("soft_min needs at least one value")
    if any(math.isnan(a) for a in v):
        return math.nan
    M = min(v)
    if gamma == 0 or M == math.inf:
        return M
    # shifted form: M - gamma log sum exp(-(a - M)/gamma); the a = +inf terms are exactly 0
    return M - gamma * math.log(sum(math.exp(-(a - M) / gamma) for a in v if a != math.inf))


# ------------------------------------------------------------------------------------------------
# alignments by enumeration (the definition of SPEC 3.1): an oracle for the DPs


def alignments(m, n, bandwidth=None):
    """Every alignment matrix of A(m, n) (monotone paths (1,1) -> (m,n), steps (1,0), (0,1), (1,1)) whose
    cells all satisfy |i - j| <= bandwidth. Returns a list of (m, n) 0/1 float arrays."""
    _check_band(bandwidth)
    out = []

    def walk(i, j, cells):
        if not _in_band(i, j, bandwidth):
            return
        cells.append((i, j))
        if (i, j) == (m, n):
            A = np.zeros((m, n))
            for a, b in cells:
                A[a - 1, b - 1] = 1.0
            out.append(A)
        else:
            for di, dj in ((1, 0), (0, 1), (1, 1)):
                if i + di <= m and j + dj <= n:
                    walk(i + di, j + dj, cells)
        cells.pop()

    walk(1, 1, [])
    return out


def brute_force(C, gamma, bandwidth=None):
    """Soft-DTW quantities by summing over all (in-band) alignments: value = min^gamma <A, C>, Gibbs
    weights p(A) ∝ exp(-<A,C>/gamma) (gamma = 0: uniform over the argmin alignments), E = E_p[A],
    sharp = E_p[<A,C>], mean cost / mean alignment = plain averages, Hessian = -(1/gamma) Cov_p(vec A).
    With no alignment (infeasible band): value +inf and zero / None elsewhere. Finite C only."""
    C = _matrix(C)
    _check_gamma(gamma)
    m, n = C.shape
    As = alignments(m, n, bandwidth)
    if not As:
        z = np.zeros((m, n))
        return BruteForce(0, math.inf, z, math.inf, math.inf, z.copy(), None)
    costs = [float(np.sum(A * C)) for A in As]
    value = soft_min(costs, gamma)
    if gamma == 0:
        best = min(costs)
        w = np.array([1.0 if c == best else 0.0 for c in costs])
        w /= w.sum()
    else:
        lz = _lse([-c / gamma for c in costs])
        w = np.array([math.exp(-c / gamma - lz) for c in costs])
    E = sum(wk * A for wk, A in zip(w, As))
    sharp = float(sum(wk * c for wk, c in zip(w, costs)))
    mean_cost_value = float(sum(costs) / len(costs))
    mean_A = sum(As) / len(As)
    hessian = None
    if gamma > 0:
        V = np.array([A.ravel() for A in As])  # (K, m n)
        mu = w @ V
        cov = (V * w[:, None]).T @ V - np.outer(mu, mu)
        hessian = -cov / gamma
    return BruteForce(len(As), value, E, sharp, mean_cost_value, mean_A, hessian)


# ------------------------------------------------------------------------------------------------
# cost matrices (SPEC 3.1) and their VJPs (SPEC 3.3)


def _half_sq(a, b):
    return 0.5 * sum((a[k] - b[k]) ** 2 for k in range(len(a)))


def cost_matrix(x, y, cost="sqeuclidean"):
    """C[i, j] = cost(x_i, y_j) in the difference form (SPEC 3.1):
    sqeuclidean ||x_i - y_j||^2; half_sqeuclidean 1/2 ||x_i - y_j||^2;
    log_augmented c + log(2 - exp(-c)), c = 1/2 ||x_i - y_j||^2.
    x (m, d) or (m,), y (n, d) or (n,). All NaN when x or y has a non-finite entry."""
    _check_cost(cost)
    xs, _, ys, _ = _pair(x, y)
    m, n = len(xs), len(ys)
    if not _finite(xs, ys):
        return np.full((m, n), np.nan)
    C = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            c = _half_sq(xs[i], ys[j])
            if cost == "sqeuclidean":
                C[i, j] = 2.0 * c
            elif cost == "half_sqeuclidean":
                C[i, j] = c
            else:
                C[i, j] = c + math.log(2.0 - math.exp(-c))
    return C


def cost_matrix_vjp(x, y, G, cost="sqeuclidean"):
    """(dL/dx, dL/dy) for L = <G, C(x, y)> (SPEC 3.3): sqeuclidean dx_i = 2 sum_j G_ij (x_i - y_j),
    dy_j = 2 sum_i G_ij (y_j - x_i); half_sqeuclidean without the 2; log_augmented: G multiplied by
    1 + exp(-c)/(2 - exp(-c)) first, then the half rule. Shapes follow x and y. NaN for non-finite input."""
    _check_cost(cost)
    xs, x1, ys, y1 = _pair(x, y)
    G = np.array(G, dtype=np.float64)
    m, n = len(xs), len(ys)
    if G.shape != (m, n):
        raise ValueError(f"G must have shape {(m, n)}, got {G.shape}")
    if not _finite(xs, ys, G):
        gx, gy = np.full(xs.shape, np.nan), np.full(ys.shape, np.nan)
    else:
        W = G.copy()
        if cost == "log_augmented":
            for i in range(m):
                for j in range(n):
                    e = math.exp(-_half_sq(xs[i], ys[j]))
                    W[i, j] *= 1.0 + e / (2.0 - e)
        factor = 2.0 if cost == "sqeuclidean" else 1.0
        gx = np.zeros(xs.shape)
        gy = np.zeros(ys.shape)
        for i in range(m):
            for j in range(n):
                gx[i] += factor * W[i, j] * (xs[i] - ys[j])
                gy[j] += factor * W[i, j] * (ys[j] - xs[i])
    return (gx[:, 0] if x1 else gx), (gy[:, 0] if y1 else gy)


# ------------------------------------------------------------------------------------------------
# forward DP (SPEC 3.2, 3.4)


def soft_dtw_forward(C, gamma, bandwidth=None):
    """Forward DP of SPEC 3.2 with the band of SPEC 3.4: returns SoftDTWForward(R, P).
    gamma = 0: R is the DTW table and P[i, j] is one-hot on the first minimal predecessor in the order
    diag, up, left. Finite C only (the public functions handle NaN/inf before calling it)."""
    C = _matrix(C)
    _check_gamma(gamma)
    _check_band(bandwidth)
    m, n = C.shape
    R = np.full((m + 1, n + 1), math.inf)
    P = np.zeros((m + 1, n + 1, 3))
    R[0, 0] = 0.0
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if not _in_band(i, j, bandwidth):
                continue  # excluded: R = +inf, p = 0
            r = [R[i + _OFFSETS[k][0], j + _OFFSETS[k][1]] for k in range(3)]
            M = min(r)
            if M == math.inf:
                continue  # unreachable: R = +inf, p = 0
            if gamma == 0:
                k_best = next(k for k in _TIE_BREAK if r[k] == M)
                R[i, j] = C[i - 1, j - 1] + M
                P[i, j, k_best] = 1.0
            else:
                e = [0.0 if r[k] == math.inf else math.exp(-(r[k] - M) / gamma) for k in range(3)]
                S = sum(e)
                R[i, j] = C[i - 1, j - 1] + M - gamma * math.log(S)
                for k in range(3):
                    P[i, j, k] = e[k] / S
    return SoftDTWForward(R, P)


def transition_weights_from_R(C, R, gamma, bandwidth=None):
    """The weights of SPEC 3.2 recomputed from R and C alone: p(c -> q) = exp((R[c] - C[c] - R[q]) / gamma),
    0 when R[q] = +inf, R[c] = +inf or c is outside the band (gamma > 0). Same layout as SoftDTWForward.P."""
    C = _matrix(C)
    _check_band(bandwidth)
    if not gamma > 0:
        raise ValueError(f"transition_weights_from_R needs gamma > 0, got {gamma!r}")
    m, n = C.shape
    P = np.zeros((m + 1, n + 1, 3))
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if not _in_band(i, j, bandwidth) or R[i, j] == math.inf:
                continue
            softmin_value = R[i, j] - C[i - 1, j - 1]
            for k in range(3):
                q = (i + _OFFSETS[k][0], j + _OFFSETS[k][1])
                if R[q] != math.inf:
                    P[i, j, k] = math.exp((softmin_value - R[q]) / gamma)
    return P


def soft_dtw_from_cost(C, gamma, bandwidth=None):
    """sdtw_gamma(C) = R[m, n] (SPEC 3.2). +inf if the band admits no alignment; NaN for non-finite C."""
    C = _matrix(C)
    _check_gamma(gamma)
    _check_band(bandwidth)
    if not _finite(C):
        return math.nan
    m, n = C.shape
    return float(soft_dtw_forward(C, gamma, bandwidth).R[m, n])


def dtw_from_cost(C, bandwidth=None):
    """Classic DTW: min over (in-band) alignments of <A, C>, by its own min-DP (independent of the
    soft-DTW code). +inf if the band admits no alignment; NaN for non-finite C."""
    C = _matrix(C)
    _check_band(bandwidth)
    if not _finite(C):
        return math.nan
    m, n = C.shape
    D = [[math.inf] * (n + 1) for _ in range(m + 1)]
    D[0][0] = 0.0
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if bandwidth is not None and abs(i - j) > bandwidth:
                continue
            best = min(D[i - 1][j - 1], D[i - 1][j], D[i][j - 1])
            if best < math.inf:
                D[i][j] = float(C[i - 1, j - 1]) + best
    return D[m][n]


# ------------------------------------------------------------------------------------------------
# backward DP (SPEC 3.3): E = grad_C sdtw


def _successors(i, j, m, n):
    """(successor cell s, k) such that pred_k(s) = (i, j), s inside the m x n grid."""
    out = []
    for k in range(3):
        di, dj = _OFFSETS[k]
        s = (i - di, j - dj)
        if s[0] <= m and s[1] <= n:
            out.append((s, k))
    return out


def _backward(P, m, n):
    """E[m,n] = 1; E[q] = sum over successors s of p(s -> q) E[s]; returns (m + 1, n + 1) (row/col 0 unused)."""
    E = np.zeros((m + 1, n + 1))
    E[m, n] = 1.0
    for i in range(m, 0, -1):
        for j in range(n, 0, -1):
            if (i, j) == (m, n):
                continue
            E[i, j] = sum(P[s][k] * E[s] for s, k in _successors(i, j, m, n))
    return E


def soft_dtw_alignment(C, gamma, bandwidth=None):
    """Expected alignment E = grad_C sdtw_gamma(C), (m, n), by the backward DP of SPEC 3.3.
    gamma = 0: indicator of the argmin path (tie-break diag, up, left). Zero when the band admits no
    alignment; all NaN for non-finite C."""
    C = _matrix(C)
    _check_gamma(gamma)
    _check_band(bandwidth)
    m, n = C.shape
    if not _finite(C):
        return np.full((m, n), np.nan)
    if not _feasible(m, n, bandwidth):
        return np.zeros((m, n))
    fwd = soft_dtw_forward(C, gamma, bandwidth)
    return _backward(fwd.P, m, n)[1:, 1:].copy()


# ------------------------------------------------------------------------------------------------
# tangent (forward-mode) and Hessian-vector product (SPEC 3.8)


def _tangent(P, Z, m, n, bandwidth):
    """dR[i,j] = Z[i,j] + sum_k p[i,j,k] dR[pred_k]; boundary, excluded and unreachable cells 0."""
    dR = np.zeros((m + 1, n + 1))
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if not _in_band(i, j, bandwidth) or not P[i, j].any():
                continue  # excluded or unreachable (reachable cells have weights summing to 1)
            dR[i, j] = Z[i - 1, j - 1] + sum(P[i, j, k] * dR[i + _OFFSETS[k][0], j + _OFFSETS[k][1]]
                                             for k in range(3))
    return dR


def _tangent_weights(P, dR, gamma, m, n):
    """dp[i,j,k] = p[i,j,k] (mu[i,j] - dR[pred_k]) / gamma, mu = sum_k p[i,j,k] dR[pred_k]; 0 for gamma = 0."""
    dP = np.zeros_like(P)
    if gamma == 0:
        return dP
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            preds = [dR[i + _OFFSETS[k][0], j + _OFFSETS[k][1]] for k in range(3)]
            mu = sum(P[i, j, k] * preds[k] for k in range(3))
            for k in range(3):
                dP[i, j, k] = P[i, j, k] * (mu - preds[k]) / gamma
    return dP


def _tangent_backward(P, dP, E, m, n):
    """dE[m,n] = 0; dE[q] = sum over successors s of [dp(s -> q) E[s] + p(s -> q) dE[s]]."""
    dE = np.zeros((m + 1, n + 1))
    for i in range(m, 0, -1):
        for j in range(n, 0, -1):
            if (i, j) == (m, n):
                continue
            dE[i, j] = sum(dP[s][k] * E[s] + P[s][k] * dE[s] for s, k in _successors(i, j, m, n))
    return dE


def _check_direction(Z, shape):
    Z = np.array(Z, dtype=np.float64)
    if Z.shape != shape:
        raise ValueError(f"Z must have the shape of C {shape}, got {Z.shape}")
    return Z


def soft_dtw_jvp(C, gamma, Z, bandwidth=None):
    """Directional derivative of sdtw_gamma at C along Z: dR[m, n] of the tangent recursion of SPEC 3.8
    (= <E, Z>). 0 when the band admits no alignment; NaN for non-finite C or Z."""
    C = _matrix(C)
    _check_gamma(gamma)
    _check_band(bandwidth)
    m, n = C.shape
    Z = _check_direction(Z, C.shape)
    if not _finite(C, Z):
        return math.nan
    if not _feasible(m, n, bandwidth):
        return 0.0
    P = soft_dtw_forward(C, gamma, bandwidth).P
    return float(_tangent(P, Z, m, n, bandwidth)[m, n])


def soft_dtw_hvp(C, gamma, Z, bandwidth=None):
    """Hessian-vector product H Z of sdtw_gamma at C (= tangent of E along Z), (m, n), by the forward
    tangent + forward-on-backward passes of SPEC 3.8. Zero for gamma = 0 or an infeasible band; NaN for
    non-finite C or Z."""
    C = _matrix(C)
    _check_gamma(gamma)
    _check_band(bandwidth)
    m, n = C.shape
    Z = _check_direction(Z, C.shape)
    if not _finite(C, Z):
        return np.full((m, n), np.nan)
    if not _feasible(m, n, bandwidth):
        return np.zeros((m, n))
    P = soft_dtw_forward(C, gamma, bandwidth).P
    E = _backward(P, m, n)
    dR = _tangent(P, Z, m, n, bandwidth)
    dP = _tangent_weights(P, dR, gamma, m, n)
    return _tangent_backward(P, dP, E, m, n)[1:, 1:].copy()


# ------------------------------------------------------------------------------------------------
# sharp soft-DTW (SPEC 3.9)


def sharp_soft_dtw_from_cost(C, gamma, bandwidth=None):
    """sharp_gamma(C) = <E_gamma(C), C> = dR[m, n] of the tangent pass with Z = C (SPEC 3.9).
    +inf when the band admits no alignment (see the module note); NaN for non-finite C."""
    C = _matrix(C)
    _check_gamma(gamma)
    _check_band(bandwidth)
    m, n = C.shape
    if not _finite(C):
        return math.nan
    if not _feasible(m, n, bandwidth):
        return math.inf
    return soft_dtw_jvp(C, gamma, C, bandwidth)


def sharp_soft_dtw_from_cost_grad(C, gamma, bandwidth=None):
    """grad_C sharp_gamma = E + H C (SPEC 3.9, with the HVP of SPEC 3.8 along Z = C), (m, n).
    Zero when the band admits no alignment; NaN for non-finite C."""
    C = _matrix(C)
    _check_gamma(gamma)
    _check_band(bandwidth)
    m, n = C.shape
    if not _finite(C):
        return np.full((m, n), np.nan)
    if not _feasible(m, n, bandwidth):
        return np.zeros((m, n))
    return soft_dtw_alignment(C, gamma, bandwidth) + soft_dtw_hvp(C, gamma, C, bandwidth)


# ------------------------------------------------------------------------------------------------
# mean cost (SPEC 3.9): the same recursions with counting weights


def path_counts_log(m, n, bandwidth=None):
    """log N, (m + 1, n + 1): N[0,0] = 1, N[i,j] = N[i,j-1] + N[i-1,j-1] + N[i-1,j] over in-band cells
    (number of in-band paths from (1,1) to (i,j)); -inf where N = 0. Accumulated with logaddexp."""
    _check_band(bandwidth)
    logN = np.full((m + 1, n + 1), -math.inf)
    logN[0, 0] = 0.0
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if not _in_band(i, j, bandwidth):
                continue
            acc = -math.inf
            for k in range(3):
                acc = _logaddexp(acc, logN[i + _OFFSETS[k][0], j + _OFFSETS[k][1]])
            logN[i, j] = acc
    return logN


def _counting_weights(m, n, bandwidth):
    """p_count[i,j,k] = N[pred_k] / N[i,j] = exp(log N[pred_k] - log N[i,j]); 0 where N[i,j] = 0."""
    logN = path_counts_log(m, n, bandwidth)
    P = np.zeros((m + 1, n + 1, 3))
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if logN[i, j] == -math.inf:
                continue
            for k in range(3):
                lq = logN[i + _OFFSETS[k][0], j + _OFFSETS[k][1]]
                if lq != -math.inf:
                    P[i, j, k] = math.exp(lq - logN[i, j])
    return P


def mean_alignment(m, n, bandwidth=None):
    """Ebar = average of all (in-band) alignment matrices, (m, n), by the backward DP with counting
    weights (SPEC 3.9). Zero when the band admits no alignment."""
    if m < 1 or n < 1:
        raise ValueError(f"mean_alignment needs m, n >= 1, got {m}, {n}")
    _check_band(bandwidth)
    if not _feasible(m, n, bandwidth):
        return np.zeros((m, n))
    return _backward(_counting_weights(m, n, bandwidth), m, n)[1:, 1:].copy()


def tied_alignment(m, n):
    """Closed form of E for a constant cost matrix C = c 1 as c / gamma -> infinity: the Gibbs
    distribution becomes uniform over the shortest alignments (max(m, n) cells; for m >= n the paths
    of m - 1 down or diagonal steps, n - 1 of them diagonal, C(m-1, n-1) of them), so
    E[i, j] = C(i-1, j-1) C(m-i, n-j) / C(m-1, n-1) (1-based; transposed for m < n): the paths
    through (i, j) count the ways to reach it times the ways to finish. Every row (m >= n) or
    column (m < n) of E sums to 1. The neglected longer alignments weigh e^{-c/gamma} each."""
    if m < 1 or n < 1:
        raise ValueError(f"tied_alignment needs m, n >= 1, got {m}, {n}")
    if m < n:
        return tied_alignment(n, m).T.copy()
    total = math.comb(m - 1, n - 1)
    E = np.zeros((m, n))
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            E[i - 1, j - 1] = math.comb(i - 1, j - 1) * math.comb(m - i, n - j) / total
    return E


def mean_cost_from_cost(C, bandwidth=None):
    """mean_cost(C) = <Ebar, C>, the average cost over the (in-band) alignments, by the forward tangent
    pass with counting weights and Z = C (SPEC 3.9). Its gradient is mean_alignment(m, n, bandwidth).
    +inf when the band admits no alignment (see the module note); NaN for non-finite C."""
    C = _matrix(C)
    _check_band(bandwidth)
    m, n = C.shape
    if not _finite(C):
        return math.nan
    if not _feasible(m, n, bandwidth):
        return math.inf
    P = _counting_weights(m, n, bandwidth)
    return float(_tangent(P, C, m, n, bandwidth)[m, n])


def _mean_cost_grad_C(C, bandwidth):
    m, n = C.shape
    if not _finite(C):
        return np.full((m, n), np.nan)
    return mean_alignment(m, n, bandwidth)


# ------------------------------------------------------------------------------------------------
# value functions of two series, their gradients, and the divergences (SPEC 3.3, 3.9)


def _value(kind, C, gamma, bandwidth):
    if kind == "sdtw":
        return soft_dtw_from_cost(C, gamma, bandwidth)
    if kind == "sharp":
        return sharp_soft_dtw_from_cost(C, gamma, bandwidth)
    return mean_cost_from_cost(C, bandwidth)


def _grad_C(kind, C, gamma, bandwidth):
    if kind == "sdtw":
        return soft_dtw_alignment(C, gamma, bandwidth)
    if kind == "sharp":
        return sharp_soft_dtw_from_cost_grad(C, gamma, bandwidth)
    return _mean_cost_grad_C(C, bandwidth)


def _check_common(gamma, cost, bandwidth):
    _check_gamma(gamma)
    _check_cost(cost)
    _check_band(bandwidth)


def _pair_value(kind, x, y, gamma, cost, bandwidth):
    _check_common(gamma, cost, bandwidth)
    return _value(kind, cost_matrix(x, y, cost), gamma, bandwidth)


def _pair_grad(kind, x, y, gamma, cost, bandwidth):
    _check_common(gamma, cost, bandwidth)
    G = _grad_C(kind, cost_matrix(x, y, cost), gamma, bandwidth)
    return cost_matrix_vjp(x, y, G, cost)


def _divergence(kind, x, y, gamma, cost, bandwidth):
    _check_common(gamma, cost, bandwidth)
    xy = _value(kind, cost_matrix(x, y, cost), gamma, bandwidth)
    xx = _value(kind, cost_matrix(x, x, cost), gamma, bandwidth)
    yy = _value(kind, cost_matrix(y, y, cost), gamma, bandwidth)
    return float(xy - 0.5 * xx - 0.5 * yy)


def _divergence_grad(kind, x, y, gamma, cost, bandwidth):
    """(dD/dx, dD/dy): dD/dx = vjp_x(x, y, G_xy) - vjp_x(x, x, G_xx), dD/dy = vjp_y(x, y, G_xy) - vjp_x(y, y, G_yy)
    (SPEC 3.9; the rule for y is the same rule by the symmetry of D)."""
    _check_common(gamma, cost, bandwidth)
    G_xy = _grad_C(kind, cost_matrix(x, y, cost), gamma, bandwidth)
    G_xx = _grad_C(kind, cost_matrix(x, x, cost), gamma, bandwidth)
    G_yy = _grad_C(kind, cost_matrix(y, y, cost), gamma, bandwidth)
    gx_xy, gy_xy = cost_matrix_vjp(x, y, G_xy, cost)
    gx_xx, _ = cost_matrix_vjp(x, x, G_xx, cost)
    gy_yy, _ = cost_matrix_vjp(y, y, G_yy, cost)
    return gx_xy - gx_xx, gy_xy - gy_yy


def soft_dtw(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """sdtw_gamma(C(x, y)) for series x (m, d), y (n, d) (SPEC 3.1-3.4)."""
    return _pair_value("sdtw", x, y, gamma, cost, bandwidth)


def soft_dtw_grad(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """(d sdtw / dx, d sdtw / dy) = cost_matrix_vjp(x, y, E) (SPEC 3.3)."""
    return _pair_grad("sdtw", x, y, gamma, cost, bandwidth)


def sharp_soft_dtw(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """sharp_gamma(C(x, y)) = <E, C> (SPEC 3.9)."""
    return _pair_value("sharp", x, y, gamma, cost, bandwidth)


def sharp_soft_dtw_grad(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """(dx, dy) of sharp_gamma(C(x, y)) = cost_matrix_vjp(x, y, E + H C)."""
    return _pair_grad("sharp", x, y, gamma, cost, bandwidth)


def mean_cost(x, y, cost="sqeuclidean", bandwidth=None):
    """mean_cost(C(x, y)) = <Ebar, C> (SPEC 3.9); no gamma."""
    return _pair_value("mean", x, y, 0.0, cost, bandwidth)


def mean_cost_grad(x, y, cost="sqeuclidean", bandwidth=None):
    """(dx, dy) of mean_cost(C(x, y)) = cost_matrix_vjp(x, y, Ebar)."""
    return _pair_grad("mean", x, y, 0.0, cost, bandwidth)


def soft_dtw_divergence(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """sdtw(C(x,y)) - 1/2 sdtw(C(x,x)) - 1/2 sdtw(C(y,y)) (SPEC 3.9)."""
    return _divergence("sdtw", x, y, gamma, cost, bandwidth)


def soft_dtw_divergence_grad(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """(dx, dy) of soft_dtw_divergence by the rule of SPEC 3.9."""
    return _divergence_grad("sdtw", x, y, gamma, cost, bandwidth)


def sharp_soft_dtw_divergence(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """sharp(C(x,y)) - 1/2 sharp(C(x,x)) - 1/2 sharp(C(y,y)) (SPEC 3.9, "sharp divergence")."""
    return _divergence("sharp", x, y, gamma, cost, bandwidth)


def sharp_soft_dtw_divergence_grad(x, y, gamma, cost="sqeuclidean", bandwidth=None):
    """(dx, dy) of sharp_soft_dtw_divergence by the rule of SPEC 3.9 with G = E + H C."""
    return _divergence_grad("sharp", x, y, gamma, cost, bandwidth)


def mean_cost_divergence(x, y, cost="sqeuclidean", bandwidth=None):
    """mean_cost(C(x,y)) - 1/2 mean_cost(C(x,x)) - 1/2 mean_cost(C(y,y)) (SPEC 3.9 with f = mean_cost)."""
    return _divergence("mean", x, y, 0.0, cost, bandwidth)


def mean_cost_divergence_grad(x, y, cost="sqeuclidean", bandwidth=None):
    """(dx, dy) of mean_cost_divergence by the rule of SPEC 3.9 with G = Ebar."""
    return _divergence_grad("mean", x, y, 0.0, cost, bandwidth)


# ------------------------------------------------------------------------------------------------


def numerical_gradient(f, x, h=1e-6):
    """Central finite-difference gradient of a scalar f at x (any shape): (f(x + h e) - f(x - h e)) / 2h."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in itertools.product(*[range(s) for s in x.shape]):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g
