"""Ranking-metric losses on soft ranks: NDCG@k, average precision, recall@k and AUC.

Each metric is its hard formula with the hard ranks replaced by the permutahedron soft ranks of
the scores (:func:`diffcomb.soft_rank`, SPEC.md section 1) and the hard top-k indicator by the
soft top-k mask (:func:`diffcomb.soft_topk`). Both are O(n log n) per row (a sort, then PAV in
O(n)) with an O(n) backward and O(n) memory, where the usual pairwise surrogates (a sigmoid per
pair of items) need O(n^2) time and memory per row. As the regularization strength goes to 0
each soft metric equals its hard metric (l2: exactly, once the strength is below the smallest
gap between distinct scores), with tied scores sharing their average rank.

The losses are ``1 - metric``, reduced over the batch like ``torch.nn.functional``'s losses.
Every function is a composition of diffcomb's custom ops and torch ops: gradcheck,
``torch.compile(fullgraph=True)`` and the autograd of the relevance/labels follow from theirs.

References:
    M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
    ICML 2020. arXiv:2002.08871
    K. Jarvelin, J. Kekalainen. Cumulated gain-based evaluation of IR techniques. ACM TOIS 20(4), 2002.
    H. B. Mann, D. R. Whitney. On a test of whether one of two random variables is stochastically
    larger than the other. Ann. Math. Statist. 18(1), 1947.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ._checks import (as_float, check_choice, check_dim, check_int, check_reduction, check_tensor, compute_dtype,
                      reduce)
from ._checks import check_target
from ._isotonic_checks import check_regularization, check_strength
from .isotonic import soft_rank, soft_topk

__all__ = [
    "auc_loss",
    "average_precision_loss",
    "ndcg_loss",
    "recall_at_k_loss",
    "soft_auc",
    "soft_average_precision",
    "soft_ndcg",
    "soft_recall_at_k",
]

GAINS = ("exponential", "linear")


# ---------------------------------------------------------------------------
# Validation, at the public boundary.


def _prepare(fn: str, scores: Tensor, target: object, target_name: str, dim: int,
             strength: float) -> tuple[Tensor, Tensor, int, float]:
    """Checked (scores, target, dim, eps); half precision is computed in float32, integer and bool
    scores and targets in the default float dtype."""
    scores = check_tensor(fn, "scores", as_float(scores))
    dim = check_dim(fn, scores, dim)
    eps = check_strength(fn, strength)
    target = check_target(fn, target_name, target, scores, "scores")
    dtype = compute_dtype(scores.dtype)
    return scores.to(dtype), target.to(dtype), dim, eps


def _empty_rows(scores: Tensor, dim: int) -> Tensor:
    """NaN per row for rows of no items (the metrics are undefined), connected to scores' graph."""
    return scores.sum(dim) * math.nan


