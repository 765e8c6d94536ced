"""The perturbed optimizer (SPEC.md 6.3): the expected solution of a MAP solver under noise, with
its Monte-Carlo Jacobian estimator. All noisy copies of a batch are solved in ONE solver call on
a ``(samples * B, *S)`` batch (sample-major)."""

from __future__ import annotations

from typing import Callable, Optional, overload

import torch
from torch import Tensor

from .._autodiff import save
from .._checks import check_choice, check_flag, check_float, check_int
from ._common import (ROW, SAMPLES, Estimator, EstimatorFunction, Solver, call_solver, check_solver, event_dims_of,
                      flatten_event, prepare_theta, wrap_or_decorate)
from .noise import sample_noise

__all__ = ["PerturbedSolver", "perturbed"]

PERTURBED_NOISES = ("gumbel", "normal")


def check_perturbation(fn: str, num_samples: object, sigma: object, noise: object) -> tuple[int, float, str]:
    """The checks shared by the perturbed optimizer and its Fenchel-Young loss: (num_samples,
    sigma, noise)."""
    return (check_int(fn, "num_samples", num_samples, 1), check_float(fn, "sigma", sigma),  # type: ignore[return-value]
            check_choice(fn, "noise", noise, PERTURBED_NOISES))


def _grad_nu(z: Tensor, noise: str) -> Tensor:
    """Gradient of the noise's negative log-density, SPEC.md 6.2."""
    return z if noise == "normal" else 1.0 - torch.exp(-z)


def _perturbed_forward(theta: Tensor, z: Tensor, solver: Solver, sigma: float, noise: str, minimize: bool,
                       baseline: bool, event_dims: int, fn: str) -> tuple[Tensor, Tensor]:
    """(y_hat, y): the mean solution (B, *S) and the M solutions (M, B, *S)."""
    m = z.shape[0]
    scores = (theta.unsqueeze(0) + sigma * z).flatten(0, 1)  # (M * B, *S), also for an empty S
    y = call_solver(fn, solver, scores, minimize).reshape(m, *theta.shape)
    return y.mean(0), y


def _perturbed_setup(ctx, inputs: tuple, output: tuple) -> None:
    _, z, _, sigma, noise, _, baseline, event_dims, _ = inputs
    y = output[1]
    ctx.mark_non_differentiable(y)
    save(ctx, z, y)  # the baseline is y.mean(0) again: y_hat itself is differentiable
    ctx.sigma, ctx.noise, ctx.baseline, ctx.event_dims = sigma, noise, baseline, event_dims


def _centred(ctx) -> tuple[Tensor, Tensor]:
    """(the solutions, minus the baseline when it is on (M, B, *S); grad nu(Z) (M, B, *S))."""
    z, y = ctx.saved_tensors
    return (y - y.mean(0) if ctx.baseline else y), _grad_nu(z, ctx.noise)


def _perturbed_backward(ctx, g: Tensor, _g_samples):
    """J^T g = (1/(sigma M)) sum_m <g, y_m - b> grad nu(Z_m), torch ops of g (double backward: its
    derivative w.r.t. g is the jvp below; w.r.t. theta it is 0, the samples being fixed)."""
    y, grad_nu = _centred(ctx)
    d = ctx.event_dims
    dots = (flatten_event(y, d) * flatten_event(g, d).unsqueeze(0)).sum(-1)  # (M, B)
    dtheta = (dots.reshape(*dots.shape, *([1] * d)) * grad_nu).mean(0) / ctx.sigma
    return dtheta, None, None, None, None, None, None, None, None


def _perturbed_jvp(ctx, t_theta: Optional[Tensor], *_):
    """J t = (1/(sigma M)) sum_m (y_m - b) <grad nu(Z_m), t>: the Monte-Carlo Jacobian of the
    backward, applied to t (the same samples)."""
    y, grad_nu = _centred(ctx)
    if t_theta is None:
        return torch.zeros_like(y[0]), None
    d = ctx.event_dims
    dots = (flatten_event(grad_nu, d) * flatten_event(t_theta, d).unsqueeze(0)).sum(-1)  # (M, B)
    return (dots.reshape(*dots.shape, *([1] * d)) * y).mean(0) / ctx.sigma, None


# y_hat = mean_m y*(theta + sigma Z_m); VJP (1/(sigma M)) sum_m <g, y_m - b> grad nu(Z_m); JVP its
# transpose; vmap folds the vmapped dimension into the batch (one solver call). Returns (y_hat, y).
_PERTURBED = EstimatorFunction("perturbed", "_PerturbedFn", _perturbed_forward, _perturbed_setup,
                               _perturbed_backward, _perturbed_jvp, (ROW, SAMPLES, *[None] * 7), (ROW, SAMPLES))


