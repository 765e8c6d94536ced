"""Soft-DTW losses as modules."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .._checks import check_flag, check_reduction, reduce

from .. import softdtw

__all__ = ["SharpSoftDTW", "SoftDTW", "SoftDTWDivergence"]


class SoftDTW(nn.Module):
    """Module form of :func:`diffcomb.soft_dtw`: ``forward(x, y, x_lengths=None, y_lengths=None)``.

    ``normalize=True`` gives the soft-DTW divergence (:func:`diffcomb.soft_dtw_divergence`),
    which is 0 for identical series. ``reduction`` over the batch: "mean", "sum" or "none".
    """

    def __init__(self, gamma: float = 1.0, normalize: bool = False, bandwidth: Optional[int] = None,
                 cost: str = "sqeuclidean", reduction: str = "mean") -> None:
        super().__init__()
        self.gamma = softdtw._check_gamma("SoftDTW", gamma)
        self.bandwidth = None if bandwidth is None else softdtw._check_band("SoftDTW", bandwidth)
        if cost not in softdtw._COSTS:
            raise ValueError(f"diffcomb.SoftDTW: cost must be one of {softdtw._COSTS}, got {cost!r}")
        self.cost = cost
        self.normalize = check_flag("SoftDTW", "normalize", normalize)
        self.reduction = check_reduction("SoftDTW", reduction)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, normalize={self.normalize}, bandwidth={self.bandwidth}, "
                f"cost={self.cost!r}, reduction={self.reduction!r}")

    _functions = (softdtw.soft_dtw, softdtw.soft_dtw_divergence)

    def forward(self, x: Tensor, y: Tensor, x_lengths: Optional[Tensor] = None,
                y_lengths: Optional[Tensor] = None) -> Tensor:
        fn = self._functions[1] if self.normalize else self._functions[0]
        values = fn(x, y, self.gamma, cost=self.cost, bandwidth=self.bandwidth, x_lengths=x_lengths,
                    y_lengths=y_lengths)
        return reduce(values, self.reduction)


class SoftDTWDivergence(SoftDTW):
    """:class:`SoftDTW` with ``normalize=True``: the soft-DTW divergence as a loss."""

    def __init__(self, gamma: float = 1.0, bandwidth: Optional[int] = None, cost: str = "sqeuclidean",
                 reduction: str = "mean") -> None:
        super().__init__(gamma, True, bandwidth, cost, reduction)


class SharpSoftDTW(SoftDTW):
    """Module form of :func:`diffcomb.sharp_soft_dtw` (``normalize=True``: the sharp divergence,
    :func:`diffcomb.sharp_soft_dtw_divergence`)."""

    _functions = (softdtw.sharp_soft_dtw, softdtw.sharp_soft_dtw_divergence)
