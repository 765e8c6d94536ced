"""Float64 numpy references for SPEC.md sections 1 (permutahedron projections, soft sort/rank)
and 2 (losses built on them).

Written only from SPEC.md, as plain Python loops: slow and obvious on purpose. Every function takes
1-D inputs (one batch row), returns float64, gives an empty result for n = 0 and, following SPEC
section 0, all-NaN outputs (or a NaN scalar) when an input row contains NaN or +/-inf.
"""

import math

import numpy as np

__all__ = [
    "isotonic_nonincreasing_l2",
    "isotonic_regression",
    "isotonic_nonincreasing_kl",
    "projection_l2",
    "projection_kl",
    "soft_rank",
    "soft_sort",
    "soft_rank_vjp",
    "soft_sort_vjp",
    "isotonic_regression_vjp",
    "soft_topk_mask",
    "soft_topk_mask_vjp",
    "soft_quantile",
    "hard_rank_average",
    "spearman_correlation",
    "spearman_loss_sq",
    "soft_lts",
    "numerical_jacobian",
]


# ------------------------------------------------------------------------------------------------
# small helpers


def _vec(x):
    """Copy x into a 1-D float64 array."""
    a = np.array(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D input, got shape {a.shape}")
    return a


def _finite(*arrays):
    """True iff every entry of every array is finite (SPEC 0: otherwise the row is all NaN)."""
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def _nan_like(x):
    return np.full(len(x), np.nan)


def _check_eps(eps):
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")


def _check_reg(regularization):
    if regularization not in ("l2", "kl"):
        raise ValueError(f"regularization must be 'l2' or 'kl', got {regularization!r}")


def _lse(v):
    """log sum exp(v), stably (SPEC 0); -inf for an empty or all -inf vector."""
    if len(v) == 0:
        return -math.inf
    m = max(v)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in v))


def _softmax(v):
    lse = _lse(v)
    return np.array([math.exp(x - lse) for x in v])


def _argsort_desc(x):
    """Stable descending argsort: stable argsort of the negated key (SPEC 0)."""
    return np.argsort(-np.asarray(x), kind="stable")