class PerturbedSolver(Estimator):
    """The callable returned by :func:`perturbed`.

    Example:
        >>> solver = diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=1000)
        >>> type(solver).__name__
        'PerturbedSolver'
        >>> solver(torch.tensor([0.0, 10.0]), generator=torch.Generator().manual_seed(0))
        tensor([0., 1.])
    """

    def __init__(self, solver: Solver, num_samples: int, sigma: float, noise: str, baseline: bool,
                 minimize: bool, event_dims: int, generator: Optional[torch.Generator]) -> None:
        self._wrap(solver)
        self.num_samples, self.sigma, self.noise = num_samples, sigma, noise
        self.baseline, self.minimize, self.event_dims, self.generator = baseline, minimize, event_dims, generator

    def __repr__(self) -> str:
        return (f"PerturbedSolver(solver={self._solver_name()}, num_samples={self.num_samples}, sigma={self.sigma}, "
                f"noise={self.noise!r}, minimize={self.minimize})")

    def __call__(self, theta: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        fn = "perturbed"
        rows, shape, dtype = prepare_theta(fn, theta, self.event_dims)
        sign = -1.0 if self.minimize else 1.0
        z = sample_noise(fn, self.noise, (self.num_samples, *rows.shape), generator or self.generator, rows.dtype,
                         rows.device)
        out, _ = _PERTURBED(sign * rows, z, self.solver, self.sigma, self.noise, self.minimize, self.baseline,
                            self.event_dims, fn)
        return out.reshape(shape).to(dtype)


@overload
def perturbed(solver: Solver, num_samples: int = ..., sigma: float = ..., noise: str = ..., baseline: bool = ...,
              minimize: bool = ..., event_dims: Optional[int] = ...,
              generator: Optional[torch.Generator] = ...) -> PerturbedSolver: ...
@overload
def perturbed(solver: None = ..., num_samples: int = ..., sigma: float = ..., noise: str = ..., baseline: bool = ...,
              minimize: bool = ..., event_dims: Optional[int] = ...,
              generator: Optional[torch.Generator] = ...) -> Callable[[Solver], PerturbedSolver]: ...


def perturbed(solver: Optional[Solver] = None, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel",
              baseline: bool = True, minimize: bool = False, event_dims: Optional[int] = None,
              generator: Optional[torch.Generator] = None):
    r"""Perturbed optimizer: the expected solution under noise, differentiable.

    .. math::
        y_\sigma(\theta) = \mathbb E_Z\big[ y^*(\theta + \sigma Z) \big], \qquad
        J y_\sigma(\theta) = \tfrac{1}{\sigma} \mathbb E\big[ y^*(\theta + \sigma Z)\, \nabla\nu(Z)^\top \big]

    estimated with ``num_samples`` Monte-Carlo samples, all solved in one solver call.

    A plain wrapper, ``perturbed(solver, ...)``, or a decorator of a solver function, with
    arguments (``@diffcomb.perturbed(num_samples=10, sigma=0.5)``) or without
    (``@diffcomb.perturbed``); the decorated name is then the estimator.

    Args:
        solver (callable): maps scores ``(B', *S)`` to solutions ``(B', *S)`` (maximize form, or
            costs with ``minimize=True``); any leading batch size ``B'``. None (the default when
            only keywords are given) returns a decorator.
        num_samples (int): Monte-Carlo samples M >= 1. Default 100.
        sigma (float): noise scale > 0. Default 1.
        noise (str): ``"gumbel"`` or ``"normal"``. Default ``"gumbel"``.
        baseline (bool): subtract the mean solution in the Jacobian estimator (variance
            reduction; the estimate's expectation changes by O(1/M)). Default True.
        minimize (bool): the solver minimizes costs; the callable then takes costs ``w`` and
            returns :math:`\mathbb E[y^*_{\min}(w + \sigma Z)]` with Z mirrored. Default False.
        event_dims (int, optional): trailing dimensions of one solution (default: the solver's
            ``event_dims`` attribute, 1 for a plain callable).
        generator (torch.Generator, optional): the noise's default generator.

    Returns:
        PerturbedSolver: ``f(theta, generator=None) -> Tensor`` of theta's shape (an integer or
        bool theta is computed in the default float dtype, also the result's dtype); with
        ``solver=None``, the decorator that makes one.

    Note:
        Memory O(M numel) (noise and solutions are saved for the backward). The gradient is
        unbiased for the smoothed map; sigma -> 0 tends to the hard solver.
        Autodiff: every mode differentiates the estimator with its samples fixed: forward mode gives
        J t with the same Monte-Carlo Jacobian J as the backward; the second derivative is that of
        the estimate (linear in the cotangent, 0 in theta: the samples being fixed, J does not
        change with theta), not an estimate of the smoothed map's own second derivative. Under
        ``torch.vmap``, ``randomness="same"`` gives every vmapped sample the same noise,
        ``"different"`` independent noise, ``"error"`` (the default) raises.

    Example:
        >>> f = diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=20000, sigma=0.5,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> f(torch.tensor([1.0, 0.5, -0.2])).sub(torch.tensor([0.6856, 0.2522, 0.0622])).abs().max() < 0.02
        tensor(True)
        >>> @diffcomb.perturbed(num_samples=5, sigma=0.5)
        ... def top2(scores):
        ...     return diffcomb.topk_mask(scores, 2)
        >>> top2(torch.tensor([0.9, 0.1, 0.5, -0.3]), generator=torch.Generator().manual_seed(0)).sum()
        tensor(2.)

    References:
        Q. Berthet et al. Learning with Differentiable Perturbed Optimizers. NeurIPS 2020.
        arXiv:2002.08676
    """
    fn = "perturbed"
    if solver is not None:  # the first argument: checked first
        check_solver(fn, solver, estimator=True)
    num_samples, sigma, noise = check_perturbation(fn, num_samples, sigma, noise)
    baseline, minimize = check_flag(fn, "baseline", baseline), check_flag(fn, "minimize", minimize)
    event_dims = check_int(fn, "event_dims", event_dims, 0, optional=True)

    def build(f: Solver) -> PerturbedSolver:
        return PerturbedSolver(f, num_samples, sigma, noise, baseline, minimize, event_dims_of(fn, f, event_dims),
                               generator)

    return wrap_or_decorate(fn, solver, build)
