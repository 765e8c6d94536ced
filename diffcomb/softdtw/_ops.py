"""The soft-DTW custom ops (torch.ops.diffcomb.*) on (B, N, M) cost batches and (B, N, D) series
batches: their argument checks, native calls (csrc/softdtw, through diffcomb._native.launch), fake
implementations and derivative formulas, wired for every autodiff mode by diffcomb._autodiff.define.

Derivatives (SPEC 3.3, 3.8): the gradient of the value is the expected alignment E (ALIGNMENT), the
derivative of E is the Hessian-vector product (HVP), linear in its direction. The formulas are written
with these differentiable ops, so first derivatives hold in every mode (reverse, forward, vmap) and
second derivatives of the value (double backward, Hessian-vector products, forward-over-reverse) follow.
A third derivative of soft-DTW (the derivative of HVP with respect to the costs: the second derivative of
E and of the sharp variant) has no kernel and raises.

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
from torch.autograd import forward_ad

from .. import _native
from .._autodiff import ROW, define, save
from .._checks import check_op, check_op_tensor
from ._boundary import COSTS, GAMMA_MIN, zero_padding
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
    """Values (B,) and, when asked, expected alignments (B, N, M) (else an empty (B, 0, 0), which keeps the
    batch dimension for vmap)."""
    batch, m, n = C.shape
    partial = band >= 0 or lengths_x is not None or lengths_y is not None
    value = C.new_empty(batch)
    E = _derivative(C, (batch, m, n), partial) if alignment else C.new_empty((batch, 0, 0))
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
# Ops on cost batches: the Hessian-vector product, the expected alignment, the value, the sharp value.

_THIRD = ("diffcomb: third derivatives of soft-DTW are not implemented (the derivative of a Hessian-vector "
          "product with respect to the costs: the second derivative of soft_dtw_alignment and of the sharp "
          "soft-DTW, or a third derivative of soft-DTW)")
_NONE4 = (None, None, None, None)


def _hvp_impl(C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
              band: int) -> Tensor:
    """Hessian-vector products H Z (B, N, M) of soft-DTW at costs C."""
    _check_hvp(C, Z, lengths_x, lengths_y, gamma, band)
    return _second_order(C, Z, lengths_x, lengths_y, gamma, band)[2]


def _hvp_fake(C, Z, lengths_x, lengths_y, gamma, band):
    _check_hvp(C, Z, lengths_x, lengths_y, gamma, band)
    return torch.empty_like(Z)


def _setup_costs(ctx, inputs, output) -> None:
    """Saves C and the lengths (the second-order ops' derivatives need nothing else)."""
    C, lengths_x, lengths_y = inputs[0], inputs[-4], inputs[-3]
    save(ctx, C, lengths_x, lengths_y)
    ctx.gamma, ctx.band = inputs[-2], inputs[-1]


def _guard_impl(C: Tensor) -> Tensor:
    """Zeros (B,): added to an HVP, it carries the HVP's dependence on the costs C in its own node."""
    return C.new_zeros(C.shape[0])


def _guard_fake(C):
    return C.new_empty(C.shape[0])


def _raise_third():
    raise NotImplementedError(_THIRD)


THIRD = define("soft_dtw_third_derivative", _guard_impl, _guard_fake, kinds=(ROW,),
               backward=lambda ctx, _: _raise_third(), jvp=lambda ctx, _: _raise_third())


def _recorded(C: Tensor) -> bool:
    """Whether a backward formula's result may be differentiated again: grad mode is on (create_graph,
    torch.func) or C carries a forward-mode tangent (forward AD over a plain backward)."""
    return torch.is_grad_enabled() or forward_ad.unpack_dual(C).tangent is not None


def _hvp(ctx, C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor],
         guard: bool = True) -> Tensor:
    """H Z inside a derivative formula, differentiable in Z. Its derivative in C (a third derivative)
    goes through THIRD, which raises only when that derivative is taken, not when autograd merely
    differentiates the product in Z (as the double-vjp trick does). ``guard=False`` (a backward whose
    result is not differentiated again) skips THIRD."""
    HZ = HVP(C.detach(), Z.contiguous(), lengths_x, lengths_y, ctx.gamma, ctx.band)
    return HZ + THIRD(C)[:, None, None] if guard else HZ


def _backward_hvp(ctx, grad):
    # H Z is linear in Z with the symmetric H: its VJP in Z is H grad. Its derivative in C would be the
    # third derivative of soft-DTW.
    if ctx.needs_input_grad[0]:
        raise NotImplementedError(_THIRD)
    C, lengths_x, lengths_y = ctx.saved_tensors
    return None, _hvp(ctx, C, grad, lengths_x, lengths_y, _recorded(C)), *_NONE4


def _jvp_hvp(ctx, dC, dZ, *_):
    if dC is not None:
        raise NotImplementedError(_THIRD)
    C, lengths_x, lengths_y = ctx.saved_tensors
    return _hvp(ctx, C, dZ, lengths_x, lengths_y)


