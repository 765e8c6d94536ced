"""Entropic optimal transport modules."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import sinkhorn as sinkhorn_ops

__all__ = ["Sinkhorn"]


class Sinkhorn(nn.Module):
    """Module form of :func:`diffcomb.sinkhorn`: entropic optimal transport between the rows of a
    batch of cost matrices; ``forward(cost, a=None, b=None)`` returns a
    :class:`diffcomb.SinkhornResult`.

    Args:
        epsilon (float): entropic regularization, > 0. Default 0.1.
        max_iter (int): iteration limit. Default 1000.
        tol (float, optional): marginal tolerance (default 1e-6 for float64, 1e-4 for float32).
        check_every (int): iterations between convergence tests. Default 10.
        backward (str): ``"implicit"`` (default) or ``"unroll"``.

    Example:
        >>> layer = Sinkhorn(epsilon=1.0, tol=1e-9)
        >>> layer(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).plan
        tensor([[0.3655, 0.1345],
                [0.1345, 0.3655]])
    """

    def __init__(self, epsilon: float = 0.1, max_iter: int = 1000, tol: Optional[float] = None,
                 check_every: int = 10, backward: str = "implicit") -> None:
        super().__init__()
        name = "Sinkhorn"
        self.epsilon = sinkhorn_ops._check_positive(name, "epsilon", epsilon)
        self.max_iter = sinkhorn_ops._check_int(name, "max_iter", max_iter, 1)
        self.tol = None if tol is None else sinkhorn_ops._check_tol(name, tol, torch.float64)
        self.check_every = sinkhorn_ops._check_int(name, "check_every", check_every, 1)
        self.backward = sinkhorn_ops._check_choice(name, "backward", backward, sinkhorn_ops._BACKWARDS)

    def extra_repr(self) -> str:
        return (f"epsilon={self.epsilon}, max_iter={self.max_iter}, tol={self.tol}, "
                f"check_every={self.check_every}, backward={self.backward!r}")

    def forward(self, cost: Tensor, a: Optional[Tensor] = None,
                b: Optional[Tensor] = None) -> sinkhorn_ops.SinkhornResult:
        return sinkhorn_ops.sinkhorn(cost, a, b, self.epsilon, max_iter=self.max_iter, tol=self.tol,
                                     check_every=self.check_every, backward=self.backward)
