"""The custom ops of Sinkhorn's extended solvers (SPEC.md section 4), wired with ``_autodiff.define``:

- ``diffcomb::sinkhorn_ext``: log-domain Sinkhorn on contiguous ``(B, n, m)`` costs with per problem
  options ``params (B, 5)`` float64 = (eps, eps0, rho_a, rho_b, symmetric): the target epsilon, the
  start of epsilon scaling (factor ``scaling``; eps0 = eps: none), the KL penalties of unbalanced
  marginals (``inf``: balanced) and whether the problem is symmetric (``C = C^T``, ``a = b``: solved
  with ``g = f``, one symmetrized update per iteration; not with the unrolled backward), and warm
  starts ``f0 (B, n)``, ``g0 (B, m)``. Its backward is
  ``sinkhorn_ext_implicit`` (implicit differentiation, unbalanced included) or
  ``sinkhorn_ext_unrolled`` (through the recorded iterations; no epsilon scaling).
- ``diffcomb::sinkhorn_cloud``: the same solver between point clouds ``x (B, n, d)``, ``y (B, m, d)``
  with the cost (``metric`` 0: squared Euclidean, 1: Euclidean) computed inside the kernels, O(n + m)
  memory; no plan. Its backward is the envelope gradient ``sinkhorn_cloud_grad`` of the cost in
  ``x``, ``y``, ``a`` and ``b``, and its jvp the same gradient against the tangents.

The public functions (diffcomb.transport) validate, broadcast and flatten, then call these ops.
Forward mode and the backward ops' own derivatives are diffcomb._transport_derivatives (the implicit
system with the dampings of relaxed marginals; the recorded iterations replayed with torch ops; between
point clouds, the (n, m) cost and plan formed for the second derivatives only).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._autodiff import ROW, define, save
from ._checks import check_op, check_op_tensor, message
from ._sinkhorn_ops import _CG_TOL, _capturing, _warn_not_converged, _weights_error
from ._transport_derivatives import (cloud_first, cost_tangent, implicit_first, jvp_by_vjp, point, replay, tangent,
                                     unrolled_first)

__all__ = ["CLOUD", "METRICS", "SOLVE", "PARAMS"]

PARAMS = 5  # eps, eps0, rho_a, rho_b, symmetric (csrc/sinkhorn/sinkhorn.h, Options)
METRICS = {"sqeuclidean": 0, "euclidean": 1}
_FLOATS = tuple(_native.DTYPE_CODES)


def _unbalanced(params: Tensor) -> bool:
    """Whether some problem of params (B, 5) relaxes a marginal (reads the values: host tensors only)."""
    return bool(torch.isfinite(params[:, 2:4]).any()) if params.numel() else False


def _weights_check(fn: str, a: Tensor, b: Tensor, balanced: bool) -> Optional[str]:
    """Why the weights are invalid: as sinkhorn's for balanced problems; unbalanced ones only need
    non-negative weights (their masses may differ)."""
    if balanced:
        return _weights_error(fn, a, b)
    finite_min = [float(torch.where(w.isfinite(), w, torch.zeros_like(w)).amin()) if w.numel() else 0.0
                  for w in (a, b)]
    if min(finite_min) < 0:
        return message(fn, f"the marginals a and b must be non-negative, got a minimum of {finite_min[0]:g} for a "
                           f"and {finite_min[1]:g} for b")
    return None


def _check_common(op: str, like: Tensor, batch: int, n: int, m: int, a: Tensor, b: Tensor, params: Tensor,
                  f0: Optional[Tensor], g0: Optional[Tensor]) -> None:
    dev = like.device
    check_op_tensor(op, "a", a, (like.dtype,), (batch, n), dev)
    check_op_tensor(op, "b", b, (like.dtype,), (batch, m), dev)
    check_op_tensor(op, "params", params, (torch.float64,), (batch, PARAMS), dev)
    if f0 is not None:
        check_op_tensor(op, "f0", f0, (like.dtype,), (batch, n), dev)
    if g0 is not None:
        check_op_tensor(op, "g0", g0, (like.dtype,), (batch, m), dev)


def _check_run(op: str, scaling: float, max_iter: int, tol: float, check_every: int) -> None:
    where = f"torch.ops.diffcomb.{op}"
    check_op(0.0 < scaling <= 1.0, lambda: f"{where}: scaling must be in (0, 1], got {scaling}", ValueError)
    check_op(max_iter >= 1, lambda: f"{where}: max_iter must be >= 1, got {max_iter}", ValueError)
    check_op(check_every >= 1, lambda: f"{where}: check_every must be >= 1, got {check_every}", ValueError)
    check_op(tol < math.inf, lambda: f"{where}: tol must be finite (<= 0: no check), got {tol}", ValueError)


def _validate_and_warn(fn: str, a: Tensor, b: Tensor, params: Tensor, check_weights: bool, like: Tensor) -> None:
    if check_weights and not _capturing(like):
        error = _weights_check(fn, a, b, not _unbalanced(params.cpu()))
        if error is not None:
            raise ValueError(error)


def _empty_outputs(like: Tensor, batch: int, n: int, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    nan = math.nan
    return (like.new_full((batch, n), nan), like.new_full((batch, m), nan), like.new_full((batch,), nan),
            torch.zeros(batch, dtype=torch.int64, device=like.device),
            torch.full((batch,), nan, dtype=torch.float64, device=like.device))


# ---------------------------------------------------------------------------
# Dense costs.


def _history_shapes(batch: int, n: int, m: int, max_iter: int, unroll: bool) -> tuple[tuple, tuple]:
    steps = max_iter if unroll else 0
    return (batch, steps, n), (batch, steps + 1 if unroll else 0, m)


def _check_ext(C: Tensor, a: Tensor, b: Tensor, params: Tensor, f0: Optional[Tensor], g0: Optional[Tensor],
               scaling: float, max_iter: int, tol: float, check_every: int) -> None:
    op = "sinkhorn_ext"
    check_op_tensor(op, "C", C, _FLOATS, 3)
    batch, n, m = C.shape
    _check_common(op, C, batch, n, m, a, b, params, f0, g0)
    _check_run(op, scaling, max_iter, tol, check_every)


def _ext_impl(C: Tensor, a: Tensor, b: Tensor, params: Tensor, f0: Optional[Tensor], g0: Optional[Tensor],
              scaling: float, max_iter: int, tol: float, check_every: int, unroll: bool, check_weights: bool,
              caller: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(P, f, g, cost, n_iter, err, f_hist, g_hist) of the problems (C, a, b) with options params."""
    _check_ext(C, a, b, params, f0, g0, scaling, max_iter, tol, check_every)
    _validate_and_warn(caller, a, b, params, check_weights, C)
    batch, n, m = C.shape
    fh_shape, gh_shape = _history_shapes(batch, n, m, max_iter, unroll)
    if C.numel() == 0:
        return (torch.zeros_like(C), *_empty_outputs(C, batch, n, m), C.new_zeros(fh_shape),
                C.new_zeros(gh_shape))
    P = torch.empty_like(C)
    f, g = C.new_empty((batch, n)), C.new_empty((batch, m))
    cost = C.new_empty(batch)
    n_iter = torch.empty(batch, dtype=torch.int64, device=C.device)
    err = torch.empty(batch, dtype=torch.float64, device=C.device)
    f_hist, g_hist = C.new_zeros(fh_shape), C.new_zeros(gh_shape)
    addr = _native.address
    _native.launch(caller, "sinkhorn_forward_ext", C, addr(C), addr(a), addr(b), addr(P), addr(f), addr(g),
                   addr(cost), addr(n_iter), addr(err), addr(f_hist), addr(g_hist), addr(f0), addr(g0), addr(params),
                   scaling, batch, n, m, max_iter, tol, check_every, _native.dtype_code(C),
                   workspace=("sinkhorn_work_bytes", (batch, n, m)))
    if tol > 0 and not _capturing(C):
        _warn_not_converged(caller, err, tol, max_iter)
    return P, f, g, cost, n_iter, err, f_hist, g_hist


