"""Differentiation of blackbox combinatorial solvers by interpolation (SPEC.md 6.5), or the
straight-through estimator: the solver's own answer forward, one extra solver call backward."""

from __future__ import annotations

from typing import Callable, Optional, overload

import torch
from torch import Tensor

from .._autodiff import not_differentiable
from .._checks import check_flag, check_float, check_int
from ._common import (ROW, Estimator, EstimatorFunction, Solver, call_solver, check_solver, event_dims_of,
                      no_setup, prepare_theta, wrap_or_decorate)

__all__ = ["BlackboxSolver", "blackbox"]


_SURROGATE = ("blackbox differentiation defines a gradient estimate (the VJP, an interpolation of the piecewise "
              "constant solver, or the identity with straight_through=True), not the derivative of a function of "
              "theta, so it has no forward mode and no second derivative")


def _blackbox_forward(theta: Tensor, solver: Solver, lambda_: float, straight_through: bool,
                      minimize: bool) -> Tensor:
    return call_solver("blackbox", solver, theta, minimize)


def _blackbox_setup(ctx, inputs: tuple, output: Tensor) -> None:
    theta, solver, lambda_, straight_through, minimize = inputs
    ctx.save_for_backward(theta, output)
    ctx.params = (solver, lambda_, straight_through, minimize)


def _blackbox_backward(ctx, g: Tensor):
    theta, y = ctx.saved_tensors
    return _BLACKBOX_GRAD(g, theta, y, *ctx.params), None, None, None, None


# y = y*(theta). The VJP is _BLACKBOX_GRAD; forward mode raises (a surrogate gradient, no Jacobian);
# vmap folds into the batch.
_BLACKBOX = EstimatorFunction("blackbox", "_BlackboxFn", _blackbox_forward, _blackbox_setup, _blackbox_backward,
                              not_differentiable("blackbox", "forward-mode derivative", _SURROGATE),
                              (ROW, None, None, None, None), (ROW,))


def _blackbox_grad(g: Tensor, theta: Tensor, y: Tensor, solver: Solver, lambda_: float, straight_through: bool,
                   minimize: bool) -> Tensor:
    """dtheta = (y - y*(theta - lambda g)) / lambda, or g (straight-through)."""
    if straight_through:
        return g.clone()
    return (y - call_solver("blackbox", solver, theta - lambda_ * g, minimize)) / lambda_


# The blackbox estimate as a function of the upstream gradient: one solver call, folded under vmap
# (per-sample gradients); differentiating it again raises (see _SURROGATE).
_BLACKBOX_GRAD = EstimatorFunction("blackbox", "_BlackboxGrad", _blackbox_grad, no_setup,
                                   not_differentiable("blackbox", "second derivative", _SURROGATE),
                                   not_differentiable("blackbox", "second derivative", _SURROGATE),
                                   (ROW, ROW, ROW, None, None, None, None), (ROW,))


class BlackboxSolver(Estimator):
    """The callable returned by :func:`blackbox`.

    Example:
        >>> solver = diffcomb.blackbox(diffcomb.argmax_onehot, lambda_=5.0)
        >>> type(solver).__name__
        'BlackboxSolver'
        >>> solver(torch.tensor([0.0, 10.0]))
        tensor([0., 1.])
    """

    def __init__(self, solver: Solver, lambda_: float, straight_through: bool, minimize: bool,
                 event_dims: int) -> None:
        self._wrap(solver)
        self.lambda_, self.straight_through = lambda_, straight_through
        self.minimize, self.event_dims = minimize, event_dims

    def __repr__(self) -> str:
        return (f"BlackboxSolver(solver={self._solver_name()}, lambda_={self.lambda_}, "
                f"straight_through={self.straight_through}, minimize={self.minimize})")

    def __call__(self, theta: Tensor) -> Tensor:
        rows, shape, dtype = prepare_theta("blackbox", theta, self.event_dims)
        sign = -1.0 if self.minimize else 1.0
        out = _BLACKBOX(sign * rows, self.solver, self.lambda_, self.straight_through, self.minimize)
        return out.reshape(shape).to(dtype)


