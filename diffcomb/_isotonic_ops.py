"""The permutahedron family's custom ops and native calls (csrc/isotonic).

The native kernels solve one canonical problem on a contiguous ``(B, n)`` batch: isotonic
regression by Pool Adjacent Violators on rows that are already sorted, and the O(n) block
vector-Jacobian product. This module sorts (the CPU uses diffcomb's native stable radix argsort,
CUDA uses ``torch.sort``), calls the kernels through ``_native.launch`` and registers everything as
``torch.library`` custom ops with fake (meta) implementations and autograd, so that the public
functions (diffcomb.isotonic, diffcomb.topk, diffcomb.fenchel_young) work under
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and ``torch.library.opcheck``.
``to_rows`` is the family's layout step: the user's ``dim`` last, the batch flattened.

Math: SPEC.md section 1.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from . import _native
from ._checks import check_op, check_op_tensor, compute_dtype

__all__ = ["MAX_N", "VJP_PLAIN", "VJP_RANK", "VJP_SORT", "argsort_descending", "grad_or_zeros", "project",
           "to_rows"]

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


@torch.library.custom_op("diffcomb::project_rank", mutates_args=())
def _project_rank_op(x: Tensor, c: Tensor, scale: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """P(scale * x, c) for rows x (B, n) and sorted weights c (n,) (log-space for KL)."""
    _check_projection_args("project_rank", x, c, scale)
    a, perm = argsort_descending(x, scale)
    out, starts, weights = project(a, c, perm, 1.0, True, kl)
    return out, perm, starts, weights


@torch.library.custom_op("diffcomb::project_sort", mutates_args=())
def _project_sort_op(x: Tensor, c: Tensor, sign: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sign * P(c, sort_desc(sign * x)) for rows x (B, n) and sorted c = rho / eps (n,)."""
    _check_projection_args("project_sort", x, c, sign)
    a, perm = argsort_descending(x, sign)
    out, starts, weights = project(a, c, perm, sign, False, kl)
    return out, perm, starts, weights


@torch.library.custom_op("diffcomb::isotonic", mutates_args=())
def _isotonic_op(y: Tensor, sample_weight: Optional[Tensor], increasing: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted least-squares isotonic fit of rows y (B, n)."""
    _check_isotonic_args(y, sample_weight)
    return fit(y, sample_weight, -1.0 if increasing else 1.0)


@torch.library.custom_op("diffcomb::isotonic_vjp", mutates_args=())
def _vjp_op(grad: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> Tensor:
    """Block VJP r_i = weights_i * sum_{j in B(i)} u_j (csrc/isotonic/isotonic.h, vjp_row)."""
    _check_vjp_args(grad, perm, starts, weights, scale, mode)
    rows, n = grad.shape
    dx = torch.empty_like(grad)
    _native.launch("soft_sort", "isotonic_vjp", grad, _native.address(grad), _native.address(perm),
                   _native.address(starts), _native.address(weights), _native.address(dx), rows, n, scale, mode,
                   _native.dtype_code(grad))
    return dx


def _fake_projection(op: str) -> Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]]:
    def fake(x: Tensor, c: Tensor, scale: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _check_projection_args(op, x, c, scale)
        rows, n = x.shape
        return (torch.empty_like(x), x.new_empty((rows, n), dtype=torch.int32),
                x.new_empty((rows, n + 1), dtype=torch.int32), torch.empty_like(x))

    return fake


_project_rank_op.register_fake(_fake_projection("project_rank"))
_project_sort_op.register_fake(_fake_projection("project_sort"))


@_isotonic_op.register_fake
def _(y: Tensor, sample_weight: Optional[Tensor], increasing: bool) -> tuple[Tensor, Tensor, Tensor]:
    _check_isotonic_args(y, sample_weight)
    rows, n = y.shape
    return torch.empty_like(y), y.new_empty((rows, n + 1), dtype=torch.int32), torch.empty_like(y)


@_vjp_op.register_fake
def _(grad: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> Tensor:
    _check_vjp_args(grad, perm, starts, weights, scale, mode)
    return torch.empty_like(grad)


def grad_or_zeros(grad: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _setup_projection(ctx, inputs, output) -> None:
    _, _, scale, _ = inputs
    out, perm, starts, weights = output
    ctx.mark_non_differentiable(perm, starts, weights)
    ctx.save_for_backward(perm, starts, weights)
    ctx.scale = scale


def _backward_rank(ctx, grad_out, *_):
    perm, starts, weights = ctx.saved_tensors
    g = grad_or_zeros(grad_out, weights)
    return torch.ops.diffcomb.isotonic_vjp(g, perm, starts, weights, ctx.scale, VJP_RANK), None, None, None


def _backward_sort(ctx, grad_out, *_):
    perm, starts, weights = ctx.saved_tensors
    g = grad_or_zeros(grad_out, weights)
    return torch.ops.diffcomb.isotonic_vjp(g, perm, starts, weights, 1.0, VJP_SORT), None, None, None


def _setup_isotonic(ctx, inputs, output) -> None:
    y, sample_weight, _ = inputs
    out, starts, weights = output
    ctx.mark_non_differentiable(starts, weights)
    if ctx.needs_input_grad[1]:
        ctx.save_for_backward(starts, weights, y, sample_weight, out)
    else:
        ctx.save_for_backward(starts, weights)


def _backward_isotonic(ctx, grad_out, *_):
    starts, weights = ctx.saved_tensors[:2]
    g = grad_or_zeros(grad_out, weights)
    no_perm = starts.new_empty(0)
    dy = torch.ops.diffcomb.isotonic_vjp(g, no_perm, starts, weights, 1.0, VJP_PLAIN)
    dweight = None
    if ctx.needs_input_grad[1]:
        _, _, y, sample_weight, out = ctx.saved_tensors
        # d out_B / d c_j = (y_j - out_B) / W_B and dy_j = c_j / W_B * G_B.
        dweight = (y - out) * dy / sample_weight
    return dy if ctx.needs_input_grad[0] else None, dweight, None


torch.library.register_autograd("diffcomb::project_rank", _backward_rank, setup_context=_setup_projection)
torch.library.register_autograd("diffcomb::project_sort", _backward_sort, setup_context=_setup_projection)
torch.library.register_autograd("diffcomb::isotonic", _backward_isotonic, setup_context=_setup_isotonic)