def _ext_fake(C, a, b, params, f0, g0, scaling, max_iter, tol, check_every, unroll, check_weights, caller):
    _check_ext(C, a, b, params, f0, g0, scaling, max_iter, tol, check_every)
    batch, n, m = C.shape
    fh_shape, gh_shape = _history_shapes(batch, n, m, max_iter, unroll)
    return (torch.empty_like(C), C.new_empty((batch, n)), C.new_empty((batch, m)), C.new_empty(batch),
            C.new_empty(batch, dtype=torch.int64), C.new_empty(batch, dtype=torch.float64), C.new_empty(fh_shape),
            C.new_empty(gh_shape))


def _check_backward(op: str, C: Tensor, a: Tensor, b: Tensor, params: Tensor, G: Optional[Tensor],
                    gcost: Optional[Tensor]) -> None:
    check_op_tensor(op, "C", C, _FLOATS, 3)
    batch, n, m = C.shape
    _check_common(op, C, batch, n, m, a, b, params, None, None)
    if G is not None:
        check_op_tensor(op, "G", G, (C.dtype,), (batch, n, m), C.device)
    if gcost is not None:
        check_op_tensor(op, "gcost", gcost, (C.dtype,), (batch,), C.device)


def _empty_grads(C: Tensor, a: Tensor, b: Tensor, gcost: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    fill = math.nan if gcost is not None else 0.0
    return torch.zeros_like(C), torch.full_like(a, fill), torch.full_like(b, fill)


def _implicit_impl(C: Tensor, a: Tensor, b: Tensor, params: Tensor, P: Tensor, f: Tensor, g: Tensor,
                   G: Optional[Tensor], gcost: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(dC, da, db) by implicit differentiation of the returned plan's optimality conditions."""
    op = "sinkhorn_ext_implicit"
    _check_backward(op, C, a, b, params, G, gcost)
    for name, t, shape in (("P", P, C.shape), ("f", f, a.shape), ("g", g, b.shape)):
        check_op_tensor(op, name, t, (C.dtype,), tuple(shape), C.device)
    batch, n, m = C.shape
    if C.numel() == 0:
        return _empty_grads(C, a, b, gcost)
    dC, da, db = torch.zeros_like(C), torch.zeros_like(a), torch.zeros_like(b)
    addr = _native.address
    _native.launch(op, "sinkhorn_implicit_backward_ext", C, addr(C), addr(a), addr(b), addr(P), addr(f), addr(g),
                   addr(G), addr(gcost), addr(dC), addr(da), addr(db), addr(params), batch, n, m, _CG_TOL[C.dtype],
                   10 * (n + m) + 100, _native.dtype_code(C), workspace=("sinkhorn_work_bytes", (batch, n, m)))
    return dC, da, db


def _implicit_fake(C, a, b, params, P, f, g, G, gcost):
    _check_backward("sinkhorn_ext_implicit", C, a, b, params, G, gcost)
    return torch.empty_like(C), torch.empty_like(a), torch.empty_like(b)


def _unrolled_impl(C: Tensor, a: Tensor, b: Tensor, params: Tensor, f_hist: Tensor, g_hist: Tensor, n_iter: Tensor,
                   G: Optional[Tensor], gcost: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(dC, da, db) through the recorded iterations (the warm start is a constant)."""
    op = "sinkhorn_ext_unrolled"
    _check_backward(op, C, a, b, params, G, gcost)
    batch, n, m = C.shape
    check_op(f_hist.dim() == 3, lambda: f"torch.ops.diffcomb.{op}: f_hist must have shape (B, T, n)")
    steps = f_hist.shape[1]
    check_op_tensor(op, "f_hist", f_hist, (C.dtype,), (batch, steps, n), C.device)
    check_op_tensor(op, "g_hist", g_hist, (C.dtype,), (batch, steps + 1, m), C.device)
    check_op_tensor(op, "n_iter", n_iter, (torch.int64,), (batch,), C.device)
    if C.numel() == 0:
        return _empty_grads(C, a, b, gcost)
    dC, da, db = torch.zeros_like(C), torch.zeros_like(a), torch.zeros_like(b)
    addr = _native.address
    _native.launch(op, "sinkhorn_unrolled_backward_ext", C, addr(C), addr(a), addr(b), addr(f_hist), addr(g_hist),
                   addr(n_iter), addr(G), addr(gcost), addr(dC), addr(da), addr(db), addr(params), batch, n, m,
                   steps, _native.dtype_code(C), workspace=("sinkhorn_work_bytes", (batch, n, m)))
    return dC, da, db


def _unrolled_fake(C, a, b, params, f_hist, g_hist, n_iter, G, gcost):
    _check_backward("sinkhorn_ext_unrolled", C, a, b, params, G, gcost)
    return torch.empty_like(C), torch.empty_like(a), torch.empty_like(b)


def _or_zeros(t: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if t is None else t


def _backward_of_backward(first, primals: tuple, G: Optional[Tensor], gcost: Optional[Tensor], cotangents: tuple,
                          count: int) -> tuple:
    """The vector-Jacobian product of a first-order backward ``first(*primals, G, gcost)`` (a torch
    function) with its cotangents: the gradients of primals, then None for the ``count`` constants,
    then those of G and gcost (None where they were None)."""
    G0 = torch.zeros_like(primals[0]) if G is None else G
    gc0 = primals[0].new_zeros(primals[0].shape[0]) if gcost is None else gcost
    out, pull = torch.func.vjp(first, *primals, G0, gc0)
    grads = pull(tuple(_or_zeros(c, o) for c, o in zip(cotangents, out)))
    k = len(primals)
    return (grads[:k] + (None,) * count + (grads[k] if G is not None else None,)
            + (grads[k + 1] if gcost is not None else None,))


def _forward_of_backward(first, primals: tuple, G: Optional[Tensor], gcost: Optional[Tensor], tangents: tuple,
                         tG: Optional[Tensor], tgcost: Optional[Tensor]) -> tuple:
    """The Jacobian-vector product of ``first(*primals, G, gcost)`` (reverse mode only: it runs inside a
    forward-mode level)."""
    G0 = torch.zeros_like(primals[0]) if G is None else G
    gc0 = primals[0].new_zeros(primals[0].shape[0]) if gcost is None else gcost
    return jvp_by_vjp(first, primals + (G0, gc0), tuple(tangents) + (tG, tgcost))


def _save_all(ctx, inputs, output) -> None:
    save(ctx, *inputs)


def _derivatives(parts):
    """backward and jvp of a first-order backward op (9 inputs: C, a, b, params, three saved
    tensors, G, gcost) from ``parts(saved) = (first, G, gcost)``: its torch formula, differentiated."""

    def backward(ctx, sC, sa, sb):
        C, a, b, *_ = ctx.saved_tensors
        first, G, gcost = parts(*ctx.saved_tensors)
        return _backward_of_backward(first, (C, a, b), G, gcost, (sC, sa, sb), 4)

    def jvp(ctx, tC, ta, tb, _t3, _t4, _t5, _t6, tG, tgcost):
        C, a, b, *_ = ctx.saved_tensors
        first, G, gcost = parts(*ctx.saved_tensors)
        return _forward_of_backward(first, (C, a, b), G, gcost, (tC, ta, tb), tG, tgcost)

    return dict(setup=_save_all, backward=backward, jvp=jvp)


def _implicit_parts(C, a, b, params, P, f, g, G, gcost):
    return (lambda C, a, b, G, gc: implicit_first(C, a, b, params, P, f, g, G, gc)), G, gcost


def _unrolled_parts(C, a, b, params, f_hist, g_hist, n_iter, G, gcost):
    g0, steps = g_hist[:, 0], f_hist.shape[1]
    return (lambda C, a, b, G, gc: unrolled_first(C, a, b, params, g0, n_iter, steps, G, gc)), G, gcost


IMPLICIT = define("sinkhorn_ext_implicit", _implicit_impl, _implicit_fake, kinds=(ROW,) * 9,
                  **_derivatives(_implicit_parts))
UNROLLED = define("sinkhorn_ext_unrolled", _unrolled_impl, _unrolled_fake, kinds=(ROW,) * 9,
                  **_derivatives(_unrolled_parts))


def _ext_setup(ctx, inputs, output) -> None:
    C, a, b, params, _f0, _g0, _scaling, _max_iter, _tol, _check_every, unroll, _cw, _caller = inputs
    P, f, g, _cost, n_iter, err, f_hist, g_hist = output
    ctx.mark_non_differentiable(f, g, n_iter, err, f_hist, g_hist)
    ctx.set_materialize_grads(False)
    ctx.unroll = unroll
    save(ctx, C, a, b, params, P, f, g, f_hist, g_hist, n_iter)


def _ext_backward(ctx, gP, _gf, _gg, gcost, _gn, _gerr, _gfh, _ggh):
    none = (None,) * 10
    if gP is None and gcost is None:
        return (None, None, None) + none
    G = None if gP is None else gP.contiguous()
    gc = None if gcost is None else gcost.contiguous()
    C, a, b, params, P, f, g, f_hist, g_hist, n_iter = ctx.saved_tensors
    if ctx.unroll:
        dC, da, db = UNROLLED(C, a, b, params, f_hist, g_hist, n_iter, G, gc)
    else:
        dC, da, db = IMPLICIT(C, a, b, params, P, f, g, G, gc)
    need = ctx.needs_input_grad
    return (dC if need[0] else None, da if need[1] else None, db if need[2] else None) + none


def _ext_jvp(ctx, tC, ta, tb, *_):
    """Forward mode: the plan's tangent (implicit: the implicit system; unrolled: the replayed
    iterations) and the cost's envelope derivative."""
    C, a, b, params, P, f, g, f_hist, g_hist, n_iter = ctx.saved_tensors
    pt = point(C, a, b, params, P, f, g)
    if ctx.unroll:
        dP = jvp_by_vjp(lambda C, a, b: replay(C, a, b, params, g_hist[:, 0], n_iter, f_hist.shape[1])[0],
                        (C, a, b), (tC, ta, tb))
    else:
        dP = tangent(pt, tC, ta, tb)[0]
    return dP, None, None, cost_tangent(pt, tC, ta, tb), None, None, None, None


SOLVE = define("sinkhorn_ext", _ext_impl, _ext_fake, kinds=(ROW,) * 6 + (None,) * 7, setup=_ext_setup,
               backward=_ext_backward, jvp=_ext_jvp)


# ---------------------------------------------------------------------------
# Point clouds.


def _check_cloud(op: str, x: Tensor, y: Tensor, a: Tensor, b: Tensor, params: Tensor, f0: Optional[Tensor],
                 g0: Optional[Tensor], metric: int) -> None:
    check_op_tensor(op, "x", x, _FLOATS, 3)
    batch, n, d = x.shape
    check_op_tensor(op, "y", y, (x.dtype,), (batch, y.shape[1] if y.dim() == 3 else -1, d), x.device)
    _check_common(op, x, batch, n, y.shape[1], a, b, params, f0, g0)
    check_op(metric in (0, 1), lambda: f"torch.ops.diffcomb.{op}: metric must be 0 or 1, got {metric}", ValueError)


def _cloud_impl(x: Tensor, y: Tensor, a: Tensor, b: Tensor, params: Tensor, f0: Optional[Tensor],
                g0: Optional[Tensor], metric: int, scaling: float, max_iter: int, tol: float, check_every: int,
                check_weights: bool, caller: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(f, g, cost, n_iter, err) of the problems between the clouds x, y."""
    op = "sinkhorn_cloud"
    _check_cloud(op, x, y, a, b, params, f0, g0, metric)
    _check_run(op, scaling, max_iter, tol, check_every)
    _validate_and_warn(caller, a, b, params, check_weights, x)
    batch, n, d = x.shape
    m = y.shape[1]
    f, g, cost, n_iter, err = _empty_outputs(x, batch, n, m)
    if batch == 0 or n == 0 or m == 0:
        return f, g, cost, n_iter, err
    addr = _native.address
    _native.launch(caller, "sinkhorn_cloud_forward", x, addr(x), addr(y), addr(a), addr(b), addr(f), addr(g),
                   addr(cost), addr(n_iter), addr(err), addr(f0), addr(g0), addr(params), scaling, batch, n, m, d,
                   metric, max_iter, tol, check_every, _native.dtype_code(x),
                   workspace=("sinkhorn_work_bytes", (batch, n, m)))
    if tol > 0 and not _capturing(x):
        _warn_not_converged(caller, err, tol, max_iter)
    return f, g, cost, n_iter, err


def _cloud_fake(x, y, a, b, params, f0, g0, metric, scaling, max_iter, tol, check_every, check_weights, caller):
    _check_cloud("sinkhorn_cloud", x, y, a, b, params, f0, g0, metric)
    _check_run("sinkhorn_cloud", scaling, max_iter, tol, check_every)
    batch, n, _ = x.shape
    m = y.shape[1]
    return (x.new_empty((batch, n)), x.new_empty((batch, m)), x.new_empty(batch),
            x.new_empty(batch, dtype=torch.int64), x.new_empty(batch, dtype=torch.float64))


def _cloud_grad_impl(x: Tensor, y: Tensor, a: Tensor, b: Tensor, params: Tensor, f: Tensor, g: Tensor,
                     gcost: Tensor, metric: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dy, da, db): the envelope gradients of the costs for the upstream gcost (B)."""
    op = "sinkhorn_cloud_grad"
    _check_cloud(op, x, y, a, b, params, f, g, metric)
    check_op_tensor(op, "gcost", gcost, (x.dtype,), (x.shape[0],), x.device)
    batch, n, d = x.shape
    m = y.shape[1]
    if batch == 0 or n == 0 or m == 0:
        fill = math.nan
        return torch.zeros_like(x), torch.zeros_like(y), torch.full_like(a, fill), torch.full_like(b, fill)
    dx, dy, da, db = torch.empty_like(x), torch.empty_like(y), torch.empty_like(a), torch.empty_like(b)
    addr = _native.address
    _native.launch(op, "sinkhorn_cloud_backward", x, addr(x), addr(y), addr(a), addr(b), addr(f), addr(g),
                   addr(gcost), addr(dx), addr(dy), addr(da), addr(db), addr(params), batch, n, m, d, metric,
                   _native.dtype_code(x), workspace=("sinkhorn_work_bytes", (batch, n, m)))
    return dx, dy, da, db


def _cloud_grad_fake(x, y, a, b, params, f, g, gcost, metric):
    _check_cloud("sinkhorn_cloud_grad", x, y, a, b, params, f, g, metric)
    return torch.empty_like(x), torch.empty_like(y), torch.empty_like(a), torch.empty_like(b)


def _cloud_grad_setup(ctx, inputs, output) -> None:
    x, y, a, b, params, f, g, gcost, metric = inputs
    ctx.metric = metric
    save(ctx, x, y, a, b, params, f, g, gcost)


def _cloud_grad_parts(ctx):
    x, y, a, b, params, f, g, gcost = ctx.saved_tensors
    metric = ctx.metric
    return (lambda x, y, a, b, gc: cloud_first(x, y, a, b, params, f, g, gc, metric)), (x, y, a, b), gcost


def _cloud_grad_backward(ctx, sx, sy, sa, sb):
    first, primals, gcost = _cloud_grad_parts(ctx)
    out, pull = torch.func.vjp(first, *primals, gcost)
    grads = pull(tuple(_or_zeros(c, o) for c, o in zip((sx, sy, sa, sb), out)))
    return grads[:4] + (None, None, None, grads[4], None)


def _cloud_grad_jvp(ctx, tx, ty, ta, tb, _tparams, _tf, _tg, tgcost, _tmetric):
    first, primals, gcost = _cloud_grad_parts(ctx)
    return jvp_by_vjp(first, primals + (gcost,), (tx, ty, ta, tb, tgcost))


CLOUD_GRAD = define("sinkhorn_cloud_grad", _cloud_grad_impl, _cloud_grad_fake, kinds=(ROW,) * 8 + (None,),
                    setup=_cloud_grad_setup, backward=_cloud_grad_backward, jvp=_cloud_grad_jvp)


def _cloud_setup(ctx, inputs, output) -> None:
    x, y, a, b, params, _f0, _g0, metric, *_ = inputs
    f, g, _cost, n_iter, err = output
    ctx.mark_non_differentiable(f, g, n_iter, err)
    ctx.set_materialize_grads(False)
    ctx.metric = metric
    save(ctx, x, y, a, b, params, f, g)


def _cloud_backward(ctx, _gf, _gg, gcost, _gn, _gerr):
    none = (None,) * 10
    if gcost is None:
        return (None,) * 4 + none
    x, y, a, b, params, f, g = ctx.saved_tensors
    grads = CLOUD_GRAD(x, y, a, b, params, f, g, gcost.contiguous(), ctx.metric)
    return tuple(t if need else None for t, need in zip(grads, ctx.needs_input_grad[:4])) + none


def _cloud_jvp(ctx, tx, ty, ta, tb, *_):
    """The cost's tangent: the envelope gradient against the tangents (potentials are not
    differentiable)."""
    x, y, a, b, params, f, g = ctx.saved_tensors
    grads = CLOUD_GRAD(x, y, a, b, params, f, g, torch.ones_like(x[:, 0, 0]), ctx.metric)
    dims = (tuple(range(1, 3)), tuple(range(1, 3)), (1,), (1,))
    tangent = torch.zeros_like(x[:, 0, 0])
    for grad, t, dim in zip(grads, (tx, ty, ta, tb), dims):
        if t is not None:
            tangent = tangent + (grad * t).sum(dim)
    return None, None, tangent, None, None


CLOUD = define("sinkhorn_cloud", _cloud_impl, _cloud_fake, kinds=(ROW,) * 7 + (None,) * 7, setup=_cloud_setup,
               backward=_cloud_backward, jvp=_cloud_jvp)
