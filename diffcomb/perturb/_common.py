"""What the gradient estimators (perturbed_solver.py, imle_solver.py, blackbox_solver.py) and
the perturbed Fenchel-Young loss (diffcomb/losses/perturb.py) share: the solver contract (a
callable from a batch of scores ``(B', *S)`` to solutions of the same shape, called in maximize
form), the flattening of theta to that batch, and the estimator objects' common behaviour
(wrapping a solver, used as a decorator with or without arguments)."""

from __future__ import annotations

import math
from typing import Callable, Optional, TypeVar, Union

import torch
from torch import Tensor

from .._autodiff import fast_apply, one_forward_level, untracked
from .._checks import as_float, check_int, check_tensor, message

Solver = Callable[[Tensor], Tensor]
E = TypeVar("E")

MAX_INT32 = 2**31 - 1
FLOATS = (torch.float32, torch.float64)  # the dtypes of native code


def check_solver(fn: str, solver: object, estimator: bool = False) -> Solver:
    if not callable(solver):
        hint = (f" (used as a decorator, {fn} takes its other arguments by keyword: "
                f"@diffcomb.{fn}(lambda_=...))") if estimator else ""
        raise TypeError(message(fn, f"solver must be callable, got {type(solver).__name__}{hint}"))
    return solver  # type: ignore[return-value]


def event_dims_of(fn: str, solver: Solver, event_dims: Optional[int]) -> int:
    """event_dims as given, else the solver's ``event_dims`` attribute (also through a
    functools.partial), else 1."""
    if event_dims is None:
        event_dims = getattr(solver, "event_dims", getattr(getattr(solver, "func", None), "event_dims", 1))
    return check_int(fn, "event_dims", event_dims, 0)  # type: ignore[return-value]


def wrap_or_decorate(fn: str, solver: Optional[Solver], build: Callable[[Solver], E]) -> object:
    """``build(solver)`` for a solver; for ``solver=None`` (``@diffcomb.<fn>(...)`` with arguments),
    the decorator that builds the estimator around the function it decorates. The other arguments
    are checked before this is called, so a bad one raises where the decorator is written."""
    if solver is None:
        def decorator(function: Solver) -> E:
            return build(check_solver(fn, function, estimator=True))

        return decorator
    return build(check_solver(fn, solver, estimator=True))


class Estimator:
    """Base of the callables returned by perturbed, imle and blackbox: the wrapped solver keeps its
    name and docstring (``__wrapped__`` is the solver, as with functools.wraps), so a decorated
    function reads like the function it decorates."""

    solver: Solver

    def _wrap(self, solver: Solver) -> None:
        self.solver = solver
        self.__wrapped__ = solver
        if isinstance(getattr(solver, "__name__", None), str):  # a function (not a functools.partial)
            for name in ("__module__", "__name__", "__qualname__", "__doc__"):
                value = getattr(solver, name, None)
                if isinstance(value, str):
                    setattr(self, name, value)

    def _solver_name(self) -> str:
        return repr(getattr(self.solver, "__name__", self.solver))


def call_solver(fn: str, solver: Solver, scores: Tensor, minimize: bool) -> Tensor:
    """solver on a (B', *S) batch in maximize form; checks its answer."""
    y = solver(-scores if minimize else scores)
    if not isinstance(y, Tensor) or y.shape != scores.shape:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(message(fn, f"the solver must map a batch of scores of shape {tuple(scores.shape)} to "
                                     f"solutions of the same shape, got {got}"))
    if y.device != scores.device:
        raise RuntimeError(message(fn, f"the solver must return its solutions on the scores' device "
                                       f"{scores.device}, got {y.device}"))
    return y.detach().to(scores.dtype)


def flatten_event(x: Tensor, event_dims: int) -> Tensor:
    """(..., *S) -> (..., prod(S)) for inner products over the solution."""
    return x.flatten(x.dim() - event_dims) if event_dims else x.unsqueeze(-1)  # flatten: also for 0 rows