HVP = define("soft_dtw_hvp", _hvp_impl, _hvp_fake, kinds=(ROW, ROW, ROW, ROW, None, None), setup=_setup_costs,
             backward=_backward_hvp, jvp=_jvp_hvp)


def _alignment_impl(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                    band: int) -> Tensor:
    """Expected alignments E (B, N, M) of costs C."""
    _check_costs("soft_dtw_alignment_cost", C, lengths_x, lengths_y, gamma, band)
    return _value_and_alignment(C, lengths_x, lengths_y, gamma, band, True)[1]


def _alignment_fake(C, lengths_x, lengths_y, gamma, band):
    _check_costs("soft_dtw_alignment_cost", C, lengths_x, lengths_y, gamma, band)
    return torch.empty_like(C)


def _backward_alignment(ctx, grad_E):
    # E = grad sdtw, so its VJP in the direction G is H G (the Hessian is symmetric), and its JVP H dC.
    C, lengths_x, lengths_y = ctx.saved_tensors
    return _hvp(ctx, C, grad_E, lengths_x, lengths_y, _recorded(C)), *_NONE4


def _jvp_alignment(ctx, dC, *_):
    C, lengths_x, lengths_y = ctx.saved_tensors
    return _hvp(ctx, C, dC, lengths_x, lengths_y)


ALIGNMENT = define("soft_dtw_alignment_cost", _alignment_impl, _alignment_fake, kinds=(ROW, ROW, ROW, None, None),
                   setup=_setup_costs, backward=_backward_alignment, jvp=_jvp_alignment)


def _alignment(ctx, C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor]) -> Tensor:
    """E of the saved costs as a differentiable op (its derivative is HVP)."""
    return ALIGNMENT(C, lengths_x, lengths_y, ctx.gamma, ctx.band)


