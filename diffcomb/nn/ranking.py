"""Ranking-metric losses (diffcomb.ranking) and Fenchel-Young losses (diffcomb.fenchel_young):
forward(scores, target) / forward(theta, target)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import fenchel_young as _fenchel_young
from .. import ranking as _ranking
from .._checks import check_choice, check_int, check_reduction, check_tol
from .._checks import check_module_dim
from .._isotonic_checks import check_strength
from .isotonic import _Permutahedron

__all__ = ["AUCLoss", "AveragePrecisionLoss", "FenchelYoungLoss", "NDCGLoss", "RecallAtKLoss"]


class NDCGLoss(_Permutahedron):
    """Module form of :func:`diffcomb.ndcg_loss`: ``forward(scores, relevance)``.

    Example:
        >>> loss = diffcomb.NDCGLoss(k=3, regularization_strength=0.01)
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[3.0, 2.0, 0.0]]))
        tensor(0.)
        >>> loss(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[3.0, 2.0, 0.0]])).round(decimals=4)
        tensor(0.3936)
    """

    def __init__(self, k: Optional[int] = None, dim: int = -1, regularization_strength: float = 1.0,
                 regularization: str = "l2", gain: str = "exponential", reduction: str = "mean") -> None:
        super().__init__("NDCGLoss", dim, regularization_strength, regularization, reduction)
        self.k = check_int("NDCGLoss", "k", k, 1, optional=True)
        self.gain = check_choice("NDCGLoss", "gain", gain, _ranking.GAINS)

    def extra_repr(self) -> str:
        return f"k={self.k}, gain={self.gain!r}, {super().extra_repr()}"

    def forward(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return _ranking.ndcg_loss(scores, relevance, self.k, self.dim, self.regularization_strength,
                                  self.regularization, self.gain, self.reduction)


class AveragePrecisionLoss(_Permutahedron):
    """Module form of :func:`diffcomb.average_precision_loss`: ``forward(scores, labels)``.

    Example:
        >>> loss = diffcomb.AveragePrecisionLoss(regularization_strength=0.01)
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]])).round(decimals=4)
        tensor(0.1667)
    """

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__("AveragePrecisionLoss", dim, regularization_strength, regularization, reduction)

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.average_precision_loss(scores, labels, self.dim, self.regularization_strength,
                                               self.regularization, self.reduction)


class RecallAtKLoss(_Permutahedron):
    """Module form of :func:`diffcomb.recall_at_k_loss`: ``forward(scores, labels)``.

    Example:
        >>> loss = diffcomb.RecallAtKLoss(k=1, regularization_strength=0.01)
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[0.0, 1.0, 1.0]])).round(decimals=4)
        tensor(1.)
    """

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0, reduction: str = "mean") -> None:
        super().__init__("RecallAtKLoss", dim, regularization_strength, reduction=reduction)
        self.k = check_int("RecallAtKLoss", "k", k, 1)

    def extra_repr(self) -> str:
        return f"k={self.k}, {super().extra_repr()}"

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.recall_at_k_loss(scores, labels, self.k, self.dim, self.regularization_strength,
                                         self.reduction)


class AUCLoss(_Permutahedron):
    """Module form of :func:`diffcomb.auc_loss`: ``forward(scores, labels)``.

    Example:
        >>> loss = diffcomb.AUCLoss(regularization_strength=0.01)
        >>> loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]])).round(decimals=4)
        tensor(0.5000)
    """

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__("AUCLoss", dim, regularization_strength, regularization, reduction)

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.auc_loss(scores, labels, self.dim, self.regularization_strength, self.regularization,
                                 self.reduction)


class FenchelYoungLoss(nn.Module):
    """Module form of :func:`diffcomb.fenchel_young_loss`: ``forward(theta, target)``.

    Example:
        >>> loss = diffcomb.FenchelYoungLoss()
        >>> loss(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[3.0, 1.0, 2.0]])).round(decimals=4)
        tensor(0.)
    """

    def __init__(self, polytope: str = "permutahedron", regularization: Optional[str] = None,
                 regularization_strength: float = 1.0, reduction: str = "mean", dim: int = -1, *,
                 max_iter: int = 1000, tol: Optional[float] = None) -> None:
        super().__init__()
        name = "FenchelYoungLoss"
        self.dim = check_module_dim(name, dim)
        self.polytope, self.regularization = _fenchel_young.check_options(name, polytope, regularization, dim)
        self.regularization_strength = check_strength(name, regularization_strength)
        self.reduction = check_reduction(name, reduction)
        self.max_iter = check_int(name, "max_iter", max_iter, 1)
        self.tol = check_tol(name, tol, None, allow_zero=False)

    def extra_repr(self) -> str:
        extra = f", max_iter={self.max_iter}, tol={self.tol}" if self.polytope == "birkhoff" else ""
        return (f"polytope={self.polytope!r}, regularization={self.regularization!r}, "
                f"regularization_strength={self.regularization_strength}, reduction={self.reduction!r}, "
                f"dim={self.dim}{extra}")

    def forward(self, theta: Tensor, target: Tensor) -> Tensor:
        return _fenchel_young.fenchel_young_loss(theta, target, self.polytope, self.regularization,
                                                 self.regularization_strength, self.reduction, self.dim,
                                                 max_iter=self.max_iter, tol=self.tol)


