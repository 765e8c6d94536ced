"""The soft-DTW custom ops (torch.ops.diffcomb.*) on (B, N, M) cost batches and (B, N, D) series
batches: their argument checks, native calls (csrc/softdtw, through diffcomb._native.launch), fake
implementations and autograd formulas.

The ops trust neither their callers nor torch.ops users: each checks what the kernels rely on
(ranks, sizes, dtypes, devices, contiguity, the scalar arguments' ranges) before the native call
and in its fake, so a bad direct call raises instead of reading out of bounds. Only metadata and
Python scalars are read (no sync; the checks trace under compile). The lengths' values are not
read: the kernels clamp them into [1, N] (csrc/softdtw/layout.h, used_length).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import _native
from .._checks import check_op, check_op_tensor
from ._boundary import COSTS, GAMMA_MIN
from .costs import cost_vjp, pairwise

_FLOATS = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------
# Argument checks of the raw ops.


def _check_lengths(op: str, name: str, lengths: Optional[Tensor], like: Tensor) -> None:
    if lengths is not None:
        check_op_tensor(op, name, lengths, (torch.int64,), (like.shape[0],), like.device)


def _check_scalars(op: str, gamma: float, band: int) -> None:
    check_op(gamma == 0.0 or GAMMA_MIN <= gamma < math.inf,
             lambda: f"torch.ops.diffcomb.{op}: gamma must be 0 or in [{GAMMA_MIN}, inf), got {gamma}", ValueError)
    check_op(band >= -1, lambda: f"torch.ops.diffcomb.{op}: band must be >= -1 (-1: none), got {band}", ValueError)


def _check_costs(op: str, C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                 band: int) -> None:
    check_op_tensor(op, "C", C, _FLOATS, 3)
    check_op(C.shape[1] >= 1 and C.shape[2] >= 1,
             lambda: f"torch.ops.diffcomb.{op}: C must have N, M >= 1, got shape {tuple(C.shape)}")
    _check_lengths(op, "lengths_x", lengths_x, C)
    _check_lengths(op, "lengths_y", lengths_y, C)
    _check_scalars(op, gamma, band)


def _check_hvp(C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
               band: int) -> None:
    _check_costs("soft_dtw_hvp", C, lengths_x, lengths_y, gamma, band)
    check_op_tensor("soft_dtw_hvp", "Z", Z, (C.dtype,), C.shape, C.device)


def _check_series(x: Tensor, y: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                  band: int, cost: int) -> None:
    op = "soft_dtw_series"
    check_op_tensor(op, "x", x, _FLOATS, 3)
    check_op_tensor(op, "y", y, (x.dtype,), 3, x.device)
    check_op(y.shape[0] == x.shape[0] and y.shape[2] == x.shape[2],
             lambda: f"torch.ops.diffcomb.{op}: x (B, N, D) and y (B, M, D) must share B and D, got shapes "
                     f"{tuple(x.shape)} and {tuple(y.shape)}")
    check_op(x.shape[1] >= 1 and y.shape[1] >= 1,
             lambda: f"torch.ops.diffcomb.{op}: x and y need N, M >= 1 steps, got shapes {tuple(x.shape)} and "
                     f"{tuple(y.shape)}")
    _check_lengths(op, "lengths_x", lengths_x, x)
    _check_lengths(op, "lengths_y", lengths_y, x)
    _check_scalars(op, gamma, band)
    check_op(0 <= cost < len(COSTS),
             lambda: f"torch.ops.diffcomb.{op}: cost must be a code in [0, {len(COSTS) - 1}], got {cost}", ValueError)


# ---------------------------------------------------------------------------
# Native calls (csrc/softdtw/api.h: the same arguments on both devices).

_address = _native.address


def _derivative(like: Tensor, shape: tuple[int, ...], partial: bool) -> Tensor:
    """A derivative output: the kernels write the used, in-band cells, so it starts at zero when the
    band or the lengths leave cells out."""
    return like.new_zeros(shape) if partial else like.new_empty(shape)


def _value_and_alignment(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                         band: int, alignment: bool) -> tuple[Tensor, Tensor]:
    """Values (B,) and, when asked, expected alignments (B, N, M) (else an empty tensor)."""
    batch, m, n = C.shape
    partial = band >= 0 or lengths_x is not None or lengths_y is not None
    value = C.new_empty(batch)
    E = _derivative(C, (batch, m, n), partial) if alignment else C.new_empty(0)
    _native.launch("soft_dtw", "softdtw_value_and_alignment", C, _address(C), _address(value), _address(E),
                   _address(lengths_x), _address(lengths_y), batch, m, n, gamma, band, _native.dtype_code(C),
                   workspace=("softdtw_work_bytes", (batch, m, n, band, False)))
    return value, E


def _second_order(C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                  band: int) -> tuple[Tensor, Tensor, Tensor]:
    """(<E, Z>, E, H Z) of costs C for directions Z, both (B, N, M) (SPEC 3.8)."""
    batch, m, n = C.shape
    partial = band >= 0 or lengths_x is not None or lengths_y is not None
    jvp = C.new_empty(batch)
    E = _derivative(C, (batch, m, n), partial)
    HZ = _derivative(C, (batch, m, n), partial)
    _native.launch("soft_dtw", "softdtw_second_order", C, _address(C), _address(Z), _address(jvp), _address(E),
                   _address(HZ), _address(lengths_x), _address(lengths_y), batch, m, n, gamma, band,
                   _native.dtype_code(C), workspace=("softdtw_work_bytes", (batch, m, n, band, True)))
    return jvp, E, HZ


# ---------------------------------------------------------------------------
# Ops on cost batches.


@torch.library.custom_op("diffcomb::soft_dtw_cost", mutates_args=())
def _soft_dtw_op(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                 band: int, alignment: bool) -> tuple[Tensor, Tensor]:
    """Soft-DTW values (B,) of costs C (B, N, M) and, when ``alignment``, their gradients, the expected
    alignments (B, N, M) (else an empty tensor), computed in the same pass."""
    _check_costs("soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    return _value_and_alignment(C, lengths_x, lengths_y, gamma, band, alignment)


@torch.library.custom_op("diffcomb::sharp_soft_dtw_cost", mutates_args=())
def _sharp_op(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
              band: int) -> tuple[Tensor, Tensor]:
    """Sharp soft-DTW values <E, C> (B,) and their gradients E + H C (B, N, M)."""
    _check_costs("sharp_soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    sharp, E, HC = _second_order(C, C, lengths_x, lengths_y, gamma, band)
    return sharp, E + HC


@torch.library.custom_op("diffcomb::soft_dtw_alignment_cost", mutates_args=())
def _alignment_op(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                  band: int) -> Tensor:
    """Expected alignments E (B, N, M) of costs C."""
    _check_costs("soft_dtw_alignment_cost", C, lengths_x, lengths_y, gamma, band)
    return _value_and_alignment(C, lengths_x, lengths_y, gamma, band, True)[1]


@torch.library.custom_op("diffcomb::soft_dtw_hvp", mutates_args=())
def _hvp_op(C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
            band: int) -> Tensor:
    """Hessian-vector products H Z (B, N, M) of soft-DTW at costs C."""
    _check_hvp(C, Z, lengths_x, lengths_y, gamma, band)
    return _second_order(C, Z, lengths_x, lengths_y, gamma, band)[2]


@_soft_dtw_op.register_fake
def _(C, lengths_x, lengths_y, gamma, band, alignment):
    _check_costs("soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    batch, m, n = C.shape
    return C.new_empty(batch), C.new_empty((batch, m, n) if alignment else (0,))


@_sharp_op.register_fake
def _(C, lengths_x, lengths_y, gamma, band):
    _check_costs("sharp_soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    return C.new_empty(C.shape[0]), torch.empty_like(C)


@_alignment_op.register_fake
def _(C, lengths_x, lengths_y, gamma, band):
    _check_costs("soft_dtw_alignment_cost", C, lengths_x, lengths_y, gamma, band)
    return torch.empty_like(C)


@_hvp_op.register_fake
def _(C, Z, lengths_x, lengths_y, gamma, band):
    _check_hvp(C, Z, lengths_x, lengths_y, gamma, band)
    return torch.empty_like(Z)


def _setup(ctx, inputs, output) -> None:
    C, lengths_x, lengths_y, gamma, band, _ = inputs
    _, E = output
    ctx.mark_non_differentiable(E)
    ctx.save_for_backward(C, E, lengths_x, lengths_y)
    ctx.gamma, ctx.band = gamma, band


def _backward(ctx, grad_value, _grad_E):
    C, E, lengths_x, lengths_y = ctx.saved_tensors
    if grad_value is None:
        return None, None, None, None, None, None
    if torch.is_grad_enabled() or E.dim() != 3:
        # Double backward (create_graph=True), or a forward that did not compute E: the
        # alignment op's E is differentiable (its backward is the Hessian-vector product).
        E = torch.ops.diffcomb.soft_dtw_alignment_cost(C, lengths_x, lengths_y, ctx.gamma, ctx.band)
    return grad_value[:, None, None] * E, None, None, None, None, None


torch.library.register_autograd("diffcomb::soft_dtw_cost", _backward, setup_context=_setup)


def _setup_sharp(ctx, inputs, output) -> None:
    _, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.save_for_backward(grad)


def _backward_sharp(ctx, grad_value, _grad_grad):
    (grad,) = ctx.saved_tensors
    g = torch.zeros(grad.shape[0], dtype=grad.dtype, device=grad.device) if grad_value is None else grad_value
    return g[:, None, None] * grad, None, None, None, None


torch.library.register_autograd("diffcomb::sharp_soft_dtw_cost", _backward_sharp, setup_context=_setup_sharp)


def _setup_alignment(ctx, inputs, output) -> None:
    C, lengths_x, lengths_y, gamma, band = inputs
    ctx.save_for_backward(C, lengths_x, lengths_y)
    ctx.gamma, ctx.band = gamma, band


def _backward_alignment(ctx, grad_E):
    # E = grad sdtw, so its VJP in the direction G is H G (the Hessian is symmetric).
    C, lengths_x, lengths_y = ctx.saved_tensors
    if grad_E is None:
        return None, None, None, None, None
    HG = torch.ops.diffcomb.soft_dtw_hvp(C, grad_E.contiguous(), lengths_x, lengths_y, ctx.gamma, ctx.band)
    return HG, None, None, None, None


torch.library.register_autograd("diffcomb::soft_dtw_alignment_cost", _backward_alignment,
                                setup_context=_setup_alignment)


def _setup_hvp(ctx, inputs, output) -> None:
    C, _, lengths_x, lengths_y, gamma, band = inputs
    ctx.save_for_backward(C, lengths_x, lengths_y)
    ctx.gamma, ctx.band = gamma, band


def _backward_hvp(ctx, grad):
    # H Z is linear in Z with the symmetric H: its VJP in Z is H grad. Its derivative in C would
    # be the third derivative of soft-DTW.
    C, lengths_x, lengths_y = ctx.saved_tensors
    if ctx.needs_input_grad[0]:
        raise NotImplementedError("diffcomb: third derivatives of soft-DTW (the gradient of a Hessian-vector "
                                  "product with respect to the costs) are not implemented")
    if grad is None or not ctx.needs_input_grad[1]:
        return None, None, None, None, None, None
    HG = torch.ops.diffcomb.soft_dtw_hvp(C, grad.contiguous(), lengths_x, lengths_y, ctx.gamma, ctx.band)
    return None, HG, None, None, None, None


torch.library.register_autograd("diffcomb::soft_dtw_hvp", _backward_hvp, setup_context=_setup_hvp)


# ---------------------------------------------------------------------------
# The op on series (costs formed inside the kernel).


@torch.library.custom_op("diffcomb::soft_dtw_series", mutates_args=())
def _series_op(x: Tensor, y: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
               band: int, cost: int, grad_x: bool, grad_y: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-DTW values (B,) between series x (B, N, D) and y (B, M, D), the costs computed
    inside the kernel; with grad_x / grad_y also the gradients (B, N, D) / (B, M, D) (else empty)."""
    _check_series(x, y, lengths_x, lengths_y, gamma, band, cost)
    batch, m, d = x.shape
    n = y.shape[1]
    partial = band >= 0 or lengths_x is not None or lengths_y is not None
    value = x.new_empty(batch)
    gx = _derivative(x, (batch, m, d), partial) if grad_x else x.new_empty(0)
    gy = _derivative(y, (batch, n, d), partial) if grad_y else y.new_empty(0)
    _native.launch("soft_dtw", "softdtw_series", x, _address(x), _address(y), _address(value), _address(gx),
                   _address(gy), _address(lengths_x), _address(lengths_y), batch, m, n, d, cost, gamma, band,
                   _native.dtype_code(x), workspace=("softdtw_work_bytes", (batch, m, n, band, False)))
    return value, gx, gy


