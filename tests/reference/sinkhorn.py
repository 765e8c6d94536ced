"""Float64 numpy references for SPEC.md section 4: entropic optimal transport solved by log-domain
Sinkhorn (4.1), its gradients (4.2 envelope, 4.3 implicit and unrolled), the OT-based soft ranks,
sort, quantiles and top-k (4.5) and the Sinkhorn operator / Gumbel-Sinkhorn (4.6).

Written only from SPEC.md: slow and obvious on purpose, one problem (one batch row) at a time.
Conventions (SPEC 0 and 4.4):
- a row whose inputs (cost, weights, x, scores, warm start, upstream gradient) contain NaN or +/-inf
  gives NaN for every output of the problem, never an error;
- n = 0 or m = 0 gives empty outputs of the right shape;
- errors (ValueError) only for shapes and hyper-parameters (eps, tau, iteration counts, k, ...), and,
  as SPEC 4.4 asks, for negative weights or sum(a) != sum(b) (see the note in `sinkhorn`);
- a zero weight a_i = 0 gives a zero row of P and f_i = 0 (likewise b_j = 0: zero column, g_j = 0).

OT_eps(a, b, C) = min_{P >= 0, P 1 = a, P^T 1 = b} <P, C> + eps KL(P || a b^T),
KL(P || a b^T) = sum_{ij: P_ij > 0} P_ij log(P_ij / (a_i b_j)); at the optimum
P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) and OT_eps = <f, a> + <g, b>.
"""

import math
import warnings
from typing import NamedTuple

import numpy as np

__all__ = [
    "SinkhornResult",
    "sinkhorn",
    "sinkhorn_iterations",
    "plan_from_potentials",
    "entropic_ot_value",
    "sinkhorn_value_vjp",
    "sinkhorn_implicit_vjp",
    "sinkhorn_unrolled_vjp",
    "squash",
    "squash_vjp",
    "sinkhorn_soft_rank",
    "sinkhorn_soft_sort",
    "sinkhorn_soft_quantile",
    "sinkhorn_soft_topk_mask",
    "sinkhorn_soft_rank_vjp",
    "sinkhorn_soft_sort_vjp",
    "sinkhorn_soft_quantile_vjp",
    "sinkhorn_soft_topk_mask_vjp",
    "sinkhorn_operator",
    "sinkhorn_operator_vjp",
    "gumbel_noise",
    "gumbel_sinkhorn",
    "numerical_gradient",
]

DEFAULT_TOL = 1e-6  # SPEC 4.1, float64
DEFAULT_MAX_ITER = 1000
DEFAULT_CHECK_EVERY = 10
SQUASH_STD_OFFSET = 1e-10  # SPEC 4.5: sigmoid((x - mean) / (std + 1e-10))
GUMBEL_OFFSET = 1e-20  # SPEC 4.6: -log(-log(U + 1e-20) + 1e-20)


class SinkhornResult(NamedTuple):
    """Output of `sinkhorn` for one problem.

    plan (n, m): P; f (n,), g (m,): dual potentials; value: OT_eps = <P, C> + eps KL(P || a b^T)
    (primal, computed from P); cost: <P, C>; dual: <f, a> + <g, b>; n_iter: iterations executed;
    converged: err <= tol at a check; err: sum_i |sum_j P_ij - a_i| at the last check.
    """

    plan: np.ndarray
    f: np.ndarray
    g: np.ndarray
    value: float
    cost: float
    dual: float
    n_iter: int
    converged: bool
    err: float


# ------------------------------------------------------------------------------------------------
# small helpers