def _positives(labels: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """(mask of positive items, their count per row as the scores' dtype)."""
    pos = labels > 0
    return pos, pos.sum(dim).to(labels.dtype)


# ---------------------------------------------------------------------------
# NDCG@k


def soft_ndcg(
    scores: Tensor,
    relevance: Tensor,
    k: Optional[int] = None,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
    gain: str = "exponential",
) -> Tensor:
    r"""Soft NDCG@k of ``scores`` against graded ``relevance`` along ``dim``.

    With :math:`r` = the descending soft ranks of the scores (rank 1 for the highest score),
    gains :math:`G_i = 2^{y_i} - 1` (``gain="exponential"``) or :math:`y_i` (``"linear"``), and
    :math:`m` = the soft top-k mask of the scores (all ones when ``k`` is None or ``k >= n``):

    .. math::
        \mathrm{NDCG}_\varepsilon@k = \frac{1}{\mathrm{IDCG}@k} \sum_i \frac{G_i\, m_i}{\log_2(1 + r_i)},
        \qquad \mathrm{IDCG}@k = \sum_{j=1}^{\min(k, n)} \frac{G_{(j)}}{\log_2(1 + j)}

    where :math:`G_{(1)} \ge G_{(2)} \ge \dots` are the sorted gains (the ideal ordering).

    Args:
        scores (Tensor[..., n, ...]): predicted scores (differentiable).
        relevance (Tensor[..., n, ...]): graded relevance labels :math:`y \ge 0`, same shape (integer
            tensors are taken as floats). Differentiable as well (the gains and IDCG are).
        k (int, optional): the cutoff; None (default) for the full NDCG.
        dim (int): the dimension holding the n items of one query. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0` of the soft ranks and of the soft
            top-k mask. Default 1.0.
        regularization (str): ``"l2"`` or ``"kl"`` soft ranks. Default ``"l2"``. (The top-k mask is
            always the l2 projection, :func:`diffcomb.soft_topk`.)
        gain (str): ``"exponential"`` (default) or ``"linear"``.

    Returns:
        Tensor[...]: NDCG per query (the shape of ``scores`` without ``dim``), in [0, 1] for
        non-negative relevance.

    Note:
        The cutoff @k multiplies each item's discounted gain by the soft top-k mask, the projection
        of the scores onto the permutahedron of :math:`(1, \dots, 1, 0, \dots, 0)`: it equals the
        hard top-k indicator for small :math:`\varepsilon` and otherwise spreads the k slots over
        the items near the cutoff (a smooth cutoff that conserves its total, k). As
        :math:`\varepsilon \to 0` the value is the hard NDCG@k, tied scores sharing their average
        rank (and, at the cutoff, the remaining slots evenly). A query without any positive gain has
        IDCG = 0: its NDCG is undefined and returned as NaN (filter such queries, e.g.
        ``relevance.amax(dim) > 0``), as is a query of n = 0 items. NaN or infinite scores give NaN
        for their query. O(n log n) per query, O(n) memory.

    Example:
        >>> soft_ndcg(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([2.0, 0.0, 1.0]), regularization_strength=0.1)
        tensor(1.)

    References:
        K. Jarvelin, J. Kekalainen. Cumulated gain-based evaluation of IR techniques. ACM TOIS 2002.
        M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking. ICML 2020.
    """
    return _ndcg("soft_ndcg", scores, relevance, k, dim, regularization_strength, regularization, gain)


def _ndcg(fn: str, scores: Tensor, relevance: Tensor, k: Optional[int], dim: int, regularization_strength: float,
          regularization: str, gain: str) -> Tensor:
    s, rel, dim, eps = _prepare(fn, scores, relevance, "relevance", dim, regularization_strength)
    check_regularization(fn, regularization)
    k = check_int(fn, "k", k, 1, optional=True)
    check_choice(fn, "gain", gain, GAINS)
    n = s.shape[dim]
    if n == 0:
        return _empty_rows(scores, dim)
    cut = n if k is None else min(k, n)
    gains = torch.exp2(rel) - 1.0 if gain == "exponential" else rel
    r = soft_rank(s, dim=dim, descending=True, regularization_strength=eps, regularization=regularization)
    discounted = gains / torch.log2(1.0 + r)
    if cut < n:
        discounted = discounted * soft_topk(s, cut, dim=dim, regularization_strength=eps)
    dcg = discounted.sum(dim)
    ideal = gains.sort(dim, descending=True).values.narrow(dim, 0, cut)
    position = torch.arange(2, cut + 2, dtype=s.dtype, device=s.device)
    shape = [1] * s.dim()
    shape[dim] = cut
    idcg = (ideal / torch.log2(position).view(shape)).sum(dim)
    return (dcg / idcg).to(scores.dtype)


def ndcg_loss(
    scores: Tensor,
    relevance: Tensor,
    k: Optional[int] = None,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
    gain: str = "exponential",
    reduction: str = "mean",
) -> Tensor:
    r"""One minus the soft NDCG@k (:func:`soft_ndcg`), reduced over the queries.

    .. math::
        \ell = 1 - \mathrm{NDCG}_\varepsilon@k(\text{scores}, \text{relevance})

    Args:
        scores, relevance, k, dim, regularization_strength, regularization, gain: as in
            :func:`soft_ndcg`.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.

    Returns:
        Tensor: a scalar, or Tensor[...] (one value per query) for ``reduction="none"``.

    Note:
        Queries without relevant items give NaN (see :func:`soft_ndcg`); drop them before reducing.

    Example:
        >>> ndcg_loss(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[0.0, 2.0, 1.0]]), regularization_strength=0.1)
        tensor(0.4131)
    """
    fn = "ndcg_loss"
    check_reduction(fn, reduction)
    return reduce(1.0 - _ndcg(fn, scores, relevance, k, dim, regularization_strength, regularization, gain),
                   reduction)


# ---------------------------------------------------------------------------
# Average precision


def _ranks_among_positives(s: Tensor, pos: Tensor, dim: int, eps: float, regularization: str) -> Tensor:
    """Descending soft ranks of the positive items among the positives only (entries of negatives
    are meaningless).

    The negatives are moved to one common score c below every positive, far enough that no PAV
    block straddles the two groups: the isotonic solution then splits into the negatives' part
    (ranks p+1..n) and the positives' part, which is the isotonic solution of the positives alone
    (ranks 1..p), exactly (SPEC 1.2). With descending ranks and z = -s/eps, a block of negatives
    has a value >= -c/eps - n (l2; - log n for kl) and a block of positives a value <= -lo/eps - 1
    (l2; <= -lo/eps for kl), lo = the lowest positive score, so lo - c > (n - 1) eps suffices. c
    is a constant (no gradient flows through it) with a margin for rounding.
    """
    n = s.shape[dim]
    lo = torch.where(pos, s, torch.full_like(s, math.inf)).amin(dim, keepdim=True).detach()
    margin = 2.0 * (n + 1) * eps + lo.abs() * 2.0**-10
    c = lo - margin  # NaN when a row has no positive (lo = inf): its AP is undefined anyway
    return soft_rank(torch.where(pos, s, c), dim=dim, descending=True, regularization_strength=eps,
                     regularization=regularization)


def soft_average_precision(
    scores: Tensor,
    labels: Tensor,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
) -> Tensor:
    r"""Soft average precision of ``scores`` against binary ``labels`` along ``dim``.

    With :math:`r_i` = the descending soft rank of item i among all items and :math:`r^+_i` its
    descending soft rank among the positive items only:

    .. math::
        \mathrm{AP}_\varepsilon = \frac{1}{|P|} \sum_{i \in P} \frac{r^+_i}{r_i}

    (for hard ranks :math:`r^+_i / r_i` is the precision at the rank of positive i).

    Args:
        scores (Tensor[..., n, ...]): predicted scores.
        labels (Tensor[..., n, ...]): item i is positive iff ``labels[i] > 0`` (bool, integer or
            float); same shape. Not differentiated.
        dim (int): the dimension holding the n items. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        regularization (str): ``"l2"`` or ``"kl"``. Default ``"l2"``.

    Returns:
        Tensor[...]: AP per query, in (0, 1].

    Note:
        Two soft ranks per query (all items; positives only), so O(n log n) time and O(n) memory.
        As :math:`\varepsilon \to 0` the value is the hard AP with tied scores given their average
        ranks (among all items and among the positives). A query without positives (or with n = 0)
        has no AP: NaN. NaN or infinite scores give NaN for their query.

    Example:
        >>> soft_average_precision(torch.tensor([0.9, 0.8, 0.1, 0.5]), torch.tensor([1, 0, 0, 1]),
        ...                        regularization_strength=0.01)
        tensor(0.8333)
    """
    return _average_precision("soft_average_precision", scores, labels, dim, regularization_strength, regularization)


def _average_precision(fn: str, scores: Tensor, labels: Tensor, dim: int, regularization_strength: float,
                       regularization: str) -> Tensor:
    s, lab, dim, eps = _prepare(fn, scores, labels, "labels", dim, regularization_strength)
    check_regularization(fn, regularization)
    if s.shape[dim] == 0:
        return _empty_rows(scores, dim)
    pos, npos = _positives(lab, dim)
    r = soft_rank(s, dim=dim, descending=True, regularization_strength=eps, regularization=regularization)
    r_pos = _ranks_among_positives(s, pos, dim, eps, regularization)
    precision = torch.where(pos, r_pos / r, torch.zeros_like(r))
    return (precision.sum(dim) / npos).to(scores.dtype)


def average_precision_loss(
    scores: Tensor,
    labels: Tensor,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
    reduction: str = "mean",
) -> Tensor:
    r"""One minus the soft average precision (:func:`soft_average_precision`), reduced over the queries.

    .. math::
        \ell = 1 - \mathrm{AP}_\varepsilon(\text{scores}, \text{labels})

    Args:
        scores, labels, dim, regularization_strength, regularization: as in :func:`soft_average_precision`.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.

    Returns:
        Tensor: a scalar, or Tensor[...] for ``reduction="none"``.

    Example:
        >>> average_precision_loss(torch.tensor([[0.9, 0.8, 0.1, 0.5]]), torch.tensor([[1, 0, 0, 1]]),
        ...                        regularization_strength=0.01)
        tensor(0.1667)
    """
    fn = "average_precision_loss"
    check_reduction(fn, reduction)
    return reduce(1.0 - _average_precision(fn, scores, labels, dim, regularization_strength, regularization),
                   reduction)


# ---------------------------------------------------------------------------
# Recall@k


def soft_recall_at_k(
    scores: Tensor,
    labels: Tensor,
    k: int,
    dim: int = -1,
    regularization_strength: float = 1.0,
) -> Tensor:
    r"""Soft recall@k of ``scores`` against binary ``labels`` along ``dim``.

    With :math:`m` = the soft top-k mask of the scores (:func:`diffcomb.soft_topk`, entries in
    [0, 1] summing to k):

    .. math::
        \mathrm{Recall}_\varepsilon@k = \frac{1}{|P|} \sum_{i \in P} m_i

    Args:
        scores (Tensor[..., n, ...]): predicted scores.
        labels (Tensor[..., n, ...]): item i is positive iff ``labels[i] > 0``; same shape.
        k (int): the cutoff, ``k >= 1`` (``k >= n`` gives 1).
        dim (int): the dimension holding the n items. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0` of the mask. Default 1.0.

    Returns:
        Tensor[...]: recall@k per query, in [0, 1].

    Note:
        The mask is the l2 projection of scores / eps onto the permutahedron of (1, ..., 1, 0, ..., 0)
        (k ones): the hard top-k indicator for small :math:`\varepsilon` (tied scores at the cutoff
        share the remaining slots evenly), and otherwise a smooth cutoff whose gradient reaches every
        item of the block around the k-th score. A query without positives (or n = 0) gives NaN.
        O(n log n) per query, O(n) memory.

    Example:
        >>> soft_recall_at_k(torch.tensor([0.9, 0.8, 0.1, 0.5]), torch.tensor([1, 0, 0, 1]), k=2,
        ...                  regularization_strength=0.01)
        tensor(0.5000)
    """
    return _recall_at_k("soft_recall_at_k", scores, labels, k, dim, regularization_strength)


def _recall_at_k(fn: str, scores: Tensor, labels: Tensor, k: int, dim: int, regularization_strength: float) -> Tensor:
    s, lab, dim, eps = _prepare(fn, scores, labels, "labels", dim, regularization_strength)
    k = check_int(fn, "k", k, 1)
    n = s.shape[dim]
    if n == 0:
        return _empty_rows(scores, dim)
    pos, npos = _positives(lab, dim)
    mask = soft_topk(s, min(k, n), dim=dim, regularization_strength=eps)
    return (torch.where(pos, mask, torch.zeros_like(mask)).sum(dim) / npos).to(scores.dtype)


def recall_at_k_loss(
    scores: Tensor,
    labels: Tensor,
    k: int,
    dim: int = -1,
    regularization_strength: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""One minus the soft recall@k (:func:`soft_recall_at_k`), reduced over the queries.

    .. math::
        \ell = 1 - \mathrm{Recall}_\varepsilon@k(\text{scores}, \text{labels})

    Args:
        scores, labels, k, dim, regularization_strength: as in :func:`soft_recall_at_k`.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.

    Returns:
        Tensor: a scalar, or Tensor[...] for ``reduction="none"``.

    Example:
        >>> recall_at_k_loss(torch.tensor([[0.9, 0.8, 0.1, 0.5]]), torch.tensor([[1, 0, 0, 1]]), k=2,
        ...                  regularization_strength=0.01)
        tensor(0.5000)
    """
    fn = "recall_at_k_loss"
    check_reduction(fn, reduction)
    return reduce(1.0 - _recall_at_k(fn, scores, labels, k, dim, regularization_strength), reduction)


# ---------------------------------------------------------------------------
# AUC (Mann-Whitney form)


def soft_auc(
    scores: Tensor,
    labels: Tensor,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
) -> Tensor:
    r"""Soft area under the ROC curve, pairwise-free, in the Mann-Whitney form.

    With :math:`r` = the ascending soft ranks of the scores among all n items, :math:`|P|` positives
    and :math:`|N| = n - |P|` negatives:

    .. math::
        \mathrm{AUC}_\varepsilon = \frac{\sum_{i \in P} r_i - |P|(|P| + 1)/2}{|P|\,|N|}

    which for hard ranks (ties averaged) is the fraction of (positive, negative) pairs ordered
    correctly, a tied pair counting 1/2.

    Args:
        scores (Tensor[..., n, ...]): predicted scores.
        labels (Tensor[..., n, ...]): item i is positive iff ``labels[i] > 0``; same shape.
        dim (int): the dimension holding the n items. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        regularization (str): ``"l2"`` or ``"kl"``. Default ``"l2"``.

    Returns:
        Tensor[...]: AUC per query.

    Note:
        O(n log n) per query and O(n) memory, against ``O(|P| |N|)`` for the pairwise sigmoid surrogate.
        As :math:`\varepsilon \to 0` the value is the hard AUC (ties count 1/2); as
        :math:`\varepsilon \to \infty` (l2) it tends to 1/2. A query with no positive or no negative
        item (or n = 0) gives NaN. NaN or infinite scores give NaN for their query.

    Example:
        >>> soft_auc(torch.tensor([0.9, 0.8, 0.1, 0.5]), torch.tensor([1, 0, 0, 1]), regularization_strength=0.01)
        tensor(0.7500)
    """
    return _auc("soft_auc", scores, labels, dim, regularization_strength, regularization)


def _auc(fn: str, scores: Tensor, labels: Tensor, dim: int, regularization_strength: float,
         regularization: str) -> Tensor:
    s, lab, dim, eps = _prepare(fn, scores, labels, "labels", dim, regularization_strength)
    check_regularization(fn, regularization)
    n = s.shape[dim]
    if n == 0:
        return _empty_rows(scores, dim)
    pos, npos = _positives(lab, dim)
    nneg = n - npos
    r = soft_rank(s, dim=dim, descending=False, regularization_strength=eps, regularization=regularization)
    rank_sum = torch.where(pos, r, torch.zeros_like(r)).sum(dim)
    pairs = npos * nneg
    auc = (rank_sum - npos * (npos + 1) / 2) / pairs
    return torch.where(pairs > 0, auc, torch.full_like(auc, math.nan)).to(scores.dtype)


def auc_loss(
    scores: Tensor,
    labels: Tensor,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
    reduction: str = "mean",
) -> Tensor:
    r"""One minus the soft AUC (:func:`soft_auc`), reduced over the queries.

    .. math::
        \ell = 1 - \mathrm{AUC}_\varepsilon(\text{scores}, \text{labels})

    Args:
        scores, labels, dim, regularization_strength, regularization: as in :func:`soft_auc`.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.

    Returns:
        Tensor: a scalar, or Tensor[...] for ``reduction="none"``.

    Example:
        >>> auc_loss(torch.tensor([[0.9, 0.8, 0.1, 0.5]]), torch.tensor([[1, 0, 0, 1]]), regularization_strength=0.01)
        tensor(0.2500)
    """
    fn = "auc_loss"
    check_reduction(fn, reduction)
    return reduce(1.0 - _auc(fn, scores, labels, dim, regularization_strength, regularization), reduction)
