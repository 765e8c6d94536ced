"""The Sinkhorn family's custom ops (SPEC.md section 4): log-domain Sinkhorn on contiguous
``(B, n, m)`` batches, its two backward passes and the implicit system alone, each wired by
``diffcomb._autodiff.define`` (custom op with fake implementation and autograd, and the eager
autograd.Function with forward mode and a folding vmap rule), so every public function of the family
works under every autodiff mode, ``torch.compile(fullgraph=True)``, ``gradcheck`` and ``opcheck``.

The native kernels (csrc/sinkhorn) solve every problem of the batch to its own convergence and
compute the backward either by implicit differentiation of the optimality conditions (conjugate
gradient on SPEC 4.3's system) or by replaying the recorded iterations in reverse (unrolling).
Forward mode and the backward passes' own derivatives are diffcomb._sinkhorn_derivatives (the same
implicit system, solved by the same conjugate gradient; the unrolled iterations replayed with torch
ops). The public functions (diffcomb.transport, diffcomb.transport_sort,
diffcomb.transport_permutation) validate, broadcast and flatten, then call :func:`solve`.
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
from ._autodiff import ROW, define, lean_ready, save
from ._checks import check_op, check_op_tensor, message
from ._sinkhorn_derivatives import (cost_tangent, hvp, jvp_by_vjp, marginals, plan_tangent, project, replay,
                                    solve_derivatives, unrolled_first_order)

__all__ = ["BACKWARDS", "FORWARD", "IMPLICIT", "SOLVE", "UNROLLED", "default_tol", "solve", "solve_system",
           "warn"]

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


def warn(text: str, category: type = UserWarning) -> None:
    """A warning (UserWarning by default) attributed to the first caller outside diffcomb and torch (the user's line,
    also when the custom op runs inside a compiled graph)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_PATHS):
        frame, level = frame.f_back, level + 1
    warnings.warn(text, category, stacklevel=level - 1 if frame is None else level)


