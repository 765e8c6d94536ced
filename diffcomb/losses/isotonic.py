"""Losses built on soft ranks and soft sorts (SPEC.md section 2).

Each is a plain composition of the family ops, so its backward is the chain
rule through their O(n) VJPs. Reductions follow torch.nn.functional:
``reduction="mean" | "sum" | "none"`` over the batch dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import as_float, check_dim, check_int, check_reduction, check_same_device, check_tensor, reduce
from .._checks import check_target
from .._isotonic_checks import check_regularization, check_strength
from ..isotonic import soft_rank, soft_sort

__all__ = ["average_ranks", "soft_lts", "soft_spearman", "spearman_loss"]


def average_ranks(t: Tensor, dim: int = -1) -> Tensor:
    """Hard 1-based ranks of ``t`` along ``dim``, ties given their average rank (no gradient).

    Example:
        >>> diffcomb.losses.average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0]))
        tensor([3.5000, 1.0000, 3.5000, 2.0000], dtype=torch.float64)
    """
    moved = t.detach().movedim(dim, -1)
    lead, n = moved.shape[:-1], moved.shape[-1]
    rows = moved.reshape(math.prod(lead), n)
    values, order = torch.sort(rows, dim=-1, stable=True)
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(-1) - 1
    position = torch.arange(1, n + 1, dtype=torch.float64, device=t.device).expand_as(values)
    total = torch.zeros_like(position).scatter_add_(1, group, position)
    count = torch.zeros_like(position).scatter_add_(1, group, torch.ones_like(position))
    average = (total / count.clamp_min(1)).gather(1, group)
    ranks = torch.empty_like(average).scatter_(1, order, average)
    return ranks.reshape(*lead, n).movedim(-1, dim)


def _rank_norm_floor(n: int, dtype: torch.dtype) -> float:
    """The floor under the norm of the centred soft ranks in soft_spearman: sqrt(machine epsilon)
    times the norm of the centred ranks (1, ..., n), sqrt(n (n^2 - 1) / 12)."""
    return math.sqrt(torch.finfo(dtype).eps * n * (n * n - 1) / 12.0)


def soft_spearman(
    pred: Tensor,
    target: Tensor,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
) -> Tensor:
    r"""Soft Spearman rank correlation between ``pred`` and ``target`` along ``dim``.

    With :math:`r` = the ascending soft rank of ``pred`` and :math:`t` = the hard ranks of
    ``target`` (ties averaged), both centered:

    .. math::
        \rho_\varepsilon = \frac{\langle \tilde r, \tilde t \rangle}
            {\max(\|\tilde r\|, \tau) \, \|\tilde t\|}, \qquad
        \tau = \sqrt{\epsilon_{\mathrm{mach}}} \sqrt{n (n^2 - 1) / 12}

    :math:`\tau` only acts on a constant or nearly constant prediction (see the Note); otherwise
    this is the plain correlation of the ranks.

    Args:
        pred (Tensor[..., n, ...]): predicted scores (differentiable); integer and bool tensors are
            computed in the default float dtype (``torch.get_default_dtype()``).
        target (Tensor[..., n, ...]): target scores, same shape and device; only their order
            matters (integer and bool tensors are accepted).
        dim (int): the dimension holding the n items. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0` of the soft rank. Default 1.0.
        regularization (str): ``"l2"`` or ``"kl"``. Default ``"l2"``.

    Returns:
        Tensor[...]: the correlation per slice, in [-1, 1], in ``pred``'s (converted) dtype.

    Note:
        :math:`\varepsilon \to 0` gives the exact Spearman correlation, :math:`\varepsilon \to
        \infty` the Pearson correlation between ``pred`` and the target ranks.

        Constant prediction: its soft ranks are all :math:`(n + 1)/2`, so :math:`\tilde r = 0`
        and the plain correlation is 0/0. The norm :math:`\|\tilde r\|` is therefore floored at
        :math:`\tau`, :math:`\sqrt{\epsilon_{\mathrm{mach}}}` (of the result's dtype) times the
        norm of the centred ranks :math:`(1, \dots, n)`, the largest :math:`\|\tilde r\|` can
        be: below it they have lost more than half of their digits to the rounding of ranks of
        size n (float32 predictions scaled by 1e-7 give soft ranks that are (n + 1)/2 up to
        rounding). The result is continuous: a constant prediction
        gives :math:`\rho = 0` (loss 1), inside the floor :math:`\rho` falls linearly to 0, and
        the gradient stays finite, :math:`\tilde t / (\tau \|\tilde t\|)` through the
        soft-rank Jacobian (for l2, :math:`\tilde t / (\varepsilon \tau \|\tilde t\|)`):
        it moves a constant prediction toward the target's order. Above the floor the value is
        the plain correlation; so the :math:`\varepsilon \to \infty` limit holds while
        :math:`\|\tilde r\| \approx \|\widetilde{\text{pred}}\| / \varepsilon \ge \tau`.

        Undefined (NaN, with NaN gradients) for a constant target (all ranks tied, including
        n <= 1), and, as everywhere, for a slice with NaN or +/-inf in ``pred`` or ``target``.

    Example:
        >>> diffcomb.soft_spearman(torch.tensor([0.1, 0.9, 0.4, 0.5]), torch.tensor([1.0, 4.0, 2.0, 3.0]))
        tensor(0.9768)
        >>> diffcomb.soft_spearman(torch.zeros(4), torch.tensor([1.0, 4.0, 2.0, 3.0]))
        tensor(0.)

    References:
        M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
        ICML 2020. arXiv:2002.08871
    """
    fn = "soft_spearman"
    check_same_device(fn, pred=pred, target=target)
    pred = check_tensor(fn, "pred", as_float(pred))
    dim = check_dim(fn, pred, dim)
    target = check_target(fn, "target", target, pred, "pred")
    check_strength(fn, regularization_strength)
    check_regularization(fn, regularization)
    r = soft_rank(pred, dim=dim, regularization_strength=regularization_strength, regularization=regularization)
    t = average_ranks(target, dim).to(r.dtype)
    # A non-finite target has no ranks: NaN ranks make the slice's value and gradient NaN.
    t = t.masked_fill(~torch.isfinite(target).all(dim, keepdim=True), math.nan)
    r = r - r.mean(dim, keepdim=True)
    t = t - t.mean(dim, keepdim=True)
    floor = _rank_norm_floor(r.shape[dim], r.dtype)
    return (r * t).sum(dim) / (r.norm(dim=dim).clamp_min(floor) * t.norm(dim=dim))


def spearman_loss(
    pred: Tensor,
    target: Tensor,
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
    reduction: str = "mean",
) -> Tensor:
    r"""One minus the soft Spearman rank correlation (:func:`soft_spearman`), reduced over the batch.

    .. math::
        \ell = 1 - \rho_\varepsilon(\text{pred}, \text{target})

    Args:
        pred (Tensor[..., n, ...]): predicted scores; integer and bool tensors are computed in the
            default float dtype (``torch.get_default_dtype()``).
        target (Tensor[..., n, ...]): target scores, same shape and device.
        dim (int): the dimension holding the n items. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        regularization (str): ``"l2"`` or ``"kl"``. Default ``"l2"``.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.

    Returns:
        Tensor: a scalar, or Tensor[...] for ``reduction="none"``; each term in [0, 2].

    Note:
        A constant prediction gives the loss 1 with a finite gradient that moves it toward the
        target's order (the floor under the rank norm in :func:`soft_spearman`); a constant
        target (or n <= 1) gives NaN.

    Example:
        >>> diffcomb.spearman_loss(torch.tensor([[0.1, 0.9, 0.4, 0.5]]), torch.tensor([[1.0, 4.0, 2.0, 3.0]]))
        tensor(0.0232)
    """
    check_reduction("spearman_loss", reduction)
    rho = soft_spearman(pred, target, dim, regularization_strength, regularization)
    return reduce(1.0 - rho, reduction)


def soft_lts(
    losses: Tensor,
    k: int,
    dim: int = -1,
    regularization_strength: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Soft least trimmed squares: the mean of the n - k smallest losses, softly.

    .. math::
        L_\varepsilon(\ell) = \frac{1}{n - k} \sum_{i = k + 1}^{n} \mathrm{soft\_sort\_desc}(\ell; \varepsilon)_i

    Args:
        losses (Tensor[..., n, ...]): per-sample losses (e.g. squared residuals); integer and bool
            tensors are computed in the default float dtype (``torch.get_default_dtype()``).
        k (int): how many of the largest losses to trim, ``0 <= k < n``.
        dim (int): the sample dimension. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0` (l2 soft sort). Default 1.0.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"`` over the batch. Default ``"mean"``.

    Returns:
        Tensor: a scalar, or Tensor[...] for ``reduction="none"``.

    Note:
        :math:`\varepsilon \to 0` gives the hard trimmed mean, :math:`\varepsilon \to \infty`
        the plain mean (least squares); k = 0 gives the mean for every :math:`\varepsilon`.

    Example:
        >>> diffcomb.soft_lts(torch.tensor([0.1, 4.0, 0.3, 0.2, 9.0]), k=2, regularization_strength=1e-3)
        tensor(0.2000)

    References:
        M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
        ICML 2020. arXiv:2002.08871
    """
    fn = "soft_lts"
    losses = check_tensor(fn, "losses", as_float(losses))
    dim = check_dim(fn, losses, dim)
    check_strength(fn, regularization_strength)
    check_reduction(fn, reduction)
    n = losses.shape[dim]
    check_int(fn, "k", k, 0, n - 1)
    s = soft_sort(losses, dim=dim, descending=True, regularization_strength=regularization_strength)
    return reduce(s.narrow(dim, k, n - k).mean(dim), reduction)
