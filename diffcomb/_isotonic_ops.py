"""The permutahedron family's custom ops and native calls (csrc/isotonic).

The native kernels solve one canonical problem on a contiguous ``(B, n)`` batch: isotonic
regression by Pool Adjacent Violators on rows that are already sorted, and the O(n) block
vector-Jacobian product. This module sorts (the CPU uses diffcomb's native stable radix argsort,
CUDA uses ``torch.sort``), calls the kernels through ``_native.launch`` and wires each op with
``diffcomb._autodiff.define`` (a ``torch.library`` custom op with a fake implementation and autograd,
and the eager autograd.Function with forward mode and a folding vmap rule), so that the public
functions (diffcomb.isotonic, diffcomb.topk, diffcomb.fenchel_young) work under every autodiff mode,
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and ``torch.library.opcheck``. The
backward VJP is an op of its own with its own derivatives, so derivatives of every order compose.
``to_rows`` is the family's layout step: the user's ``dim`` last, the batch flattened.

Math: SPEC.md section 1.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from . import _native
from ._autodiff import ROW, SHARED, define, save
from ._checks import check_op, check_op_tensor, compute_dtype

__all__ = ["ISOTONIC", "MAX_N", "PROJECT_RANK", "PROJECT_SORT", "VJP", "VJP_PLAIN", "VJP_RANK", "VJP_SORT",
           "argsort_descending", "block_sum", "from_sorted", "project", "project_rank_impl", "softmax_derivative", "to_rows", "to_sorted",
           "vjp_transpose"]

MAX_N = 2**31 - 1  # perm and block starts are int32
VJP_RANK, VJP_SORT, VJP_PLAIN = 0, 1, 2  # csrc/isotonic/api.h, VjpCode
_FLOATS = (torch.float32, torch.float64)


def to_rows(fn: str, x: Tensor, dim: int) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """(B, n) contiguous rows of x with ``dim`` (already checked) last, in the compute dtype, and the
    function that maps a (B, n) result back to x's layout and dtype."""
    shape = x.shape
    n = shape[dim]
    if n >= MAX_N:
        raise ValueError(f"diffcomb.{fn}: the dimension dim={dim} has length {n}; at most {MAX_N - 1} is supported "
                         "(int32 indices)")
    if dim == x.dim() - 1 and x.dtype in _FLOATS and x.is_contiguous():
        # The common case, views only (per-call overhead matters for small inputs).
        return x.view(-1, n) if n else x.reshape(math.prod(shape[:-1]), 0), lambda out: out.view(shape)
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    rows = moved.reshape(math.prod(lead), n).to(compute_dtype(x.dtype)).contiguous()

    def restore(out: Tensor) -> Tensor:
        return out.reshape(*lead, n).to(x.dtype).movedim(-1, dim)

    return rows, restore


# ---------------------------------------------------------------------------
# Native calls (inside the custom ops). The CPU and CUDA entry points take the same arguments
# (csrc/isotonic/api.h); _native.launch appends the execution context. chunk > 0 (CPU only, for
# tests) runs the chunked PAV of the CUDA long-row kernel on the host.