def _soft_dtw_impl(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float, band: int,
                   alignment: bool) -> tuple[Tensor, Tensor]:
    """Soft-DTW values (B,) of costs C (B, N, M) and, when ``alignment``, their gradients, the expected
    alignments (B, N, M) (else an empty (B, 0, 0)), computed in the same pass."""
    _check_costs("soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    return _value_and_alignment(C, lengths_x, lengths_y, gamma, band, alignment)


def _soft_dtw_fake(C, lengths_x, lengths_y, gamma, band, alignment):
    _check_costs("soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    batch, m, n = C.shape
    return C.new_empty(batch), C.new_empty((batch, m, n) if alignment else (batch, 0, 0))


def _setup_cached(ctx, inputs, output) -> None:
    """The value ops (C, lengths_x, lengths_y, gamma, band, ...) -> (value, derivative): saves C, the
    lengths and the derivative that the forward computed (a cache for the plain backward)."""
    C, lengths_x, lengths_y, gamma, band = inputs[:5]
    ctx.mark_non_differentiable(output[1])
    save(ctx, C, output[1], lengths_x, lengths_y)
    ctx.gamma, ctx.band = gamma, band


def _backward_soft_dtw(ctx, grad_value, _grad_E):
    C, E, lengths_x, lengths_y = ctx.saved_tensors
    if grad_value is None:
        return None, *_NONE4, None
    if E.shape[1] == 0 or _recorded(C):
        # Double backward (create_graph=True, torch.func), or a forward that did not compute E: E from
        # the alignment op is differentiable (its backward is the Hessian-vector product).
        E = _alignment(ctx, C, lengths_x, lengths_y)
    return grad_value[:, None, None] * E, *_NONE4, None


def _jvp_soft_dtw(ctx, dC, *_):
    # The directional derivative <E, dC> (SPEC 3.8), through the differentiable E (reverse over forward).
    C, _E, lengths_x, lengths_y = ctx.saved_tensors
    return (_alignment(ctx, C, lengths_x, lengths_y) * dC).sum((1, 2)), None


SOFT_DTW = define("soft_dtw_cost", _soft_dtw_impl, _soft_dtw_fake, kinds=(ROW, ROW, ROW, None, None, None),
                  setup=_setup_cached, backward=_backward_soft_dtw, jvp=_jvp_soft_dtw)


def _sharp_impl(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                band: int) -> tuple[Tensor, Tensor]:
    """Sharp soft-DTW values <E, C> (B,) and their gradients E + H C (B, N, M)."""
    _check_costs("sharp_soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    sharp, E, HC = _second_order(C, C, lengths_x, lengths_y, gamma, band)
    return sharp, E + HC


def _sharp_fake(C, lengths_x, lengths_y, gamma, band):
    _check_costs("sharp_soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    return C.new_empty(C.shape[0]), torch.empty_like(C)


def _backward_sharp(ctx, grad_value, _grad_grad):
    C, grad, lengths_x, lengths_y = ctx.saved_tensors
    if grad_value is None:
        return None, *_NONE4
    if _recorded(C):
        # Recorded for a higher derivative: E + H C from the differentiable ops, whose derivative in C
        # (a third derivative of soft-DTW) raises instead of silently missing.
        grad = _alignment(ctx, C, lengths_x, lengths_y) + _hvp(ctx, C, C, lengths_x, lengths_y)
    return grad_value[:, None, None] * grad, *_NONE4


def _jvp_sharp(ctx, dC, *_):
    # <E + H C, dC> = <E, dC> + <C, H dC> (H symmetric), through the differentiable ops.
    C, _grad, lengths_x, lengths_y = ctx.saved_tensors
    E = _alignment(ctx, C, lengths_x, lengths_y)
    return (E * dC + C * _hvp(ctx, C, dC, lengths_x, lengths_y)).sum((1, 2)), None


SHARP = define("sharp_soft_dtw_cost", _sharp_impl, _sharp_fake, kinds=(ROW, ROW, ROW, None, None),
               setup=_setup_cached, backward=_backward_sharp, jvp=_jvp_sharp)


# ---------------------------------------------------------------------------
# The op on series (costs formed inside the kernel).


def _series_impl(x: Tensor, y: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                 band: int, cost: int, grad_x: bool, grad_y: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-DTW values (B,) between series x (B, N, D) and y (B, M, D), the costs computed inside the
    kernel; with grad_x / grad_y also the gradients (B, N, D) / (B, M, D) (else empty (B, 0, D))."""
    _check_series(x, y, lengths_x, lengths_y, gamma, band, cost)
    batch, m, d = x.shape
    n = y.shape[1]
    partial = band >= 0 or lengths_x is not None or lengths_y is not None
    value = x.new_empty(batch)
    gx = _derivative(x, (batch, m, d), partial) if grad_x else x.new_empty((batch, 0, d))
    gy = _derivative(y, (batch, n, d), partial) if grad_y else y.new_empty((batch, 0, d))
    _native.launch("soft_dtw", "softdtw_series", x, _address(x), _address(y), _address(value), _address(gx),
                   _address(gy), _address(lengths_x), _address(lengths_y), batch, m, n, d, cost, gamma, band,
                   _native.dtype_code(x), workspace=("softdtw_work_bytes", (batch, m, n, band, False)))
    return value, gx, gy


def _series_fake(x, y, lengths_x, lengths_y, gamma, band, cost, grad_x, grad_y):
    _check_series(x, y, lengths_x, lengths_y, gamma, band, cost)
    batch, _, d = x.shape
    return (x.new_empty(batch), x.new_empty(x.shape if grad_x else (batch, 0, d)),
            y.new_empty(y.shape if grad_y else (batch, 0, d)))


def _setup_series(ctx, inputs, output) -> None:
    x, y, lengths_x, lengths_y, gamma, band, cost, _, _ = inputs
    _, gx, gy = output
    ctx.mark_non_differentiable(gx, gy)
    save(ctx, x, y, gx, gy, lengths_x, lengths_y)
    ctx.gamma, ctx.band, ctx.cost = gamma, band, COSTS[cost]


def _series_gradients(ctx, x: Tensor, y: Tensor, lengths_x: Optional[Tensor],
                      lengths_y: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """The gradients of the values with respect to x and y as differentiable torch ops around the
    alignment op (SPEC 3.3): the route of every derivative beyond the kernel's own first gradient.
    Padding past the lengths is zeroed (the kernel never reads it; here it would meet E = 0)."""
    x = zero_padding(x, None if lengths_x is None else lengths_x.clamp(1, x.shape[1]))
    y = zero_padding(y, None if lengths_y is None else lengths_y.clamp(1, y.shape[1]))
    E = _alignment(ctx, pairwise(x, y, ctx.cost), lengths_x, lengths_y)
    return cost_vjp(x, y, E, ctx.cost)


def _backward_series(ctx, grad_value, _grad_gx, _grad_gy):
    x, y, gx, gy, lengths_x, lengths_y = ctx.saved_tensors
    need_x, need_y = ctx.needs_input_grad[:2]
    if grad_value is None:
        return None, None, *_NONE4, None, None, None
    if (need_x and gx.shape[1] == 0) or (need_y and gy.shape[1] == 0) or _recorded(x) or _recorded(y):
        # Double backward (create_graph=True, torch.func), or a forward that did not compute the
        # gradients: the differentiable route.
        gx, gy = _series_gradients(ctx, x, y, lengths_x, lengths_y)
    g = grad_value[:, None, None]
    return (g * gx if need_x else None), (g * gy if need_y else None), *_NONE4, None, None, None


def _jvp_series(ctx, dx, dy, *_):
    # <grad_x, dx> + <grad_y, dy> = <E, dC> (SPEC 3.8), through the differentiable route.
    x, y, _gx, _gy, lengths_x, lengths_y = ctx.saved_tensors
    gx, gy = _series_gradients(ctx, x, y, lengths_x, lengths_y)
    tangent = x.new_zeros(x.shape[0])
    if dx is not None:
        tangent = tangent + (gx * dx).sum((1, 2))
    if dy is not None:
        tangent = tangent + (gy * dy).sum((1, 2))
    return tangent, None, None


SERIES = define("soft_dtw_series", _series_impl, _series_fake,
                kinds=(ROW, ROW, ROW, ROW, None, None, None, None, None), setup=_setup_series,
                backward=_backward_series, jvp=_jvp_series)
