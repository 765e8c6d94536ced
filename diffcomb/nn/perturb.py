"""Perturb-and-MAP modules (diffcomb.perturb): thin wrappers over perturbed / imle / blackbox
with a native solver; forward(theta, generator=None). The top-k and argmax modules take ``dim``,
the axis of the items (default -1)."""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor, nn

from .._checks import check_dim, check_flag, check_int, check_module_dim, check_reduction
from .. import perturb
from ..losses.perturb import perturbed_fenchel_young_loss
from ..perturb._common import check_solver, event_dims_of
from ..perturb.perturbed_solver import check_perturbation

__all__ = ["BlackboxShortestPath", "IMLEShortestPath", "IMLETopK", "PerturbedArgmax", "PerturbedFenchelYoungLoss",
           "PerturbedShortestPath", "PerturbedTopK"]


class _AlongDim(nn.Module):
    """A module whose estimator solves along the last axis, applied along ``self.dim``."""

    def __init__(self, name: str, dim: int) -> None:
        super().__init__()
        self._name = name
        self.dim = check_module_dim(name, dim)

    def _along_dim(self, theta: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        if self.dim == -1:
            return self._estimator(theta, generator)
        d = check_dim(self._name, theta, self.dim)
        return self._estimator(theta.movedim(d, -1), generator).movedim(-1, d)


class _TopKModule(_AlongDim):
    def __init__(self, name: str, k: int, dim: int) -> None:
        super().__init__(name, dim)
        self.k = check_int(name, "k", k, 0)

    def _solver(self):
        return functools.partial(perturb.topk_mask, k=self.k)


class PerturbedTopK(_TopKModule):
    """Perturbed top-k: the expected k-subset mask :math:`\\mathbb E[\\mathrm{topk}(\\theta + \\sigma Z)]`
    (:func:`diffcomb.perturbed` around :func:`diffcomb.topk_mask`) along ``dim``.

    Example:
        >>> layer = diffcomb.PerturbedTopK(k=1, num_samples=1000, sigma=0.5)
        >>> layer(torch.tensor([0.0, 3.0, 0.0]), generator=torch.Generator().manual_seed(0))
        tensor([0.0030, 0.9960, 0.0010])
    """

    def __init__(self, k: int, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel",
                 dim: int = -1) -> None:
        super().__init__("PerturbedTopK", k, dim)
        self._estimator = perturb.perturbed(self._solver(), num_samples, sigma, noise)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"k={self.k}, num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}, dim={self.dim}"

    def forward(self, theta: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return self._along_dim(theta, generator)


class PerturbedArgmax(_AlongDim):
    """Perturbed one-hot argmax along ``dim`` (with Gumbel noise, the softmax of theta / sigma in
    expectation).

    Example:
        >>> layer = diffcomb.PerturbedArgmax(num_samples=10000)
        >>> layer(torch.tensor([0.0, 1.0, 2.0]), generator=torch.Generator().manual_seed(0)).round(decimals=2)
        tensor([0.0900, 0.2500, 0.6700])
        >>> torch.softmax(torch.tensor([0.0, 1.0, 2.0]), -1).round(decimals=2)
        tensor([0.0900, 0.2400, 0.6700])
    """

    def __init__(self, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel", dim: int = -1) -> None:
        super().__init__("PerturbedArgmax", dim)
        self._estimator = perturb.perturbed(perturb.argmax_onehot, num_samples, sigma, noise)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}, dim={self.dim}"

    def forward(self, theta: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return self._along_dim(theta, generator)


class PerturbedShortestPath(nn.Module):
    """Perturbed grid shortest path on vertex costs ``(..., H, W)``: the expected path mask under
    cost noise (:func:`diffcomb.perturbed` with ``minimize=True``).

    Example:
        >>> w = torch.tensor([[1.0, 1.0, 1.0], [1.0, 9.0, 1.0], [1.0, 1.0, 1.0]])
        >>> layer = diffcomb.PerturbedShortestPath(num_samples=1000, sigma=0.5)
        >>> layer(w, generator=torch.Generator().manual_seed(0)).round(decimals=1)
        tensor([[1.0000, 0.5000, 0.0000],
                [0.5000, 0.0000, 0.5000],
                [0.0000, 0.5000, 1.0000]])
    """

    def __init__(self, num_samples: int = 100, sigma: float = 1.0, noise: str = "normal") -> None:
        super().__init__()
        self._estimator = perturb.perturbed(perturb.grid_shortest_path, num_samples, sigma, noise, minimize=True)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}"

    def forward(self, weights: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return self._estimator(weights, generator)


class IMLETopK(_TopKModule):
    """I-MLE top-k: a sampled k-subset mask forward, the I-MLE estimate backward
    (:func:`diffcomb.imle` around :func:`diffcomb.topk_mask`, Sum-of-Gamma noise by default),
    along ``dim``.

    Example:
        >>> theta = torch.tensor([[0.5, 3.0, 2.0, -1.0]], requires_grad=True)
        >>> mask = diffcomb.IMLETopK(k=2, noise='none', lambda_=2.0)(theta)
        >>> mask.detach()
        tensor([[0., 1., 1., 0.]])
        >>> mask.backward(torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
        >>> theta.grad
        tensor([[-1.,  0.,  1.,  0.]])
    """

    def __init__(self, k: int, num_samples: int = 1, noise: str = "sum_of_gamma", lambda_: float = 1.0,
                 tau: float = 1.0, s: int = 10, dim: int = -1) -> None:
        super().__init__("IMLETopK", k, dim)
        self._estimator = perturb.imle(self._solver(), num_samples, noise, lambda_=lambda_, k=max(self.k, 1),
                                       tau=tau, s=s)
        self.num_samples, self.noise, self.lambda_, self.tau, self.s = num_samples, noise, float(lambda_), tau, s

    def extra_repr(self) -> str:
        return (f"k={self.k}, num_samples={self.num_samples}, noise={self.noise!r}, lambda_={self.lambda_}, "
                f"tau={self.tau}, s={self.s}, dim={self.dim}")

    def forward(self, theta: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return self._along_dim(theta, generator)


class IMLEShortestPath(nn.Module):
    """I-MLE grid shortest path on vertex costs ``(..., H, W)``: a sampled path forward, the I-MLE
    estimate backward (:func:`diffcomb.imle` with ``minimize=True``).

    Example:
        >>> w = torch.tensor([[1.0, 9.0, 9.0], [1.0, 1.0, 9.0], [9.0, 1.0, 1.0]], requires_grad=True)
        >>> path = diffcomb.IMLEShortestPath(noise='none')(w)
        >>> path.detach()
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """

    def __init__(self, num_samples: int = 1, noise: str = "gumbel", lambda_: float = 1.0, tau: float = 1.0,
                 k: Optional[float] = None, s: int = 10) -> None:
        super().__init__()
        self._estimator = perturb.imle(perturb.grid_shortest_path, num_samples, noise, lambda_=lambda_, k=k, tau=tau,
                                       s=s, minimize=True)
        self.num_samples, self.noise, self.lambda_, self.tau = num_samples, noise, float(lambda_), float(tau)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, noise={self.noise!r}, lambda_={self.lambda_}, tau={self.tau}"

    def forward(self, weights: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return self._estimator(weights, generator)


class BlackboxShortestPath(nn.Module):
    """Grid shortest path on vertex costs with the blackbox (interpolation) gradient
    (:func:`diffcomb.blackbox` with ``minimize=True``).

    Example:
        >>> w = torch.tensor([[1.0, 9.0, 9.0], [1.0, 1.0, 9.0], [9.0, 1.0, 1.0]], requires_grad=True)
        >>> path = diffcomb.BlackboxShortestPath(lambda_=10.0)(w)
        >>> path.detach()
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
        >>> path.backward(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
        >>> w.grad
        tensor([[-0.0000, -0.0000, -0.0000],
                [ 0.1000, -0.1000, -0.0000],
                [-0.0000,  0.1000, -0.0000]])
    """

    def __init__(self, lambda_: float = 10.0, straight_through: bool = False) -> None:
        super().__init__()
        self._estimator = perturb.blackbox(perturb.grid_shortest_path, lambda_, straight_through, minimize=True)
        self.lambda_, self.straight_through = float(lambda_), self._estimator.straight_through

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, straight_through={self.straight_through}"

    def forward(self, weights: Tensor) -> Tensor:
        return self._estimator(weights)


class PerturbedFenchelYoungLoss(nn.Module):
    """Module form of :func:`diffcomb.perturbed_fenchel_young_loss`: ``forward(theta, target)``.

    Example:
        >>> loss = diffcomb.PerturbedFenchelYoungLoss(diffcomb.argmax_onehot, num_samples=1000, reduction='none')
        >>> theta = torch.tensor([[0.0, 3.0, 0.0], [0.0, 3.0, 0.0]])
        >>> target = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        >>> loss(theta, target, generator=torch.Generator().manual_seed(0)).round(decimals=2)
        tensor([0.6200, 3.6800])
    """

    def __init__(self, solver, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel",
                 minimize: bool = False, event_dims: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        name = "PerturbedFenchelYoungLoss"
        self.solver = check_solver(name, solver)
        self.num_samples, self.sigma, self.noise = check_perturbation(name, num_samples, sigma, noise)
        self.event_dims = event_dims_of(name, solver, event_dims)
        self.reduction = check_reduction(name, reduction)
        self.minimize = check_flag(name, "minimize", minimize)

    def extra_repr(self) -> str:
        return (f"solver={getattr(self.solver, '__name__', self.solver)!r}, num_samples={self.num_samples}, "
                f"sigma={self.sigma}, noise={self.noise!r}, minimize={self.minimize}, reduction={self.reduction!r}")

    def forward(self, theta: Tensor, target: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return perturbed_fenchel_young_loss(theta, target, self.solver, self.num_samples, self.sigma, self.noise,
                                            self.minimize, self.event_dims, self.reduction, generator)