@_series_op.register_fake
def _(x, y, lengths_x, lengths_y, gamma, band, cost, grad_x, grad_y):
    _check_series(x, y, lengths_x, lengths_y, gamma, band, cost)
    return (x.new_empty(x.shape[0]), x.new_empty(x.shape if grad_x else (0,)),
            y.new_empty(y.shape if grad_y else (0,)))


def _setup_series(ctx, inputs, output) -> None:
    x, y, lengths_x, lengths_y, gamma, band, cost, _, _ = inputs
    _, gx, gy = output
    ctx.mark_non_differentiable(gx, gy)
    ctx.save_for_backward(x, y, gx, gy, lengths_x, lengths_y)
    ctx.gamma, ctx.band, ctx.cost = gamma, band, COSTS[cost]


def _backward_series(ctx, grad_value, _grad_gx, _grad_gy):
    x, y, gx, gy, lengths_x, lengths_y = ctx.saved_tensors
    need_x, need_y = ctx.needs_input_grad[:2]
    if grad_value is None:
        return None, None, None, None, None, None, None, None, None
    g = grad_value[:, None, None]
    if torch.is_grad_enabled() or (need_x and gx.dim() != 3) or (need_y and gy.dim() != 3):
        # Double backward (create_graph=True), or a forward that did not compute the gradients:
        # E from the alignment op is differentiable (its backward is the Hessian-vector product).
        C = pairwise(x, y, ctx.cost)
        E = torch.ops.diffcomb.soft_dtw_alignment_cost(C, lengths_x, lengths_y, ctx.gamma, ctx.band)
        gx, gy = cost_vjp(x, y, g * E, ctx.cost)
        return gx, gy, None, None, None, None, None, None, None
    return (g * gx if need_x else None), (g * gy if need_y else None), None, None, None, None, None, None, None


torch.library.register_autograd("diffcomb::soft_dtw_series", _backward_series, setup_context=_setup_series)
