"""The public soft-DTW values (SPEC 3.2-3.9): soft-DTW of cost matrices and of series, its expected
alignment, the sharp and mean-cost variants and the divergences built on each. All of them are
batched (leading dimensions) and differentiable; the work happens in the custom ops of _ops.py."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .._autodiff import lean_ready_pair
from .._checks import as_float, check_same_device
from . import _lean
from ._ops import ALIGNMENT, SERIES, SHARP, SOFT_DTW
from ._boundary import (COSTS, check_cost, check_pair, check_series, cost_batch, self_pair, series_batch,
                        zero_padding)
from .costs import pairwise

__all__ = [
    "mean_cost",
    "mean_cost_divergence",
    "mean_cost_from_cost",
    "sharp_soft_dtw",
    "sharp_soft_dtw_divergence",
    "sharp_soft_dtw_from_cost",
    "soft_dtw",
    "soft_dtw_alignment",
    "soft_dtw_divergence",
    "soft_dtw_from_cost",
]


# ---------------------------------------------------------------------------
# The functions behind the public ones; ``fn`` names the public function in errors.


def _sdtw_from_cost(fn: str, C: Tensor, gamma: float, bandwidth: Optional[int], x_lengths: Optional[Tensor],
                    y_lengths: Optional[Tensor]) -> Tensor:
    b = cost_batch(fn, C, gamma, bandwidth, x_lengths, y_lengths)
    alignment = b.rows.requires_grad and torch.is_grad_enabled()
    value = SOFT_DTW(b.rows, b.lengths_x, b.lengths_y, b.gamma, b.band, alignment)[0]
    return b.restore(value, C.dtype)


def _alignment_from_cost(fn: str, C: Tensor, gamma: float, bandwidth: Optional[int], x_lengths: Optional[Tensor],
                         y_lengths: Optional[Tensor]) -> Tensor:
    b = cost_batch(fn, C, gamma, bandwidth, x_lengths, y_lengths)
    E = ALIGNMENT(b.rows, b.lengths_x, b.lengths_y, b.gamma, b.band)
    return E.reshape(C.shape).to(C.dtype)


def _sharp_from_cost(fn: str, C: Tensor, gamma: float, bandwidth: Optional[int], x_lengths: Optional[Tensor],
                     y_lengths: Optional[Tensor]) -> Tensor:
    b = cost_batch(fn, C, gamma, bandwidth, x_lengths, y_lengths)
    value = SHARP(b.rows, b.lengths_x, b.lengths_y, b.gamma, b.band)[0]
    return b.restore(value, C.dtype)


def _mean_from_cost(fn: str, C: Tensor, bandwidth: Optional[int], x_lengths: Optional[Tensor],
                    y_lengths: Optional[Tensor]) -> Tensor:
    b = cost_batch(fn, C, 1.0, bandwidth, x_lengths, y_lengths)
    # One pass on zero costs gives both the reachability (the value) and E_bar (its alignment).
    reachable, E_bar = SOFT_DTW(torch.zeros_like(b.rows), b.lengths_x, b.lengths_y, 1.0, b.band, True)
    E_bar = E_bar.reshape(C.shape).to(C.dtype)
    # Padding and out-of-band cells (E_bar = 0) may hold anything, NaN included; a non-finite
    # used cell makes the pair NaN (SPEC 0).
    used = E_bar != 0
    value = torch.where(used, E_bar * C, 0.0).sum((-2, -1))
    value = torch.where((used & ~torch.isfinite(C)).any(-1).any(-1), torch.full_like(value, math.nan), value)
    return torch.where(torch.isinf(reachable.reshape(b.shape)), torch.full_like(value, math.inf), value)


def _soft_dtw_series(fn: str, x: Tensor, y: Tensor, gamma: float, cost: str, bandwidth: Optional[int],
                     x_lengths: Optional[Tensor], y_lengths: Optional[Tensor]) -> Tensor:
    """soft_dtw on series (on one device, made float by the caller): the in-kernel cost path (no
    (B, N, M) matrix) on CPU and CUDA; meta tensors go through the cost matrix (shapes only)."""
    if isinstance(x, Tensor) and x.device.type == "meta":
        check_series(fn, x, y)
        return _sdtw_from_cost(fn, pairwise(x, y, check_cost(fn, cost)), gamma, bandwidth, x_lengths, y_lengths)
    b = series_batch(fn, x, y, gamma, cost, bandwidth, x_lengths, y_lengths)
    grad = torch.is_grad_enabled()
    value = SERIES(b.x, b.y, b.lengths_x, b.lengths_y, b.gamma, b.band, COSTS.index(cost),
                   grad and b.x.requires_grad, grad and b.y.requires_grad)[0]
    return b.restore(value, x.dtype)


def _on_series(fn: str, from_cost: Callable[..., Tensor], x: Tensor, y: Tensor, cost: str, **kwargs) -> Tensor:
    """A cost-matrix function from_cost(fn, C, ...) applied to the pairwise costs of series x and y
    (already on one device and made float by the public function)."""
    check_pair(fn, x, y, kwargs.get("x_lengths"), kwargs.get("y_lengths"))
    check_cost(fn, cost)
    x = zero_padding(x, kwargs.get("x_lengths"))
    y = zero_padding(y, kwargs.get("y_lengths"))
    return from_cost(fn, pairwise(x, y, cost), **kwargs)


def _divergence(fn: str, value: Callable[..., Tensor], x: Tensor, y: Tensor, x_lengths: Optional[Tensor],
                y_lengths: Optional[Tensor]) -> Tensor:
    """f(x, y) - 1/2 f(x, x) - 1/2 f(y, y) for a series function value(a, b, a_lengths, b_lengths)
    that reports errors as fn (SPEC 3.9); gradients follow by autograd through the three evaluations.
    The lengths are checked against the batch shape of (x, y) first, then each self term runs on
    the batch shape of its series and lengths."""
    check_same_device(fn, x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    x, y = as_float(x), as_float(y)
    check_pair(fn, x, y, x_lengths, y_lengths)
    xx, yy = self_pair(x, x_lengths), self_pair(y, y_lengths)
    return value(x, y, x_lengths, y_lengths) - 0.5 * (value(xx, xx, x_lengths, x_lengths)
                                                       + value(yy, yy, y_lengths, y_lengths))


def _series_alignment(fn: str, x: Tensor, y: Tensor, gamma: float, cost: str, bandwidth: Optional[int],
                      x_lengths: Optional[Tensor], y_lengths: Optional[Tensor]) -> Tensor:
    """The expected alignment (..., N, M) of the pairwise costs of series x and y."""
    check_same_device(fn, x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    return _on_series(fn, _alignment_from_cost, as_float(x), as_float(y), cost, gamma=gamma, bandwidth=bandwidth,
                      x_lengths=x_lengths, y_lengths=y_lengths)


# ---------------------------------------------------------------------------
# Public functions.


def soft_dtw_from_cost(
    C: Tensor,
    gamma: float = 1.0,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Soft-DTW value of cost matrices ``C``, differentiable in ``C``.

    .. math::
        \mathrm{sdtw}_\gamma(C) = \min{}^{\gamma}_{A \in \mathcal{A}(N, M)} \langle A, C \rangle,
        \qquad \min{}^{\gamma}(a) = -\gamma \log \sum_i e^{-a_i / \gamma}

    over the monotone alignments from (1, 1) to (N, M) with steps right, down and diagonal.

    Args:
        C (Tensor[..., N, M]): costs; float16/bfloat16 are computed in float32.
        gamma (float): smoothing, >= 0; 0 gives the hard DTW. Default 1.0.
        bandwidth (int, optional): Sakoe-Chiba band: only cells with ``|i - j| <= bandwidth``;
            any bandwidth >= max(N, M) (``sys.maxsize`` included) excludes nothing.
        x_lengths (Tensor[...] of ints, optional): used rows per pair, in [1, N] (padding ignored).
            Outside that range: a ValueError, or under ``torch.compile`` (where checking would
            synchronize with the device) the length clamped into it.
        y_lengths (Tensor[...] of ints, optional): used columns per pair, in [1, M]; likewise.

    Returns:
        Tensor[...]: the soft-DTW values, dtype of ``C``.

    Note:
        O(N M) time per pair (O((N + M) b) with a band b), computed in double precision; when
        ``C`` requires a gradient, the forward also computes it (two values per cell of
        scratch, no transition weights kept). The gradient
        with respect to ``C`` is the expected alignment. A band narrower than ``|N - M|``
        leaves (N, M) unreachable: the value is +inf and the gradient 0. A pair whose used
        costs contain NaN or +/-inf gives NaN; padding beyond the lengths and cells outside the
        band are never read, so they may hold anything. Finite costs whose sums overflow double
        (magnitudes near 1e308) give an infinite value and a NaN gradient. The gradient is
        a probability flow for any scale of the costs relative to ``gamma`` (entries in [0, 1]);
        when ``|C| / gamma`` exceeds about 1e13 its entries carry the rounding of the soft-DTW
        table (absolute error about ``ulp(value) / gamma``), as for any float64 evaluation.
        CPU and CUDA.

    Example:
        >>> diffcomb.soft_dtw_from_cost(torch.tensor([[0.0, 4.0], [1.0, 1.0]]))
        tensor(0.6734)

    References:
        M. Cuturi, M. Blondel. Soft-DTW: a Differentiable Loss Function for Time-Series.
        ICML 2017. arXiv:1703.01353
    """
    check_same_device("soft_dtw_from_cost", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    return _sdtw_from_cost("soft_dtw_from_cost", C, gamma, bandwidth, x_lengths, y_lengths)


def soft_dtw_alignment(
    C: Tensor,
    gamma: float = 1.0,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Expected alignment :math:`E = \nabla_C \mathrm{sdtw}_\gamma(C)` under the Gibbs distribution
    :math:`p(A) \propto e^{-\langle A, C \rangle / \gamma}` over alignments.

    Args:
        C (Tensor[..., N, M]): costs.
        gamma, bandwidth, x_lengths, y_lengths: as in :func:`soft_dtw_from_cost`.

    Returns:
        Tensor[..., N, M]: entries in [0, 1], E[0, 0] = E[N-1, M-1] = 1 (zero outside the used
        lengths and the band). Differentiable in ``C``: the backward is the Hessian-vector
        product of soft-DTW (SPEC 3.8), O(N M).

    Note:
        Autodiff: first derivatives in every mode (reverse, forward, vmap); a second derivative
        (double backward, Hessian) is a third derivative of soft-DTW and raises
        NotImplementedError.

    Example:
        >>> diffcomb.soft_dtw_alignment(torch.tensor([[0.0, 4.0], [1.0, 1.0]]))
        tensor([[1.0000, 0.0132],
                [0.2654, 1.0000]])
    """
    check_same_device("soft_dtw_alignment", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    return _alignment_from_cost("soft_dtw_alignment", C, gamma, bandwidth, x_lengths, y_lengths)


def soft_dtw(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Soft-DTW between series ``x`` and ``y``: the value of :func:`soft_dtw_from_cost` on the costs
    between their steps, computed inside the kernel (no ``(N, M)`` cost matrix is formed).

    Args:
        x (Tensor[..., N, D]): first series (batch dimensions broadcast with ``y``'s): steps along
            dim -2, features along dim -1; a 2-D x is one series of N steps. Integer and bool
            series are computed in torch's default float dtype.
        y (Tensor[..., M, D]): second series, same D.
        gamma (float): smoothing >= 0 (0: hard DTW). Default 1.0.
        cost (str): ``"sqeuclidean"`` (default), ``"half_sqeuclidean"`` or ``"log_augmented"``.
        bandwidth, x_lengths, y_lengths: as in :func:`soft_dtw_from_cost`.

    Returns:
        Tensor[...]: the values; differentiable in ``x`` and ``y``.

    Note:
        Layouts: a batch of univariate series (B, N) is ``x.unsqueeze(-1)`` (B, N, 1);
        channel-first data (B, C, T) is ``x.transpose(-1, -2)`` (B, T, C). The modules
        (:class:`diffcomb.SoftDTW` and the others) require the explicit (..., N, D) layout
        with at least one batch dimension.

    Example:
        >>> diffcomb.soft_dtw(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]))
        tensor(0.6734)
    """
    if (bandwidth is None and x_lengths is None and y_lengths is None and lean_ready_pair(x, y)
            and _lean.common(x, y, gamma, cost)):
        return _lean.soft_dtw(x, y, float(gamma), cost)
    check_same_device("soft_dtw", x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    return _soft_dtw_series("soft_dtw", as_float(x), as_float(y), gamma, cost, bandwidth, x_lengths, y_lengths)


def soft_dtw_divergence(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Soft-DTW divergence (Blondel, Mensch, Vert 2021):

    .. math::
        D_\gamma(x, y) = \mathrm{sdtw}_\gamma(x, y) - \tfrac12 \mathrm{sdtw}_\gamma(x, x)
        - \tfrac12 \mathrm{sdtw}_\gamma(y, y)

    Args:
        x (Tensor[..., N, D]), y (Tensor[..., M, D]): the series (integer and bool series are
            computed in torch's default float dtype).
        gamma, cost, bandwidth, x_lengths, y_lengths: as in :func:`soft_dtw`; the lengths may
            broadcast over batch dimensions where one series does not (each self term then
            runs on its series' and lengths' batch shape).

    Returns:
        Tensor[...]: the divergences; 0 when x equals y, symmetric in x and y; differentiable.

    Note:
        Three soft-DTW evaluations. Non-negative for the ``"log_augmented"`` cost; with the
        squared Euclidean cost it is typically, but not provably, non-negative.

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> y = torch.tensor([[0.0], [2.0]])
        >>> diffcomb.soft_dtw_divergence(x, x), diffcomb.soft_dtw_divergence(x, y)
        (tensor(0.), tensor(0.9671))

    References:
        M. Blondel, A. Mensch, J.-P. Vert. Differentiable Divergences Between Time Series.
        AISTATS 2021. arXiv:2010.08354
    """
    fn = "soft_dtw_divergence"
    return _divergence(fn, lambda a, b, la, lb: _soft_dtw_series(fn, a, b, gamma, cost, bandwidth, la, lb),
                       x, y, x_lengths, y_lengths)


def sharp_soft_dtw_from_cost(
    C: Tensor,
    gamma: float = 1.0,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Sharp soft-DTW: the cost of the expected alignment, :math:`\langle E_\gamma(C), C \rangle`.

    Args:
        C (Tensor[..., N, M]): costs. gamma, bandwidth, x_lengths, y_lengths: as in
            :func:`soft_dtw_from_cost`.

    Returns:
        Tensor[...]: the values, >= the soft-DTW value; differentiable in ``C`` with the exact
        gradient :math:`E + H C` (H the soft-DTW Hessian, by the forward-on-backward pass of
        SPEC 3.8).

    Note:
        Tends to the DTW as :math:`\gamma \to 0` and to the mean alignment cost as
        :math:`\gamma \to \infty`. Three O(N M) passes. An unreachable end (band narrower than
        ``|N - M|``) gives +inf and a zero gradient; finite costs whose sums overflow double
        give NaN (value and gradient). Autodiff: first derivatives in every mode; a second
        derivative needs the third derivative of soft-DTW and raises NotImplementedError (also
        for :func:`sharp_soft_dtw` and :func:`sharp_soft_dtw_divergence`).

    Example:
        >>> C = torch.tensor([[0.0, 4.0], [1.0, 1.0]])
        >>> diffcomb.sharp_soft_dtw_from_cost(C, gamma=1.0)
        tensor(1.3182)
        >>> diffcomb.sharp_soft_dtw_from_cost(C, gamma=0.01)
        tensor(1.)

    References:
        M. Blondel, A. Mensch, J.-P. Vert. Differentiable Divergences Between Time Series.
        AISTATS 2021. arXiv:2010.08354
    """
    check_same_device("sharp_soft_dtw_from_cost", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    return _sharp_from_cost("sharp_soft_dtw_from_cost", C, gamma, bandwidth, x_lengths, y_lengths)


def sharp_soft_dtw(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    """Sharp soft-DTW between series: :func:`sharp_soft_dtw_from_cost` of :func:`pairwise_cost`
    (arguments as in :func:`soft_dtw`; integer and bool series are computed in torch's default
    float dtype). Autodiff: first derivatives in every mode; second derivatives raise.

    Example:
        >>> diffcomb.sharp_soft_dtw(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]))
        tensor(1.3182)
    """
    check_same_device("sharp_soft_dtw", x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    return _on_series("sharp_soft_dtw", _sharp_from_cost, as_float(x), as_float(y), cost, gamma=gamma,
                      bandwidth=bandwidth, x_lengths=x_lengths, y_lengths=y_lengths)


def sharp_soft_dtw_divergence(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Sharp soft-DTW divergence: :math:`s(x, y) - \tfrac12 s(x, x) - \tfrac12 s(y, y)` with
    :math:`s` = :func:`sharp_soft_dtw` (arguments as in :func:`soft_dtw_divergence`); 0 when x
    equals y. Autodiff: first derivatives in every mode; second derivatives raise.

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> y = torch.tensor([[0.0], [2.0]])
        >>> diffcomb.sharp_soft_dtw_divergence(x, x), diffcomb.sharp_soft_dtw_divergence(x, y)
        (tensor(0.), tensor(1.0356))
    """
    fn = "sharp_soft_dtw_divergence"
    return _divergence(fn, lambda a, b, la, lb: _on_series(fn, _sharp_from_cost, a, b, cost, gamma=gamma,
                                                           bandwidth=bandwidth, x_lengths=la, y_lengths=lb),
                       x, y, x_lengths, y_lengths)


def mean_cost_from_cost(
    C: Tensor,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Mean alignment cost :math:`\langle \bar E, C \rangle`, :math:`\bar E` the average of all
    alignments (in the band, within the lengths): the :math:`\gamma \to \infty` limit of
    :func:`sharp_soft_dtw_from_cost`. Linear in ``C`` (gradient :math:`\bar E`).

    Note:
        With zero costs the soft-DTW table is :math:`-\gamma \log N` (N the path counts), so its
        transition weights are the counting weights of SPEC 3.9 and :math:`\bar E` is the
        alignment of a zero cost matrix, computed in the log domain (no overflow of the path
        counts). An unreachable end gives +inf and a zero gradient.

    Example:
        >>> diffcomb.mean_cost_from_cost(torch.tensor([[0.0, 4.0], [1.0, 1.0]]))
        tensor(2.6667)
    """
    check_same_device("mean_cost_from_cost", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    return _mean_from_cost("mean_cost_from_cost", C, bandwidth, x_lengths, y_lengths)


def mean_cost(
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    """:func:`mean_cost_from_cost` of :func:`pairwise_cost` (arguments as in :func:`soft_dtw`;
    integer and bool series are computed in torch's default float dtype).

    Example:
        >>> diffcomb.mean_cost(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]))
        tensor(2.6667)
    """
    check_same_device("mean_cost", x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    return _on_series("mean_cost", _mean_from_cost, as_float(x), as_float(y), cost, bandwidth=bandwidth,
                      x_lengths=x_lengths, y_lengths=y_lengths)


def mean_cost_divergence(
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r""":math:`m(x, y) - \tfrac12 m(x, x) - \tfrac12 m(y, y)` with :math:`m` = :func:`mean_cost`
    (arguments as in :func:`soft_dtw_divergence`).

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> y = torch.tensor([[0.0], [2.0]])
        >>> diffcomb.mean_cost_divergence(x, x), diffcomb.mean_cost_divergence(x, y)
        (tensor(0.), tensor(1.))
    """
    fn = "mean_cost_divergence"
    return _divergence(fn, lambda a, b, la, lb: _on_series(fn, _mean_from_cost, a, b, cost, bandwidth=bandwidth,
                                                           x_lengths=la, y_lengths=lb), x, y, x_lengths, y_lengths)
