"""Float64 numpy references for the ranking-metric losses (diffcomb.ranking) and the Fenchel-Young
losses (diffcomb.fenchel_young).

Slow and obvious on purpose, one row (one query) at a time, written from the definitions in the
modules' docstrings (the metrics' textbook formulas; the Fenchel-Young loss's definition
Omega*(theta) + Omega(y) - <theta, y>), never from the implementation:

- the hard metrics count pairs and positions directly (AUC from its pair count, not from ranks);
  tied scores take their average rank, and at a top-k cutoff a tie group shares the remaining slots
  evenly (the limit of the soft ranks and of the soft top-k mask as the strength goes to 0);
- the soft metrics put the soft ranks / soft top-k mask of the permutahedron reference
  (tests/reference/isotonic.py) into the same formulas; the soft AP ranks the positives
  among themselves by calling the soft rank on the positives alone;
- the Fenchel-Young losses compute Omega*(theta) = <theta, y_hat> - Omega(y_hat) from the
  reference prediction (permutahedron soft rank, or the Sinkhorn plan of tests/reference/sinkhorn.py).

Every function takes 1-D rows (matrices for the Birkhoff polytope) and returns a float (NaN where
the metric is undefined: no relevant item, no positive, no negative, n = 0, non-finite scores).
"""

import math

import numpy as np

from . import isotonic as perm
from . import sinkhorn as skh

__all__ = [
    "hard_ranks_desc",
    "hard_ranks_asc",
    "hard_topk_share",
    "gains",
    "idcg",
    "hard_ndcg",
    "soft_ndcg",
    "hard_average_precision",
    "soft_average_precision",
    "hard_recall_at_k",
    "soft_recall_at_k",
    "hard_auc",
    "soft_auc",
    "fy_permutahedron",
    "fy_permutahedron_conjugate",
    "fy_birkhoff",
    "birkhoff_prediction",
]


def _vec(x):
    a = np.array(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D row, got shape {a.shape}")
    return a


def _finite(x):
    return bool(np.all(np.isfinite(x)))


# ------------------------------------------------------------------------------------------------
# Hard ranks and the hard top-k indicator with ties.


def hard_ranks_asc(s):
    """1-based ranks, rank 1 for the smallest score, ties given their average rank."""
    s = _vec(s)
    n = len(s)
    return np.array([sum(s[j] < s[i] for j in range(n)) + (sum(s[j] == s[i] for j in range(n)) + 1) / 2
                     for i in range(n)], dtype=np.float64)


def hard_ranks_desc(s):
    """1-based ranks, rank 1 for the largest score, ties given their average rank."""
    return hard_ranks_asc(-_vec(s))


def hard_topk_share(s, k):
    """The hard top-k indicator; a group of tied scores that straddles the cutoff shares the slots
    left for it evenly."""
    s = _vec(s)
    n = len(s)
    out = np.zeros(n)
    for i in range(n):
        above = sum(s[j] > s[i] for j in range(n))  # positions 0..above-1 are taken by larger scores
        tied = sum(s[j] == s[i] for j in range(n))
        slots = max(0, min(above + tied, k) - above)
        out[i] = slots / tied
    return out


# ------------------------------------------------------------------------------------------------
# NDCG@k


def gains(relevance, gain="exponential"):
    y = _vec(relevance)
    return 2.0 ** y - 1.0 if gain == "exponential" else y


def idcg(relevance, k=None, gain="exponential"):
    """Ideal DCG@k: the largest gains at positions 1..min(k, n), discount 1 / log2(1 + position)."""
    g = sorted(gains(relevance, gain), reverse=True)
    cut = len(g) if k is None else min(k, len(g))
    return sum(g[j] / math.log2(j + 2) for j in range(cut))


def _ndcg(ranks, mask, relevance, k, gain):
    g = gains(relevance, gain)
    dcg = sum(g[i] * mask[i] / math.log2(1 + ranks[i]) for i in range(len(g)))
    ideal = idcg(relevance, k, gain)
    return math.nan if ideal == 0 else dcg / ideal


def hard_ndcg(scores, relevance, k=None, gain="exponential"):
    """NDCG@k with tied scores at their average rank (and sharing the slots at the cutoff)."""
    s = _vec(scores)
    n = len(s)
    if n == 0 or not _finite(s):
        return math.nan
    mask = np.ones(n) if k is None or k >= n else hard_topk_share(s, k)
    return _ndcg(hard_ranks_desc(s), mask, relevance, k, gain)


def soft_ndcg(scores, relevance, eps, k=None, regularization="l2", gain="exponential"):
    s = _vec(scores)
    n = len(s)
    if n == 0 or not _finite(s):
        return math.nan
    ranks = perm.soft_rank(s, eps, regularization, descending=True)
    mask = np.ones(n) if k is None or k >= n else perm.soft_topk_mask(s, k, eps)
    return _ndcg(ranks, mask, relevance, k, gain)


# ------------------------------------------------------------------------------------------------
# Average precision, recall@k


def _positives(labels):
    return _vec(labels) > 0


def _average_precision(ranks_all, ranks_pos, pos):
    if not pos.any():
        return math.nan
    return float(np.mean([rp / ra for rp, ra in zip(ranks_pos, ranks_all[pos])]))


def hard_average_precision(scores, labels):
    """Mean over the positives of (rank among the positives) / (rank among all), descending ranks,
    ties averaged: for untied scores, the mean of the precision at each positive's position."""
    s, pos = _vec(scores), _positives(labels)
    if len(s) == 0 or not _finite(s):
        return math.nan
    return _average_precision(hard_ranks_desc(s), hard_ranks_desc(s[pos]), pos)


def soft_average_precision(scores, labels, eps, regularization="l2"):
    s, pos = _vec(scores), _positives(labels)
    if len(s) == 0 or not _finite(s):
        return math.nan
    ranks_all = perm.soft_rank(s, eps, regularization, descending=True)
    ranks_pos = perm.soft_rank(s[pos], eps, regularization, descending=True)
    return _average_precision(ranks_all, ranks_pos, pos)


def _recall(mask, pos):
    return math.nan if not pos.any() else float(mask[pos].sum() / pos.sum())


def hard_recall_at_k(scores, labels, k):
    s, pos = _vec(scores), _positives(labels)
    if len(s) == 0 or not _finite(s):
        return math.nan
    return _recall(hard_topk_share(s, min(k, len(s))), pos)


def soft_recall_at_k(scores, labels, k, eps):
    s, pos = _vec(scores), _positives(labels)
    if len(s) == 0 or not _finite(s):
        return math.nan
    return _recall(perm.soft_topk_mask(s, min(k, len(s)), eps), pos)


# ------------------------------------------------------------------------------------------------
# AUC


def hard_auc(scores, labels):
    """Fraction of (positive, negative) pairs with the positive scored higher, ties counting 1/2."""
    s, pos = _vec(scores), _positives(labels)
    if len(s) == 0 or not _finite(s):
        return math.nan
    P, N = s[pos], s[~pos]
    if len(P) == 0 or len(N) == 0:
        return math.nan
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in P for q in N)
    return wins / (len(P) * len(N))


