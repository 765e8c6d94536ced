"""The Sinkhorn family's custom ops (SPEC.md section 4): log-domain Sinkhorn on contiguous
``(B, n, m)`` batches, with its two backward passes, registered with ``torch.library`` (fake
implementations and autograd), so every public function of the family works under
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and ``torch.library.opcheck``.

The native kernels (csrc/sinkhorn) solve every problem of the batch to its own convergence and
compute the backward either by implicit differentiation of the optimality conditions (conjugate
gradient on SPEC 4.3's system) or by replaying the recorded iterations in reverse (unrolling).
The public functions (diffcomb.transport, diffcomb.transport_sort, diffcomb.transport_permutation)
validate, broadcast and flatten, then call :func:`solve`.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._checks import check_op, check_op_tensor, message

__all__ = ["BACKWARDS", "default_tol", "solve"]

BACKWARDS = ("implicit", "unroll")
_DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-6}  # SPEC 4.1
_CG_TOL = {torch.float32: 1e-7, torch.float64: 1e-11}
_FLOATS = tuple(_native.DTYPE_CODES)


def default_tol(dtype: torch.dtype) -> float:
    """The marginal tolerance of SPEC 4.1 for the compute dtype."""
    return _DEFAULT_TOL[dtype]


def _weights_error(fn: str, a: Tensor, b: Tensor) -> Optional[str]:
    """Why the marginals a (B, n), b (B, m) are invalid (SPEC 4.4: negative weights, unequal or zero
    masses), or None. Rows with NaN/inf are not checked (they give NaN results, SPEC 0). Reads the
    values: the few statistics are computed on the device and read back at once (one
    synchronization on CUDA)."""
    if a.numel() == 0 or b.numel() == 0:
        return None
    a64, b64 = a.double(), b.double()
    sa, sb = a64.sum(-1).reshape(-1), b64.sum(-1).reshape(-1)
    finite = sa.isfinite() & sb.isfinite()
    rtol = 1e-5 if a.dtype == torch.float32 else 1e-9
    unequal = ((sa - sb).abs() > rtol * torch.maximum(sa.abs(), sb.abs()).clamp_min(1.0)) & finite
    k = unequal.to(torch.uint8).argmax()  # the first problem with unequal masses (0 when none)
    zero = torch.zeros((), dtype=torch.float64, device=a.device)
    min_a = torch.where((a64 < 0) & a64.isfinite(), a64, zero).amin()
    min_b = torch.where((b64 < 0) & b64.isfinite(), b64, zero).amin()
    stats = torch.stack([min_a, min_b, unequal.any().double(), k.double(), sa[k], sb[k],
                         ((sa <= 0) & finite).any().double()]).tolist()
    min_a, min_b, any_unequal, k, mass_a, mass_b, zero_mass = stats
    if min_a < 0 or min_b < 0:
        return message(fn, f"the marginals a and b must be non-negative, got a minimum of {min_a:g} for a and "
                           f"{min_b:g} for b")
    if any_unequal:
        return message(fn, f"the marginals must have equal mass, sum(a) == sum(b); got sum(a) = {mass_a:.9g} and "
                           f"sum(b) = {mass_b:.9g} in batch element {int(k)} (unbalanced transport is not supported)")
    if zero_mass:
        return message(fn, "the marginals must have positive mass, got sum(a) = 0")
    return None


_INTERNAL_PATHS = tuple(os.path.dirname(path) + os.sep for path in (__file__, torch.__file__))


def _warn(text: str) -> None:
    """A UserWarning attributed to the first caller outside diffcomb and torch (the user's line,
    also when the custom op runs inside a compiled graph)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_PATHS):
        frame, level = frame.f_back, level + 1
    warnings.warn(text, UserWarning, stacklevel=level - 1 if frame is None else level)


def _warn_not_converged(fn: str, err: Tensor, tol: float, max_iter: int) -> None:
    """One warning when some problem stopped at max_iter above tol (err on the CPU costs nothing to
    read, on CUDA one synchronization; NaN problems are not counted, their results are NaN)."""
    bad = err > tol
    count = int(bad.sum())
    if count:
        worst = float(err[bad].max())
        _warn(message(fn, f"Sinkhorn did not converge in {count} of {err.numel()} problem(s): stopped at "
              f"max_iter={max_iter} with a row-marginal error sum_i |sum_j P_ij - a_i| of up to {worst:.3g} > "
              f"tol={tol:g}, so the plan (and its gradient) is that far from the transport between a and b. "
              f"Increase max_iter, or epsilon (it is on the scale of the cost: rescale a large cost); "
              f"`converged` reports each problem"))