def argsort_descending(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """(scale * x) sorted descending along the last axis, stably, and int32 indices."""
    if x.is_cuda:
        values, perm = torch.sort(x * scale, dim=-1, descending=True, stable=True)
        return values, perm.to(torch.int32)
    rows, n = x.shape
    values = torch.empty_like(x)
    perm = torch.empty((rows, n), dtype=torch.int32, device=x.device)
    _native.cpu().isotonic_argsort_descending(_native.address(x), _native.address(values), _native.address(perm),
                                              rows, n, scale, _native.dtype_code(x), _native.threads())
    return values, perm


def _run(fn: str, entry: str, x: Tensor, args: tuple, workspace: Optional[str], chunk: int) -> None:
    """Entry point ``entry`` on x's device; ``workspace`` names the CUDA scratch size function."""
    if chunk:
        getattr(_native.cpu(), entry)(*args, _native.threads(), chunk)
    else:
        _native.launch(fn, entry, x, *args, workspace=workspace and (workspace, x.shape))


def project(a: Tensor, c: Tensor, perm: Tensor, out_scale: float, rank: bool, kl: bool,
            chunk: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """PAV on sorted rows a (B, n) against the shared sorted vector c (n,)."""
    rows, n = a.shape
    out = torch.empty_like(a)
    starts = torch.empty((rows, n + 1), dtype=torch.int32, device=a.device)
    weights = torch.empty_like(a)
    args = (_native.address(a), _native.address(c), _native.address(perm), _native.address(out),
            _native.address(starts), _native.address(weights), rows, n, out_scale, rank, kl, _native.dtype_code(a))
    _run("soft_sort", "isotonic_project", a, args, "isotonic_work_bytes", chunk)
    return out, starts, weights


def fit(y: Tensor, sample_weight: Optional[Tensor], sign: float, chunk: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted isotonic regression of rows y (B, n): the non-increasing fit of sign * y, times sign."""
    rows, n = y.shape
    out = torch.empty_like(y)
    starts = torch.empty((rows, n + 1), dtype=torch.int32, device=y.device)
    weights = torch.empty_like(y)
    args = (_native.address(y), _native.address(sample_weight), _native.address(out), _native.address(starts),
            _native.address(weights), rows, n, sign, _native.dtype_code(y))
    _run("isotonic_regression", "isotonic_regression", y, args, "isotonic_work_bytes", chunk)
    return out, starts, weights


# ---------------------------------------------------------------------------
# Custom ops. Each returns its saved block structure as extra outputs:
#   perm    int32 (B, n)      the stable descending argsort of the sorted input
#   starts  int32 (B, n + 1)  block starts, starts[:, n] = number of blocks
#   weights (B, n)            per-element block weights of the VJP
#
# Checks of the custom ops' own arguments, run by their implementations and fake implementations,
# so that a direct torch.ops.diffcomb.* call with bad arguments raises instead of handing native
# code addresses it would read or write out of bounds. Shapes, dtypes, strides, devices and the
# Python scalars only: no tensor values are read (the index arrays of isotonic_vjp are range-checked
# by the native VJP itself, which gives a NaN row for indices out of range).


def check_op_rows(op: str, name: str, x: Tensor) -> None:
    check_op_tensor(op, name, x, _FLOATS, 2)
    check_op(x.shape[1] < MAX_N, lambda: f"torch.ops.diffcomb.{op}: rows of length {x.shape[1]} are too long; at "
                                         f"most {MAX_N - 1} (int32 indices)")


def _check_op_finite(op: str, name: str, value: float) -> None:
    check_op(-math.inf < value < math.inf, lambda: f"torch.ops.diffcomb.{op}: {name} must be a finite float, got "
                                                   f"{value}", ValueError)


def _check_projection_args(op: str, x: Tensor, c: Tensor, scale: float) -> None:
    """project_rank's scale, or project_sort's sign (then scale is the sign)."""
    check_op_rows(op, "x", x)
    check_op_tensor(op, "c", c, (x.dtype,), (x.shape[1],), x.device)
    if op == "project_sort":
        check_op(scale in (-1.0, 1.0), lambda: f"torch.ops.diffcomb.{op}: sign must be 1.0 or -1.0, got {scale}",
                 ValueError)
    else:
        _check_op_finite(op, "scale", scale)


def _check_isotonic_args(y: Tensor, sample_weight: Optional[Tensor]) -> None:
    check_op_rows("isotonic", "y", y)
    if sample_weight is not None:
        check_op_tensor("isotonic", "sample_weight", sample_weight, (y.dtype,), tuple(y.shape), y.device)


def _check_vjp_args(grad: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> None:
    op = "isotonic_vjp"
    check_op_rows(op, "grad", grad)
    rows, n = grad.shape
    check_op(mode in (VJP_RANK, VJP_SORT, VJP_PLAIN),
             lambda: f"torch.ops.diffcomb.{op}: mode must be {VJP_RANK} (rank), {VJP_SORT} (sort) or {VJP_PLAIN} "
                     f"(plain), got {mode}", ValueError)
    device = grad.device
    if mode != VJP_PLAIN:  # the plain VJP reads no permutation
        check_op_tensor(op, "perm", perm, (torch.int32,), (rows, n), device)
    check_op_tensor(op, "starts", starts, (torch.int32,), (rows, n + 1), device)
    check_op_tensor(op, "weights", weights, (grad.dtype,), (rows, n), device)
    _check_op_finite(op, "scale", scale)


# ---------------------------------------------------------------------------
# The block VJP, itself a differentiable op (double backward, forward-over-reverse). With S the
# block-sum matrix (S u)_i = sum_{j in B(i)} u_j (symmetric), D_w = diag(weights) and P the
# gather through perm ((P v)_i = v[perm[i]]), the op is linear in grad and in weights:
#   rank:  V = scale P^T (I - D_w S) P grad      sort:  V = P^T D_w S grad      plain:  V = D_w S grad
# Its transpose in grad is the JVP of the op whose VJP it is (vjp_transpose); the kernel computes
# S with weights of ones (block_sum), so every derivative reuses the one native VJP.


def _vjp_impl(grad: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> Tensor:
    """Block VJP r_i = weights_i * sum_{j in B(i)} u_j (csrc/isotonic/isotonic.h, vjp_row)."""
    _check_vjp_args(grad, perm, starts, weights, scale, mode)
    rows, n = grad.shape
    dx = torch.empty_like(grad)
    _native.launch("soft_sort", "isotonic_vjp", grad, _native.address(grad), _native.address(perm),
                   _native.address(starts), _native.address(weights), _native.address(dx), rows, n, scale, mode,
                   _native.dtype_code(grad))
    return dx


def _vjp_fake(grad: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> Tensor:
    _check_vjp_args(grad, perm, starts, weights, scale, mode)
    return torch.empty_like(grad)


def to_sorted(v: Tensor, perm: Tensor) -> Tensor:
    """P v: (P v)_i = v[perm[i]] (input order to sorted order)."""
    return v.gather(-1, perm.long())


def from_sorted(v: Tensor, perm: Tensor) -> Tensor:
    """P^T v: out[perm[i]] = v_i (sorted order to input order)."""
    return torch.zeros_like(v).scatter(-1, perm.long(), v)


def block_sum(u: Tensor, starts: Tensor) -> Tensor:
    """S u: each entry replaced by the sum of its block (the plain VJP with unit weights; the plain
    mode reads no permutation, so ``starts`` fills its place and folds under vmap like the rest)."""
    u = u.contiguous()
    return VJP(u, starts, starts, torch.ones_like(u), 1.0, VJP_PLAIN)


def vjp_transpose(h: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> Tensor:
    """The transpose of V in grad: rank scale (h - P^T S D_w P h), sort S D_w P h, plain S D_w h."""
    hs = h if mode == VJP_PLAIN else to_sorted(h, perm)
    t = block_sum(weights * hs, starts)
    return scale * (h - from_sorted(t, perm)) if mode == VJP_RANK else t


def softmax_derivative(v: Tensor, weights: Tensor, starts: Tensor) -> Tensor:
    """(D_w - D_w S D_w) v: the Jacobian of the block softmax w = softmax_B(a) (symmetric, so both its
    JVP and its VJP), in sorted order."""
    wv = (weights * v).contiguous()
    return wv - VJP(wv, starts, starts, weights, 1.0, VJP_PLAIN)


def _setup_vjp(ctx, inputs, output) -> None:
    grad, perm, starts, weights, scale, mode = inputs
    save(ctx, grad, perm, starts, weights)
    ctx.scale, ctx.mode = scale, mode


def _backward_vjp(ctx, h):
    grad, perm, starts, weights = ctx.saved_tensors
    scale, mode = ctx.scale, ctx.mode
    h = h.contiguous()
    dgrad = vjp_transpose(h, perm, starts, weights, scale, mode) if ctx.needs_input_grad[0] else None
    dweights = None
    if ctx.needs_input_grad[3]:
        # d<h, V>/dweights: sorted h times the block sums of sorted grad (times -scale for rank).
        hs = h if mode == VJP_PLAIN else to_sorted(h, perm)
        gs = to_sorted(grad, perm) if mode == VJP_RANK else grad
        dweights = hs * block_sum(gs, starts)
        if mode == VJP_RANK:
            dweights = -scale * dweights
    return dgrad, None, None, dweights, None, None


def _jvp_vjp(ctx, tgrad, _perm, _starts, tweights, _scale, _mode):
    grad, perm, starts, weights = ctx.saved_tensors
    scale, mode = ctx.scale, ctx.mode
    out = torch.zeros_like(grad)
    if tgrad is not None:
        out = out + VJP(tgrad.contiguous(), perm, starts, weights, scale, mode)
    if tweights is not None:
        # V is affine in the weights: V(grad, t) minus its weight-free part (rank: scale * grad).
        t = VJP(grad, perm, starts, tweights.contiguous(), scale, mode)
        out = out + (t - scale * grad if mode == VJP_RANK else t)
    return out


VJP = define("isotonic_vjp", _vjp_impl, _vjp_fake, kinds=(ROW, ROW, ROW, ROW, None, None), setup=_setup_vjp,
             backward=_backward_vjp, jvp=_jvp_vjp)


# ---------------------------------------------------------------------------
# Projections. Each returns its saved block structure as extra outputs (perm, starts and the block
# weights, see above). The L2 weights 1/|B| are piecewise constant: non-differentiable outputs. The
# KL weights are the block softmax of the sorted row a (rank: a = scale * x[perm]; sort: a =
# sign * x[perm]) and depend on x: a differentiable output, with the softmax's derivative, so that
# the backward's VJP call, which reads them, is differentiated exactly (double backward).


def project_rank_impl(x: Tensor, c: Tensor, scale: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """P(scale * x, c) for rows x (B, n) and sorted weights c (n,) (log-space for KL)."""
    _check_projection_args("project_rank", x, c, scale)
    a, perm = argsort_descending(x, scale)
    out, starts, weights = project(a, c, perm, 1.0, True, kl)
    return out, perm, starts, weights


def _project_sort_impl(x: Tensor, c: Tensor, sign: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sign * P(c, sort_desc(sign * x)) for rows x (B, n) and sorted c = rho / eps (n,)."""
    _check_projection_args("project_sort", x, c, sign)
    a, perm = argsort_descending(x, sign)
    out, starts, weights = project(a, c, perm, sign, False, kl)
    return out, perm, starts, weights


def _fake_projection(op: str) -> Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]]:
    def fake(x: Tensor, c: Tensor, scale: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _check_projection_args(op, x, c, scale)
        rows, n = x.shape
        return (torch.empty_like(x), x.new_empty((rows, n), dtype=torch.int32),
                x.new_empty((rows, n + 1), dtype=torch.int32), torch.empty_like(x))

    return fake


def _setup_projection(rank: bool) -> Callable[..., None]:
    def setup(ctx, inputs, output) -> None:
        _, _, scale, kl = inputs
        _, perm, starts, weights = output
        ctx.mark_non_differentiable(perm, starts, *(() if kl else (weights,)))
        ctx.set_materialize_grads(False)
        save(ctx, perm, starts, weights)
        # rank: V = scale P^T (I - D_w S) P, a = scale * x[perm]; sort: V = P^T D_w S, a = sign * x[perm].
        ctx.mode, ctx.scale, ctx.a_scale, ctx.kl = (VJP_RANK if rank else VJP_SORT), (scale if rank else 1.0), scale, kl

    return setup


def _backward_projection(ctx, grad_out, _perm, _starts, grad_weights):
    perm, starts, weights = ctx.saved_tensors
    dx = None
    if grad_out is not None:
        dx = VJP(grad_out.contiguous(), perm, starts, weights, ctx.scale, ctx.mode)
    if grad_weights is not None:  # KL only (a second derivative): through the block softmax
        dw = ctx.a_scale * from_sorted(softmax_derivative(grad_weights, weights, starts), perm)
        dx = dw if dx is None else dx + dw
    return dx, None, None, None


def _jvp_projection(ctx, tx, _c, _scale, _kl):
    perm, starts, weights = ctx.saved_tensors
    if tx is None:
        return torch.zeros_like(weights), None, None, torch.zeros_like(weights) if ctx.kl else None
    tx = tx.contiguous()
    if ctx.kl:
        tout = vjp_transpose(tx, perm, starts, weights, ctx.scale, ctx.mode)
        return tout, None, None, softmax_derivative(ctx.a_scale * to_sorted(tx, perm), weights, starts)
    # L2: the weights are constant on each block, so D_w S = S D_w and the rank VJP is symmetric.
    if ctx.mode == VJP_RANK:
        return VJP(tx, perm, starts, weights, ctx.scale, VJP_RANK), None, None, None
    return VJP(to_sorted(tx, perm), starts, starts, weights, 1.0, VJP_PLAIN), None, None, None


_PROJECTION_KINDS = (ROW, SHARED, None, None)
PROJECT_RANK = define("project_rank", project_rank_impl, _fake_projection("project_rank"), kinds=_PROJECTION_KINDS,
                      setup=_setup_projection(True), backward=_backward_projection, jvp=_jvp_projection)
PROJECT_SORT = define("project_sort", _project_sort_impl, _fake_projection("project_sort"), kinds=_PROJECTION_KINDS,
                      setup=_setup_projection(False), backward=_backward_projection, jvp=_jvp_projection)


# ---------------------------------------------------------------------------
# Weighted isotonic regression: out = S D_w y with w = c / S c (block-constant 1/|B| without
# sample weights: a non-differentiable output then; with them a differentiable one, dw = (dc -
# w S dc) / W, W = S c the block weight). d out_B / d c_j = (y_j - out_B) / W_B.


def _isotonic_impl(y: Tensor, sample_weight: Optional[Tensor], increasing: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted least-squares isotonic fit of rows y (B, n)."""
    _check_isotonic_args(y, sample_weight)
    return fit(y, sample_weight, -1.0 if increasing else 1.0)


def _isotonic_fake(y: Tensor, sample_weight: Optional[Tensor], increasing: bool) -> tuple[Tensor, Tensor, Tensor]:
    _check_isotonic_args(y, sample_weight)
    rows, n = y.shape
    return torch.empty_like(y), y.new_empty((rows, n + 1), dtype=torch.int32), torch.empty_like(y)


def _setup_isotonic(ctx, inputs, output) -> None:
    y, sample_weight, _ = inputs
    out, starts, weights = output
    ctx.mark_non_differentiable(starts, *(() if sample_weight is not None else (weights,)))
    ctx.set_materialize_grads(False)
    if sample_weight is None:
        save(ctx, starts, weights)
    else:
        save(ctx, starts, weights, y, sample_weight, out)


def _backward_isotonic(ctx, grad_out, _starts, grad_weights):
    starts, weights = ctx.saved_tensors[:2]
    dy = dweight = None
    if grad_out is not None:
        dy = VJP(grad_out.contiguous(), starts, starts, weights, 1.0, VJP_PLAIN)
    if len(ctx.saved_tensors) > 2 and ctx.needs_input_grad[1]:
        _, _, y, sample_weight, out = ctx.saved_tensors
        if dy is not None:
            # dy_j = c_j / W_B * G_B, so (y_j - out_B) / W_B * G_B = (y_j - out_j) * dy_j / c_j.
            dweight = (y - out) * dy / sample_weight
        if grad_weights is not None:
            dw = (grad_weights - block_sum(weights * grad_weights, starts)) / block_sum(sample_weight, starts)
            dweight = dw if dweight is None else dweight + dw
    return dy if ctx.needs_input_grad[0] else None, dweight, None


def _jvp_isotonic(ctx, ty, tweight, _increasing):
    starts, weights = ctx.saved_tensors[:2]
    if len(ctx.saved_tensors) == 2:  # unweighted: w = 1/|B| is block-constant, S D_w = D_w S
        tout = torch.zeros_like(weights) if ty is None else VJP(ty.contiguous(), starts, starts, weights, 1.0,
                                                                  VJP_PLAIN)
        return tout, None, None
    _, _, y, sample_weight, out = ctx.saved_tensors
    tout = torch.zeros_like(weights) if ty is None else block_sum(weights * ty, starts)
    tweights = torch.zeros_like(weights)
    if tweight is not None:
        total = block_sum(sample_weight, starts)
        tout = tout + block_sum((y - out) * tweight, starts) / total
        tweights = (tweight - VJP(tweight.contiguous(), starts, starts, weights, 1.0, VJP_PLAIN)) / total
    return tout, None, tweights


ISOTONIC = define("isotonic", _isotonic_impl, _isotonic_fake, kinds=(ROW, ROW, None), setup=_setup_isotonic,
                  backward=_backward_isotonic, jvp=_jvp_isotonic)