def _rho(n):
    """rho = (n, n-1, ..., 1)."""
    return np.arange(n, 0, -1, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# isotonic regression by Pool Adjacent Violators (SPEC 1.3)


def _pav_l2(y, w):
    """Weighted PAV for v_1 >= ... >= v_n. Returns (v, blocks) with blocks a list of [start, end)."""
    stack = []  # each block: [start, end, sum of w*y, sum of w]
    for i in range(len(y)):
        stack.append([i, i + 1, w[i] * y[i], w[i]])
        # violation (ties merge too): value(second from top) <= value(top)
        while len(stack) >= 2 and stack[-2][2] / stack[-2][3] <= stack[-1][2] / stack[-1][3]:
            top = stack.pop()
            below = stack.pop()
            stack.append([below[0], top[1], below[2] + top[2], below[3] + top[3]])
    v = np.empty(len(y))
    for start, end, swy, sw in stack:
        v[start:end] = swy / sw
    return v, [(b[0], b[1]) for b in stack]


def _pav_kl(s, w):
    """PAV for the KL isotonic problem of SPEC 1.2: block value LSE(s_B) - LSE(w_B).

    Returns (v, blocks) with blocks a list of [start, end).
    """
    stack = []  # each block: [start, end, LSE of s over block, LSE of w over block]
    for i in range(len(s)):
        stack.append([i, i + 1, s[i], w[i]])  # value s_i - w_i
        while len(stack) >= 2 and stack[-2][2] - stack[-2][3] <= stack[-1][2] - stack[-1][3]:
            top = stack.pop()
            below = stack.pop()
            stack.append([below[0], top[1],
                          np.logaddexp(below[2], top[2]), np.logaddexp(below[3], top[3])])
    v = np.empty(len(s))
    for start, end, lse_s, lse_w in stack:
        v[start:end] = lse_s - lse_w
    return v, [(b[0], b[1]) for b in stack]


def isotonic_nonincreasing_l2(y, w=None):
    """argmin_{v_1 >= ... >= v_n} 1/2 sum_i w_i (v_i - y_i)^2 by weighted PAV.

    w: positive weights (None = ones); non-positive weights raise ValueError.
    """
    y = _vec(y)
    w = np.ones_like(y) if w is None else _vec(w)
    if len(w) != len(y):
        raise ValueError(f"y and w must have the same length, got {len(y)} and {len(w)}")
    if not _finite(y, w):
        return _nan_like(y)
    if np.any(w <= 0):
        raise ValueError("weights must be positive")
    return _pav_l2(y, w)[0]


def isotonic_regression(y, sample_weight=None, increasing=True):
    """Weighted least-squares isotonic regression as scikit-learn's `isotonic_regression` defines it:
    argmin sum_i c_i (v_i - y_i)^2 with v non-decreasing (increasing=True) or non-increasing."""
    y = _vec(y)
    if increasing:
        return -isotonic_nonincreasing_l2(-y, sample_weight)
    return isotonic_nonincreasing_l2(y, sample_weight)


def isotonic_regression_vjp(y, sample_weight, increasing, g):
    """VJP of `isotonic_regression`: returns (dy, dweight).

    On a block B: v_B = sum_B c y / W_B (W_B = sum_B c), so with G_B = sum_{i in B} g_i
    dy_j = c_j / W_B * G_B and dc_j = (y_j - v_B) / W_B * G_B.
    (dweight is returned for unit weights too when sample_weight is None.)
    """
    y = _vec(y)
    g = _vec(g)
    c = np.ones_like(y) if sample_weight is None else _vec(sample_weight)
    if not (len(g) == len(c) == len(y)):
        raise ValueError("y, sample_weight and g must have the same length")
    if not _finite(y, c):
        return _nan_like(y), _nan_like(y)
    if np.any(c <= 0):
        raise ValueError("weights must be positive")
    sign = -1.0 if increasing else 1.0  # increasing = -(non-increasing fit of -y): same blocks
    _, blocks = _pav_l2(sign * y, c)
    dy = np.zeros(len(y))
    dc = np.zeros(len(y))
    for start, end in blocks:
        W = sum(c[j] for j in range(start, end))
        vB = sum(c[j] * y[j] for j in range(start, end)) / W
        G = sum(g[j] for j in range(start, end))
        for j in range(start, end):
            dy[j] = c[j] / W * G
            dc[j] = (y[j] - vB) / W * G
    return dy, dc


def isotonic_nonincreasing_kl(s, w):
    """argmin_{v_1 >= ... >= v_n} sum_i exp(s_i - v_i) + sum_i exp(w_i) v_i (SPEC 1.2), by PAV with
    block value LSE(s_B) - LSE(w_B) computed by logaddexp (never exponentiates raw s or w)."""
    s = _vec(s)
    w = _vec(w)
    if len(w) != len(s):
        raise ValueError(f"s and w must have the same length, got {len(s)} and {len(w)}")
    if not _finite(s, w):
        return _nan_like(s)
    return _pav_kl(s, w)[0]


# ------------------------------------------------------------------------------------------------
# projections onto the permutahedron (SPEC 1.1 / 1.2)


def _projection(z, w, regularization):
    """out = P_Psi(z, w) via SPEC 1.2. Returns (out, sigma, blocks, s, w_sorted)."""
    w = np.asarray(w)[_argsort_desc(w)]  # w sorted descending
    sigma = _argsort_desc(z)
    s = z[sigma]
    if regularization == "l2":
        v, blocks = _pav_l2(s - w, np.ones(len(s)))
    else:
        v, blocks = _pav_kl(s, w)
    out = np.empty(len(z))
    out[sigma] = s - v  # out[sigma[i]] = s_i - v_i
    return out, sigma, blocks, s, w


def projection_l2(z, w):
    """P_Q(z, w) = argmin_{mu in P(w)} 1/2 ||mu - z||^2 (w in any order; sorted descending inside)."""
    z = _vec(z)
    w = _vec(w)
    if len(w) != len(z):
        raise ValueError(f"z and w must have the same length, got {len(z)} and {len(w)}")
    if not _finite(z, w):
        return _nan_like(z)
    return _projection(z, w, "l2")[0]


def projection_kl(z, w):
    """P_E(z, w) = log argmin_{mu in P(e^w)} KL(mu, e^z) (w in any order; sorted descending inside)."""
    z = _vec(z)
    w = _vec(w)
    if len(w) != len(z):
        raise ValueError(f"z and w must have the same length, got {len(z)} and {len(w)}")
    if not _finite(z, w):
        return _nan_like(z)
    return _projection(z, w, "kl")[0]


# ------------------------------------------------------------------------------------------------
# soft rank and soft sort (SPEC 1.1, 1.4, 1.6)


def _soft_rank_forward(theta, eps, regularization, descending):
    """Returns (r, sigma, blocks, s) for a finite theta with n >= 1."""
    n = len(theta)
    z = (-theta if descending else theta) / eps
    if regularization == "l2":
        r, sigma, blocks, s, _ = _projection(z, _rho(n), "l2")
    else:
        p, sigma, blocks, s, _ = _projection(z, np.log(_rho(n)), "kl")
        r = np.exp(p)
    return r, sigma, blocks, s


def soft_rank(theta, eps=1.0, regularization="l2", descending=False):
    """Soft rank: L2 r = P_Q(z, rho), KL r = exp(P_E(z, log rho)), z = +/- theta/eps (SPEC 1.1).
    Ascending: rank 1 = smallest. n = 1 gives [1]."""
    _check_eps(eps)
    _check_reg(regularization)
    theta = _vec(theta)
    if not _finite(theta):
        return _nan_like(theta)
    if len(theta) == 0:
        return np.zeros(0)
    if len(theta) == 1:
        return np.ones(1)
    return _soft_rank_forward(theta, eps, regularization, descending)[0]


def soft_rank_vjp(theta, g, eps, regularization, descending):
    """dL/dtheta of `soft_rank` given g = dL/dr, by the block formulas of SPEC 1.4."""
    _check_eps(eps)
    _check_reg(regularization)
    theta = _vec(theta)
    g = _vec(g)
    if len(g) != len(theta):
        raise ValueError("theta and g must have the same length")
    if not _finite(theta):
        return _nan_like(theta)
    n = len(theta)
    if n <= 1:
        return np.zeros(n)  # n = 1: d rank / d theta = 0
    r, sigma, blocks, s = _soft_rank_forward(theta, eps, regularization, descending)
    c = (-1.0 if descending else 1.0) / eps
    u = g if regularization == "l2" else g * r
    us = u[sigma]
    res = np.empty(n)
    for start, end in blocks:
        total = sum(us[j] for j in range(start, end))
        if regularization == "l2":
            for i in range(start, end):
                res[i] = us[i] - total / (end - start)
        else:
            sm = _softmax(s[start:end])
            for i in range(start, end):
                res[i] = us[i] - sm[i - start] * total
    dtheta = np.empty(n)
    for i in range(n):
        dtheta[sigma[i]] = c * res[i]
    return dtheta


def _soft_sort_forward(theta, eps, regularization, descending):
    """Returns (out, pi, blocks, w) for a finite theta with n >= 1; w = (sign*theta)[pi]."""
    n = len(theta)
    sign = 1.0 if descending else -1.0
    pi = _argsort_desc(sign * theta)  # stable argsort of -sign*theta
    w = (sign * theta)[pi]
    z = _rho(n) / eps  # already strictly decreasing: sigma = identity
    p, sigma, blocks, _, _ = _projection(z, w, regularization)
    assert np.array_equal(sigma, np.arange(n))
    return sign * p, pi, blocks, w


def soft_sort(theta, eps=1.0, regularization="l2", descending=False):
    """Soft sort: sign * P_Psi(rho/eps, sort_desc(sign*theta)), sign = +1 descending, -1 ascending
    (SPEC 1.1). n = 1 gives theta."""
    _check_eps(eps)
    _check_reg(regularization)
    theta = _vec(theta)
    if not _finite(theta):
        return _nan_like(theta)
    if len(theta) <= 1:
        return theta.copy()
    return _soft_sort_forward(theta, eps, regularization, descending)[0]


def soft_sort_vjp(theta, g, eps, regularization, descending):
    """dL/dtheta of `soft_sort` given g = dL/dout (SPEC 1.4): L2 dtheta[pi[j]] = blockmean_B(j)(g),
    KL dtheta[pi[j]] = softmax_B(j)(w)_j * sum_{i in B(j)} g_i (softmax over the sorted values w)."""
    _check_eps(eps)
    _check_reg(regularization)
    theta = _vec(theta)
    g = _vec(g)
    if len(g) != len(theta):
        raise ValueError("theta and g must have the same length")
    if not _finite(theta):
        return _nan_like(theta)
    n = len(theta)
    if n <= 1:
        return g.copy()  # n = 1: d sort / d theta = 1
    _, pi, blocks, w = _soft_sort_forward(theta, eps, regularization, descending)
    dtheta = np.empty(n)
    for start, end in blocks:
        total = sum(g[i] for i in range(start, end))
        if regularization == "l2":
            for j in range(start, end):
                dtheta[pi[j]] = total / (end - start)
        else:
            sm = _softmax(w[start:end])
            for j in range(start, end):
                dtheta[pi[j]] = sm[j - start] * total
    return dtheta


# ------------------------------------------------------------------------------------------------
# soft top-k mask (SPEC 1.1, 2.2)


def _check_k(k, n):
    if not (isinstance(k, (int, np.integer)) and 0 <= k <= n):
        raise ValueError(f"k must be an integer in [0, n={n}], got {k!r}")


def soft_topk_mask(theta, k, eps):
    """Soft top-k mask P_Q(theta/eps, w_k), w_k = (1,..,1,0,..,0) with k ones (L2 only).
    k = 0 gives zeros, k = n gives ones."""
    _check_eps(eps)
    theta = _vec(theta)
    n = len(theta)
    _check_k(k, n)
    if not _finite(theta):
        return _nan_like(theta)
    if k == 0:
        return np.zeros(n)
    if k == n:
        return np.ones(n)
    wk = np.array([1.0] * k + [0.0] * (n - k))
    return _projection(theta / eps, wk, "l2")[0]


def soft_topk_mask_vjp(theta, g, k, eps):
    """VJP of `soft_topk_mask`: the L2 soft-rank VJP with c = 1/eps and w_k in place of rho (SPEC 1.4).
    Zero for k = 0 and k = n."""
    _check_eps(eps)
    theta = _vec(theta)
    g = _vec(g)
    n = len(theta)
    _check_k(k, n)
    if len(g) != n:
        raise ValueError("theta and g must have the same length")
    if not _finite(theta):
        return _nan_like(theta)
    if k == 0 or k == n:
        return np.zeros(n)
    wk = np.array([1.0] * k + [0.0] * (n - k))
    _, sigma, blocks, _, _ = _projection(theta / eps, wk, "l2")
    gs = g[sigma]
    dtheta = np.empty(n)
    for start, end in blocks:
        mean = sum(gs[j] for j in range(start, end)) / (end - start)
        for i in range(start, end):
            dtheta[sigma[i]] = (gs[i] - mean) / eps
    return dtheta


# ------------------------------------------------------------------------------------------------
# losses (SPEC 2)


def soft_quantile(x, q, eps, regularization="l2"):
    """Soft q-quantile (SPEC 2.3): linear interpolation, at pos = q (n - 1), of soft_sort_asc(x).
    Returns a float; NaN for n = 0 (no quantile of an empty set) or a non-finite x."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    s = soft_sort(x, eps, regularization, descending=False)
    n = len(s)
    if n == 0:
        return math.nan
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float((1.0 - frac) * s[lo] + frac * s[hi])


def hard_rank_average(y):
    """1-based hard ranks of y with ties given the average of their ranks (rank 1 = smallest)."""
    y = _vec(y)
    if not _finite(y):
        return _nan_like(y)
    n = len(y)
    t = np.empty(n)
    for i in range(n):
        below = sum(1 for j in range(n) if y[j] < y[i])
        equal = sum(1 for j in range(n) if y[j] == y[i])  # includes i itself
        t[i] = below + (equal + 1) / 2.0
    return t


def spearman_correlation(pred, target, eps, regularization="l2"):
    """Soft Spearman correlation <r~, t~> / (||r~|| ||t~||) (SPEC 2.1): r = soft_rank_asc(pred),
    t = hard average ranks of target, ~ = centered. NaN when n <= 1 or a norm is zero."""
    pred = _vec(pred)
    target = _vec(target)
    if len(pred) != len(target):
        raise ValueError("pred and target must have the same length")
    if len(pred) <= 1 or not _finite(pred, target):
        return math.nan
    r = soft_rank(pred, eps, regularization, descending=False)
    t = hard_rank_average(target)
    rc = r - np.mean(r)
    tc = t - np.mean(t)
    nr = math.sqrt(float(np.dot(rc, rc)))
    nt = math.sqrt(float(np.dot(tc, tc)))
    if nr == 0.0 or nt == 0.0:
        return math.nan
    return float(np.dot(rc, tc) / (nr * nt))


def spearman_loss_sq(pred, target, eps):
    """Squared soft Spearman loss 1/2 ||soft_rank_asc(pred; eps, L2) - t||^2 (SPEC 2.1).
    0 for n = 0; NaN for a non-finite row."""
    pred = _vec(pred)
    target = _vec(target)
    if len(pred) != len(target):
        raise ValueError("pred and target must have the same length")
    if not _finite(pred, target):
        return math.nan
    r = soft_rank(pred, eps, "l2", descending=False)
    t = hard_rank_average(target)
    return float(0.5 * sum((r[i] - t[i]) ** 2 for i in range(len(r))))


def soft_lts(losses, k, eps):
    """Soft least trimmed squares (SPEC 2.4): mean of entries k+1..n of soft_sort_desc(losses; eps, L2),
    i.e. the k largest losses are trimmed. Requires 0 <= k < n; NaN for n = 0 or a non-finite row."""
    losses = _vec(losses)
    n = len(losses)
    if n == 0:
        return math.nan
    if not (isinstance(k, (int, np.integer)) and 0 <= k < n):
        raise ValueError(f"k must be an integer in [0, n={n}), got {k!r}")
    s = soft_sort(losses, eps, "l2", descending=True)
    return float(sum(s[i] for i in range(k, n)) / (n - k))


# ------------------------------------------------------------------------------------------------


def numerical_jacobian(f, x, h=1e-6):
    """Central finite-difference Jacobian J[i, j] = d f(x)_i / d x_j, shape (len(f(x)), len(x))."""
    x = _vec(x)
    m = len(np.atleast_1d(f(x)))
    J = np.zeros((m, len(x)))
    for j in range(len(x)):
        xp = x.copy()
        xm = x.copy()
        xp[j] += h
        xm[j] -= h
        J[:, j] = (np.atleast_1d(f(xp)) - np.atleast_1d(f(xm))) / (2 * h)
    return J
