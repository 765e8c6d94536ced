"""Implicit maximum-likelihood estimation (I-MLE, SPEC.md 6.4): perturb-and-MAP samples forward,
the perturbation-based implicit differentiation backward. The S noisy copies of a batch are
solved in ONE solver call on a ``(S * B, *S)`` batch (sample-major), forward and backward."""

from __future__ import annotations

import math
from typing import Callable, Optional, overload

import torch
from torch import Tensor

from .._autodiff import not_differentiable
from .._checks import check_choice, check_flag, check_float, check_int, message
from ._common import (MAX_INT32, ROW, SAMPLES, Estimator, EstimatorFunction, Solver, call_solver, check_solver,
                      event_dims_of, no_setup, prepare_theta, wrap_or_decorate)
from .noise import sample_noise

__all__ = ["IMLESolver", "imle"]

IMLE_NOISES = ("sum_of_gamma", "gumbel", "none")


_SURROGATE = ("I-MLE defines a gradient estimate (its VJP, a difference of two MAP solutions), not the "
              "derivative of a function of theta, so it has no forward mode and no second derivative")


def _imle_forward(theta: Tensor, eps: Tensor, solver: Solver, lambda_: float, alpha: float, tau: float,
                  tau_target: float, minimize: bool, return_samples: bool,
                  divide_by_lambda: bool) -> tuple[Tensor, Tensor]:
    """(the samples z (S, B, *S) or their mean (B, *S); z again when the mean is returned, else an
    empty placeholder): the samples are saved for the backward either way."""
    s = eps.shape[0]
    scores = torch.add(theta.unsqueeze(0), eps, alpha=tau).flatten(0, 1)
    z = call_solver("imle", solver, scores, minimize).reshape(s, *theta.shape)
    return (z, z.new_empty((s, 0))) if return_samples else (z.mean(0), z)


def _imle_setup(ctx, inputs: tuple, output: tuple) -> None:
    theta, eps, solver, lambda_, alpha, _, tau_target, minimize, return_samples, divide_by_lambda = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(theta, eps, output[0] if return_samples else output[1])
    ctx.params = (solver, lambda_, alpha, tau_target, minimize, divide_by_lambda)
    ctx.return_samples = return_samples


def _imle_backward(ctx, g: Tensor, _g_placeholder):
    theta, eps, z = ctx.saved_tensors
    g_s = g if ctx.return_samples else g.unsqueeze(0)
    return _IMLE_GRAD(g_s, theta, eps, z, *ctx.params), *([None] * 9)


# z_s = y*(theta + tau_in eps_s); returns (z or its mean, z or a placeholder). The VJP is _IMLE_GRAD;
# forward mode raises (a surrogate gradient, no Jacobian); vmap folds into the batch.
_IMLE = EstimatorFunction("imle", "_IMLEFn", _imle_forward, _imle_setup, _imle_backward,
                          not_differentiable("imle", "forward-mode derivative", _SURROGATE),
                          (ROW, SAMPLES, *[None] * 8), lambda *args: (SAMPLES if args[8] else ROW, SAMPLES))


def _imle_grad(g_s: Tensor, theta: Tensor, eps: Tensor, z: Tensor, solver: Solver, lambda_: float, alpha: float,
               tau_target: float, minimize: bool, divide_by_lambda: bool) -> Tensor:
    """dtheta = mean_s (z_s - y*(alpha theta - lambda g_s + tau' eps_s)) (/ lambda)."""
    # target = alpha theta - lambda g_s + tau' eps, in two fused passes over (S, B, *S).
    target = torch.add(eps, g_s, alpha=-lambda_) if tau_target == 1.0 else \
        torch.add(tau_target * eps, g_s, alpha=-lambda_)
    target = target.add_(theta.unsqueeze(0) if alpha == 1.0 else alpha * theta.unsqueeze(0))
    z_target = call_solver("imle", solver, target.flatten(0, 1), minimize).reshape(z.shape)
    dtheta = (z - z_target).mean(0)
    return dtheta / lambda_ if divide_by_lambda else dtheta


# The I-MLE estimate as a function of the upstream gradient: one solver call, folded under vmap
# (per-sample gradients); differentiating it again raises (see _SURROGATE).
_IMLE_GRAD = EstimatorFunction("imle", "_IMLEGrad", _imle_grad, no_setup,
                               not_differentiable("imle", "second derivative", _SURROGATE),
                               not_differentiable("imle", "second derivative", _SURROGATE),
                               (SAMPLES, ROW, SAMPLES, SAMPLES, *[None] * 6), (ROW,))


