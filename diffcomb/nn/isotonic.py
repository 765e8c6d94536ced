"""Modules over the permutahedron projections: soft sort and rank, the Spearman and LTS losses."""

from __future__ import annotations


from torch import Tensor, nn

from .._checks import check_flag, check_reduction

from .. import losses
from ..isotonic import _check_regularization, _check_strength, soft_rank, soft_sort

__all__ = ["SoftLTSLoss", "SoftRank", "SoftSort", "SpearmanLoss"]


def _check_module_dim(name: str, dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"diffcomb.{name}: dim must be an int, got {type(dim).__name__}")
    return dim


class _SoftPermutahedron(nn.Module):
    def __init__(self, name: str, dim: int, descending: bool, regularization_strength: float,
                 regularization: str) -> None:
        super().__init__()
        self.dim = _check_module_dim(name, dim)
        self.descending = check_flag(name, "descending", descending)
        self.regularization_strength = _check_strength(name, regularization_strength)
        _check_regularization(name, regularization)
        self.regularization = regularization

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, descending={self.descending}, "
                f"regularization_strength={self.regularization_strength}, regularization={self.regularization!r}")


class SoftSort(_SoftPermutahedron):
    """Module form of :func:`diffcomb.soft_sort`."""

    def __init__(self, dim: int = -1, descending: bool = False, regularization_strength: float = 1.0,
                 regularization: str = "l2") -> None:
        super().__init__("SoftSort", dim, descending, regularization_strength, regularization)

    def forward(self, x: Tensor) -> Tensor:
        return soft_sort(x, self.dim, self.descending, self.regularization_strength, self.regularization)


class SoftRank(_SoftPermutahedron):
    """Module form of :func:`diffcomb.soft_rank`."""

    def __init__(self, dim: int = -1, descending: bool = False, regularization_strength: float = 1.0,
                 regularization: str = "l2") -> None:
        super().__init__("SoftRank", dim, descending, regularization_strength, regularization)

    def forward(self, x: Tensor) -> Tensor:
        return soft_rank(x, self.dim, self.descending, self.regularization_strength, self.regularization)


class SpearmanLoss(nn.Module):
    """Module form of :func:`diffcomb.spearman_loss`: ``forward(pred, target)``."""

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__()
        self.dim = _check_module_dim("SpearmanLoss", dim)
        self.regularization_strength = _check_strength("SpearmanLoss", regularization_strength)
        _check_regularization("SpearmanLoss", regularization)
        self.regularization = regularization
        self.reduction = check_reduction("SpearmanLoss", reduction)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, regularization_strength={self.regularization_strength}, "
                f"regularization={self.regularization!r}, reduction={self.reduction!r}")

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return losses.spearman_loss(pred, target, self.dim, self.regularization_strength, self.regularization,
                                    self.reduction)


class SoftLTSLoss(nn.Module):
    """Module form of :func:`diffcomb.soft_lts`: ``forward(losses)``."""

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"diffcomb.SoftLTSLoss: k must be a non-negative int, got {k!r}")
        self.k = k
        self.dim = _check_module_dim("SoftLTSLoss", dim)
        self.regularization_strength = _check_strength("SoftLTSLoss", regularization_strength)
        self.reduction = check_reduction("SoftLTSLoss", reduction)

    def extra_repr(self) -> str:
        return (f"k={self.k}, dim={self.dim}, regularization_strength={self.regularization_strength}, "
                f"reduction={self.reduction!r}")

    def forward(self, values: Tensor) -> Tensor:
        return losses.soft_lts(values, self.k, self.dim, self.regularization_strength, self.reduction)
