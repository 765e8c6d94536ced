"""Gumbel-Sinkhorn (SPEC.md section 4.6): :func:`gumbel_sinkhorn`, a doubly-stochastic relaxation of
a permutation by a fixed number of Sinkhorn normalizations, run by the family's custom op
(diffcomb._sinkhorn_ops) with the unrolled backward.

References:
    G. Mena, D. Belanger, S. Linderman, J. Snoek. Learning Latent Permutations with
    Gumbel-Sinkhorn Networks. ICLR 2018. arXiv:1802.08665
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_flag, check_float, check_int, check_tensor, compute_dtype, message
from ._sinkhorn_ops import solve

__all__ = ["gumbel_sinkhorn"]

_GUMBEL_OFFSET = 1e-20  # SPEC 4.6


def _hard_permutation(X: Tensor) -> Tensor:
    """One-hot matrices (B, n, n) of the maximum-weight assignments of X (B, n, n), from the shared
    exact assignment op (diffcomb::linear_assignment, CPU and CUDA); NaN matrices where X has
    non-finite scores."""
    return torch.ops.diffcomb.linear_assignment(X.detach().contiguous(), True)


def gumbel_sinkhorn(log_alpha: Tensor, tau: float = 1.0, n_iter: int = 20, noise: bool = True,
                    generator: Optional[torch.Generator] = None, *, noise_factor: float = 1.0,
                    n_samples: Optional[int] = None, hard: bool = False) -> Tensor:
    r"""Gumbel-Sinkhorn: a doubly-stochastic relaxation of a permutation (Mena et al. 2018).

    .. math::
        S^0 = (X + s G)/\tau;\quad L \text{ times: } S \leftarrow S - \mathrm{LSE}_{\text{row}}(S),\
        S \leftarrow S - \mathrm{LSE}_{\text{col}}(S);\quad \text{output } \exp(S)

    with ``G`` i.i.d. standard Gumbel noise, ``G = -log(-log(U + 1e-20) + 1e-20)``.

    Args:
        log_alpha (Tensor[..., n, n]): square score matrices ``X``.
        tau (float): temperature, > 0. Default 1.
        n_iter (int): number ``L`` of row+column normalizations, >= 0. Default 20.
        noise (bool): add Gumbel noise. Default True.
        generator (torch.Generator, optional): the noise's generator (on ``log_alpha``'s device).
        noise_factor (float): the noise scale ``s``. Default 1.
        n_samples (int, optional): independent draws, stacked in a new leading dimension.
        hard (bool): return the nearest permutation matrix (the maximum-weight linear assignment of
            ``X + s G``) in the forward and the soft sample's gradient in the backward
            (straight-through). Default False.

    Returns:
        Tensor[..., n, n] (or Tensor[n_samples, ..., n, n]): columns sum to 1 exactly, rows
        approximately (exactly as ``n_iter -> inf``); a permutation matrix when ``hard``.

    Note:
        The ``L`` normalizations are ``L`` log-domain Sinkhorn iterations for the cost ``-X/1`` with
        ``epsilon = tau`` and unit weights, run by the native kernel; the backward replays them in
        reverse (exact derivative of the truncated algorithm). ``tau -> 0`` tends to the assignment
        permutation. ``hard`` solves the assignment exactly on the input's device
        (:func:`diffcomb.linear_assignment`, ``O(n^3)``). NaN or infinite scores make their matrix
        NaN. The ``L`` iterations are a fixed count by design: there is no convergence test and no
        warning (the rows sum to 1 only approximately). With ``hard``, every autodiff mode (forward mode,
        ``torch.func``, double backward) gives the soft sample's derivatives.

    Example:
        >>> gumbel_sinkhorn(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), noise=False)
        tensor([[0.6225, 0.3775],
                [0.3775, 0.6225]])

    References:
        G. Mena, D. Belanger, S. Linderman, J. Snoek. Learning Latent Permutations with Gumbel-Sinkhorn
        Networks. ICLR 2018.
    """
    fn = "gumbel_sinkhorn"
    noise = check_flag(fn, "noise", noise)
    hard = check_flag(fn, "hard", hard)
    check_tensor(fn, "log_alpha", log_alpha, 2)
    if log_alpha.shape[-1] != log_alpha.shape[-2]:
        raise ValueError(message(fn, f"log_alpha must be square in its last two dimensions, got shape "
                                     f"{tuple(log_alpha.shape)}"))
    tau = check_float(fn, "tau", tau)
    n_iter = check_int(fn, "n_iter", n_iter, 0)
    noise_factor = check_float(fn, "noise_factor", noise_factor, allow_minimum=True)
    check_int(fn, "n_samples", n_samples, 1, optional=True)
    X = log_alpha.to(compute_dtype(log_alpha.dtype))
    if n_samples is not None:
        X = X.unsqueeze(0).expand(n_samples, *X.shape)
    if noise and noise_factor > 0:
        U = torch.rand(X.shape, generator=generator, dtype=X.dtype, device=X.device)
        X = X + noise_factor * (-torch.log(-torch.log(U + _GUMBEL_OFFSET) + _GUMBEL_OFFSET))
    *lead, n, _ = X.shape
    batch = math.prod(lead)
    Xr = X.reshape(batch, n, n)
    if n_iter == 0:
        soft = torch.exp(Xr / tau)
    else:
        ones = torch.ones((batch, n), dtype=X.dtype, device=X.device)
        # tol = -1: exactly n_iter iterations by design (no convergence check, no warning).
        soft = solve(fn, -Xr, ones, ones, tau, n_iter, -1.0, 1, True)[0]
    if hard:
        soft = _hard_permutation(Xr) + (soft - soft.detach())
    return soft.reshape(*lead, n, n).to(log_alpha.dtype)

