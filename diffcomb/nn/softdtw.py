"""Soft-DTW losses and the expected alignment as modules.

The modules take series in the explicit layout (..., N, D) with at least one batch dimension:
x (B, N, D) and y (B, M, D), steps along dim -2 and features along dim -1. A 2-D input is
ambiguous (a batch of univariate series, or one multivariate series?) and raises: pass a batch of
univariate series (B, N) as ``x.unsqueeze(-1)``, one multivariate series (N, D) as
``x.unsqueeze(0)``, and channel-first data (B, C, T) as ``x.transpose(-1, -2)``.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .._checks import check_flag, check_reduction, message, reduce
from ..softdtw import functional as F
from ..softdtw._boundary import check_band, check_cost, check_gamma

__all__ = ["SharpSoftDTW", "SharpSoftDTWDivergence", "SoftDTW", "SoftDTWAlignment", "SoftDTWDivergence"]


def check_layout(fn: str, name: str, x: object) -> None:
    """A module's series must be (..., N, D) with a batch dimension: at least 3 dimensions."""
    if isinstance(x, Tensor) and x.dim() < 3:
        shape = tuple(x.shape)
        hint = ""
        if x.dim() == 2:
            a, b = shape
            hint = (f"; for a batch of {a} univariate series of length {b} pass {name}.unsqueeze(-1) (shape "
                    f"({a}, {b}, 1)), for one series of {a} steps with {b} features pass {name}.unsqueeze(0) "
                    f"(shape (1, {a}, {b}))")
        raise ValueError(message(fn, f"{name} must be a batch of series of shape (B, N, D) (steps along dim -2, "
                                     f"features along dim -1), got shape {shape}{hint}; channel-first (B, C, T) "
                                     f"data is {name}.transpose(-1, -2)"))


class _SeriesModule(nn.Module):
    """The hyper-parameters every soft-DTW module shares, checked once and shown in its repr."""

    def __init__(self, gamma: float, bandwidth: Optional[int], cost: str) -> None:
        super().__init__()
        name = type(self).__name__
        self.gamma = check_gamma(name, gamma)
        self.bandwidth = None if bandwidth is None else check_band(name, bandwidth)
        self.cost = check_cost(name, cost)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, bandwidth={self.bandwidth}, cost={self.cost!r}"

    def _check_layout(self, x: Tensor, y: Tensor) -> None:
        check_layout(type(self).__name__, "x", x)
        check_layout(type(self).__name__, "y", y)


class SoftDTW(_SeriesModule):
    """Module form of :func:`diffcomb.soft_dtw`: ``forward(x, y, x_lengths=None, y_lengths=None)``
    with series x (B, N, D) and y (B, M, D) (any further leading dimensions broadcast; see the
    module docstring for 2-D and channel-first data).

    ``normalize=True`` gives the soft-DTW divergence (:func:`diffcomb.soft_dtw_divergence`),
    which is 0 for identical series. ``reduction`` over the batch: "mean", "sum" or "none".

    Example:
        >>> loss = diffcomb.SoftDTW(gamma=1.0, reduction="none")
        >>> loss(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[0.0], [2.0]]]))
        tensor([0.6734])
    """

    _functions = (F.soft_dtw, F.soft_dtw_divergence)

    def __init__(self, gamma: float = 1.0, normalize: bool = False, bandwidth: Optional[int] = None,
                 cost: str = "sqeuclidean", reduction: str = "mean") -> None:
        super().__init__(gamma, bandwidth, cost)
        self.normalize = check_flag(type(self).__name__, "normalize", normalize)
        self.reduction = check_reduction(type(self).__name__, reduction)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, normalize={self.normalize}, bandwidth={self.bandwidth}, "
                f"cost={self.cost!r}, reduction={self.reduction!r}")

    def forward(self, x: Tensor, y: Tensor, x_lengths: Optional[Tensor] = None,
                y_lengths: Optional[Tensor] = None) -> Tensor:
        self._check_layout(x, y)
        fn = self._functions[1] if self.normalize else self._functions[0]
        values = fn(x, y, self.gamma, cost=self.cost, bandwidth=self.bandwidth, x_lengths=x_lengths,
                    y_lengths=y_lengths)
        return reduce(values, self.reduction)


