"""The soft-DTW barycenter (SPEC 3.10): a series minimizing a weighted sum of soft-DTW values (or
divergences) to given series, by L-BFGS on the batched soft-DTW of functional.py.

It is a function, not an nn.Module: it runs an optimization to convergence and returns a tensor
without a gradient, so it has no place inside a model's forward; a model that wants a learnable
template series holds an nn.Parameter and trains it with :class:`diffcomb.SoftDTW` instead.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import as_float, check_flag, check_float, check_int, check_same_device, check_tensor, message
from ._boundary import check_band, check_cost, check_gamma, check_lengths
from .functional import _divergence, _soft_dtw_series

__all__ = ["soft_dtw_barycenter"]


def objective(fn: str, X: Tensor, Y: Tensor, w: Tensor, gamma: float, cost: str, bandwidth: Optional[int],
              y_lengths: Optional[Tensor], divergence: bool) -> Tensor:
    r"""The barycenter's objective :math:`\sum_k w_k f(X, Y_k)` (arguments checked by the caller): one
    batched soft-DTW (or divergence) call over the K pairs, differentiable in X, Y and w in every
    autodiff mode (the soft-DTW ops' own)."""

    def values(a: Tensor, b: Tensor, la: Optional[Tensor], lb: Optional[Tensor]) -> Tensor:
        return _soft_dtw_series(fn, a, b, gamma, cost, bandwidth, la, lb)

    Xs = X.expand(Y.shape[0], *X.shape)
    f = _divergence(fn, values, Xs, Y, None, y_lengths) if divergence else values(Xs, Y, None, y_lengths)
    return (w * f).sum()


def soft_dtw_barycenter(
    Y: Tensor,
    gamma: float = 1.0,
    *,
    weights: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
    init: Optional[Tensor] = None,
    divergence: bool = False,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> Tensor:
    r"""Soft-DTW barycenter of series ``Y``: the ``X`` minimizing :math:`\sum_k w_k f(X, Y_k)`
    with :math:`f` = :func:`soft_dtw` (or :func:`soft_dtw_divergence`), by L-BFGS.

    Args:
        Y (Tensor[K, M, D]): the series (padded to a common length M; see ``y_lengths``), K >= 1,
            M >= 1. Integer and bool tensors are computed in torch's default float dtype.
        gamma (float): soft-DTW smoothing. Default 1.0.
        weights (Tensor[K], optional): non-negative weights; default uniform 1/K.
        y_lengths (Tensor[K] of ints, optional): used length of each series.
        init (Tensor[L, D], optional): starting point; default the Euclidean mean of ``Y``
            (which requires equal lengths).
        divergence (bool): minimize the soft-DTW divergence instead (then ``Y_k`` itself is a
            stationary point for K = 1).
        cost, bandwidth: as in :func:`soft_dtw`.
        max_iter (int): L-BFGS iterations, >= 1. tol (float): its gradient tolerance, >= 0.

    Returns:
        Tensor[L, D]: the barycenter (no gradient), on the device and in the float dtype of ``Y``.

    Note:
        All K pairs go through one batched soft-DTW call per evaluation. The weights' values are
        not checked (that would synchronize with the device): negative weights make the objective
        unbounded below.

    Example:
        >>> Y = torch.tensor([[[0.0], [1.0], [2.0]], [[0.0], [2.0], [4.0]]])
        >>> diffcomb.soft_dtw_barycenter(Y, gamma=0.1).round(decimals=2)
        tensor([[0.0000],
                [1.5200],
                [3.0000]])
    """
    fn = "soft_dtw_barycenter"
    check_same_device(fn, Y=Y, weights=weights, y_lengths=y_lengths, init=init)
    divergence = check_flag(fn, "divergence", divergence)
    Y = check_tensor(fn, "Y", as_float(Y), 3)
    if Y.dim() != 3 or Y.shape[0] == 0 or Y.shape[1] == 0:
        raise ValueError(message(fn, f"Y must be (K, M, D) with K >= 1 series of M >= 1 steps, got shape "
                                     f"{tuple(Y.shape)}"))
    K, M, D = Y.shape
    gamma = check_gamma(fn, gamma)
    check_cost(fn, cost)
    check_band(fn, bandwidth)
    check_lengths(fn, "y_lengths", y_lengths, torch.Size([K]), M, Y.device)
    check_int(fn, "max_iter", max_iter, 1)
    tol = check_float(fn, "tol", tol, allow_minimum=True)
    if init is None:
        if y_lengths is not None:
            raise ValueError(message(fn, "pass init when the series have different lengths"))
        init = Y.mean(0)
    else:
        init = check_tensor(fn, "init", as_float(init), 2)
        if init.dim() != 2 or init.shape[0] == 0 or init.shape[1] != D:
            raise ValueError(message(fn, f"init must be (L, {D}) with L >= 1 (the feature size of Y), got shape "
                                         f"{tuple(init.shape)}"))
        init = init.to(Y.dtype)
    if weights is None:
        w = torch.full((K,), 1.0 / K, dtype=Y.dtype, device=Y.device)
    else:
        w = as_float(weights)
        if not isinstance(w, Tensor) or not w.is_floating_point() or w.shape != (K,):
            raise ValueError(message(fn, f"weights must be a real tensor of shape ({K},), got "
                                         f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}"))
        w = w.to(Y.dtype)
    X = init.detach().clone().requires_grad_()
    optimizer = torch.optim.LBFGS([X], max_iter=max_iter, tolerance_grad=tol, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = objective(fn, X, Y, w, gamma, cost, bandwidth, y_lengths, divergence)
        loss.backward()
        return loss

    optimizer.step(closure)
    return X.detach()