# ---------------------------------------------------------------------------
# Custom ops on contiguous (B, n, m) batches.
#
# Each op's implementation (and its fake) first checks what a direct call could get wrong:
# shapes, dtypes, devices, contiguity and the scalar arguments' ranges (_checks.check_op_tensor,
# check_op: no tensor values are read, so the checks are free and pass under torch.compile and
# opcheck). The public functions have already validated with named messages; these checks keep a
# direct call of torch.ops.diffcomb.* from reading out of bounds.


def _check_side(op: str, name: str, t: Optional[Tensor], shape: tuple, C: Tensor,
                dtype: Optional[torch.dtype] = None) -> None:
    """A side input of a raw op (None is skipped): exactly ``shape``, C's dtype (or ``dtype``), C's
    device, contiguous."""
    if t is not None:
        check_op_tensor(op, name, t, (C.dtype if dtype is None else dtype,), shape, C.device)


def _check_problem(op: str, C: Tensor, a: Tensor, b: Tensor, eps: float) -> None:
    """The cost (B, n, m), the weights (B, n), (B, m) and eps > 0, finite."""
    check_op_tensor(op, "C", C, _FLOATS, 3)
    batch, n, m = C.shape
    _check_side(op, "a", a, (batch, n), C)
    _check_side(op, "b", b, (batch, m), C)
    check_op(0.0 < eps < math.inf, lambda: f"torch.ops.diffcomb.{op}: eps must be positive and finite, got {eps}",
             ValueError)


def _check_forward_args(C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float,
                        check_every: int) -> None:
    op = "sinkhorn"
    _check_problem(op, C, a, b, eps)
    where = f"torch.ops.diffcomb.{op}"
    check_op(max_iter >= 1, lambda: f"{where}: max_iter must be >= 1, got {max_iter}", ValueError)
    check_op(check_every >= 1, lambda: f"{where}: check_every must be >= 1, got {check_every}", ValueError)
    check_op(tol < math.inf, lambda: f"{where}: tol must be finite (<= 0: no check), got {tol}", ValueError)


def _check_backward_args(op: str, C: Tensor, a: Tensor, b: Tensor, G: Optional[Tensor], gcost: Optional[Tensor],
                         eps: float) -> None:
    _check_problem(op, C, a, b, eps)
    batch, n, m = C.shape
    _check_side(op, "G", G, (batch, n, m), C)
    _check_side(op, "gcost", gcost, (batch,), C)


def _capturing(x: Tensor) -> bool:
    """Whether x's device is being captured into a CUDA graph (no synchronization allowed)."""
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def _history_shapes(batch: int, n: int, m: int, max_iter: int, unroll: bool) -> tuple[tuple, tuple]:
    steps = max_iter if unroll else 0
    return (batch, steps, n), (batch, steps + 1 if unroll else 0, m)


