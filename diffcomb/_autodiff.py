"""One wiring of a native op for every PyTorch autodiff mode.

``define(name, impl, fake, ...)`` registers ``impl`` once as the custom op ``diffcomb::<name>`` (with its
fake implementation and, when the op is differentiable, its autograd formula) and builds the
``torch.autograd.Function`` that serves eager calls and ``torch.func``. The returned ``NativeOp`` is what
the public functions call:

- under ``torch.compile`` / ``torch.export`` (``torch.compiler.is_compiling()``) it calls the custom op, so
  the graph holds one opaque node with a fake implementation and the registered backward;
- otherwise it applies the Function, whose ``forward`` runs ``impl`` directly (no dispatcher round trip),
  whose ``setup_context`` and ``backward`` are the same functions as the custom op's autograd, whose
  ``jvp`` gives forward mode (``torch.func.jvp``, ``jacfwd``, ``torch.autograd.forward_ad``), and whose
  ``vmap`` is a real batching rule: the ops are natively batched over their leading dimension, so a
  vmapped dimension is folded into it (one native call, no per-sample fallback).

The backward and jvp formulas are written with differentiable calls (other ``NativeOp``\\ s, or torch
ops), so double backward, ``jacrev`` of ``grad`` and Hessian-vector products follow from the same wiring.
Where a derivative is not defined or not implemented, ``not_differentiable`` gives the formula that
raises a clear error naming the op and the mode.

Math of each op: its family's module; the conventions here: DESIGN.md, "Autodiff".
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers
from torch.autograd import forward_ad

__all__ = ["NativeOp", "ROW", "SHARED", "define", "eager_call", "fast_apply", "lean_apply", "lean_backward_ready", "lean_path",
           "lean_ready", "lean_ready_pair", "not_differentiable", "one_forward_level", "save", "untracked"]

ROW = "row"  # a tensor argument whose leading dimension is the op's batch (vmap folds into it)
SHARED = "shared"  # a tensor argument common to the whole batch (vmap over it calls the op per sample)

_REAL = (Tensor, torch.nn.Parameter)


def save(ctx: Any, *tensors: Optional[Tensor]) -> None:
    """Save ``tensors`` for the backward and for the jvp (both read them as ``ctx.saved_tensors``)."""
    ctx.save_for_backward(*tensors)
    save_forward = getattr(ctx, "save_for_forward", None)
    if save_forward is not None:
        save_forward(*tensors)


def not_differentiable(name: str, mode: str, why: str) -> Callable[..., Any]:
    """A backward / jvp formula that raises: ``mode`` of ``diffcomb.<name>`` is not defined (``why``)."""

    def formula(ctx: Any, *_: Any) -> Any:
        raise RuntimeError(f"diffcomb.{name}: the {mode} is not defined: {why}")

    return formula


def _forward_levels() -> int:
    """How many torch.func forward-mode transforms (jvp, jacfwd) are active."""
    stack = torch._C._functorch.get_interpreter_stack() or ()
    return sum(1 for level in stack if level.key() == torch._C._functorch.TransformType.Jvp)


def one_forward_level(name: str, jvp: Callable[..., Any]) -> Callable[..., Any]:
    """``jvp`` guarded against forward mode over forward mode (jvp of jvp, jacfwd of jacfwd).

    PyTorch computes a custom autograd.Function's jvp with forward AD off for the enclosing forward
    levels, so an outer tangent of the inner tangent would be dropped and the second derivative returned
    as zeros, silently. It raises instead. Reverse over forward (jacrev(jacfwd)) and forward over reverse
    (jacfwd(jacrev), torch.func.hessian) are not affected."""

    def formula(ctx: Any, *tangents: Any) -> Any:
        if _forward_levels() > 1:
            raise RuntimeError(
                f"diffcomb.{name}: forward mode over forward mode (jvp of jvp, jacfwd of jacfwd) is not supported: "
                f"PyTorch drops the outer tangent of a custom autograd.Function's jvp (it would return zeros); put "
                f"reverse mode on one side, e.g. torch.func.hessian (jacfwd of jacrev) or jacrev of jacfwd")
        return jvp(ctx, *tangents)

    return formula


def _no_setup(ctx: Any, inputs: tuple, output: Any) -> None:
    pass


def fast_apply(function: type) -> Callable[..., Any]:
    """``function.apply`` without its per-call ``inspect.signature`` (torch binds default arguments for
    every Function that defines setup_context: tens of microseconds a call). Outside torch.func
    transforms it is the C++ apply directly (the arguments must be complete, as the ops' callers pass
    them), after unwrapping the wrappers a finished transform left (as Function.apply does); under a
    transform, ``function.apply`` itself (torch.func's handling of the Function)."""
    base = super(torch.autograd.Function, function).apply  # the C++ _FunctionBase.apply
    slow = function.apply
    active = torch._C._are_functorch_transforms_active

    def apply(*args: Any) -> Any:
        if active():
            return slow(*args)
        return base(*unwrap_dead_wrappers(args))

    return apply


def untracked(args: tuple) -> bool:
    """No derivative of the call can be taken: no torch.func transform is active, no forward-AD dual
    level is entered, and no tensor argument requires a gradient under grad mode."""
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return False
    return not (torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args))