def _vec(x, name="x"):
    v = np.array(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {v.shape}")
    return v


def _mat(x, name="C"):
    M = np.array(x, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {M.shape}")
    return M


def _finite(*arrays):
    """True iff every entry of every array is finite (SPEC 0: otherwise the problem is all NaN)."""
    return all(bool(np.all(np.isfinite(np.asarray(x, dtype=np.float64)))) for x in arrays)


def _check_positive(value, name):
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_count(value, name, minimum):
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _lse(v, axis):
    """log sum exp along `axis`, stably (SPEC 0): M + log sum exp(v - M); -inf when every entry is -inf."""
    mx = np.max(v, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(v - shift), axis=axis))
    return out + np.squeeze(shift, axis=axis)


def _log(w):
    """log of non-negative weights, log 0 = -inf."""
    with np.errstate(divide="ignore"):
        return np.log(w)


def _weights(w, size, name):
    """Default uniform weights 1/size; otherwise a 1-D float64 copy of the right length."""
    if w is None:
        return np.full(size, 1.0 / size) if size else np.zeros(0)
    w = _vec(w, name)
    if len(w) != size:
        raise ValueError(f"{name} must have length {size}, got {len(w)}")
    return w


def _check_weights(a, b):
    """SPEC 4.1/4.4: a, b >= 0 (zeros allowed) and sum a = sum b (relative tolerance 1e-9)."""
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("weights a and b must be non-negative")
    sa, sb = float(np.sum(a)), float(np.sum(b))
    if abs(sa - sb) > 1e-9 * max(1.0, abs(sa), abs(sb)):
        raise ValueError(f"sum(a) = {sa!r} != sum(b) = {sb!r} (unbalanced OT is not specified)")


# ------------------------------------------------------------------------------------------------
# log-domain Sinkhorn (SPEC 4.1, 4.4)


def _f_update(C, logb, g, eps, zero_a):
    """f_i = -eps LSE_j(log b_j + (g_j - C_ij)/eps); f_i = 0 where a_i = 0 (SPEC 4.4)."""
    f = -eps * _lse(logb[None, :] + (g[None, :] - C) / eps, axis=1)
    f[zero_a] = 0.0
    return f


def _g_update(C, loga, f, eps, zero_b):
    """g_j = -eps LSE_i(log a_i + (f_i - C_ij)/eps); g_j = 0 where b_j = 0."""
    g = -eps * _lse(loga[:, None] + (f[:, None] - C) / eps, axis=0)
    g[zero_b] = 0.0
    return g


def plan_from_potentials(C, a, b, f, g, eps):
    """P_ij = exp(log a_i + log b_j + (f_i + g_j - C_ij)/eps) (0 where a_i = 0 or b_j = 0)."""
    C, a, b, f, g = _mat(C), _vec(a, "a"), _vec(b, "b"), _vec(f, "f"), _vec(g, "g")
    return np.exp(_log(a)[:, None] + _log(b)[None, :] + (f[:, None] + g[None, :] - C) / eps)


def _marginal_error(P, a):
    """err = sum_i |sum_j P_ij - a_i| (the column marginals are exact after the g-update)."""
    return float(np.sum(np.abs(P.sum(axis=1) - a)))


def entropic_ot_value(P, C, a, b, eps):
    """(OT value, cost) = (<P, C> + eps KL(P || a b^T), <P, C>), KL = sum_{P_ij > 0} P_ij log(P_ij/(a_i b_j))."""
    P, C, a, b = _mat(P, "P"), _mat(C), _vec(a, "a"), _vec(b, "b")
    cost = float(np.sum(P * C))
    kl = 0.0
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            if P[i, j] > 0:
                kl += P[i, j] * math.log(P[i, j] / (a[i] * b[j]))
    return cost + eps * kl, cost


def _prepare(C, a, b, eps, g_init):
    C = _mat(C)
    n, m = C.shape
    a = _weights(a, n, "a")
    b = _weights(b, m, "b")
    _check_positive(eps, "eps")
    g0 = np.zeros(m) if g_init is None else _vec(g_init, "g_init")
    if len(g0) != m:
        raise ValueError(f"g_init must have length {m}, got {len(g0)}")
    return C, a, b, g0


def _nan_result(n, m):
    nan = math.nan
    return SinkhornResult(np.full((n, m), nan), np.full(n, nan), np.full(m, nan), nan, nan, nan, 0, False, nan)


def _result(C, a, b, eps, f, g, n_iter, converged, err):
    P = plan_from_potentials(C, a, b, f, g, eps)
    value, cost = entropic_ot_value(P, C, a, b, eps)
    dual = float(np.dot(f, a) + np.dot(g, b))
    return SinkhornResult(P, f, g, value, cost, dual, n_iter, converged, err)


def sinkhorn(C, a=None, b=None, eps=1.0, max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL,
             check_every=DEFAULT_CHECK_EVERY, g_init=None):
    """Entropic OT by log-domain Sinkhorn (SPEC 4.1).

    C (n, m); a (n,) and b (m,) non-negative with equal sums (default uniform 1/n, 1/m); eps > 0.
    Iterations t = 1..max_iter: the f-update then the g-update; at every t that is a multiple of
    check_every, and at t = max_iter, err = sum_i |sum_j P_ij - a_i| is computed and the loop stops
    when err <= tol (converged). n = 1 or m = 1: P = a b^T / sum(a) after one iteration (SPEC 4.4).
    g_init: warm start for g (f is overwritten by the first f-update, so no f warm start).
    Raises ValueError on negative weights or sum(a) != sum(b) (SPEC 4.4; only for finite inputs).
    """
    C, a, b, g = _prepare(C, a, b, eps, g_init)
    _check_count(max_iter, "max_iter", 1)
    _check_count(check_every, "check_every", 1)
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    n, m = C.shape
    if n == 0 or m == 0:
        return SinkhornResult(np.zeros((n, m)), np.zeros(n), np.zeros(m), 0.0, 0.0, 0.0, 0, True, 0.0)
    if not _finite(C, a, b, g):
        return _nan_result(n, m)
    _check_weights(a, b)
    loga, logb = _log(a), _log(b)
    zero_a, zero_b = a == 0, b == 0
    last = 1 if (n == 1 or m == 1) else max_iter
    f = np.zeros(n)
    err = math.nan
    converged = False
    t = 0
    for t in range(1, last + 1):
        f = _f_update(C, logb, g, eps, zero_a)
        g = _g_update(C, loga, f, eps, zero_b)
        if t % check_every == 0 or t == last:
            err = _marginal_error(plan_from_potentials(C, a, b, f, g, eps), a)
            if err <= tol:
                converged = True
                break
    return _result(C, a, b, eps, f, g, t, converged, err)


def _iterates(C, a, b, eps, n_iter, g0):
    """Run exactly n_iter iterations; returns the lists [g^0..g^T] and [f^1..f^T].

    Stored potentials are the full LSE values (no zeroing at zero weights): a row with a_i = 0 (a column
    with b_j = 0) never influences the other potentials nor P, so its value only matters for the limits
    of the a- and b-gradients at zero weights.
    """
    loga, logb = _log(a), _log(b)
    none_a, none_b = np.zeros(len(a), bool), np.zeros(len(b), bool)
    gs, fs = [g0.copy()], []
    for _ in range(n_iter):
        fs.append(_f_update(C, logb, gs[-1], eps, none_a))
        gs.append(_g_update(C, loga, fs[-1], eps, none_b))
    return gs, fs


def sinkhorn_iterations(C, a=None, b=None, eps=1.0, n_iter=DEFAULT_MAX_ITER, g_init=None):
    """The truncated algorithm that unrolling differentiates (SPEC 4.3 a): exactly n_iter iterations of
    SPEC 4.1 from g = g_init (default 0), no convergence check and no mass check (any a, b >= 0).

    Returns (P, f, g) with f_i = 0 where a_i = 0 and g_j = 0 where b_j = 0.
    """
    C, a, b, g0 = _prepare(C, a, b, eps, g_init)
    _check_count(n_iter, "n_iter", 0)
    n, m = C.shape
    if n == 0 or m == 0:
        return np.zeros((n, m)), np.zeros(n), np.zeros(m)
    if not _finite(C, a, b, g0):
        return np.full((n, m), math.nan), np.full(n, math.nan), np.full(m, math.nan)
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("weights a and b must be non-negative")
    gs, fs = _iterates(C, a, b, eps, n_iter, g0)
    f = fs[-1].copy() if fs else np.zeros(n)
    g = gs[-1].copy()
    f[a == 0] = 0.0
    g[b == 0] = 0.0
    return plan_from_potentials(C, a, b, f, g, eps), f, g


# ------------------------------------------------------------------------------------------------
# gradients (SPEC 4.2, 4.3)


def sinkhorn_value_vjp(result, eps, grad=1.0):
    """Gradients of OT_eps = <f, a> + <g, b> = <P, C> + eps sum P log(P / (a b^T)) (SPEC 4.2):
    (dC, da, db) = grad * (P, f - eps/2, g - eps/2), f and g as computed (so f_i = 0 where a_i = 0:
    see the SPEC note in the tests). Along directions that keep sum(a) = sum(b) the shift is
    invisible (the potentials are defined up to (f + c, g - c)); along a change of the total mass
    it is what makes the derivative right (test_value_gradient_along_mass_changing_directions)."""
    return grad * result.plan, grad * (result.f - eps / 2), grad * (result.g - eps / 2)


def _solve_h(P, a, b, rhs_a, rhs_b, solver):
    """Solve H [u; v] = [rhs_a; rhs_b], H = [[diag(a), P], [P^T, diag(b)]] (singular, consistent)."""
    n, m = P.shape
    if solver == "lstsq":
        H = np.block([[np.diag(a), P], [P.T, np.diag(b)]])
        sol = np.linalg.lstsq(H, np.concatenate([rhs_a, rhs_b]), rcond=None)[0]
        return sol[:n], sol[n:]
    if solver == "schur":
        # (diag(b) - P^T diag(1/a) P) v = rhs_b - P^T (rhs_a / a), u = (rhs_a - P v)/a; rows with a_i = 0
        # have P_i. = 0 and rhs_a_i = 0 and are dropped (u_i = 0). Null vector 1 (more with b_j = 0):
        # least squares picks the minimum-norm v.
        inv_a = np.where(a > 0, 1.0 / np.where(a > 0, a, 1.0), 0.0)
        S = np.diag(b) - P.T @ (inv_a[:, None] * P)
        v = np.linalg.lstsq(S, rhs_b - P.T @ (rhs_a * inv_a), rcond=None)[0]
        u = (rhs_a - P @ v) * inv_a
        return u, v
    if solver == "cg":
        # conjugate gradient on the PSD H from 0 (iterates stay orthogonal to the null space)
        H = np.block([[np.diag(a), P], [P.T, np.diag(b)]])
        rhs = np.concatenate([rhs_a, rhs_b])
        x = np.zeros(n + m)
        r = rhs.copy()
        p = r.copy()
        rr = float(r @ r)
        stop = (1e-15 * max(1.0, float(np.linalg.norm(rhs)))) ** 2
        for _ in range(20 * (n + m)):
            if rr <= stop:
                break
            Hp = H @ p
            alpha = rr / float(p @ Hp)
            x += alpha * p
            r -= alpha * Hp
            rr_new = float(r @ r)
            p = r + (rr_new / rr) * p
            rr = rr_new
        return x[:n], x[n:]
    raise ValueError(f"solver must be 'lstsq', 'schur' or 'cg', got {solver!r}")


def _conditional_plans(C, a, b, f, g, eps):
    """The rows' and columns' conditional plans, evaluated without dividing by a marginal:
    Ka_ij = softmax_j(log b_j + (g_j - C_ij)/eps) (P_ij / r_i where r_i > 0) and
    Kb_ij = softmax_i(log a_i + (f_i - C_ij)/eps) (P_ij / c_j where c_j > 0)."""
    row = _log(b)[None, :] + (g[None, :] - C) / eps
    col = _log(a)[:, None] + (f[:, None] - C) / eps
    Ka = np.exp(row - _lse(row, axis=1)[:, None])
    Kb = np.exp(col - _lse(col, axis=0)[None, :])
    return Ka, Kb


def sinkhorn_implicit_vjp(C, a, b, eps, G, result, solver="lstsq"):
    """Implicit-differentiation VJP (SPEC 4.3 b) of the plan in `result`: (dL/dC, dL/da, dL/db) for
    G = dL/dP (n, m), given `result` = sinkhorn(C, a, b, eps, ...) on the same problem.

    The plan P = result.plan is the exact entropic plan of its own marginals r = P 1 and c = P^T 1
    (which differ from a and b by the forward's tolerance), so the system uses them (SPEC 4.3 b):
    Q = G o P, H [u; v] = [Q 1; Q^T 1] with H = [[diag(r), P], [P^T, diag(c)]],
    dL/dC = (P (u_i + v_j) - Q)/eps, dL/da = (Q 1 - P v)/r, dL/db = (Q^T 1 - P^T u)/c.
    (dL/da, dL/db) is defined up to (+c, -c). Where r_i = 0 (a zero weight) the formula is 0/0; its
    limit sum_j K_ij (G_ij - v_j), K_ij = P_ij/r_i = softmax_j(log b_j + (g_j - C_ij)/eps) the row's
    conditional plan, is returned (a one-sided derivative; likewise for c_j = 0).
    Warns (RuntimeWarning) when the forward did not converge (SPEC: "fall back to unrolling or warn").
    solver: "lstsq" (dense least squares on H), "schur" (SPEC's m x m Schur complement) or "cg".
    """
    C = _mat(C)
    n, m = C.shape
    a = _weights(a, n, "a")
    b = _weights(b, m, "b")
    _check_positive(eps, "eps")
    G = _mat(G, "G")
    if G.shape != (n, m):
        raise ValueError(f"G must have shape {(n, m)}, got {G.shape}")
    if n == 0 or m == 0:
        return np.zeros((n, m)), np.zeros(n), np.zeros(m)
    if not _finite(C, a, b, G, result.plan, result.f, result.g):
        return np.full((n, m), math.nan), np.full(n, math.nan), np.full(m, math.nan)
    if not result.converged:
        warnings.warn("implicit differentiation of a Sinkhorn run that did not converge", RuntimeWarning,
                      stacklevel=2)
    P = result.plan
    r, c = P.sum(axis=1), P.sum(axis=0)
    Q = G * P
    q_a, q_b = Q.sum(axis=1), Q.sum(axis=0)
    u, v = _solve_h(P, r, c, q_a, q_b, solver)
    dC = (P * (u[:, None] + v[None, :]) - Q) / eps
    Ka, Kb = _conditional_plans(C, a, b, result.f, result.g, eps)
    da = np.empty(n)
    for i in range(n):
        if r[i] > 0:
            da[i] = (q_a[i] - P[i] @ v) / r[i]
        else:
            da[i] = Ka[i] @ (G[i] - v)
    db = np.empty(m)
    for j in range(m):
        if c[j] > 0:
            db[j] = (q_b[j] - P[:, j] @ u) / c[j]
        else:
            db[j] = Kb[:, j] @ (G[:, j] - u)
    return dC, da, db


def sinkhorn_unrolled_vjp(C, a, b, eps, n_iter, G, g_init=None):
    """Unrolled VJP (SPEC 4.3 a): exact (dL/dC, dL/da, dL/db) of `sinkhorn_iterations(C, a, b, eps,
    n_iter, g_init)`'s plan for G = dL/dP. Stores the T pairs (f, g), recomputes the kernels, and walks
    the iterations backwards (g-update, then f-update). The initial potentials are constants.

    Read-out P_ij = exp(log a_i + log b_j + (f_i + g_j - C_ij)/eps): fbar += Q 1/eps, gbar += Q^T 1/eps,
    Cbar -= Q/eps, (log a)bar += Q 1, (log b)bar += Q^T 1 (Q = G o P).
    g-update (K'_ij = softmax_i(log a_i + (f_i - C_ij)/eps)): fbar -= K' gbar, Cbar += K' o gbar,
    (log a)bar -= eps K' gbar. f-update (K_ij = softmax_j(log b_j + (g_j - C_ij)/eps)): gbar = -K^T fbar,
    Cbar += K o fbar, (log b)bar -= eps K^T fbar. dL/da = (log a)bar / a, evaluated as the limit at a_i = 0.
    """
    C, a, b, g0 = _prepare(C, a, b, eps, g_init)
    _check_count(n_iter, "n_iter", 0)
    n, m = C.shape
    G = _mat(G, "G")
    if G.shape != (n, m):
        raise ValueError(f"G must have shape {(n, m)}, got {G.shape}")
    if n == 0 or m == 0:
        return np.zeros((n, m)), np.zeros(n), np.zeros(m)
    if not _finite(C, a, b, g0, G):
        return np.full((n, m), math.nan), np.full(n, math.nan), np.full(m, math.nan)
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("weights a and b must be non-negative")
    loga, logb = _log(a), _log(b)
    gs, fs = _iterates(C, a, b, eps, n_iter, g0)
    f_T = fs[-1] if fs else np.zeros(n)
    E = np.exp((f_T[:, None] + gs[-1][None, :] - C) / eps)  # P_ij / (a_i b_j)
    Q = G * a[:, None] * b[None, :] * E
    fbar = Q.sum(axis=1) / eps
    gbar = Q.sum(axis=0) / eps
    Cbar = -Q / eps
    da = np.sum(G * b[None, :] * E, axis=1)  # (Q 1)_i / a_i
    db = np.sum(G * a[:, None] * E, axis=0)  # (Q^T 1)_j / b_j
    if not fs:  # n_iter = 0: P = a b^T exp((0 + g0 - C)/eps), f = 0 is a constant
        return Cbar, da, db
    for t in range(n_iter, 0, -1):
        f_t, g_prev = fs[t - 1], gs[t - 1]
        # backward of g^t = -eps LSE_i(log a_i + (f^t_i - C_ij)/eps)
        L = (f_t[:, None] - C) / eps
        lse_col = _lse(loga[:, None] + L, axis=0)
        Kp_over_a = np.exp(L - lse_col[None, :])  # K'_ij / a_i
        Kp = a[:, None] * Kp_over_a
        fbar = fbar - Kp @ gbar
        Cbar += Kp * gbar[None, :]
        da -= eps * (Kp_over_a @ gbar)
        # backward of f^t = -eps LSE_j(log b_j + (g^{t-1}_j - C_ij)/eps)
        M = (g_prev[None, :] - C) / eps
        lse_row = _lse(logb[None, :] + M, axis=1)
        K_over_b = np.exp(M - lse_row[:, None])  # K_ij / b_j
        K = b[None, :] * K_over_b
        gbar = -(K.T @ fbar)
        Cbar += K * fbar[:, None]
        db -= eps * (K_over_b.T @ fbar)
        fbar = np.zeros(n)
    return Cbar, da, db


# ------------------------------------------------------------------------------------------------
# Sinkhorn soft ranks, sort, quantiles, top-k (SPEC 4.5)


def squash(x, kind="sigmoid"):
    """"sigmoid": sigmoid((x - mean(x)) / (std(x) + 1e-10)) with the population std (ddof = 0, the
    convention that reproduces SPEC 7.4); "none": x."""
    x = _vec(x)
    if kind == "none":
        return x.copy()
    if kind != "sigmoid":
        raise ValueError(f"squash must be 'sigmoid' or 'none', got {kind!r}")
    if len(x) == 0:
        return x.copy()
    mu = float(np.mean(x))
    sd = math.sqrt(float(np.mean((x - mu) ** 2)))
    z = (x - mu) / (sd + SQUASH_STD_OFFSET)
    return 1.0 / (1.0 + np.exp(-z))


def squash_vjp(x, grad, kind="sigmoid"):
    """VJP of `squash` (sigmoid, mean and std all depend on x). At std = 0 the std term is taken as 0
    (it multiplies x_i - mean = 0)."""
    x = _vec(x)
    grad = _vec(grad, "grad")
    if kind == "none":
        return grad.copy()
    if kind != "sigmoid":
        raise ValueError(f"squash must be 'sigmoid' or 'none', got {kind!r}")
    n = len(x)
    if n == 0:
        return np.zeros(0)
    mu = float(np.mean(x))
    sd = math.sqrt(float(np.mean((x - mu) ** 2)))
    den = sd + SQUASH_STD_OFFSET
    s = squash(x, "sigmoid")
    gz = grad * s * (1.0 - s)  # dL/dz
    # z_i = (x_i - mu)/den: dz_i = (dx_i - mean(dx))/den - (x_i - mu) dsd/den^2, dsd = sum_k (x_k - mu) dx_k/(n sd)
    dx = (gz - np.mean(gz)) / den
    if sd > 0:
        dx -= float(np.dot(gz, x - mu)) / den**2 * (x - mu) / (n * sd)
    return dx


def _sort_problem(x, a, b, y, eps, squash_kind, max_iter, tol, check_every):
    """x -> x~ = squash(x) -> C_ij = (x~_i - y_j)^2 -> Sinkhorn. Returns (x, a, b, y, C, result)."""
    x = _vec(x)
    n = len(x)
    a = _weights(a, n, "a")
    if y is None:
        m = n if b is None else len(_vec(b, "b"))
        y = np.linspace(0.0, 1.0, m)  # y_j = (j-1)/(m-1); m = 1 gives y = [0]
    y = _vec(y, "y")
    b = _weights(b, len(y), "b")
    _check_positive(eps, "eps")
    xt = squash(x, squash_kind)
    C = (xt[:, None] - y[None, :]) ** 2
    res = sinkhorn(C, a, b, eps, max_iter=max_iter, tol=tol, check_every=check_every)
    return x, a, b, y, C, res


def _sort_problem_vjp(x, a, b, y, C, res, eps, squash_kind, dP, mode):
    """dL/dx from G = dL/dP through Sinkhorn (implicit or unrolled), the cost and the squash."""
    if mode == "implicit":
        dC = sinkhorn_implicit_vjp(C, a, b, eps, dP, res)[0]
    elif mode == "unrolled":
        dC = sinkhorn_unrolled_vjp(C, a, b, eps, res.n_iter, dP)[0]
    else:
        raise ValueError(f"mode must be 'implicit' or 'unrolled', got {mode!r}")
    xt = squash(x, squash_kind)
    dxt = np.sum(dC * 2.0 * (xt[:, None] - y[None, :]), axis=1)
    return squash_vjp(x, dxt, squash_kind)


def sinkhorn_soft_rank(x, eps=1e-2, a=None, b=None, y=None, squash="sigmoid", max_iter=DEFAULT_MAX_ITER,
                       tol=DEFAULT_TOL, check_every=DEFAULT_CHECK_EVERY):
    """Soft ascending 1-based ranks R_i = n (P bbar)_i / a_i, bbar_j = sum_{k<=j} b_k (SPEC 4.5).
    Defaults: a = 1/n, m = n targets y_j = (j-1)/(m-1) (m = 1: y = [0]) with b = 1/m. A zero a_i gives
    a non-finite R_i (division by a_i)."""
    x, a, b, y, C, res = _sort_problem(x, a, b, y, eps, squash, max_iter, tol, check_every)
    n = len(x)
    if n == 0:
        return np.zeros(0)
    return n * (res.plan @ np.cumsum(b)) / a


def sinkhorn_soft_rank_vjp(x, grad, eps=1e-2, a=None, b=None, y=None, squash="sigmoid", mode="implicit",
                           max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL, check_every=DEFAULT_CHECK_EVERY):
    """dL/dx of `sinkhorn_soft_rank` given grad = dL/dR: dL/dP_ij = n grad_i bbar_j / a_i, then SPEC 4.3
    (mode "implicit" or "unrolled" over the executed iterations), the cost and the squash."""
    x, a, b, y, C, res = _sort_problem(x, a, b, y, eps, squash, max_iter, tol, check_every)
    grad = _vec(grad, "grad")
    n = len(x)
    if n == 0:
        return np.zeros(0)
    dP = n * (grad / a)[:, None] * np.cumsum(b)[None, :]
    return _sort_problem_vjp(x, a, b, y, C, res, eps, squash, dP, mode)


def sinkhorn_soft_sort(x, eps=1e-2, a=None, b=None, y=None, squash="sigmoid", descending=False,
                       max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL, check_every=DEFAULT_CHECK_EVERY):
    """Soft sort S_j = (P^T x)_j / b_j with the ORIGINAL x (SPEC 4.5), length m; descending = reversed S.
    A zero b_j gives S_j = 0/0 = NaN."""
    x, a, b, y, C, res = _sort_problem(x, a, b, y, eps, squash, max_iter, tol, check_every)
    S = (res.plan.T @ x) / b if len(x) else np.zeros(0)
    return S[::-1].copy() if descending else S


def sinkhorn_soft_sort_vjp(x, grad, eps=1e-2, a=None, b=None, y=None, squash="sigmoid", descending=False,
                           mode="implicit", max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL,
                           check_every=DEFAULT_CHECK_EVERY):
    """dL/dx of `sinkhorn_soft_sort` given grad = dL/dS: direct term dx_i += sum_j P_ij grad_j / b_j plus
    dL/dP_ij = x_i grad_j / b_j through SPEC 4.3, the cost and the squash."""
    x, a, b, y, C, res = _sort_problem(x, a, b, y, eps, squash, max_iter, tol, check_every)
    grad = _vec(grad, "grad")
    if len(x) == 0:
        return np.zeros(0)
    if descending:
        grad = grad[::-1]
    w = grad / b
    direct = res.plan @ w
    dP = x[:, None] * w[None, :]
    return direct + _sort_problem_vjp(x, a, b, y, C, res, eps, squash, dP, mode)


def _quantile_weights(tau, width):
    _check_positive(width, "width")
    if not (width / 2 <= tau <= 1 - width / 2):
        raise ValueError(f"need width/2 <= tau <= 1 - width/2, got tau = {tau!r}, width = {width!r}")
    return np.array([0.0, 0.5, 1.0]), np.array([tau - width / 2, width, 1 - tau - width / 2])


def sinkhorn_soft_quantile(x, tau, width, eps=1e-2, squash="sigmoid", max_iter=DEFAULT_MAX_ITER,
                           tol=DEFAULT_TOL, check_every=DEFAULT_CHECK_EVERY):
    """Soft quantile (SPEC 4.5): m = 3, y = (0, 1/2, 1), b = (tau - t/2, t, 1 - tau - t/2), a = 1/n;
    returns (P^T x)_2 / t (t = width). NaN for n = 0 or a non-finite x."""
    yq, bq = _quantile_weights(tau, width)
    x, a, b, y, C, res = _sort_problem(x, None, bq, yq, eps, squash, max_iter, tol, check_every)
    if len(x) == 0:
        return math.nan
    return float(res.plan[:, 1] @ x / width)


def sinkhorn_soft_quantile_vjp(x, grad, tau, width, eps=1e-2, squash="sigmoid", mode="implicit",
                               max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL, check_every=DEFAULT_CHECK_EVERY):
    """dL/dx of `sinkhorn_soft_quantile` given the scalar grad = dL/dq."""
    yq, bq = _quantile_weights(tau, width)
    x, a, b, y, C, res = _sort_problem(x, None, bq, yq, eps, squash, max_iter, tol, check_every)
    if len(x) == 0:
        return np.zeros(0)
    direct = res.plan[:, 1] * grad / width
    dP = np.zeros(C.shape)
    dP[:, 1] = x * grad / width
    return direct + _sort_problem_vjp(x, a, b, y, C, res, eps, squash, dP, mode)


def _topk_weights(k, n):
    _check_count(k, "k", 0)
    if k > n:
        raise ValueError(f"k must be <= n = {n}, got {k}")
    return np.array([0.0, 1.0]), np.array([1.0 - k / n, k / n])


def sinkhorn_soft_topk_mask(x, k, eps=1e-2, squash="sigmoid", max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL,
                            check_every=DEFAULT_CHECK_EVERY):
    """Soft top-k mask (SPEC 4.5, Xie et al. 2020): m = 2, y = (0, 1), b = (1 - k/n, k/n), a = 1/n;
    mask_i = n P_{i,2} (in [0, 1], sums to k). k = 0 / k = n use a zero target weight."""
    x = _vec(x)
    n = len(x)
    if n == 0:
        _check_count(k, "k", 0)
        return np.zeros(0)
    yk, bk = _topk_weights(k, n)
    x, a, b, y, C, res = _sort_problem(x, None, bk, yk, eps, squash, max_iter, tol, check_every)
    return n * res.plan[:, 1]


def sinkhorn_soft_topk_mask_vjp(x, grad, k, eps=1e-2, squash="sigmoid", mode="implicit",
                                max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL, check_every=DEFAULT_CHECK_EVERY):
    """dL/dx of `sinkhorn_soft_topk_mask` given grad = dL/dmask: dL/dP_{i,2} = n grad_i."""
    x = _vec(x)
    grad = _vec(grad, "grad")
    n = len(x)
    if n == 0:
        return np.zeros(0)
    yk, bk = _topk_weights(k, n)
    x, a, b, y, C, res = _sort_problem(x, None, bk, yk, eps, squash, max_iter, tol, check_every)
    dP = np.zeros(C.shape)
    dP[:, 1] = n * grad
    return _sort_problem_vjp(x, a, b, y, C, res, eps, squash, dP, mode)


# ------------------------------------------------------------------------------------------------
# Sinkhorn operator and Gumbel-Sinkhorn (SPEC 4.6)


def _square(X):
    X = _mat(X, "X")
    if X.shape[0] != X.shape[1]:
        raise ValueError(f"X must be square, got shape {X.shape}")
    return X


def _operator_iterates(X, tau, n_iter):
    """[S^0, after row 1, after col 1, ..., after col L] (log matrices)."""
    S = X / tau
    out = [S]
    for _ in range(n_iter):
        S = S - _lse(S, axis=1)[:, None]  # each row
        out.append(S)
        S = S - _lse(S, axis=0)[None, :]  # each column
        out.append(S)
    return out


def sinkhorn_operator(X, tau=1.0, n_iter=20):
    """S_L(X/tau) (SPEC 4.6): S^0 = X/tau; L times: row log-normalization, then column log-normalization;
    returns exp(S) (columns sum to 1 exactly). n = 1 gives [[1]]; n_iter = 0 gives exp(X/tau)."""
    X = _square(X)
    _check_positive(tau, "tau")
    _check_count(n_iter, "n_iter", 0)
    if X.shape[0] == 0:
        return np.zeros((0, 0))
    if not _finite(X):
        return np.full(X.shape, math.nan)
    return np.exp(_operator_iterates(X, tau, n_iter)[-1])


def sinkhorn_operator_vjp(X, G, tau=1.0, n_iter=20):
    """Unrolled VJP of `sinkhorn_operator` (SPEC 4.6): dS = G o exp(S_L); each y = x - LSE_row(x) step
    gives dx = dy - softmax_row(x) * rowsum(dy) (columns likewise); finally dX = dS^0 / tau."""
    X = _square(X)
    _check_positive(tau, "tau")
    _check_count(n_iter, "n_iter", 0)
    G = _mat(G, "G")
    if G.shape != X.shape:
        raise ValueError(f"G must have shape {X.shape}, got {G.shape}")
    if X.shape[0] == 0:
        return np.zeros((0, 0))
    if not _finite(X, G):
        return np.full(X.shape, math.nan)
    Ss = _operator_iterates(X, tau, n_iter)
    dS = G * np.exp(Ss[-1])
    for k in range(len(Ss) - 1, 0, -1):
        x = Ss[k - 1]
        if k % 2 == 1:  # Ss[k] = row normalization of x
            sm = np.exp(x - _lse(x, axis=1)[:, None])
            dS = dS - sm * dS.sum(axis=1, keepdims=True)
        else:  # column normalization
            sm = np.exp(x - _lse(x, axis=0)[None, :])
            dS = dS - sm * dS.sum(axis=0, keepdims=True)
    return dS / tau


def gumbel_noise(U):
    """Standard Gumbel noise from uniforms U in [0, 1): G = -log(-log(U + 1e-20) + 1e-20) (SPEC 4.6)."""
    U = np.asarray(U, dtype=np.float64)
    return -np.log(-np.log(U + GUMBEL_OFFSET) + GUMBEL_OFFSET)


def gumbel_sinkhorn(X, tau=1.0, n_iter=20, noise=None, noise_factor=1.0):
    """Soft Gumbel-Sinkhorn sample S_L((X + s G)/tau) for given noise G (n, n) (SPEC 4.6); noise=None
    is the noiseless Sinkhorn operator. s = noise_factor."""
    X = _square(X)
    if noise is None:
        return sinkhorn_operator(X, tau, n_iter)
    noise = _mat(noise, "noise")
    if noise.shape != X.shape:
        raise ValueError(f"noise must have shape {X.shape}, got {noise.shape}")
    return sinkhorn_operator(X + noise_factor * noise, tau, n_iter)


# ------------------------------------------------------------------------------------------------


def numerical_gradient(f, x, h=1e-6):
    """Central finite-difference gradient of a scalar f at x (any shape): (f(x + h e) - f(x - h e)) / 2h."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += h
        xm[idx] -= h
        grad[idx] = (float(f(xp)) - float(f(xm))) / (2 * h)
    return grad