class SoftDTWDivergence(SoftDTW):
    """:class:`SoftDTW` with ``normalize=True``: the soft-DTW divergence as a loss.

    Example:
        >>> loss = diffcomb.SoftDTWDivergence(gamma=1.0, reduction='none')
        >>> x = torch.tensor([[[0.0], [1.0]]])
        >>> loss(x, x), loss(x, torch.tensor([[[0.0], [2.0]]]))
        (tensor([0.]), tensor([0.9671]))
    """

    def __init__(self, gamma: float = 1.0, bandwidth: Optional[int] = None, cost: str = "sqeuclidean",
                 reduction: str = "mean") -> None:
        super().__init__(gamma, True, bandwidth, cost, reduction)


class SharpSoftDTW(SoftDTW):
    """Module form of :func:`diffcomb.sharp_soft_dtw` (``normalize=True``: the sharp divergence,
    :func:`diffcomb.sharp_soft_dtw_divergence`); arguments and layout as in :class:`SoftDTW`.
    Autodiff: first derivatives in every mode; second derivatives raise (a third derivative of
    soft-DTW).

    Example:
        >>> loss = diffcomb.SharpSoftDTW(gamma=1.0, reduction='none')
        >>> loss(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[0.0], [2.0]]]))
        tensor([1.3182])
    """

    _functions = (F.sharp_soft_dtw, F.sharp_soft_dtw_divergence)


class SharpSoftDTWDivergence(SharpSoftDTW):
    """:class:`SharpSoftDTW` with ``normalize=True``: the sharp soft-DTW divergence as a loss.

    Example:
        >>> loss = diffcomb.SharpSoftDTWDivergence(gamma=1.0, reduction='none')
        >>> x = torch.tensor([[[0.0], [1.0]]])
        >>> loss(x, x), loss(x, torch.tensor([[[0.0], [2.0]]]))
        (tensor([0.]), tensor([1.0356]))
    """

    def __init__(self, gamma: float = 1.0, bandwidth: Optional[int] = None, cost: str = "sqeuclidean",
                 reduction: str = "mean") -> None:
        super().__init__(gamma, True, bandwidth, cost, reduction)


class SoftDTWAlignment(_SeriesModule):
    """The expected alignment between series as a layer: ``forward(x, y, x_lengths=None,
    y_lengths=None)`` with x (B, N, D), y (B, M, D) returns (B, N, M), the
    :func:`diffcomb.soft_dtw_alignment` of their :func:`diffcomb.pairwise_cost` (a soft,
    monotone correspondence between the steps; entries in [0, 1], zero past the lengths and
    outside the band). Differentiable in x and y (through the soft-DTW Hessian) in every mode;
    a second derivative is a third derivative of soft-DTW and raises. Layout as in
    :class:`SoftDTW`.

    Example:
        >>> align = diffcomb.SoftDTWAlignment(gamma=1.0)
        >>> align(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[0.0], [2.0]]]))
        tensor([[[1.0000, 0.0132],
                 [0.2654, 1.0000]]])
    """

    def __init__(self, gamma: float = 1.0, bandwidth: Optional[int] = None, cost: str = "sqeuclidean") -> None:
        super().__init__(gamma, bandwidth, cost)

    def forward(self, x: Tensor, y: Tensor, x_lengths: Optional[Tensor] = None,
                y_lengths: Optional[Tensor] = None) -> Tensor:
        self._check_layout(x, y)
        return F._series_alignment("SoftDTWAlignment", x, y, self.gamma, self.cost, self.bandwidth, x_lengths,
                                   y_lengths)