# ---------------------------------------------------------------------------
# The lean eager path. A public function whose arguments are the common case (plain tensors, plain
# Python scalars) calls its family's native forward directly and, when a gradient is needed, wraps
# it in a small autograd.Function of its own: no custom op, no argument binding, one allocation for
# the saved state, a backward that calls the native VJP directly. It serves only calls outside
# torch.compile / torch.export, torch.func transforms and forward-mode AD, on real tensors; every
# other call (and every call with arguments that need checking) takes the NativeOp path above,
# which raises the same errors and gives the same results. The lean backward takes the NativeOp
# path itself where a derivative of the backward may be taken (create_graph=True).

_LEAN = [True]
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
_transforms_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling


@contextmanager
def lean_path(enabled: bool) -> Iterator[None]:
    """Turn the lean eager path on or off inside the block (tests run both paths on the same calls)."""
    previous = _LEAN[0]
    _LEAN[0] = enabled
    try:
        yield
    finally:
        _LEAN[0] = previous


def lean_ready(x: Tensor) -> bool:
    """The lean eager path may serve a call on ``x``: it is on, nothing traces or transforms the
    call (torch.compile, torch.func, forward-mode AD), and x is a plain tensor (no subclass, no
    functorch wrapper left by a finished transform)."""
    return (_LEAN[0] and not _is_compiling() and type(x) in _REAL and not x.is_meta and not _transforms_active()
            and forward_ad._current_level < 0 and not _wrapped(x))


def lean_ready_pair(x: Tensor, y: Tensor) -> bool:
    """``lean_ready(x) and lean_ready(y)``, the global state read once."""
    return (_LEAN[0] and type(x) in _REAL and type(y) in _REAL and not x.is_meta and not y.is_meta
            and not _is_compiling() and not _transforms_active() and forward_ad._current_level < 0
            and not _wrapped(x) and not _wrapped(y))


def lean_backward_ready(grad: Tensor) -> bool:
    """A lean backward may call native code on ``grad`` directly: no graph of the backward is being
    recorded (create_graph=False), no transform or forward-AD level is active (grad may carry a
    tangent there) and grad is a plain tensor."""
    return (not torch.is_grad_enabled() and not _transforms_active() and forward_ad._current_level < 0
            and type(grad) in _REAL and not _wrapped(grad))


def lean_apply(function: type) -> Callable[..., Any]:
    """``function.apply`` of a lean autograd.Function (old style, ``forward(ctx, ...)``): the C++
    apply directly, as Function.apply does outside transforms (lean calls are made only there)."""
    return super(torch.autograd.Function, function).apply  # the C++ _FunctionBase.apply


def eager_call(op: Any, x: Tensor, *args: Any) -> Any:
    """A raw custom op without autograd (a solver, a sampler; x its only tensor argument) on the lean
    path: its implementation directly where ``lean_ready(x)`` and no gradient is recorded through x
    (there the op attaches its own "autograd not implemented" node); otherwise the op (dispatcher,
    fake tensors, vmap rule, torch.compile)."""
    if lean_ready(x) and not (x.requires_grad and torch.is_grad_enabled()):
        return op._init_fn(x, *args)
    return op(x, *args)