class IMLESolver(Estimator):
    """The callable returned by :func:`imle`.

    Example:
        >>> solver = diffcomb.imle(diffcomb.argmax_onehot, noise='none')
        >>> type(solver).__name__
        'IMLESolver'
        >>> solver(torch.tensor([0.0, 10.0]))
        tensor([0., 1.])
    """

    def __init__(self, solver: Solver, num_samples: int, noise: str, lambda_: float, k: Optional[float],
                 tau: float, tau_target: float, s: int, alpha: float, return_samples: bool,
                 divide_by_lambda: bool, minimize: bool, event_dims: int,
                 generator: Optional[torch.Generator]) -> None:
        self._wrap(solver)
        self.num_samples, self.noise, self.lambda_, self.k = num_samples, noise, lambda_, k
        self.tau, self.tau_target, self.s, self.alpha = tau, tau_target, s, alpha
        self.return_samples, self.divide_by_lambda, self.minimize = return_samples, divide_by_lambda, minimize
        self.event_dims, self.generator = event_dims, generator

    def __repr__(self) -> str:
        return (f"IMLESolver(solver={self._solver_name()}, num_samples={self.num_samples}, noise={self.noise!r}, "
                f"lambda_={self.lambda_}, k={self.k}, tau={self.tau}, minimize={self.minimize})")

    def __call__(self, theta: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        fn = "imle"
        rows, shape, dtype = prepare_theta(fn, theta, self.event_dims)
        sample_shape = (self.num_samples, *rows.shape)
        gen = generator or self.generator
        if self.noise == "none":
            eps = rows.new_zeros(sample_shape)
        elif self.noise == "sum_of_gamma":
            eps = sample_noise(fn, "sum_of_gamma", sample_shape, gen, rows.dtype, rows.device, float(self.k), 1.0,
                               self.s)
        else:
            eps = sample_noise(fn, self.noise, sample_shape, gen, rows.dtype, rows.device)
        out, _ = _IMLE(-rows if self.minimize else rows, eps, self.solver, self.lambda_, self.alpha, self.tau, self.tau_target,
                               self.minimize, self.return_samples, self.divide_by_lambda)
        if self.return_samples:
            return out.reshape(self.num_samples, *shape).to(dtype)
        return out.reshape(shape).to(dtype)


@overload
def imle(solver: Solver, num_samples: int = ..., noise: str = ..., target: str = ..., lambda_: float = ...,
         k: Optional[float] = ..., tau: float = ..., tau_target: Optional[float] = ..., s: int = ...,
         alpha: float = ..., return_samples: bool = ..., divide_by_lambda: bool = ..., minimize: bool = ...,
         event_dims: Optional[int] = ..., generator: Optional[torch.Generator] = ...) -> IMLESolver: ...
@overload
def imle(solver: None = ..., num_samples: int = ..., noise: str = ..., target: str = ..., lambda_: float = ...,
         k: Optional[float] = ..., tau: float = ..., tau_target: Optional[float] = ..., s: int = ...,
         alpha: float = ..., return_samples: bool = ..., divide_by_lambda: bool = ..., minimize: bool = ...,
         event_dims: Optional[int] = ...,
         generator: Optional[torch.Generator] = ...) -> Callable[[Solver], IMLESolver]: ...


def imle(solver: Optional[Solver] = None, num_samples: int = 1, noise: str = "sum_of_gamma",
         target: str = "perturbation", lambda_: float = 1.0, k: Optional[float] = None, tau: float = 1.0,
         tau_target: Optional[float] = None, s: int = 10, alpha: float = 1.0, return_samples: bool = False,
         divide_by_lambda: bool = False, minimize: bool = False, event_dims: Optional[int] = None,
         generator: Optional[torch.Generator] = None):
    r"""Implicit maximum-likelihood estimation (I-MLE) around a MAP solver.

    Forward: perturb-and-MAP samples :math:`z_s = y^*(\theta + \tau \epsilon_s)`. Backward
    (perturbation-based implicit differentiation, same noise :math:`\epsilon_s`):

    .. math::
        \theta'_s = \alpha \theta - \lambda \frac{\partial L}{\partial z_s}, \qquad
        \nabla_\theta L \approx \frac1S \sum_s \big( z_s - y^*(\theta'_s + \tau' \epsilon_s) \big)

    A plain wrapper, ``imle(solver, ...)``, or a decorator of a solver function, with arguments
    (``@diffcomb.imle(num_samples=5, noise="sum_of_gamma", k=3)``) or without
    (``@diffcomb.imle``: every default, as ``imle(solver)``; the default Sum-of-Gamma noise needs
    ``k``, so this form raises an error that asks for ``@diffcomb.imle(k=...)``, or
    ``noise="gumbel"`` for one-hot solvers). torch-imle's decorator arguments map as follows:

    =======================================================  =========================================
    torch-imle ``@imle(...)``                                diffcomb ``@diffcomb.imle(...)``
    =======================================================  =========================================
    ``nb_samples=S``                                         ``num_samples=S``
    ``theta_noise_temperature=t``                            ``tau=t``
    (``input_noise_temperature`` in older releases)
    ``target_noise_temperature=t``                           ``tau_target=t``
    ``target_distribution=TargetDistribution(alpha, beta)``  ``alpha=alpha, lambda_=beta``
    ``TargetDistribution(..., do_gradient_scaling=True)``    ``divide_by_lambda=True``
    ``noise_distribution=SumOfGammaNoiseDistribution(k,``    ``noise="sum_of_gamma", k=k, s=n``
    ``nb_iterations=n)``
    ``noise_distribution=GumbelNoiseDistribution()``         ``noise="gumbel"``
    ``noise_distribution=None``                              ``noise="none"``
    =======================================================  =========================================

    torch-imle's other options (marginal samples, gradient dumps) have no counterpart; its solver
    takes the same ``(B', *S)`` batch of scores. diffcomb's decorated function also takes a
    ``generator=`` for its noise.

    Args:
        solver (callable): scores ``(B', *S)`` -> solutions ``(B', *S)`` (maximize form, or costs
            with ``minimize=True``). None (the default when only keywords are given) returns a
            decorator.
        num_samples (int): S >= 1 noise samples, solved in one call. Default 1.
        noise (str): ``"sum_of_gamma"`` (k-subsets; needs ``k``), ``"gumbel"`` (one-hot: exact
            perturb-and-MAP) or ``"none"``. Default ``"sum_of_gamma"``.
        target (str): the target distribution; ``"perturbation"`` (the only one implemented).
        lambda_ (float): target step size > 0. Default 1.
        k (float, optional): subset size for ``"sum_of_gamma"``.
        tau (float): noise temperature of the forward. Default 1.
        tau_target (float, optional): noise temperature of the target solve. Default ``tau``.
        s (int): Gamma terms of the Sum-of-Gamma noise. Default 10.
        alpha (float): scale of theta in the target. Default 1.
        return_samples (bool): return the S samples ``(S, ..., *S)`` instead of their mean. With
            the mean, every sample's target uses the upstream gradient of the mean. Default False.
        divide_by_lambda (bool): divide the estimate by lambda (then ``noise="none"``, S = 1 is the
            blackbox estimator). Default False.
        minimize (bool): the solver minimizes costs; the callable then takes costs. Default False.
        event_dims (int, optional): trailing dimensions of one solution.
        generator (torch.Generator, optional): the noise's default generator.

    Returns:
        IMLESolver: ``f(theta, generator=None) -> Tensor`` (an integer or bool theta is computed
        in the default float dtype, also the result's dtype); with ``solver=None``, the decorator
        that makes one.

    Note:
        2 S solver calls per forward+backward, memory O(S numel).
        Autodiff: the backward is a gradient estimate, not the derivative of a function of theta:
        reverse mode (grad, vjp, jacrev) and vmap work (vmap's randomness as in :func:`perturbed`);
        forward mode (jvp, jacfwd) and second derivatives raise an error.

    Example:
        >>> f = diffcomb.imle(lambda t: diffcomb.topk_mask(t, 2), noise="none")
        >>> theta = torch.tensor([0.9, 0.1, 0.5, -0.3], requires_grad=True)
        >>> z = f(theta); (z * torch.tensor([0.0, -1, 0.5, 0])).sum().backward(); theta.grad
        tensor([ 0., -1.,  1.,  0.])
        >>> @diffcomb.imle(num_samples=5, noise="sum_of_gamma", k=2)
        ... def top2(scores):
        ...     return diffcomb.topk_mask(scores, 2)
        >>> top2(torch.tensor([0.9, 0.1, 0.5, -0.3]), generator=torch.Generator().manual_seed(0)).sum()
        tensor(2.)

    References:
        M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through Discrete
        Exponential Family Distributions. NeurIPS 2021. arXiv:2106.01798
    """
    fn = "imle"
    if solver is not None:  # the first argument: checked first
        check_solver(fn, solver, estimator=True)
    num_samples = check_int(fn, "num_samples", num_samples, 1)
    check_choice(fn, "noise", noise, IMLE_NOISES)
    check_choice(fn, "target", target, ("perturbation",))
    lambda_ = check_float(fn, "lambda_", lambda_)
    tau = check_float(fn, "tau", tau, allow_minimum=True)
    tau_target = tau if tau_target is None else check_float(fn, "tau_target", tau_target, allow_minimum=True)
    s = check_int(fn, "s", s, 1, MAX_INT32)
    alpha = check_float(fn, "alpha", alpha, -math.inf)
    if noise == "sum_of_gamma":
        if k is None:
            raise ValueError(message(fn, "noise='sum_of_gamma' (the default) needs k, the subset size: "
                                         "imle(solver, k=...) or @diffcomb.imle(k=...); one-hot solvers take "
                                         "noise='gumbel'"))
        k = check_float(fn, "k", k)
    return_samples = check_flag(fn, "return_samples", return_samples)
    divide_by_lambda = check_flag(fn, "divide_by_lambda", divide_by_lambda)
    minimize = check_flag(fn, "minimize", minimize)
    event_dims = check_int(fn, "event_dims", event_dims, 0, optional=True)

    def build(f: Solver) -> IMLESolver:
        return IMLESolver(f, num_samples, noise, lambda_, k, tau, tau_target, s, alpha, return_samples,
                          divide_by_lambda, minimize, event_dims_of(fn, f, event_dims), generator)

    return wrap_or_decorate(fn, solver, build)
