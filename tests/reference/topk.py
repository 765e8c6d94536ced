"""Float64 numpy references for the sparse soft top-k (p-norm regularized top-k mask).

Written from the problem's definition, not from the kernels (which run PAV on the sorted input):

    m = argmax_{y in [0,1]^n, sum(y) = k} <y, z> - (1/p) sum_i |y_i|^p,   z = x / eps, 1 < p <= 2.

The permutahedron of w_k = (1,...,1,0,...,0) is the capped simplex {y in [0,1]^n : sum(y) = k}
(its vertices are the 0/1 vectors with k ones). Its KKT conditions give
m_i = clip(psi(z_i - tau), 0, 1) with psi(u) = sign(u)|u|^{1/(p-1)} and the threshold tau that makes
the entries sum to k; ``sparse_topk_mask`` finds tau by bisection on that monotone equation. Two
independent cross-checks: ``sparse_topk_mask_pav`` (the isotonic formulation: PAV on the sorted z
with each block's value found by bisection) and ``sparse_topk_mask_slsqp`` (a generic constrained
solver, scipy's SLSQP, for small n). The VJP follows from the implicit function theorem on the
active set A = {i : 0 < m_i < 1}: with a_i = psi'(z_i - tau),
dm_i/dz_j = a_i [i = j] - a_i a_j / sum_A a (i, j in A), zero elsewhere.

Every function takes 1-D inputs (one row), returns float64, gives an empty result for n = 0 and,
following SPEC section 0, NaN outputs when the row contains NaN or +/-inf.
"""

import numpy as np

__all__ = [
    "psi",
    "sparse_topk_mask",
    "sparse_topk_mask_vjp",
    "sparse_topk_mask_pav",
    "sparse_topk_mask_slsqp",
    "hard_topk_mask",
]


def psi(u, p):
    """sign(u) |u|^{1/(p-1)}: the derivative of the conjugate of |y|^p / p."""
    r = 1.0 / (p - 1.0)
    return np.sign(u) * np.abs(u) ** r


def _dpsi(u, p):
    r = 1.0 / (p - 1.0)
    return r * np.abs(u) ** (r - 1.0)


def _prepare(x, k, eps, p):
    x = np.array(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D input, got shape {x.shape}")
    if not (eps > 0 and 1 < p <= 2 and 0 <= k <= len(x)):
        raise ValueError("need eps > 0, 1 < p <= 2, 0 <= k <= n")
    return x


def _threshold(z, k, p):
    """tau with sum_i clip(psi(z_i - tau), 0, 1) = k, by bisection (the sum decreases in tau)."""
    lo, hi = float(np.min(z)) - 1.0, float(np.max(z))  # sums n >= k and 0 <= k
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if np.clip(psi(z - mid, p), 0.0, 1.0).sum() > k:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def sparse_topk_mask(x, k, eps, p):
    """The mask m (see the module docstring), by bisection on the threshold."""
    x = _prepare(x, k, eps, p)
    n = len(x)
    if not np.all(np.isfinite(x)):
        return np.full(n, np.nan)
    if k == 0:
        return np.zeros(n)
    if k == n:
        return np.ones(n)
    z = x / eps
    return np.clip(psi(z - _threshold(z, k, p), p), 0.0, 1.0)


def sparse_topk_mask_vjp(x, g, k, eps, p):
    """g^T dm/dx on the active set (zero where m is 0 or 1); assumes no entry sits exactly on the
    edge of the active set (a non-differentiable point)."""
    x = _prepare(x, k, eps, p)
    g = np.array(g, dtype=np.float64)
    n = len(x)
    if not np.all(np.isfinite(x)):
        return np.full(n, np.nan)
    if k == 0 or k == n:
        return np.zeros(n)
    z = x / eps
    tau = _threshold(z, k, p)
    m = np.clip(psi(z - tau, p), 0.0, 1.0)
    active = (m > 0) & (m < 1)
    out = np.zeros(n)
    if active.any():
        a = _dpsi(z[active] - tau, p)
        out[active] = a * (g[active] - (a @ g[active]) / a.sum()) / eps
    return out


def sparse_topk_mask_pav(x, k, eps, p):
    """The isotonic formulation: v = argmin_{v non-increasing} sum_i (1/q)|s_i - v_i|^q + w_i v_i
    on s = sort_desc(z), by PAV where each pooled block's value solves
    sum_{i in B} psi(s_i - v) = sum_{i in B} w_i by bisection; m[sigma] = psi(s - v)."""
    x = _prepare(x, k, eps, p)
    n = len(x)
    if not np.all(np.isfinite(x)):
        return np.full(n, np.nan)
    order = np.argsort(-x, kind="stable")
    s = x[order] / eps
    w = (np.arange(n) < k).astype(np.float64)

    def block_value(lo_i, hi_i):
        seg, mass = s[lo_i:hi_i], w[lo_i:hi_i].sum()
        lo, hi = float(seg.min()) - 2.0, float(seg.max()) + 2.0
        for _ in range(400):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if psi(seg - mid, p).sum() > mass:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    blocks = []  # [start, end, value]
    for i in range(n):
        start, value = i, s[i] - w[i]
        while blocks and blocks[-1][2] <= value:
            start = blocks.pop()[0]
            value = block_value(start, i + 1)
        blocks.append([start, i + 1, value])
    v = np.empty(n)
    for start, end, value in blocks:
        v[start:end] = value
    m = np.empty(n)
    m[order] = psi(s - v, p)
    return m


def sparse_topk_mask_slsqp(x, k, eps, p):
    """The defining problem handed to a generic constrained solver (scipy SLSQP); small n only,
    accurate to about 1e-7."""
    from scipy.optimize import minimize

    x = _prepare(x, k, eps, p)
    n = len(x)
    objective = lambda y: -(y @ x) + eps / p * np.sum(np.abs(y) ** p)
    gradient = lambda y: -x + eps * np.sign(y) * np.abs(y) ** (p - 1.0)
    res = minimize(objective, np.full(n, k / n), jac=gradient, bounds=[(0.0, 1.0)] * n,
                   constraints=[{"type": "eq", "fun": lambda y: y.sum() - k, "jac": lambda y: np.ones(n)}],
                   method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000})
    return res.x


def hard_topk_mask(x, k):
    """1 on the k largest entries (stable: the earlier of equal entries first), 0 elsewhere."""
    x = np.array(x, dtype=np.float64)
    m = np.zeros(len(x))
    m[np.argsort(-x, kind="stable")[:k]] = 1.0
    return m