class NativeOp:
    """A native op wired for eager autograd, torch.func, forward mode, vmap and torch.compile.

    Call it with the custom op's arguments. ``op`` is the registered custom op
    (``torch.ops.diffcomb.<name>``), ``function`` the autograd.Function of the eager path.
    """

    __slots__ = ("_apply", "_forward", "function", "name", "op")

    def __init__(self, name: str, op: Any, function: type) -> None:
        self.name = name
        self.op = op
        self.function = function
        self._apply = fast_apply(function)
        self._forward = function.forward

    def __call__(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():
            return self.op(*args)
        if untracked(args):
            # Nothing to differentiate: skip the autograd.Function's cost. As Function.apply does,
            # unwrap the wrappers that a finished torch.func transform left (a vjp's pullback).
            return self._forward(*unwrap_dead_wrappers(args))
        return self._apply(*args)

    def __repr__(self) -> str:
        return f"NativeOp(diffcomb::{self.name})"


def _eager_forward(impl: Callable[..., Any], op: Any) -> Callable[..., Any]:
    """``impl`` on real tensors; the custom op under a tracing mode (fake or functional tensors reach the
    Function when an outer tracer, such as non-strict export, runs the eager path)."""

    def forward(*args: Any) -> Any:
        for a in args:
            if isinstance(a, Tensor) and (type(a) not in _REAL or a.is_meta):
                return op(*args)
        return impl(*args)

    return forward


def _fold_rule(function: type, kinds: Sequence[Optional[str]],
               out_rows: Optional[Sequence[bool]]) -> Callable[..., Any]:
    """The batching rule: vmapped ROW arguments are folded into the op's leading batch dimension
    (unbatched ROW arguments are expanded); a vmapped SHARED argument calls the op once per sample."""

    def rule(info: Any, in_dims: tuple, *args: Any) -> tuple:
        size = info.batch_size
        if any(d is not None and k != ROW for d, k in zip(in_dims, kinds)):
            return _loop(function, size, in_dims, args)
        batch = None
        for a, d, k in zip(args, in_dims, kinds):
            if k == ROW and a is not None:
                batch = a.shape[0] if d is None else a.movedim(d, 0).shape[1]
                break
        folded = []
        for a, d, k in zip(args, in_dims, kinds):
            if k == ROW and a is not None:
                a = a.movedim(d, 0) if d is not None else a.unsqueeze(0).expand(size, *a.shape)
                a = a.reshape(size * batch, *a.shape[2:]).contiguous()
            folded.append(a)
        out = function.apply(*folded)
        single = not isinstance(out, tuple)
        outs = (out,) if single else out
        rows = out_rows if out_rows is not None else (True,) * len(outs)
        result = tuple(o.reshape(size, batch, *o.shape[1:]) if r else o for o, r in zip(outs, rows))
        dims = tuple(0 if r else None for r in rows)
        return (result[0], dims[0]) if single else (result, dims)

    return rule


def _loop(function: type, size: int, in_dims: tuple, args: tuple) -> tuple:
    """The op once per vmapped sample, stacked (for a vmapped argument that the batch does not carry)."""
    outs = [function.apply(*(a.select(d, i) if d is not None else a for a, d in zip(args, in_dims)))
            for i in range(size)]
    if not isinstance(outs[0], tuple):
        return torch.stack(outs), 0
    return tuple(torch.stack(o) for o in zip(*outs)), tuple(0 for _ in outs[0])


def define(name: str, impl: Callable[..., Any], fake: Callable[..., Any], *, kinds: Sequence[Optional[str]],
           out_rows: Optional[Sequence[bool]] = None, setup: Optional[Callable[..., None]] = None,
           backward: Optional[Callable[..., Any]] = None, jvp: Optional[Callable[..., Any]] = None) -> NativeOp:
    """Register ``impl`` as ``diffcomb::<name>`` and wire it for every autodiff mode.

    Args:
        name: the op's name in the ``diffcomb`` namespace.
        impl: the implementation (type-annotated: its annotations are the op's schema). It receives
            real tensors, checks its own arguments (``check_op``) and calls native code.
        fake: the fake (meta) implementation, with the same checks.
        kinds: per positional argument, ``ROW`` (a tensor whose leading dimension is the batch),
            ``SHARED`` (a tensor common to the batch) or ``None`` (not a tensor).
        out_rows: per output, whether its leading dimension is the batch (default: all).
        setup: ``setup_context(ctx, inputs, output)``; save tensors with ``save`` so that the jvp sees
            them too.
        backward: ``backward(ctx, *grads)``, written with differentiable calls (double backward).
        jvp: ``jvp(ctx, *tangents)``, one tangent (or None) per output.
    """
    qualified = f"diffcomb::{name}"
    op = torch.library.custom_op(qualified, impl, mutates_args=())
    op.register_fake(fake)
    if backward is not None:
        torch.library.register_autograd(qualified, backward, setup_context=setup or _no_setup)
    function = type(f"{name}_function", (torch.autograd.Function,), {
        "forward": staticmethod(_eager_forward(impl, op)),
        "setup_context": staticmethod(setup or _no_setup),
        "backward": staticmethod(backward or not_differentiable(name, "derivative", "the op is not differentiable")),
        "jvp": staticmethod(one_forward_level(name, jvp) if jvp is not None else
                            not_differentiable(name, "forward-mode derivative", "no jvp formula")),
        "__doc__": f"The eager autograd.Function of diffcomb::{name} (diffcomb._autodiff).",
        "__module__": impl.__module__,
    })
    function.vmap = staticmethod(_fold_rule(function, tuple(kinds), out_rows))
    return NativeOp(name, op, function)