def prepare_theta(fn: str, theta: Tensor, event_dims: int) -> tuple[Tensor, torch.Size, torch.dtype]:
    """(rows (B, *S) of a native dtype, theta's shape, the result's dtype); integer and bool
    scores are taken in the default float dtype."""
    theta = check_tensor(fn, "theta", as_float(theta), min_dim=event_dims)
    shape = theta.shape
    event = shape[len(shape) - event_dims:]
    rows = theta.reshape(math.prod(shape[: len(shape) - event_dims]), *event)
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()
    return rows, shape, theta.dtype


# ---------------------------------------------------------------------------------------------------
# The estimators' autograd.Functions under torch.func (see DESIGN.md, "Autodiff"): a batching rule that
# folds a vmapped dimension into the batch of the solver call (the solvers are arbitrary callables, so
# the estimators are not custom ops and do not go through _autodiff.define).

ROW = "row"  # a tensor (B, *S): the batch is dimension 0
SAMPLES = "samples"  # a tensor (M, B, *S), sample-major: the batch is dimension 1


def _fold(a: Tensor, dim: Optional[int], kind: str, size: int) -> Tensor:
    axis = 0 if kind == ROW else 1
    if dim is None:
        a = a.unsqueeze(axis).expand(*a.shape[:axis], size, *a.shape[axis:])
    else:
        a = a.movedim(dim, axis)
    return a.flatten(axis, axis + 1)


def fold_rule(function: type, kinds: tuple, out_kinds: Union[tuple, Callable[..., tuple]]) -> Callable:
    """The vmap staticmethod of an estimator's autograd.Function: every vmapped ROW / SAMPLES argument
    has its vmapped dimension folded into its batch dimension (an unbatched one is expanded), so the
    Function runs once on the whole batch (one solver call); outputs of kind ROW / SAMPLES are unfolded,
    outputs of kind None are returned unbatched. ``out_kinds`` may be a function of the arguments."""

    def rule(info, in_dims: tuple, *args):
        size = info.batch_size
        outputs = out_kinds(*args) if callable(out_kinds) else out_kinds
        folded = [_fold(a, d, k, size) if k is not None and isinstance(a, Tensor) else a
                  for a, d, k in zip(args, in_dims, kinds)]
        outs = function.apply(*folded)
        single = not isinstance(outs, tuple)
        outs = (outs,) if single else outs
        result, dims = [], []
        for o, k in zip(outs, outputs):
            if k is None:
                result.append(o)
                dims.append(None)
            else:
                axis = 0 if k == ROW else 1
                result.append(o.unflatten(axis, (size, o.shape[axis] // size)))
                dims.append(axis)
        return (result[0], dims[0]) if single else (tuple(result), tuple(dims))

    return rule



def no_setup(ctx, inputs: tuple, output) -> None:
    """The setup_context of a Function that saves nothing."""


class EstimatorFunction:
    """An estimator's autograd.Function in two classes: ``plain`` (forward, setup_context, backward), which
    torch.compile traces (Dynamo does not trace a Function with a custom jvp), and ``full``, the same
    with the jvp and the folding vmap rule, which eager calls and torch.func use. ``fn`` is the public
    function (in error messages), ``name`` the classes' name. Call it with the Function's arguments."""

    __slots__ = ("plain", "full", "_apply", "_forward")

    def __init__(self, fn: str, name: str, forward: Callable, setup: Callable, backward: Callable, jvp: Callable,
                 kinds: tuple, out_kinds: Union[tuple, Callable[..., tuple]]) -> None:
        body = {"forward": staticmethod(forward), "setup_context": staticmethod(setup),
                "backward": staticmethod(backward), "__module__": forward.__module__}
        self.plain = type(f"{name}_compiled", (torch.autograd.Function,), body)
        self.full = type(name, (self.plain,), {"jvp": staticmethod(one_forward_level(fn, jvp)),
                                               "__module__": forward.__module__})
        self.full.vmap = staticmethod(fold_rule(self.full, kinds, out_kinds))
        self._apply = fast_apply(self.full)
        self._forward = forward

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.plain.apply(*args)
        if untracked(args):  # nothing to differentiate, no transform: the forward alone (the lean path)
            return self._forward(*args)
        return self._apply(*args)