def _warn_not_converged(fn: str, err: Tensor, tol: float, max_iter: int) -> None:
    """One warning when some problem stopped at max_iter above tol (a small batch on the CPU is read
    as a list, no torch op; on CUDA one synchronization; NaN problems are not counted, their results
    are NaN)."""
    if err.is_cpu and err.numel() <= 256:
        above = [e for e in (err if err.dim() == 1 else err.reshape(-1)).tolist() if e > tol]
        if not above:
            return
        count, worst = len(above), max(above)
    else:
        bad = err > tol
        count = int(bad.sum())
        if not count:
            return
        worst = float(err[bad].max())
    warn(message(fn, f"Sinkhorn did not converge in {count} of {err.numel()} problem(s): stopped at "
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


def _sinkhorn_impl(C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float, check_every: int,
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
    return _forward(C, a, b, eps, max_iter, tol, check_every, unroll, check_weights, caller, True)


def _forward(C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float, check_every: int, unroll: bool,
             check_weights: bool, caller: str, history: bool) -> tuple:
    """_sinkhorn_impl; history=False (the lean path of solve): f_hist and g_hist are None, not allocated."""
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
    f_hist = g_hist = None
    if history:
        new = C.new_zeros if unroll else C.new_empty  # rows past a problem's n_iter stay 0; else empty
        f_hist, g_hist = new(fh_shape), new(gh_shape)
    _launch_forward(caller, C, a, b, (P, f, g, cost, n_iter, err, f_hist, g_hist), batch, n, m, eps, max_iter, tol,
                    check_every)
    return P, f, g, cost, n_iter, err, f_hist, g_hist


def _launch_forward(caller: str, C: Tensor, a: Tensor, b: Tensor, outputs: tuple, batch: int, n: int, m: int,
                    eps: float, max_iter: int, tol: float, check_every: int) -> None:
    """The native forward into ``outputs`` (P, f, g, cost, n_iter, err, f_hist, g_hist; contiguous,
    any shape of the right size; the histories may be None), then the convergence warning."""
    addr = _native.address
    _native.launch(caller, "sinkhorn_forward", C, addr(C), addr(a), addr(b), *(addr(t) for t in outputs), batch, n, m,
                   eps, max_iter, tol, check_every, _native.dtype_code(C),
                   workspace=("sinkhorn_work_bytes", (batch, n, m)))
    if tol > 0 and not _capturing(C):  # on CUDA: one synchronization, the price of never failing silently
        _warn_not_converged(caller, outputs[5], tol, max_iter)


def untracked_forward(caller: str, C: Tensor, eps: float, max_iter: int, tol: float,
                      check_every: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(P, f, g, cost, n_iter, err) of a contiguous cost C (..., n, m) with n, m >= 1 and valid
    arguments, between uniform weights, when nothing is differentiated or traced (the lean path of
    diffcomb.sinkhorn): the native forward written straight into outputs of the caller's shapes, with
    no history and no argument check (the caller's are those of the op)."""
    *lead, n, m = C.shape
    batch = C.numel() // (n * m)
    a = C.new_full((batch, n), 1.0 / n)
    b = C.new_full((batch, m), 1.0 / m)
    outputs = (torch.empty_like(C), C.new_empty((*lead, n)), C.new_empty((*lead, m)), C.new_empty(lead),
               torch.empty(lead, dtype=torch.int64, device=C.device),
               torch.empty(lead, dtype=torch.float64, device=C.device), None, None)
    _launch_forward(caller, C, a, b, outputs, batch, n, m, eps, max_iter, tol, check_every)
    return outputs[:6]


def _sinkhorn_fake(C, a, b, eps, max_iter, tol, check_every, unroll, check_weights=False, caller="sinkhorn"):
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


def _implicit_backward_impl(C: Tensor, a: Tensor, b: Tensor, P: Tensor, f: Tensor, g: Tensor, G: Optional[Tensor],
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


def _implicit_backward_fake(C, a, b, P, f, g, G, gcost, eps):
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


def _unrolled_backward_impl(C: Tensor, a: Tensor, b: Tensor, f_hist: Tensor, g_hist: Tensor, n_iter: Tensor,
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


def _unrolled_backward_fake(C, a, b, f_hist, g_hist, n_iter, G, gcost, eps):
    op = "sinkhorn_unrolled_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    _check_history(op, C, f_hist, g_hist, n_iter)
    return torch.empty_like(C), torch.empty_like(a), torch.empty_like(b)


def _check_solve_args(P: Tensor, w: Tensor, lam: Tensor) -> None:
    op = "sinkhorn_implicit_solve"
    check_op_tensor(op, "P", P, _FLOATS, 3)
    batch, n, m = P.shape
    _check_side(op, "w", w, (batch, n + m), P)
    _check_side(op, "lam", lam, (batch, 2), P, torch.float64)


def _solve_impl(P: Tensor, w: Tensor, lam: Tensor) -> Tensor:
    """x = H^+ w (B, n + m) for the plan P (B, n, m), H = [[diag(P 1) / lam_a, P], [P^T, diag(P^T 1) / lam_b]]
    with each problem's damping lam = (lam_a, lam_b) (B, 2) float64 in (0, 1] (1, 1: balanced
    transport; below 1: a KL-relaxed marginal, sinkhorn.h): by the implicit backward's conjugate
    gradient. A balanced H is singular (the null vector e, _sinkhorn_derivatives.project): the
    solution is the one on its range, w projected onto it first; a relaxed one is definite on the
    plan's support. Lines with a zero marginal get 0."""
    _check_solve_args(P, w, lam)
    batch, n, m = P.shape
    if P.numel() == 0:
        return torch.zeros_like(w)
    wt = marginals(P)
    support = (wt > 0).to(torch.float64)
    balanced = (lam == 1.0).all(-1, keepdim=True)
    w64 = w.to(torch.float64)
    rhs = torch.where(balanced, project(w64, support, n), w64 * support).contiguous()
    diagonal = (wt / torch.cat((lam[:, :1].expand(batch, n), lam[:, 1:].expand(batch, m)), -1)).contiguous()
    x = torch.zeros_like(rhs)
    addr = _native.address
    _native.launch("sinkhorn_implicit_solve", "sinkhorn_implicit_solve", P, addr(P), addr(rhs), addr(diagonal),
                   addr(x), batch, n, m, _CG_TOL[P.dtype], 10 * (n + m) + 100, _native.dtype_code(P),
                   workspace=("sinkhorn_work_bytes", (batch, n, m)))
    return torch.where(balanced, project(x, support, n), x).to(P.dtype)


def _solve_fake(P, w, lam):
    _check_solve_args(P, w, lam)
    return torch.empty_like(w)


def _solve_setup(ctx, inputs, output) -> None:
    save(ctx, inputs[0], output, inputs[2])


def balanced_damping(P: Tensor) -> Tensor:
    """lam = (1, 1) for each problem of P (B, n, m): balanced transport."""
    return torch.ones(P.shape[:-2] + (2,), dtype=torch.float64, device=P.device)


def solve_system(P: Tensor, w: Tensor, lam: Optional[Tensor] = None) -> Tensor:
    """SOLVE on contiguous arguments (cotangents and tangents may be expanded), balanced when lam is
    None: the callable that the derivative formulas (diffcomb._sinkhorn_derivatives) receive."""
    lam = balanced_damping(P) if lam is None else lam
    return SOLVE(P.contiguous(), w.contiguous(), lam.contiguous())


_solve_backward, _solve_jvp = solve_derivatives(solve_system)
SOLVE = define("sinkhorn_implicit_solve", _solve_impl, _solve_fake, kinds=(ROW, ROW, ROW), setup=_solve_setup,
               backward=_solve_backward, jvp=_solve_jvp)


def _solution(da: Tensor, db: Tensor, f: Tensor, g: Tensor, gcost: Optional[Tensor], eps: float) -> Tensor:
    """The implicit backward's system solution [u; v] from its weight gradients (da, db) = (u, v) +
    gcost (f - eps/2, g - eps/2)."""
    x = torch.cat((da, db), -1)
    if gcost is not None:
        x = x - gcost[..., None] * (torch.cat((f, g), -1) - 0.5 * eps)
    return x


def _plus_linear(h: tuple, op, saved: tuple, tG: Optional[Tensor], tgcost: Optional[Tensor], eps: float) -> tuple:
    """h plus a backward op (op(): IMPLICIT or UNROLLED) at the tangents (tG, tgcost): the part of the
    backward's forward-mode derivative that is linear in (G, gcost)."""
    if tG is None and tgcost is None:
        return tuple(h)
    linear = op()(*saved, None if tG is None else tG.contiguous(), tgcost, eps)
    return tuple(x + y for x, y in zip(h, linear))


def _implicit_setup(ctx, inputs, output) -> None:
    C, a, b, P, f, g, G, gcost, eps = inputs
    _, da, db = output
    ctx.eps = eps
    save(ctx, C, a, b, P, f, g, G, gcost, da, db)


def _implicit_derivative(ctx, tC, ta, tb):
    """The implicit backward's derivative with respect to (C, a, b) (the plan and the potentials are
    functions of them): the Hessian-vector product, and the plan's tangent."""
    C, a, b, P, f, g, G, gcost, da, db = ctx.saved_tensors
    u = _solution(da, db, f, g, gcost, ctx.eps)
    return hvp(solve_system, C, a, b, P, G, gcost, u, ctx.eps, tC, ta, tb)


def _implicit_backward_backward(ctx, sC, sa, sb):
    C, a, b, P, f, g, G, gcost, _, _ = ctx.saved_tensors
    (hC, ha, hb), dP = _implicit_derivative(ctx, sC, sa, sb)
    gG = dP if G is not None else None
    ggc = cost_tangent(P, f, g, ctx.eps, sC, sa, sb) if gcost is not None else None
    return hC, ha, hb, None, None, None, gG, ggc, None


def _implicit_backward_jvp(ctx, tC, ta, tb, _tP, _tf, _tg, tG, tgcost, _teps):
    return _plus_linear(_implicit_derivative(ctx, tC, ta, tb)[0], lambda: IMPLICIT, ctx.saved_tensors[:6], tG,
                        tgcost, ctx.eps)


IMPLICIT = define("sinkhorn_implicit_backward", _implicit_backward_impl, _implicit_backward_fake,
                  kinds=(ROW,) * 8 + (None,), setup=_implicit_setup, backward=_implicit_backward_backward,
                  jvp=_implicit_backward_jvp)


def _unrolled_setup(ctx, inputs, output) -> None:
    C, a, b, f_hist, g_hist, n_iter, G, gcost, eps = inputs
    ctx.eps = eps
    save(ctx, C, a, b, f_hist, g_hist, n_iter, G, gcost)


def _unrolled_first(ctx):
    """The unrolled backward as a torch function of (C, a, b, G, gcost) (the replayed iterations)."""
    C, a, b, f_hist, g_hist, n_iter, G, gcost = ctx.saved_tensors
    steps, g0, eps = f_hist.shape[1], g_hist[:, 0], ctx.eps

    def first(C, a, b, G, gcost):
        return unrolled_first_order(C, a, b, G, gcost, g0, n_iter, steps, eps)

    return first, (C, a, b, G, gcost)


def _unrolled_backward_backward(ctx, sC, sa, sb):
    first, (C, a, b, G, gcost) = _unrolled_first(ctx)
    G0 = torch.zeros_like(C) if G is None else G
    gc0 = C.new_zeros(C.shape[:-2]) if gcost is None else gcost
    _, pull = torch.func.vjp(first, C, a, b, G0, gc0)
    hC, ha, hb, gG, ggc = pull((sC, sa, sb))
    return (hC, ha, hb, None, None, None, gG if G is not None else None, ggc if gcost is not None else None, None)


def _unrolled_backward_jvp(ctx, tC, ta, tb, _tfh, _tgh, _tn, tG, tgcost, _teps):
    first, (C, a, b, G, gcost) = _unrolled_first(ctx)
    h = jvp_by_vjp(lambda C, a, b: first(C, a, b, G, gcost), (C, a, b), (tC, ta, tb))
    return _plus_linear(h, lambda: UNROLLED, ctx.saved_tensors[:6], tG, tgcost, ctx.eps)


UNROLLED = define("sinkhorn_unrolled_backward", _unrolled_backward_impl, _unrolled_backward_fake,
                  kinds=(ROW,) * 8 + (None,), setup=_unrolled_setup, backward=_unrolled_backward_backward,
                  jvp=_unrolled_backward_jvp)


def _setup(ctx, inputs, output) -> None:
    C, a, b, eps, _max_iter, _tol, _check_every, unroll = inputs[:8]
    P, f, g, cost, n_iter, err, f_hist, g_hist = output
    ctx.mark_non_differentiable(f, g, n_iter, err, f_hist, g_hist)
    ctx.set_materialize_grads(False)  # an unused plan gradient stays None: envelope only, no CG
    ctx.eps = eps
    ctx.unroll = unroll
    if unroll:
        save(ctx, C, a, b, P, f, g, f_hist, g_hist, n_iter)
    else:
        save(ctx, C, a, b, P, f, g)


def _backward(ctx, gP, _gf, _gg, gcost, _gn, _gerr, _gfh, _ggh):
    none = (None,) * 7
    if gP is None and gcost is None:
        return (None, None, None) + none
    G = None if gP is None else gP.contiguous()
    gc = None if gcost is None else gcost.contiguous()
    C, a, b, P, f, g = ctx.saved_tensors[:6]
    if ctx.unroll:
        f_hist, g_hist, n_iter = ctx.saved_tensors[6:]
        dC, da, db = UNROLLED(C, a, b, f_hist, g_hist, n_iter, G, gc, ctx.eps)
    else:
        # Exact for the returned plan whether or not the forward converged (a forward that did
        # not has warned already, on the CPU).
        dC, da, db = IMPLICIT(C, a, b, P, f, g, G, gc, ctx.eps)
    need = ctx.needs_input_grad
    return (dC if need[0] else None, da if need[1] else None, db if need[2] else None) + none


def _jvp(ctx, tC, ta, tb, *_):
    """Forward mode: the plan's tangent (implicit: the implicit system, _sinkhorn_derivatives; unrolled:
    the replayed iterations) and the cost's envelope derivative (SPEC 4.2), the transposes of the
    backward passes."""
    C, a, b, P, f, g = ctx.saved_tensors[:6]
    eps = ctx.eps
    if ctx.unroll:
        f_hist, g_hist, n_iter = ctx.saved_tensors[6:]
        dP = jvp_by_vjp(lambda C, a, b: replay(C, a, b, g_hist[:, 0], n_iter, f_hist.shape[1], eps)[0],
                        (C, a, b), (tC, ta, tb))
    else:
        dP = plan_tangent(solve_system, P, eps, tC, ta, tb)[0]
    return dP, None, None, cost_tangent(P, f, g, eps, tC, ta, tb), None, None, None, None


FORWARD = define("sinkhorn", _sinkhorn_impl, _sinkhorn_fake, kinds=(ROW, ROW, ROW) + (None,) * 7, setup=_setup,
                 backward=_backward, jvp=_jvp)


def solve(fn: str, C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float, check_every: int,
          unroll: bool, check_weights: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(P, f, g, cost, n_iter, err) of contiguous (B, n, m) problems through the custom op, which
    checks the weights when asked and warns (on the CPU) about problems that did not converge, in
    the name of the public function fn."""
    C, a, b = C.contiguous(), a.contiguous(), b.contiguous()
    if lean_ready(C) and lean_ready(a) and lean_ready(b) and not (
            torch.is_grad_enabled() and (C.requires_grad or a.requires_grad or b.requires_grad)):
        # Nothing to differentiate, nothing traces the call: the op's implementation directly (the
        # NativeOp's own untracked path, without its generic argument scan), and no iterates recorded
        # for an unrolled backward that cannot happen.
        return _forward(C, a, b, eps, max_iter, tol, check_every, False, check_weights, fn, False)[:6]
    P, f, g, cost, n_iter, err, _, _ = FORWARD(C, a, b, eps, max_iter, tol, check_every, unroll, check_weights, fn)
    return P, f, g, cost, n_iter, err