def soft_auc(scores, labels, eps, regularization="l2"):
    """Mann-Whitney: (sum of the positives' ascending soft ranks - |P|(|P|+1)/2) / (|P| |N|)."""
    s, pos = _vec(scores), _positives(labels)
    if len(s) == 0 or not _finite(s):
        return math.nan
    p, q = int(pos.sum()), int((~pos).sum())
    if p == 0 or q == 0:
        return math.nan
    r = perm.soft_rank(s, eps, regularization, descending=False)
    return float((r[pos].sum() - p * (p + 1) / 2) / (p * q))


# ------------------------------------------------------------------------------------------------
# Fenchel-Young losses


def _omega_permutahedron(mu, regularization):
    """l2: 1/2 ||mu||^2; kl: <mu, log mu - 1> (the indicator of P(rho) is checked by the caller)."""
    if regularization == "l2":
        return 0.5 * float(mu @ mu)
    return float(np.sum(mu * np.log(mu) - mu))


def fy_permutahedron_conjugate(theta, eps, regularization="l2"):
    """Omega_eps*(theta) = <theta, r> - eps Omega(r), r = ascending soft rank of theta (the argmax
    over P(rho) of <theta, mu> - eps Omega(mu))."""
    theta = _vec(theta)
    r = perm.soft_rank(theta, eps, regularization, descending=False)
    return float(theta @ r) - eps * _omega_permutahedron(r, regularization), r


def fy_permutahedron(theta, target, eps, regularization="l2"):
    """(loss, gradient) = (Omega*(theta) + eps Omega(y) - <theta, y>, r - y); the target is assumed
    to lie in P(rho)."""
    theta, y = _vec(theta), _vec(target)
    if len(theta) == 0:
        return 0.0, np.zeros(0)
    if not _finite(theta):
        return math.nan, np.full(len(theta), math.nan)
    conj, r = fy_permutahedron_conjugate(theta, eps, regularization)
    return conj + eps * _omega_permutahedron(y, regularization) - float(theta @ y), r - y


def birkhoff_prediction(theta, eps, tol=1e-14, max_iter=100000):
    """(P, sinkhorn result): the entropic Birkhoff prediction P = argmax <theta, P> - eps <P, log P>
    over doubly stochastic P, as n x the Sinkhorn plan for the cost -theta and uniform marginals."""
    theta = np.array(theta, dtype=np.float64)
    n = theta.shape[0]
    res = skh.sinkhorn(-theta, eps=eps, tol=tol, max_iter=max_iter, check_every=1)
    return n * res.plan, res


def fy_birkhoff(theta, target, eps, tol=1e-14):
    """(loss, gradient, dual loss): the primal definition <theta, P> - eps <P, log P> + eps <Y, log Y>
    - <theta, Y> with the reference plan; and the same loss with Omega*(theta) taken from the dual OT
    value instead: Omega*(theta) = n (eps log n - OT_eps(-theta, 1/n, 1/n))."""
    theta, Y = np.array(theta, dtype=np.float64), np.array(target, dtype=np.float64)
    n = theta.shape[0]
    if n == 0:
        return 0.0, np.zeros((0, 0)), 0.0
    P, res = birkhoff_prediction(theta, eps, tol)

    def neg_entropy(M):
        return float(sum(v * math.log(v) for v in M.ravel() if v > 0))

    tail = eps * neg_entropy(Y) - float(np.sum(theta * Y))
    primal = float(np.sum(theta * P)) - eps * neg_entropy(P) + tail
    dual = n * (eps * math.log(n) - res.dual) + tail
    return primal, P - Y, dual
