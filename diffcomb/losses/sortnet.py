"""The ranking-supervision loss of the sorting networks (SPEC.md section 5): binary cross-entropy
between a relaxed permutation matrix (:func:`diffcomb.sorting_network`) and the true one, a plain
composition of torch ops (its backward is the chain rule). Reductions follow torch.nn.functional:
``reduction="mean" | "sum" | "none"`` over the batch dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from .._checks import check_reduction, check_same_device, message, reduce

__all__ = ["ranking_loss"]


def _check_axis(fn: str, P: Tensor, dim: object) -> int:
    """dim as a non-negative axis of target_ranks, which has one axis fewer than P."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(message(fn, f"dim must be an int, got {type(dim).__name__}"))
    nd = P.dim() - 1
    if not -nd <= dim < nd:
        raise IndexError(message(fn, f"dim={dim} is out of range for target_ranks of {nd} dimension(s) (P has "
                                     f"shape {tuple(P.shape)}); expected -{nd} <= dim < {nd}"))
    return dim % nd


def ranking_loss(P: Tensor, target_ranks: Tensor, reduction: str = "mean", dim: int = -1) -> Tensor:
    r"""Ranking-supervision loss: binary cross-entropy between a relaxed permutation matrix and the
    true one.

    With :math:`Q_{ik} = 1` iff input :math:`i` has ascending rank :math:`k` (0-based) among
    ``target_ranks`` (a stable argsort, so ties keep input order):

    .. math::
        L = -\frac{1}{n^2} \sum_{i,k} Q_{ik} \log P_{ik} + (1 - Q_{ik}) \log (1 - P_{ik})

    computed by ``torch.nn.functional.binary_cross_entropy``, as the papers' code does
    (``torch.nn.BCELoss()(P, Q)``): each log is clamped below at -100, and the gradient is
    :math:`(P_{ik} - Q_{ik}) / (n^2 \max(P_{ik} (1 - P_{ik}), 10^{-12}))`, so that a confidently
    wrong P (entries within 1e-12 of 0 or 1) still gets a gradient. With ``reduction="mean"``
    the loss and its gradient equal ``BCELoss()(P, Q)``.

    Args:
        P (Tensor[..., n, n]): relaxed permutation matrices (``sorting_network(...).matrix``),
            ``P[..., i, k]`` = weight of input i at ascending position k; entries are clamped
            to [0, 1] (rounding can leave them just outside). With ``dim``, the axes ``i, k`` are
            P's axes ``dim, dim + 1`` (``dim`` counted on target_ranks), as
            ``sorting_network(x, dim=dim).matrix`` places them.
        target_ranks (Tensor[..., n, ...]): the true ranks along ``dim``, or any values whose
            ascending order is the target order (only their order is used; no gradient). Integer
            and bool tensors are used as they are (their order is exact).
        reduction (str): ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (the batch shape:
            target_ranks' shape without ``dim``).
        dim (int): the sorted axis of target_ranks. Default -1.

    Returns:
        Tensor: the loss, reduced over the batch dimensions.

    Note:
        A row with non-finite targets or a NaN in P gives NaN; n = 0 gives NaN (a mean over
        no entries). For a descending P, pass the negated targets.

    Example:
        >>> P = diffcomb.sorting_network(torch.tensor([2.0, 0.0, 1.0]), steepness=1.0).matrix
        >>> diffcomb.ranking_loss(P, torch.tensor([30.0, 10.0, 20.0]))
        tensor(0.3407)

    References:
        F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Differentiable Sorting Networks for
        Scalable Sorting and Ranking Supervision. ICML 2021. arXiv:2105.04019
    """
    fn = "ranking_loss"
    check_same_device(fn, P=P, target_ranks=target_ranks)
    if not isinstance(P, Tensor) or not P.is_floating_point():
        raise TypeError(message(fn, "P must be a floating-point torch.Tensor, got "
                                    f"{type(P).__name__ if not isinstance(P, Tensor) else P.dtype}"))
    if not isinstance(target_ranks, Tensor) or target_ranks.is_complex():
        got = target_ranks.dtype if isinstance(target_ranks, Tensor) else type(target_ranks).__name__
        raise TypeError(message(fn, f"target_ranks must be a real torch.Tensor, got {got}"))
    if P.dim() < 2:
        raise ValueError(message(fn, f"P must have shape (..., n, n), got {tuple(P.shape)}"))
    d = _check_axis(fn, P, dim)
    last = d == P.dim() - 2
    if P.shape[d] != P.shape[d + 1]:
        where = "" if last else f" along its axes {d} and {d + 1}"
        raise ValueError(message(fn, f"P must have shape (..., n, n){where}, got {tuple(P.shape)}"))
    expected = (*P.shape[:d + 1], *P.shape[d + 2:])
    if tuple(target_ranks.shape) != expected:
        axis = "the last dimension" if last else f"axis {d + 1}"
        raise ValueError(message(fn, f"target_ranks must have shape {expected} (P's shape without {axis}), got "
                                     f"{tuple(target_ranks.shape)}"))
    check_reduction(fn, reduction)
    P = P.movedim((d, d + 1), (-2, -1))
    t = target_ranks.detach().movedim(d, -1)
    order = torch.argsort(t.to(torch.uint8) if t.dtype == torch.bool else t, dim=-1, stable=True)
    # float16/bfloat16 in float32 (binary_cross_entropy's 1e-12 and -100 are float32 numbers)
    out_dtype = P.dtype
    P = P.float() if P.dtype in (torch.float16, torch.bfloat16) else P
    # Q[..., i, k] = 1 iff order[..., k] == i (a comparison rather than a scatter: vmap batches it)
    Q = (order.unsqueeze(-2) == torch.arange(P.shape[-1], device=P.device).unsqueeze(-1)).to(P.dtype)
    # binary_cross_entropy requires every entry in [0, 1] and checks it by reading the values (a
    # device-side assert on CUDA): NaN entries are replaced here and their rows made NaN after.
    p = P.clamp(0.0, 1.0)
    nan = torch.isnan(p)
    bce = F.binary_cross_entropy(torch.where(nan, 0.5, p), Q, reduction="none")
    loss = bce.mean(dim=(-2, -1))
    bad = nan.any(dim=-1).any(dim=-1)
    if t.is_floating_point():
        bad = bad | ~torch.isfinite(t).all(dim=-1)
    loss = torch.where(bad, torch.full_like(loss, math.nan), loss).to(out_dtype)
    return reduce(loss, reduction)
