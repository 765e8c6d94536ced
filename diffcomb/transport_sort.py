"""Soft sort, rank and quantiles through entropic optimal transport to sorted targets (SPEC.md
section 4.5): :func:`sinkhorn_sort`, :func:`sinkhorn_rank`, :func:`sinkhorn_quantile`. Each moves the
sorted axis last, flattens the batch, and solves one transport per row with the family's custom op
(diffcomb._sinkhorn_ops).

References:
    M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
    NeurIPS 2019. arXiv:1905.11885
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import as_float, check_choice, check_dim, check_flag, check_float, check_int, check_tensor, check_tol
from ._checks import compute_dtype, message
from ._sinkhorn_ops import BACKWARDS, default_tol, solve

__all__ = ["sinkhorn_quantile", "sinkhorn_rank", "sinkhorn_sort"]

SQUASHES = ("sigmoid", "none")
_SQUASH_STD_OFFSET = 1e-10  # SPEC 4.5


def _squash(x: Tensor, kind: str) -> Tensor:
    """sigmoid((x - mean) / (std + 1e-10)) along the last axis (population std), or x."""
    if kind == "none":
        return x
    mu = x.mean(-1, keepdim=True)
    d = x - mu
    # The std as scale * std(d / scale), scale = max |d| (a constant for autograd: the std is
    # homogeneous in it), so that squaring cannot overflow for large finite x.
    scale = d.detach().abs().amax(-1, keepdim=True) if d.shape[-1] else d.new_zeros((*d.shape[:-1], 1))
    positive = scale > 0
    scale = torch.where(positive, scale, torch.ones_like(scale))
    var = (d / scale).square().mean(-1, keepdim=True)
    # sqrt with a zero gradient at var = 0 (the std term multiplies x - mean = 0 there).
    sd = torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt() * scale, torch.zeros_like(var))
    return torch.sigmoid(d / (sd + _SQUASH_STD_OFFSET))


def _sort_rows(fn: str, x: Tensor, dim: int) -> tuple[Tensor, torch.Size, int]:
    """x (a float tensor: as_float first) as contiguous rows (B, n) of the compute dtype, with dim last."""
    check_tensor(fn, "x", x, 1)
    dim = check_dim(fn, x, dim)
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    n = moved.shape[-1]
    rows = moved.reshape(math.prod(lead), n).to(compute_dtype(x.dtype))
    return rows, lead, dim


def _plan_to_sorted_targets(fn: str, x: object, dim: int, epsilon: float, descending: bool,
                            num_targets: Optional[int], squash: str, max_iter: int, tol: Optional[float],
                            backward: str):
    """What sinkhorn_rank and sinkhorn_sort share: x as a float tensor (as_float), its rows (B, n),
    its lead shape and dim, the target weights b (1, m) and the plan P (B, n, m) to m sorted
    targets; descending is checked."""
    x = as_float(x)
    check_flag(fn, "descending", descending)
    rows, lead, dim = _sort_rows(fn, x, dim)
    eps = check_float(fn, "epsilon", epsilon)
    n = rows.shape[-1]
    y, b = _targets(n, _num_targets(fn, num_targets, n), rows)
    return x, rows, lead, dim, b, _transport_to_targets(fn, rows, y, b, eps, squash, max_iter, tol, backward)


def _transport_to_targets(fn: str, rows: Tensor, y: Tensor, b: Tensor, eps: float, squash: str, max_iter: int,
                          tol: Optional[float], backward: str) -> Tensor:
    """P (B, n, m) from x~ = squash(x) (B, n) to targets y (m) with weights b (B or 1, m), a = 1/n."""
    check_choice(fn, "squash", squash, SQUASHES)
    backward = check_choice(fn, "backward", backward, BACKWARDS)
    max_iter = check_int(fn, "max_iter", max_iter, 1)
    tol_v = check_tol(fn, tol, default_tol(rows.dtype))
    batch, n = rows.shape
    xt = _squash(rows, squash)
    C = (xt.unsqueeze(-1) - y).square()
    a = torch.full((batch, n), 1.0 / n if n else 0.0, dtype=rows.dtype, device=rows.device)
    P = solve(fn, C, a, b.expand(batch, -1), eps, max_iter, tol_v, 10, backward == "unroll")[0]
    return P


def _targets(n: int, m: int, like: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.linspace(0.0, 1.0, m, dtype=like.dtype, device=like.device) if m > 1 \
        else torch.zeros(m, dtype=like.dtype, device=like.device)
    b = torch.full((1, m), 1.0 / m if m else 0.0, dtype=like.dtype, device=like.device)
    return y, b


def _num_targets(fn: str, num_targets: Optional[int], n: int) -> int:
    if num_targets is None:
        return n
    return check_int(fn, "num_targets", num_targets, 1)


def sinkhorn_rank(x: Tensor, epsilon: float = 1e-2, *, dim: int = -1, descending: bool = False,
                  num_targets: Optional[int] = None, squash: str = "sigmoid", max_iter: int = 1000,
                  tol: Optional[float] = None, backward: str = "implicit") -> Tensor:
    r"""Soft ranks through optimal transport to sorted targets (Cuturi, Teboul, Vert 2019).

    .. math::
        \tilde x = \sigma\Big(\frac{x - \bar x}{\mathrm{std}(x) + 10^{-10}}\Big),\quad
        C_{ij} = (\tilde x_i - y_j)^2,\quad
        R_i = n\, \frac{(P \bar b)_i}{a_i},\ \ \bar b_j = \textstyle\sum_{k \le j} b_k

    with ``P`` the entropic transport plan (:func:`sinkhorn`) from ``a = 1/n`` to ``m`` targets
    ``y_j = (j - 1)/(m - 1)`` with weights ``b = 1/m``.

    Args:
        x (Tensor[..., n]): values to rank along ``dim``; integer and bool tensors are ranked in
            torch's default float dtype (the result has that dtype).
        epsilon (float): entropic regularization (on the squashed [0, 1] scale). Default 1e-2.
        dim (int): the ranked dimension. Default -1.
        descending (bool): rank 1 for the largest value. Default False.
        num_targets (int, optional): number of targets ``m`` (default ``n``).
        squash (str): ``"sigmoid"`` (default) or ``"none"`` (then ``x`` should lie in [0, 1]).
        max_iter, tol, backward: as in :func:`sinkhorn`.

    Returns:
        Tensor[..., n]: soft ranks in ``[1, n]`` (1-based; they sum to ``n(n + 1)/2`` when ``m = n``).

    Note:
        ``O(T n m)`` time: for large ``n`` the permutahedron :func:`diffcomb.soft_rank` is faster; this
        operator offers weights and ``m != n``. As ``epsilon -> 0`` the ranks tend to the hard ranks.
        NaN or infinite values make their row NaN. A transport that stops at ``max_iter`` above
        ``tol`` warns as in :func:`sinkhorn` (small ``epsilon`` needs a larger ``max_iter``).

    Example:
        >>> sinkhorn_rank(torch.tensor([3.0, 1.0, 2.0]), 1e-3).round()
        tensor([3., 1., 2.])

    References:
        M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
        NeurIPS 2019.
    """
    x, rows, lead, dim, b, P = _plan_to_sorted_targets("sinkhorn_rank", x, dim, epsilon, descending, num_targets,
                                                       squash, max_iter, tol, backward)
    n = rows.shape[-1]
    R = n * n * (P @ b[0].cumsum(0))  # n (P bbar)_i / a_i with a_i = 1/n
    if descending:
        R = (n + 1) - R
    return R.reshape(*lead, n).movedim(-1, dim).to(x.dtype)


def sinkhorn_sort(x: Tensor, epsilon: float = 1e-2, *, dim: int = -1, descending: bool = False,
                  num_targets: Optional[int] = None, squash: str = "sigmoid", max_iter: int = 1000,
                  tol: Optional[float] = None, backward: str = "implicit") -> Tensor:
    r"""Soft sort through optimal transport to sorted targets (Cuturi, Teboul, Vert 2019).

    .. math::
        S_j = \frac{(P^\top x)_j}{b_j}

    with ``P`` the plan of :func:`sinkhorn_rank` (squashed values to ``m`` sorted targets); ``S`` is a
    weighted mean of the original values, so it stays on their scale.

    Args:
        x (Tensor[..., n]): values to sort along ``dim``; integer and bool tensors are sorted in
            torch's default float dtype (the result has that dtype).
        epsilon (float): entropic regularization. Default 1e-2.
        dim (int): the sorted dimension. Default -1.
        descending (bool): largest first. Default False.
        num_targets (int, optional): output length ``m`` (default ``n``): ``m < n`` gives soft
            ``m``-quantiles of the values.
        squash, max_iter, tol, backward: as in :func:`sinkhorn_rank`.

    Returns:
        Tensor[..., m]: soft sorted values along ``dim``.

    Note:
        Mass is conserved: ``mean(S) = mean(x)`` when ``m = n``. As ``epsilon -> 0`` ``S`` tends to the
        sorted values. NaN or infinite values make their row NaN; ``n = 0`` values give NaN for
        ``m > 0`` targets. A transport that stops at ``max_iter`` above ``tol`` warns as in
        :func:`sinkhorn`.

    Example:
        >>> sinkhorn_sort(torch.tensor([3.0, 1.0, 2.0]), 1e-3).round(decimals=4)
        tensor([1., 2., 3.])

    References:
        M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
        NeurIPS 2019.
    """
    x, rows, lead, dim, b, P = _plan_to_sorted_targets("sinkhorn_sort", x, dim, epsilon, descending, num_targets,
                                                       squash, max_iter, tol, backward)
    m = P.shape[-1]
    S = (P.transpose(-1, -2) @ rows.unsqueeze(-1)).squeeze(-1) * m
    if rows.shape[-1] == 0:  # no values to sort into m > 0 targets: the means are undefined (SPEC 0)
        S = S + math.nan
    if descending:
        S = S.flip(-1)
    return S.reshape(*lead, m).movedim(-1, dim).to(x.dtype)


def check_levels(fn: str, q: object, width: float) -> list[float]:
    """The quantile levels of :func:`sinkhorn_quantile` (a float or a non-empty sequence of floats,
    each with ``width/2 <= q <= 1 - width/2``) as a list; the module SinkhornQuantile checks its
    own with it."""
    scalar = isinstance(q, (int, float)) and not isinstance(q, bool)
    try:
        levels = [q] if scalar else list(q)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(message(fn, f"q must be a float or a sequence of floats, got {type(q).__name__}")) from None
    if not levels:
        raise ValueError(message(fn, "q must be a level or a non-empty sequence of levels"))
    for level in levels:
        if isinstance(level, (bool, Tensor)) or not isinstance(level, (int, float)):
            raise TypeError(message(fn, f"q must be a float or a sequence of floats, got {type(level).__name__}"))
        if not width / 2 <= level <= 1 - width / 2:
            raise ValueError(message(fn, f"each level q must satisfy width/2 <= q <= 1 - width/2 (width = {width}), "
                                         f"got q = {level}"))
    return [float(level) for level in levels]


def sinkhorn_quantile(x: Tensor, q: Union[float, Sequence[float]], epsilon: float = 1e-2, *,
                      width: float = 0.1, dim: int = -1, squash: str = "sigmoid", max_iter: int = 1000,
                      tol: Optional[float] = None, backward: str = "implicit") -> Tensor:
    r"""Soft quantiles through optimal transport to three targets (SPEC 4.5).

    .. math::
        y = (0, \tfrac12, 1),\quad b = (q - \tfrac t2,\ t,\ 1 - q - \tfrac t2),\quad
        Q_q(x) = \frac{(P^\top x)_2}{t}

    a smoothed mean of the values around the ``q``-quantile (``t`` = ``width``).

    Args:
        x (Tensor[..., n]): values along ``dim``; integer and bool tensors are used in torch's
            default float dtype (the result has that dtype).
        q (float or sequence of floats): levels with ``width/2 <= q <= 1 - width/2``.
        epsilon (float): entropic regularization. Default 1e-2.
        width (float): the mass ``t`` of the middle target. Default 0.1.
        dim (int): the reduced dimension. Default -1.
        squash, max_iter, tol, backward: as in :func:`sinkhorn_rank`.

    Returns:
        Tensor[...] for a float ``q`` (``dim`` removed); Tensor[..., k] for ``k`` levels (the levels
        replace ``dim``, last).

    Note:
        For ``epsilon -> 0`` it is the mean of the values whose ranks lie in ``n (q -/+ t/2)``. NaN or
        infinite values make their row NaN, and so does ``n = 0`` (no values: like ``torch.mean``).
        A transport that stops at ``max_iter`` above ``tol`` warns as in :func:`sinkhorn`.

    Example:
        >>> round(float(sinkhorn_quantile(torch.arange(1.0, 11.0), 0.5, 1e-3, width=0.2, max_iter=5000)), 3)
        5.5

    References:
        M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
        NeurIPS 2019.
    """
    fn = "sinkhorn_quantile"
    x = as_float(x)
    rows, lead, _ = _sort_rows(fn, x, dim)
    eps = check_float(fn, "epsilon", epsilon)
    width = check_float(fn, "width", width)
    scalar = isinstance(q, (int, float)) and not isinstance(q, bool)
    levels = check_levels(fn, q, width)
    batch, n = rows.shape
    k = len(levels)
    y = torch.tensor([0.0, 0.5, 1.0], dtype=rows.dtype, device=rows.device)
    b = torch.tensor([[lv - width / 2, width, 1 - lv - width / 2] for lv in levels], dtype=rows.dtype,
                     device=rows.device)
    rep = rows.unsqueeze(1).expand(batch, k, n).reshape(batch * k, n)
    P = _transport_to_targets(fn, rep, y, b.repeat(batch, 1), eps, squash, max_iter, tol, backward)
    out = (P[:, :, 1] * rep).sum(-1).reshape(*lead, k) / width
    if n == 0:  # the quantile of no values is undefined, like torch.mean's (SPEC 0)
        out = out + math.nan
    return (out.squeeze(-1) if scalar else out).to(x.dtype)

