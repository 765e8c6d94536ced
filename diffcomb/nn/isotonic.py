"""Modules over the permutahedron projections: soft sort, rank, top-k and quantiles, isotonic
regression, the soft Spearman correlation and the Spearman and LTS losses."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor, nn

from .. import losses
from .._checks import check_flag, check_int, check_reduction
from .._checks import check_module_dim
from .._isotonic_checks import check_quantile_levels, check_regularization, check_strength
from ..isotonic import isotonic_regression, soft_quantile, soft_rank, soft_sort, soft_topk

__all__ = ["IsotonicRegression", "SoftLTSLoss", "SoftQuantile", "SoftRank", "SoftSort", "SoftSpearman", "SoftTopK",
           "SpearmanLoss"]


class _Permutahedron(nn.Module):
    """The hyper-parameters the family's modules share, checked once: ``dim``, the regularization
    strength, and (where given) the regularization and the reduction."""

    def __init__(self, name: str, dim: int, regularization_strength: float, regularization: Optional[str] = None,
                 reduction: Optional[str] = None) -> None:
        super().__init__()
        self.dim = check_module_dim(name, dim)
        self.regularization_strength = check_strength(name, regularization_strength)
        if regularization is not None:
            check_regularization(name, regularization)
            self.regularization = regularization
        if reduction is not None:
            self.reduction = check_reduction(name, reduction)

    def extra_repr(self) -> str:
        parts = [f"dim={self.dim}"]
        if hasattr(self, "descending"):
            parts.append(f"descending={self.descending}")
        parts.append(f"regularization_strength={self.regularization_strength}")
        if hasattr(self, "regularization"):
            parts.append(f"regularization={self.regularization!r}")
        if hasattr(self, "reduction"):
            parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


class SoftSort(_Permutahedron):
    """Module form of :func:`diffcomb.soft_sort`.

    Example:
        >>> diffcomb.SoftSort(regularization_strength=2.0)(torch.tensor([3.0, 1.0, 2.0]))
        tensor([1.5000, 2.0000, 2.5000])
    """

    def __init__(self, dim: int = -1, descending: bool = False, regularization_strength: float = 1.0,
                 regularization: str = "l2") -> None:
        super().__init__("SoftSort", dim, regularization_strength, regularization)
        self.descending = check_flag("SoftSort", "descending", descending)

    def forward(self, x: Tensor) -> Tensor:
        return soft_sort(x, self.dim, self.descending, self.regularization_strength, self.regularization)


class SoftRank(_Permutahedron):
    """Module form of :func:`diffcomb.soft_rank`.

    Example:
        >>> diffcomb.SoftRank(descending=True, regularization_strength=0.1)(torch.tensor([3.0, 1.0, 2.0]))
        tensor([1., 3., 2.])
    """

    def __init__(self, dim: int = -1, descending: bool = False, regularization_strength: float = 1.0,
                 regularization: str = "l2") -> None:
        super().__init__("SoftRank", dim, regularization_strength, regularization)
        self.descending = check_flag("SoftRank", "descending", descending)

    def forward(self, x: Tensor) -> Tensor:
        return soft_rank(x, self.dim, self.descending, self.regularization_strength, self.regularization)


class SoftTopK(_Permutahedron):
    """Module form of :func:`diffcomb.soft_topk`: the soft top-k mask of ``x`` along ``dim``
    (``k <= n`` is checked against the input).

    Example:
        >>> diffcomb.SoftTopK(k=2, regularization_strength=0.1)(torch.tensor([0.1, 2.0, -1.0, 1.5, 0.3]))
        tensor([0., 1., 0., 1., 0.])
    """

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0) -> None:
        super().__init__("SoftTopK", dim, regularization_strength)
        self.k = check_int("SoftTopK", "k", k, 0)

    def extra_repr(self) -> str:
        return f"k={self.k}, {super().extra_repr()}"

    def forward(self, x: Tensor) -> Tensor:
        return soft_topk(x, self.k, self.dim, self.regularization_strength)


class SoftQuantile(_Permutahedron):
    """Module form of :func:`diffcomb.soft_quantile`: the soft quantile(s) ``q`` of ``x`` along ``dim``.
    A tensor ``q`` is read once, here, and kept as Python floats (so the module follows its input
    to any device).

    Example:
        >>> diffcomb.SoftQuantile([0.25, 0.75], regularization_strength=0.01)(torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]))
        tensor([2., 4.])
    """

    def __init__(self, q: Union[float, Sequence[float], Tensor], dim: int = -1, regularization_strength: float = 1.0,
                 regularization: str = "l2") -> None:
        super().__init__("SoftQuantile", dim, regularization_strength, regularization)
        scalar, levels = check_quantile_levels("SoftQuantile", q)
        self.q: Union[float, tuple[float, ...]] = levels[0] if scalar else tuple(levels)

    def extra_repr(self) -> str:
        return f"q={self.q}, {super().extra_repr()}"

    def forward(self, x: Tensor) -> Tensor:
        return soft_quantile(x, self.q, self.dim, self.regularization_strength, self.regularization)


class IsotonicRegression(nn.Module):
    """Module form of :func:`diffcomb.isotonic_regression`: ``forward(y, sample_weight=None)``.

    Example:
        >>> iso = diffcomb.IsotonicRegression(increasing=False)
        >>> iso(torch.tensor([4.0, 1.0, 3.0, 2.0]))
        tensor([4., 2., 2., 2.])
        >>> iso(torch.tensor([4.0, 1.0, 3.0, 2.0]), sample_weight=torch.tensor([1.0, 1.0, 2.0, 1.0]))
        tensor([4.0000, 2.3333, 2.3333, 2.0000])
    """

    def __init__(self, dim: int = -1, increasing: bool = True) -> None:
        super().__init__()
        self.dim = check_module_dim("IsotonicRegression", dim)
        self.increasing = check_flag("IsotonicRegression", "increasing", increasing)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, increasing={self.increasing}"

    def forward(self, y: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        return isotonic_regression(y, sample_weight, self.dim, self.increasing)


class SoftSpearman(_Permutahedron):
    """Module form of :func:`diffcomb.soft_spearman`: ``forward(pred, target)``, the correlation per
    slice (a metric; :class:`SpearmanLoss` is the loss, one minus it, reduced).

    Example:
        >>> metric = diffcomb.SoftSpearman(regularization_strength=0.1)
        >>> metric(torch.tensor([[0.1, 0.4, 0.3], [3.0, 2.0, 1.0]]), torch.tensor([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0]]))
        tensor([ 1.0000, -1.0000])
    """

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2") -> None:
        super().__init__("SoftSpearman", dim, regularization_strength, regularization)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return losses.soft_spearman(pred, target, self.dim, self.regularization_strength, self.regularization)


class SpearmanLoss(_Permutahedron):
    """Module form of :func:`diffcomb.spearman_loss`: ``forward(pred, target)``.

    Example:
        >>> loss = diffcomb.SpearmanLoss(regularization_strength=0.01, reduction='none')
        >>> loss(torch.tensor([[1.0, 3.0, 2.0], [3.0, 2.0, 1.0]]), torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
        tensor([0.5000, 2.0000])
    """

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__("SpearmanLoss", dim, regularization_strength, regularization, reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return losses.spearman_loss(pred, target, self.dim, self.regularization_strength, self.regularization,
                                    self.reduction)


class SoftLTSLoss(_Permutahedron):
    """Module form of :func:`diffcomb.soft_lts`: ``forward(losses)``.

    Example:
        >>> diffcomb.SoftLTSLoss(k=2, regularization_strength=0.01)(torch.tensor([0.5, 0.1, 9.0, 0.3]))
        tensor(0.2000)
    """

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0,
                 reduction: str = "mean") -> None:
        super().__init__("SoftLTSLoss", dim, regularization_strength, reduction=reduction)
        self.k = check_int("SoftLTSLoss", "k", k, 0)

    def extra_repr(self) -> str:
        return f"k={self.k}, {super().extra_repr()}"

    def forward(self, values: Tensor) -> Tensor:
        return losses.soft_lts(values, self.k, self.dim, self.regularization_strength, self.reduction)