@torch.library.custom_op("diffcomb::sinkhorn", mutates_args=())
def _sinkhorn_op(C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float, check_every: int,
                 unroll: bool, check_weights: bool = False, caller: str = "sinkhorn"
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(P, f, g, cost, n_iter, err, f_hist, g_hist) for costs C (B, n, m) and weights a (B, n), b (B, m).
    tol <= 0: exactly max_iter iterations. f_hist/g_hist: recorded iterates when unroll.

    check_weights: raise ValueError for negative weights or unequal masses (SPEC 4.4; reads the weights,
    one synchronization on CUDA, skipped while a CUDA graph is captured). A run with tol > 0 warns
    (UserWarning) when some problem stopped at max_iter above tol (on CUDA reading the errors costs one
    synchronization; skipped while a CUDA graph is captured). Both happen here, in the op, so that
    compiled graphs raise and warn as eager calls do. caller: the public function those messages name. A
    problem with n = 0 or m = 0 has no transport between masses 0 and 1: its cost, potentials and err
    are NaN."""
    _check_forward_args(C, a, b, eps, max_iter, tol, check_every)
    if check_weights and not _capturing(C):
        error = _weights_error(caller, a, b)
        if error is not None:
            raise ValueError(error)
    batch, n, m = C.shape
    fh_shape, gh_shape = _history_shapes(batch, n, m, max_iter, unroll)
    if C.numel() == 0:
        nan = math.nan
        return (torch.zeros_like(C), C.new_full((batch, n), nan), C.new_full((batch, m), nan),
                C.new_full((batch,), nan), torch.zeros(batch, dtype=torch.int64, device=C.device),
                torch.full((batch,), nan, dtype=torch.float64, device=C.device), C.new_zeros(fh_shape),
                C.new_zeros(gh_shape))
    P = torch.empty_like(C)
    f = C.new_empty((batch, n))
    g = C.new_empty((batch, m))
    cost = C.new_empty(batch)
    n_iter = torch.empty(batch, dtype=torch.int64, device=C.device)
    err = torch.empty(batch, dtype=torch.float64, device=C.device)
    f_hist = C.new_zeros(fh_shape)  # rows past a problem's n_iter stay 0
    g_hist = C.new_zeros(gh_shape)
    addr = _native.address
    _native.launch(caller, "sinkhorn_forward", C, addr(C), addr(a), addr(b), addr(P), addr(f), addr(g), addr(cost),
                   addr(n_iter), addr(err), addr(f_hist), addr(g_hist), batch, n, m, eps, max_iter, tol, check_every,
                   _native.dtype_code(C), workspace=("sinkhorn_work_bytes", (batch, n, m)))
    if tol > 0 and not _capturing(C):  # on CUDA: one synchronization, the price of never failing silently
        _warn_not_converged(caller, err, tol, max_iter)
    return P, f, g, cost, n_iter, err, f_hist, g_hist


@_sinkhorn_op.register_fake
def _(C, a, b, eps, max_iter, tol, check_every, unroll, check_weights=False, caller="sinkhorn"):
    _check_forward_args(C, a, b, eps, max_iter, tol, check_every)
    batch, n, m = C.shape
    fh_shape, gh_shape = _history_shapes(batch, n, m, max_iter, unroll)
    return (torch.empty_like(C), C.new_empty((batch, n)), C.new_empty((batch, m)), C.new_empty(batch),
            C.new_empty(batch, dtype=torch.int64), C.new_empty(batch, dtype=torch.float64), C.new_empty(fh_shape),
            C.new_empty(gh_shape))


def _empty_backward(C: Tensor, a: Tensor, b: Tensor, gcost: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of problems with n = 0 or m = 0: the plan is empty and the cost NaN, so a cost
    gradient makes the weights' gradients NaN."""
    fill = math.nan if gcost is not None else 0.0
    return torch.zeros_like(C), torch.full_like(a, fill), torch.full_like(b, fill)


def _check_implicit_args(C: Tensor, a: Tensor, b: Tensor, P: Tensor, f: Tensor, g: Tensor, G: Optional[Tensor],
                         gcost: Optional[Tensor], eps: float) -> None:
    op = "sinkhorn_implicit_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    batch, n, m = C.shape
    _check_side(op, "P", P, (batch, n, m), C)
    _check_side(op, "f", f, (batch, n), C)
    _check_side(op, "g", g, (batch, m), C)


@torch.library.custom_op("diffcomb::sinkhorn_implicit_backward", mutates_args=())
def _implicit_backward_op(C: Tensor, a: Tensor, b: Tensor, P: Tensor, f: Tensor, g: Tensor, G: Optional[Tensor],
                          gcost: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dC, da, db) by implicit differentiation (SPEC 4.3 b) of the plan P's own optimality
    conditions (its marginals P 1, P^T 1 in H: exact for the returned plan, converged or not) for
    plan gradients G (B, n, m) and cost gradients gcost (B) (envelope, SPEC 4.2); None stands for
    zero."""
    _check_implicit_args(C, a, b, P, f, g, G, gcost, eps)
    op = "sinkhorn_implicit_backward"
    batch, n, m = C.shape
    if C.numel() == 0:
        return _empty_backward(C, a, b, gcost)
    dC, da, db = torch.zeros_like(C), torch.zeros_like(a), torch.zeros_like(b)
    addr = _native.address
    cg_tol = _CG_TOL[C.dtype]
    cg_max = 10 * (n + m) + 100
    _native.launch(op, "sinkhorn_implicit_backward", C, addr(C), addr(a), addr(b), addr(P), addr(f), addr(g),
                   addr(G), addr(gcost), addr(dC), addr(da), addr(db), batch, n, m, eps, cg_tol, cg_max,
                   _native.dtype_code(C), workspace=("sinkhorn_work_bytes", (batch, n, m)))
    return dC, da, db


@_implicit_backward_op.register_fake
def _(C, a, b, P, f, g, G, gcost, eps):
    _check_implicit_args(C, a, b, P, f, g, G, gcost, eps)
    return torch.empty_like(C), torch.empty_like(a), torch.empty_like(b)


def _check_history(op: str, C: Tensor, f_hist: Tensor, g_hist: Tensor, n_iter: Tensor) -> None:
    batch, n, m = C.shape
    check_op(f_hist.dim() == 3, lambda: f"torch.ops.diffcomb.{op}: f_hist must have shape (B, T, n), got "
                                        f"{tuple(f_hist.shape)}")
    steps = f_hist.shape[1]
    _check_side(op, "f_hist", f_hist, (batch, steps, n), C)
    _check_side(op, "g_hist", g_hist, (batch, steps + 1, m), C)
    _check_side(op, "n_iter", n_iter, (batch,), C, torch.int64)


@torch.library.custom_op("diffcomb::sinkhorn_unrolled_backward", mutates_args=())
def _unrolled_backward_op(C: Tensor, a: Tensor, b: Tensor, f_hist: Tensor, g_hist: Tensor, n_iter: Tensor,
                          G: Optional[Tensor], gcost: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dC, da, db) through the recorded iterations (SPEC 4.3 a); cost gradients by the envelope.
    n_iter is clamped to the recorded history by the kernels."""
    op = "sinkhorn_unrolled_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    _check_history(op, C, f_hist, g_hist, n_iter)
    batch, n, m = C.shape
    if C.numel() == 0:
        return _empty_backward(C, a, b, gcost)
    dC, da, db = torch.zeros_like(C), torch.zeros_like(a), torch.zeros_like(b)
    max_iter = f_hist.shape[1]
    addr = _native.address
    _native.launch(op, "sinkhorn_unrolled_backward", C, addr(C), addr(a), addr(b), addr(f_hist), addr(g_hist),
                   addr(n_iter), addr(G), addr(gcost), addr(dC), addr(da), addr(db), batch, n, m, max_iter, eps,
                   _native.dtype_code(C), workspace=("sinkhorn_work_bytes", (batch, n, m)))
    return dC, da, db


@_unrolled_backward_op.register_fake
def _(C, a, b, f_hist, g_hist, n_iter, G, gcost, eps):
    op = "sinkhorn_unrolled_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    _check_history(op, C, f_hist, g_hist, n_iter)
    return torch.empty_like(C), torch.empty_like(a), torch.empty_like(b)


def _setup(ctx, inputs, output) -> None:
    C, a, b, eps, _max_iter, _tol, _check_every, unroll, _check_weights, _caller = inputs
    P, f, g, cost, n_iter, err, f_hist, g_hist = output
    ctx.mark_non_differentiable(f, g, n_iter, err, f_hist, g_hist)
    ctx.set_materialize_grads(False)  # an unused plan gradient stays None: envelope only, no CG
    ctx.eps = eps
    ctx.unroll = unroll
    if unroll:
        ctx.save_for_backward(C, a, b, f_hist, g_hist, n_iter)
    else:
        ctx.save_for_backward(C, a, b, P, f, g)


def _backward(ctx, gP, _gf, _gg, gcost, _gn, _gerr, _gfh, _ggh):
    none = (None,) * 7
    if gP is None and gcost is None:
        return (None, None, None) + none
    G = None if gP is None else gP.contiguous()
    gc = None if gcost is None else gcost.contiguous()
    if ctx.unroll:
        C, a, b, f_hist, g_hist, n_iter = ctx.saved_tensors
        dC, da, db = torch.ops.diffcomb.sinkhorn_unrolled_backward(C, a, b, f_hist, g_hist, n_iter, G, gc, ctx.eps)
    else:
        # Exact for the returned plan whether or not the forward converged (a forward that did
        # not has warned already, on the CPU).
        C, a, b, P, f, g = ctx.saved_tensors
        dC, da, db = torch.ops.diffcomb.sinkhorn_implicit_backward(C, a, b, P, f, g, G, gc, ctx.eps)
    need = ctx.needs_input_grad
    return (dC if need[0] else None, da if need[1] else None, db if need[2] else None) + none


torch.library.register_autograd("diffcomb::sinkhorn", _backward, setup_context=_setup)


def solve(fn: str, C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float, check_every: int,
          unroll: bool, check_weights: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(P, f, g, cost, n_iter, err) of contiguous (B, n, m) problems through the custom op, which
    checks the weights when asked and warns (on the CPU) about problems that did not converge, in
    the name of the public function fn."""
    P, f, g, cost, n_iter, err, _, _ = torch.ops.diffcomb.sinkhorn(
        C.contiguous(), a.contiguous(), b.contiguous(), eps, max_iter, tol, check_every, unroll, check_weights, fn)
    return P, f, g, cost, n_iter, err

