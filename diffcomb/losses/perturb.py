"""The perturbed Fenchel-Young loss (SPEC.md 6.3) of the perturb-and-MAP family: a loss on the
scores of any MAP solver, whose gradient is the perturbed optimizer's mean solution minus the
target (no Jacobian estimator)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._autodiff import save
from .._checks import as_float, check_flag, check_reduction, check_same_device, check_tensor, message, reduce
from ..perturb._common import (ROW, SAMPLES, EstimatorFunction, Solver, call_solver, check_solver, event_dims_of,
                               flatten_event, prepare_theta)
from ..perturb.noise import sample_noise
from ..perturb.perturbed_solver import check_perturbation

__all__ = ["perturbed_fenchel_young_loss"]


def _fy_forward(theta: Tensor, y_true: Tensor, z: Tensor, solver: Solver, sigma: float, minimize: bool,
                event_dims: int) -> tuple[Tensor, Tensor]:
    """(F_hat - <theta, y> per instance (B,), y_hat (B, *S))."""
    m = z.shape[0]
    scores = theta.unsqueeze(0) + sigma * z
    y = call_solver("perturbed_fenchel_young_loss", solver, scores.flatten(0, 1), minimize).reshape(m, *theta.shape)
    f_hat = (flatten_event(y, event_dims) * flatten_event(scores, event_dims)).sum(-1).mean(0)
    value = f_hat - (flatten_event(theta, event_dims) * flatten_event(y_true, event_dims)).sum(-1)
    return value, y.mean(0)


def _fy_setup(ctx, inputs: tuple, output: tuple) -> None:
    theta, y_true, *_, event_dims = inputs
    ctx.mark_non_differentiable(output[1])
    save(ctx, output[1], y_true, theta)
    ctx.event_dims = event_dims


def _fy_backward(ctx, g: Tensor, _g_y_hat):
    """Written with torch ops of g, theta and y_true, so that it is differentiable again: the cross terms
    -g of d/dy d/dtheta; d/dtheta of y_hat is 0, the samples being fixed (y_hat is piecewise constant)."""
    y_hat, y_true, theta = ctx.saved_tensors
    gs = g.reshape(*g.shape, *([1] * ctx.event_dims))
    dtheta = gs * (y_hat - y_true) if ctx.needs_input_grad[0] else None
    dy = -gs * theta if ctx.needs_input_grad[1] else None
    return dtheta, dy, None, None, None, None, None


def _fy_jvp(ctx, t_theta: Optional[Tensor], t_y: Optional[Tensor], *_):
    """<y_hat - y, t_theta> - <theta, t_y> per instance."""
    y_hat, y_true, theta = ctx.saved_tensors
    d = ctx.event_dims
    out = torch.zeros_like(flatten_event(theta, d)[..., 0])
    if t_theta is not None:
        out = out + (flatten_event(y_hat - y_true, d) * flatten_event(t_theta, d)).sum(-1)
    if t_y is not None:
        out = out - (flatten_event(theta, d) * flatten_event(t_y, d)).sum(-1)
    return out, None


# Value F_hat - <theta, y> per instance, and y_hat (non-differentiable); gradient y_hat - y; every
# autodiff mode, vmap folded into the batch (one solver call).
_FENCHEL_YOUNG = EstimatorFunction("perturbed_fenchel_young_loss", "_FenchelYoungFn", _fy_forward, _fy_setup,
                                   _fy_backward, _fy_jvp, (ROW, ROW, SAMPLES, None, None, None, None), (ROW, ROW))


def perturbed_fenchel_young_loss(theta: Tensor, target: Tensor, solver: Solver, num_samples: int = 100,
                                 sigma: float = 1.0, noise: str = "gumbel", minimize: bool = False,
                                 event_dims: Optional[int] = None, reduction: str = "mean",
                                 generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Perturbed Fenchel-Young loss, up to a constant in ``theta``.

    .. math::
        L_\sigma(\theta; y) = F_\sigma(\theta) - \langle \theta, y \rangle, \quad
        F_\sigma(\theta) = \mathbb E\big[\max_{y'} \langle y', \theta + \sigma Z \rangle\big], \quad
        \nabla_\theta L_\sigma = y_\sigma(\theta) - y

    Args:
        theta (Tensor[..., \*S]): scores (costs with ``minimize=True``; then the loss is that of
            the scores ``-theta``, and the gradient's sign follows); integer and bool tensors are
            computed in the default float dtype (``torch.get_default_dtype()``).
        target (Tensor[..., \*S]): the true solution ``y``, on theta's device (e.g. an integer
            one-hot tensor; converted like theta).
        solver, num_samples, sigma, noise, minimize, event_dims, generator: as in :func:`perturbed`.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"`` over the instances. Default ``"mean"``.

    Returns:
        Tensor: the loss, one value per instance for ``"none"`` (theta's shape without ``*S``).

    Note:
        The value omits :math:`\sigma \Omega(y)`, which does not depend on theta: it may be
        negative. The gradient needs no Jacobian estimator (low variance, O(numel)).
        Autodiff: every mode gives the exact derivatives of the estimate with its samples fixed;
        its Hessian in theta is therefore 0 (the mean solution is piecewise constant in theta).
        vmap's randomness as in :func:`perturbed`.

    Example:
        >>> theta = torch.tensor([1.0, 0.5, -0.2], requires_grad=True)
        >>> loss = diffcomb.perturbed_fenchel_young_loss(theta, torch.tensor([1.0, 0, 0]),
        ...     diffcomb.argmax_onehot, num_samples=10, generator=torch.Generator().manual_seed(0))
        >>> loss.backward(); theta.grad.sum().abs() < 1e-6
        tensor(True)

    References:
        Q. Berthet et al. Learning with Differentiable Perturbed Optimizers. NeurIPS 2020.
        arXiv:2002.08676
    """
    fn = "perturbed_fenchel_young_loss"
    check_same_device(fn, theta=theta, target=target)
    solver = check_solver(fn, solver)
    num_samples, sigma, noise = check_perturbation(fn, num_samples, sigma, noise)
    event_dims = event_dims_of(fn, solver, event_dims)
    minimize = check_flag(fn, "minimize", minimize)
    reduction = check_reduction(fn, reduction)
    rows, shape, dtype = prepare_theta(fn, theta, event_dims)
    target = check_tensor(fn, "target", as_float(target), min_dim=event_dims)
    if target.shape != shape:
        raise ValueError(message(fn, f"target must have theta's shape {tuple(shape)}, got {tuple(target.shape)}"))
    y_rows = target.reshape(rows.shape).to(rows.dtype)
    sign = -1.0 if minimize else 1.0
    z = sample_noise(fn, noise, (num_samples, *rows.shape), generator, rows.dtype, rows.device)
    value, _ = _FENCHEL_YOUNG(sign * rows, y_rows, z, solver, sigma, minimize, event_dims)
    value = value.reshape(shape[: len(shape) - event_dims]).to(dtype)
    return reduce(value, reduction)