@overload
def blackbox(solver: Solver, lambda_: float = ..., straight_through: bool = ..., minimize: bool = ...,
             event_dims: Optional[int] = ...) -> BlackboxSolver: ...
@overload
def blackbox(solver: None = ..., lambda_: float = ..., straight_through: bool = ..., minimize: bool = ...,
             event_dims: Optional[int] = ...) -> Callable[[Solver], BlackboxSolver]: ...


def blackbox(solver: Optional[Solver] = None, lambda_: float = 10.0, straight_through: bool = False,
             minimize: bool = False, event_dims: Optional[int] = None):
    r"""Differentiation of a blackbox solver by interpolation (or straight-through).

    Forward: the solver's answer :math:`y = y^*(\theta)`. Backward with upstream :math:`g`:

    .. math::
        \nabla_\theta = \frac{y^*(\theta) - y^*(\theta - \lambda g)}{\lambda}

    (for a cost solver, ``minimize=True``: :math:`\nabla_w = -(y(w) - y(w + \lambda g)) / \lambda`,
    the paper's form). ``straight_through=True`` returns :math:`g` unchanged instead.

    A plain wrapper, ``blackbox(solver, ...)``, or a decorator of a solver function, with
    arguments (``@diffcomb.blackbox(lambda_=5.0, minimize=True)``) or without
    (``@diffcomb.blackbox``).

    Args:
        solver (callable): scores ``(B', *S)`` -> solutions ``(B', *S)``. None (the default when
            only keywords are given) returns a decorator.
        lambda_ (float): interpolation strength > 0. Default 10.
        straight_through (bool): identity backward. Default False.
        minimize (bool): the solver minimizes costs; the callable then takes costs. Default False.
        event_dims (int, optional): trailing dimensions of one solution.

    Returns:
        BlackboxSolver: ``f(theta) -> Tensor`` (an integer or bool theta is computed in the
        default float dtype, also the result's dtype); with ``solver=None``, the decorator that
        makes one.

    Note:
        One extra solver call per backward. Small lambda gives zero gradients almost everywhere;
        larger lambda gives coarser but informative ones.
        Autodiff: the backward is a gradient estimate, not the derivative of a function of theta:
        reverse mode (grad, vjp, jacrev) and vmap work; forward mode (jvp, jacfwd) and second
        derivatives raise an error.

    Example:
        >>> f = diffcomb.blackbox(lambda t: diffcomb.topk_mask(t, 2), lambda_=1.0)
        >>> theta = torch.tensor([0.9, 0.1, 0.5, -0.3], requires_grad=True)
        >>> (f(theta) * torch.tensor([0.0, -1, 0.5, 0])).sum().backward(); theta.grad
        tensor([ 0., -1.,  1.,  0.])
        >>> @diffcomb.blackbox(lambda_=1.0)
        ... def top2(scores):
        ...     return diffcomb.topk_mask(scores, 2)
        >>> top2(torch.tensor([0.9, 0.1, 0.5, -0.3]))
        tensor([1., 0., 1., 0.])

    References:
        M. Vlastelica Pogancic, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
        Blackbox Combinatorial Solvers. ICLR 2020. arXiv:1912.02175
    """
    fn = "blackbox"
    if solver is not None:  # the first argument: checked first
        check_solver(fn, solver, estimator=True)
    lambda_ = check_float(fn, "lambda_", lambda_)
    straight_through = check_flag(fn, "straight_through", straight_through)
    minimize = check_flag(fn, "minimize", minimize)
    event_dims = check_int(fn, "event_dims", event_dims, 0, optional=True)

    def build(f: Solver) -> BlackboxSolver:
        return BlackboxSolver(f, lambda_, straight_through, minimize, event_dims_of(fn, f, event_dims))

    return wrap_or_decorate(fn, solver, build)
