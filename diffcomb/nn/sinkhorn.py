"""Entropic optimal transport modules: :class:`Sinkhorn`, the OT soft sort, rank and quantiles
(:class:`SinkhornSort`, :class:`SinkhornRank`, :class:`SinkhornQuantile`), :class:`GumbelSinkhorn`
and the loss :class:`SinkhornDivergence`. Each checks its hyper-parameters in ``__init__``, shows
them in ``extra_repr``, and its ``forward`` is one call of the functional op."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .._checks import (check_choice, check_flag, check_float, check_int, check_module_dim, check_reduction, check_tol,
                       reduce)
from .._sinkhorn_ops import BACKWARDS
from ..transport import SinkhornResult, sinkhorn, sinkhorn_divergence
from ..transport_permutation import gumbel_sinkhorn
from ..transport_sort import SQUASHES, check_levels, sinkhorn_quantile, sinkhorn_rank, sinkhorn_sort

__all__ = ["GumbelSinkhorn", "Sinkhorn", "SinkhornDivergence", "SinkhornQuantile", "SinkhornRank", "SinkhornSort"]


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
        self.epsilon = check_float(name, "epsilon", epsilon)
        self.max_iter = check_int(name, "max_iter", max_iter, 1)
        self.tol = check_tol(name, tol, None)
        self.check_every = check_int(name, "check_every", check_every, 1)
        self.backward = check_choice(name, "backward", backward, BACKWARDS)

    def extra_repr(self) -> str:
        return (f"epsilon={self.epsilon}, max_iter={self.max_iter}, tol={self.tol}, "
                f"check_every={self.check_every}, backward={self.backward!r}")

    def forward(self, cost: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None) -> SinkhornResult:
        return sinkhorn(cost, a, b, self.epsilon, max_iter=self.max_iter, tol=self.tol,
                        check_every=self.check_every, backward=self.backward)


class _SortedTargets(nn.Module):
    """The hyper-parameters that the OT sort, rank and quantile modules share."""

    def __init__(self, name: str, epsilon: float, dim: int, squash: str, max_iter: int, tol: Optional[float],
                 backward: str) -> None:
        super().__init__()
        self.epsilon = check_float(name, "epsilon", epsilon)
        self.dim = check_module_dim(name, dim)
        self.squash = check_choice(name, "squash", squash, SQUASHES)
        self.max_iter = check_int(name, "max_iter", max_iter, 1)
        self.tol = check_tol(name, tol, None)
        self.backward = check_choice(name, "backward", backward, BACKWARDS)

    def extra_repr(self) -> str:
        return (f"epsilon={self.epsilon}, dim={self.dim}, squash={self.squash!r}, max_iter={self.max_iter}, "
                f"tol={self.tol}, backward={self.backward!r}")


class _SortOrRank(_SortedTargets):
    """The sort and the rank: all targets' hyper-parameters, the direction and the target count."""

    def __init__(self, name: str, epsilon: float, dim: int, squash: str, max_iter: int, tol: Optional[float],
                 backward: str, descending: bool, num_targets: Optional[int]) -> None:
        super().__init__(name, epsilon, dim, squash, max_iter, tol, backward)
        self.descending = check_flag(name, "descending", descending)
        self.num_targets = check_int(name, "num_targets", num_targets, 1, optional=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, descending={self.descending}, num_targets={self.num_targets}"


class SinkhornSort(_SortOrRank):
    """Module form of :func:`diffcomb.sinkhorn_sort`: soft sort along ``dim`` through optimal
    transport to sorted targets; ``forward(x)``.

    Args:
        epsilon (float): entropic regularization. Default 1e-2.
        dim (int): the sorted dimension. Default -1.
        descending (bool): largest first. Default False.
        num_targets (int, optional): output length (default the input's length).
        squash, max_iter, tol, backward: as in :func:`diffcomb.sinkhorn_rank`.

    Example:
        >>> SinkhornSort(1e-3)(torch.tensor([3.0, 1.0, 2.0])).round(decimals=4)
        tensor([1., 2., 3.])
    """

    def __init__(self, epsilon: float = 1e-2, dim: int = -1, descending: bool = False,
                 num_targets: Optional[int] = None, squash: str = "sigmoid", max_iter: int = 1000,
                 tol: Optional[float] = None, backward: str = "implicit") -> None:
        super().__init__("SinkhornSort", epsilon, dim, squash, max_iter, tol, backward, descending, num_targets)

    def forward(self, x: Tensor) -> Tensor:
        return sinkhorn_sort(x, self.epsilon, dim=self.dim, descending=self.descending, num_targets=self.num_targets,
                             squash=self.squash, max_iter=self.max_iter, tol=self.tol, backward=self.backward)


class SinkhornRank(_SortOrRank):
    """Module form of :func:`diffcomb.sinkhorn_rank`: soft ranks along ``dim`` through optimal
    transport to sorted targets; ``forward(x)``.

    Args:
        epsilon (float): entropic regularization (on the squashed [0, 1] scale). Default 1e-2.
        dim (int): the ranked dimension. Default -1.
        descending (bool): rank 1 for the largest value. Default False.
        num_targets (int, optional): number of targets (default the input's length).
        squash, max_iter, tol, backward: as in :func:`diffcomb.sinkhorn_rank`.

    Example:
        >>> SinkhornRank(1e-3)(torch.tensor([3.0, 1.0, 2.0])).round()
        tensor([3., 1., 2.])
    """

    def __init__(self, epsilon: float = 1e-2, dim: int = -1, descending: bool = False,
                 num_targets: Optional[int] = None, squash: str = "sigmoid", max_iter: int = 1000,
                 tol: Optional[float] = None, backward: str = "implicit") -> None:
        super().__init__("SinkhornRank", epsilon, dim, squash, max_iter, tol, backward, descending, num_targets)

    def forward(self, x: Tensor) -> Tensor:
        return sinkhorn_rank(x, self.epsilon, dim=self.dim, descending=self.descending, num_targets=self.num_targets,
                             squash=self.squash, max_iter=self.max_iter, tol=self.tol, backward=self.backward)


class SinkhornQuantile(_SortedTargets):
    """Module form of :func:`diffcomb.sinkhorn_quantile`: soft quantiles along ``dim`` through
    optimal transport to three targets; ``forward(x)``.

    Args:
        q (float or sequence of floats): levels with ``width/2 <= q <= 1 - width/2``.
        epsilon (float): entropic regularization. Default 1e-2.
        width (float): the mass of the middle target. Default 0.1.
        dim (int): the reduced dimension. Default -1.
        squash, max_iter, tol, backward: as in :func:`diffcomb.sinkhorn_rank`.

    Example:
        >>> layer = SinkhornQuantile(0.5, 1e-3, width=0.2, max_iter=5000)
        >>> round(float(layer(torch.arange(1.0, 11.0))), 3)
        5.5
    """

    def __init__(self, q: Union[float, Sequence[float]], epsilon: float = 1e-2, width: float = 0.1, dim: int = -1,
                 squash: str = "sigmoid", max_iter: int = 1000, tol: Optional[float] = None,
                 backward: str = "implicit") -> None:
        name = "SinkhornQuantile"
        super().__init__(name, epsilon, dim, squash, max_iter, tol, backward)
        self.width = check_float(name, "width", width)
        levels = check_levels(name, q, self.width)
        self.q = levels[0] if isinstance(q, (int, float)) else tuple(levels)

    def extra_repr(self) -> str:
        return f"q={self.q}, width={self.width}, {super().extra_repr()}"

    def forward(self, x: Tensor) -> Tensor:
        return sinkhorn_quantile(x, self.q, self.epsilon, width=self.width, dim=self.dim, squash=self.squash,
                                 max_iter=self.max_iter, tol=self.tol, backward=self.backward)


class GumbelSinkhorn(nn.Module):
    """Module form of :func:`diffcomb.gumbel_sinkhorn`: a doubly-stochastic relaxation of a
    permutation from square scores; ``forward(log_alpha, generator=None)``.

    Args:
        tau (float): temperature, > 0. Default 1.
        n_iter (int): row+column normalizations, >= 0. Default 20.
        noise (bool): add Gumbel noise (in training and in evaluation alike: set ``noise=False``
            for deterministic outputs). Default True.
        noise_factor (float): the noise scale, >= 0. Default 1.
        n_samples (int, optional): independent draws, stacked in a new leading dimension.
        hard (bool): the nearest permutation matrix forward, the soft gradient backward. Default False.

    Example:
        >>> GumbelSinkhorn(noise=False)(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        tensor([[0.6225, 0.3775],
                [0.3775, 0.6225]])
    """

    def __init__(self, tau: float = 1.0, n_iter: int = 20, noise: bool = True, noise_factor: float = 1.0,
                 n_samples: Optional[int] = None, hard: bool = False) -> None:
        super().__init__()
        name = "GumbelSinkhorn"
        self.tau = check_float(name, "tau", tau)
        self.n_iter = check_int(name, "n_iter", n_iter, 0)
        self.noise = check_flag(name, "noise", noise)
        self.noise_factor = check_float(name, "noise_factor", noise_factor, allow_minimum=True)
        self.n_samples = check_int(name, "n_samples", n_samples, 1, optional=True)
        self.hard = check_flag(name, "hard", hard)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, n_iter={self.n_iter}, noise={self.noise}, noise_factor={self.noise_factor}, "
                f"n_samples={self.n_samples}, hard={self.hard}")

    def forward(self, log_alpha: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return gumbel_sinkhorn(log_alpha, self.tau, self.n_iter, self.noise, generator, noise_factor=self.noise_factor,
                               n_samples=self.n_samples, hard=self.hard)


class SinkhornDivergence(nn.Module):
    """Loss form of :func:`diffcomb.sinkhorn_divergence`: the debiased Sinkhorn divergence between
    point clouds ``forward(x, y, a=None, b=None)`` (``x (..., n, d)``, ``y (..., m, d)``), reduced
    over the batch.

    Args:
        epsilon (float): entropic regularization, on the scale of the squared distances. Default 0.1.
        max_iter (int): iteration limit of each solve. Default 1000.
        tol (float, optional): marginal tolerance (as in :func:`diffcomb.sinkhorn`).
        reduction (str): ``"mean"`` (default), ``"sum"`` or ``"none"`` over the batch dimensions.

    Example:
        >>> x = torch.tensor([[[0.0], [1.0]], [[0.0], [2.0]]])
        >>> float(SinkhornDivergence(0.1, reduction="sum")(x, x))
        0.0
    """

    def __init__(self, epsilon: float = 0.1, max_iter: int = 1000, tol: Optional[float] = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        name = "SinkhornDivergence"
        self.epsilon = check_float(name, "epsilon", epsilon)
        self.max_iter = check_int(name, "max_iter", max_iter, 1)
        self.tol = check_tol(name, tol, None)
        self.reduction = check_reduction(name, reduction)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, max_iter={self.max_iter}, tol={self.tol}, reduction={self.reduction!r}"

    def forward(self, x: Tensor, y: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None) -> Tensor:
        return reduce(sinkhorn_divergence(x, y, self.epsilon, a=a, b=b, max_iter=self.max_iter, tol=self.tol),
                      self.reduction)
