"""Ranking-metric losses (diffcomb.ranking) and Fenchel-Young losses (diffcomb.fenchel_young):
forward(scores, target) / forward(theta, target)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .._checks import check_reduction

from .. import fenchel_young as _fenchel_young
from .. import ranking as _ranking
from ..isotonic import _check_regularization, _check_strength

__all__ = ["AUCLoss", "AveragePrecisionLoss", "FenchelYoungLoss", "NDCGLoss", "RecallAtKLoss"]


class _RankingMetricLoss(nn.Module):
    def _set_common(self, name: str, dim: int, regularization_strength: float, reduction: str,
                    regularization: Optional[str] = None) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"diffcomb.{name}: dim must be an int, got {type(dim).__name__}")
        self.dim = dim
        self.regularization_strength = _check_strength(name, regularization_strength)
        if regularization is not None:
            _check_regularization(name, regularization)
            self.regularization = regularization
        self.reduction = check_reduction(name, reduction)

    def _common_repr(self) -> str:
        reg = f", regularization={self.regularization!r}" if hasattr(self, "regularization") else ""
        return (f"dim={self.dim}, regularization_strength={self.regularization_strength}{reg}, "
                f"reduction={self.reduction!r}")


class NDCGLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.ndcg_loss`: ``forward(scores, relevance)``."""

    def __init__(self, k: Optional[int] = None, dim: int = -1, regularization_strength: float = 1.0,
                 regularization: str = "l2", gain: str = "exponential", reduction: str = "mean") -> None:
        super().__init__()
        name = "NDCGLoss"
        self.k = _ranking._check_k(name, k, optional=True)
        if gain not in _ranking._GAINS:
            raise ValueError(f"diffcomb.{name}: gain must be 'exponential' or 'linear', got {gain!r}")
        self.gain = gain
        self._set_common(name, dim, regularization_strength, reduction, regularization)

    def extra_repr(self) -> str:
        return f"k={self.k}, gain={self.gain!r}, {self._common_repr()}"

    def forward(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return _ranking.ndcg_loss(scores, relevance, self.k, self.dim, self.regularization_strength,
                                  self.regularization, self.gain, self.reduction)


class AveragePrecisionLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.average_precision_loss`: ``forward(scores, labels)``."""

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__()
        self._set_common("AveragePrecisionLoss", dim, regularization_strength, reduction, regularization)

    def extra_repr(self) -> str:
        return self._common_repr()

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.average_precision_loss(scores, labels, self.dim, self.regularization_strength,
                                               self.regularization, self.reduction)


class RecallAtKLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.recall_at_k_loss`: ``forward(scores, labels)``."""

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.k = _ranking._check_k("RecallAtKLoss", k, optional=False)
        self._set_common("RecallAtKLoss", dim, regularization_strength, reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, {self._common_repr()}"

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.recall_at_k_loss(scores, labels, self.k, self.dim, self.regularization_strength,
                                         self.reduction)


class AUCLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.auc_loss`: ``forward(scores, labels)``."""

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__()
        self._set_common("AUCLoss", dim, regularization_strength, reduction, regularization)

    def extra_repr(self) -> str:
        return self._common_repr()

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.auc_loss(scores, labels, self.dim, self.regularization_strength, self.regularization,
                                 self.reduction)


class FenchelYoungLoss(nn.Module):
    """Module form of :func:`diffcomb.fenchel_young_loss`: ``forward(theta, target)``."""

    def __init__(self, polytope: str = "permutahedron", regularization: Optional[str] = None,
                 regularization_strength: float = 1.0, reduction: str = "mean", dim: int = -1, *,
                 max_iter: int = 1000, tol: Optional[float] = None) -> None:
        super().__init__()
        name = "FenchelYoungLoss"
        if polytope not in _fenchel_young._POLYTOPES:
            raise ValueError(f"diffcomb.{name}: polytope must be 'permutahedron' or 'birkhoff', got {polytope!r}")
        if polytope == "permutahedron":
            regularization = "l2" if regularization is None else regularization
            _check_regularization(name, regularization)
        elif regularization not in (None, "kl"):
            raise ValueError(f"diffcomb.{name}: the Birkhoff polytope supports regularization='kl' only, got "
                             f"{regularization!r}")
        else:
            regularization = "kl"
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"diffcomb.{name}: dim must be an int, got {type(dim).__name__}")
        if polytope == "birkhoff" and dim != -1:
            raise ValueError(f"diffcomb.{name}: polytope='birkhoff' uses the last two dimensions; dim must be -1, "
                             f"got {dim}")
        self.polytope, self.regularization, self.dim = polytope, regularization, dim
        self.regularization_strength = _check_strength(name, regularization_strength)
        self.reduction = check_reduction(name, reduction)
        self.max_iter = _fenchel_young._check_positive_int(name, "max_iter", max_iter)
        self.tol = _fenchel_young._check_tol(name, tol)

    def extra_repr(self) -> str:
        extra = f", max_iter={self.max_iter}, tol={self.tol}" if self.polytope == "birkhoff" else ""
        return (f"polytope={self.polytope!r}, regularization={self.regularization!r}, "
                f"regularization_strength={self.regularization_strength}, reduction={self.reduction!r}, "
                f"dim={self.dim}{extra}")

    def forward(self, theta: Tensor, target: Tensor) -> Tensor:
        return _fenchel_young.fenchel_young_loss(theta, target, self.polytope, self.regularization,
                                                 self.regularization_strength, self.reduction, self.dim,
                                                 max_iter=self.max_iter, tol=self.tol)


