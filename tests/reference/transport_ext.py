"""Float64 numpy references for diffcomb.sinkhorn's extended options: unbalanced entropic transport
(KL-relaxed marginals), point-cloud costs, epsilon scaling. Written from the math (SPEC.md 4.1 and the
unbalanced objective below), one problem at a time, slow and obvious on purpose.

Unbalanced transport (Chizat, Peyre, Schmitzer, Vialard 2018; POT's sinkhorn_unbalanced):
    min_P  <P, C> + eps KL~(P || a b^T) + rho_a KL~(P 1 || a) + rho_b KL~(P^T 1 || b),
    KL~(p || q) = sum p log(p / q) - p + q   (rho = inf: the marginal is a constraint).
With P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) the log-domain iterations are the balanced ones
scaled by lambda = rho / (rho + eps) (ott-jax's tau):
    f_i = -lambda_a eps log sum_j b_j exp((g_j - C_ij) / eps),   g_j alike.
"""

import math

import numpy as np

__all__ = ["cloud_cost", "exact_ot_uniform", "generalized_kl", "unbalanced_sinkhorn"]


def _lse(v, axis):
    mx = np.max(v, axis=axis, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    return np.squeeze(mx, axis=axis) + np.log(np.sum(np.exp(v - mx), axis=axis))


def generalized_kl(p, q):
    """sum p log(p / q) - p + q (0 log 0 = 0)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * np.log(p / q), 0.0)
    return float(np.sum(t - p + q))


def unbalanced_sinkhorn(C, a, b, eps, rho_a=math.inf, rho_b=math.inf, n_iter=20000, tol=1e-13, g0=None):
    """(P, f, g, cost) of the problem above (balanced for rho = inf), by the log-domain iterations
    from g = g0 (0 by default) until the potentials move less than tol."""
    C, a, b = (np.asarray(t, float) for t in (C, a, b))
    lam_a = 1.0 if math.isinf(rho_a) else rho_a / (rho_a + eps)
    lam_b = 1.0 if math.isinf(rho_b) else rho_b / (rho_b + eps)
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    f = np.zeros(len(a))
    g = np.zeros(len(b)) if g0 is None else np.asarray(g0, float).copy()
    for _ in range(n_iter):
        f_new = -lam_a * eps * _lse(lb[None, :] + (g[None, :] - C) / eps, axis=1)
        g_new = -lam_b * eps * _lse(la[:, None] + (f_new[:, None] - C) / eps, axis=0)
        moved = max(np.max(np.abs(f_new - f)), np.max(np.abs(g_new - g)))
        f, g = f_new, g_new
        if moved < tol:
            break
    P = np.exp(la[:, None] + lb[None, :] + (f[:, None] + g[None, :] - C) / eps)
    cost = float(np.sum(P * C)) + eps * generalized_kl(P, a[:, None] * b[None, :])
    if not math.isinf(rho_a):
        cost += rho_a * generalized_kl(P.sum(1), a)
    if not math.isinf(rho_b):
        cost += rho_b * generalized_kl(P.sum(0), b)
    return P, f, g, cost


def cloud_cost(x, y, metric="sqeuclidean"):
    """C_ij = |x_i - y_j|^2 or |x_i - y_j| by explicit loops."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    C = np.array([[np.sum((xi - yj) ** 2) for yj in y] for xi in x])
    return C if metric == "sqeuclidean" else np.sqrt(C)


def exact_ot_uniform(C):
    """The exact (unregularized) OT cost between uniform weights of equal size n: the assignment
    problem, divided by n (scipy's Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(C)
    return float(C[rows, cols].sum() / C.shape[0])
