"""Perturb-and-MAP modules (diffcomb.perturb): thin wrappers over perturbed / imle / blackbox
with a native solver; forward(theta, generator=None)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .._checks import check_flag, check_reduction

import functools as _functools

import torch as _torch

from .. import perturb as _perturb

__all__ = ["BlackboxShortestPath", "IMLEShortestPath", "IMLETopK", "PerturbedArgmax", "PerturbedFenchelYoungLoss", "PerturbedShortestPath", "PerturbedTopK"]


class _TopKModule(nn.Module):
    def _set_k(self, name: str, k: int) -> None:
        self.k = _perturb._check_int(name, "k", k, 0)

    def _solver(self):
        return _functools.partial(_perturb.topk_mask, k=self.k)


class PerturbedTopK(_TopKModule):
    """Perturbed top-k: the expected k-subset mask :math:`\\mathbb E[\\mathrm{topk}(\\theta + \\sigma Z)]`
    (:func:`diffcomb.perturbed` around :func:`diffcomb.topk_mask`)."""

    def __init__(self, k: int, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel") -> None:
        super().__init__()
        self._set_k("PerturbedTopK", k)
        self._estimator = _perturb.perturbed(self._solver(), num_samples, sigma, noise)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"k={self.k}, num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}"

    def forward(self, theta: Tensor, generator: Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(theta, generator)


class PerturbedArgmax(nn.Module):
    """Perturbed one-hot argmax (with Gumbel noise, the softmax of theta / sigma in expectation)."""

    def __init__(self, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel") -> None:
        super().__init__()
        self._estimator = _perturb.perturbed(_perturb.argmax_onehot, num_samples, sigma, noise)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}"

    def forward(self, theta: Tensor, generator: Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(theta, generator)


class PerturbedShortestPath(nn.Module):
    """Perturbed grid shortest path on vertex costs ``(..., H, W)``: the expected path mask under
    cost noise (:func:`diffcomb.perturbed` with ``minimize=True``)."""

    def __init__(self, num_samples: int = 100, sigma: float = 1.0, noise: str = "normal") -> None:
        super().__init__()
        self._estimator = _perturb.perturbed(_perturb.grid_shortest_path, num_samples, sigma, noise, minimize=True)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}"

    def forward(self, weights: Tensor, generator: Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(weights, generator)


class IMLETopK(_TopKModule):
    """I-MLE top-k: a sampled k-subset mask forward, the I-MLE estimate backward
    (:func:`diffcomb.imle` around :func:`diffcomb.topk_mask`, Sum-of-Gamma noise by default)."""

    def __init__(self, k: int, num_samples: int = 1, noise: str = "sum_of_gamma", lambda_: float = 1.0,
                 tau: float = 1.0, s: int = 10) -> None:
        super().__init__()
        self._set_k("IMLETopK", k)
        self._estimator = _perturb.imle(self._solver(), num_samples, noise, lambda_=lambda_, k=max(self.k, 1),
                                        tau=tau, s=s)
        self.num_samples, self.noise, self.lambda_, self.tau, self.s = num_samples, noise, float(lambda_), tau, s

    def extra_repr(self) -> str:
        return (f"k={self.k}, num_samples={self.num_samples}, noise={self.noise!r}, lambda_={self.lambda_}, "
                f"tau={self.tau}, s={self.s}")

    def forward(self, theta: Tensor, generator: Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(theta, generator)


class IMLEShortestPath(nn.Module):
    """I-MLE grid shortest path on vertex costs ``(..., H, W)``: a sampled path forward, the I-MLE
    estimate backward (:func:`diffcomb.imle` with ``minimize=True``)."""

    def __init__(self, num_samples: int = 1, noise: str = "gumbel", lambda_: float = 1.0, tau: float = 1.0,
                 k: Optional[float] = None, s: int = 10) -> None:
        super().__init__()
        self._estimator = _perturb.imle(_perturb.grid_shortest_path, num_samples, noise, lambda_=lambda_, k=k,
                                        tau=tau, s=s, minimize=True)
        self.num_samples, self.noise, self.lambda_, self.tau = num_samples, noise, float(lambda_), float(tau)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, noise={self.noise!r}, lambda_={self.lambda_}, tau={self.tau}"

    def forward(self, weights: Tensor, generator: Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(weights, generator)


class BlackboxShortestPath(nn.Module):
    """Grid shortest path on vertex costs with the blackbox (interpolation) gradient
    (:func:`diffcomb.blackbox` with ``minimize=True``)."""

    def __init__(self, lambda_: float = 10.0, straight_through: bool = False) -> None:
        super().__init__()
        self._estimator = _perturb.blackbox(_perturb.grid_shortest_path, lambda_, straight_through, minimize=True)
        self.lambda_, self.straight_through = float(lambda_), self._estimator.straight_through

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, straight_through={self.straight_through}"

    def forward(self, weights: Tensor) -> Tensor:
        return self._estimator(weights)


class PerturbedFenchelYoungLoss(nn.Module):
    """Module form of :func:`diffcomb.perturbed_fenchel_young_loss`: ``forward(theta, target)``."""

    def __init__(self, solver, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel",
                 minimize: bool = False, event_dims: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        name = "PerturbedFenchelYoungLoss"
        self.event_dims, self.num_samples, self.sigma = _perturb._check_perturbation(
            name, solver, event_dims, num_samples, sigma, noise)
        self.noise = noise
        self.reduction = check_reduction(name, reduction)
        self.solver, self.minimize = solver, check_flag(name, "minimize", minimize)

    def extra_repr(self) -> str:
        return (f"solver={getattr(self.solver, '__name__', self.solver)!r}, num_samples={self.num_samples}, "
                f"sigma={self.sigma}, noise={self.noise!r}, minimize={self.minimize}, reduction={self.reduction!r}")

    def forward(self, theta: Tensor, target: Tensor, generator: Optional[_torch.Generator] = None) -> Tensor:
        return _perturb.perturbed_fenchel_young_loss(theta, target, self.solver, self.num_samples, self.sigma,
                                                     self.noise, self.minimize, self.event_dims, self.reduction,
                                                     generator)


