"""Soft-DTW (SPEC.md section 3): a differentiable dynamic time warping loss.

The native engine (csrc/softdtw, CPU and CUDA) runs the DP along
anti-diagonals, with optional per-pair lengths and a Sakoe-Chiba band, storing
only the in-band cells. One pass gives the value and, when a gradient is
needed, the expected alignment (the gradient with respect to the costs); a
second-order pass gives the sharp variant and Hessian-vector products.

For series, :func:`soft_dtw` computes the costs inside the kernel from the
differences x_i - y_j and returns the gradients with respect to x and y from
the same pass: no ``(B, N, M)`` cost matrix and no ``(B, N, M, D)`` difference
tensor is formed, and with a band the memory is O((N + M) b). The cost-matrix
functions (``*_from_cost``) take a given ``(B, N, M)`` matrix;
:func:`pairwise_cost` forms one with a matrix product.

References:
    M. Cuturi, M. Blondel. Soft-DTW: a Differentiable Loss Function for Time-Series. ICML 2017.
    arXiv:1703.01353
"""

from __future__ import annotations

import math
import sys
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._checks import as_float, check_flag, check_same_device

__all__ = [
    "mean_cost",
    "mean_cost_divergence",
    "mean_cost_from_cost",
    "pairwise_cost",
    "sharp_soft_dtw",
    "sharp_soft_dtw_divergence",
    "sharp_soft_dtw_from_cost",
    "soft_dtw",
    "soft_dtw_alignment",
    "soft_dtw_barycenter",
    "soft_dtw_divergence",
    "soft_dtw_from_cost",
]

_COSTS = ("sqeuclidean", "half_sqeuclidean", "log_augmented")
# The smallest positive gamma: below it (subnormal) 1 / gamma overflows and the weights turn NaN.
_GAMMA_MIN = sys.float_info.min


# ---------------------------------------------------------------------------
# Validation.


def _check_float(fn: str, name: str, t: object, min_dim: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"diffcomb.{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"diffcomb.{fn}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(f"diffcomb.{fn}: {name} must have at least {min_dim} dimensions, got shape {tuple(t.shape)}")
    if t.device.type == "cuda":
        _native.cuda(fn)
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"diffcomb.{fn}: {name} is on device {t.device}; diffcomb supports cpu and cuda")
    return t


def _check_gamma(fn: str, gamma: float) -> float:
    if isinstance(gamma, (Tensor, bool)) or not isinstance(gamma, (int, float)):
        raise TypeError(f"diffcomb.{fn}: gamma must be a Python float, got {type(gamma).__name__}")
    if not 0.0 <= gamma < math.inf:
        raise ValueError(f"diffcomb.{fn}: gamma must be >= 0 and finite (0 is hard DTW), got {gamma}")
    if 0.0 < gamma < _GAMMA_MIN:
        raise ValueError(f"diffcomb.{fn}: gamma must be 0 (hard DTW) or at least {_GAMMA_MIN} (a subnormal "
                         f"gamma overflows 1 / gamma), got {gamma}")
    return float(gamma)


def _check_band(fn: str, bandwidth: Optional[int]) -> int:
    if bandwidth is None:
        return -1
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int) or bandwidth < 0:
        raise ValueError(f"diffcomb.{fn}: bandwidth must be None or an int >= 0, got {bandwidth!r}")
    return bandwidth


def _band_for(band: int, m: int, n: int) -> int:
    """The band passed to the kernels: one at least as wide as the longer side excludes no cell and
    is no band (-1), which also keeps any Python int (sys.maxsize, 2**70) within int64."""
    return -1 if band >= max(m, n) else band


def _check_cost(fn: str, cost: object) -> str:
    if cost not in _COSTS:
        raise ValueError(f"diffcomb.{fn}: cost must be one of {_COSTS}, got {cost!r}")
    return cost


def _check_lengths(fn: str, name: str, lengths: Optional[Tensor], batch_shape: torch.Size, size: int,
                   device: torch.device, values: bool = True) -> Optional[Tensor]:
    """The lengths flattened to int64 (B,), after checking their type, device and shape and, with
    ``values``, their range (a host sync, skipped under torch.compile)."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor) or lengths.is_floating_point() or lengths.is_complex() \
            or lengths.dtype == torch.bool:
        raise TypeError(f"diffcomb.{fn}: {name} must be an integer tensor")
    if lengths.device != device:
        raise RuntimeError(f"diffcomb.{fn}: {name} is on {lengths.device}, the series are on {device}")
    try:
        lengths = lengths.broadcast_to(batch_shape)
    except RuntimeError as exc:
        raise ValueError(f"diffcomb.{fn}: {name} of shape {tuple(lengths.shape)} does not match the batch "
                         f"shape {tuple(batch_shape)}") from exc
    flat = lengths.reshape(-1).to(torch.int64).contiguous()
    if values and flat.numel() and flat.device.type != "meta" and not torch.compiler.is_compiling() \
            and (int(flat.min()) < 1 or int(flat.max()) > size):
        raise ValueError(f"diffcomb.{fn}: {name} must lie in [1, {size}], got values in "
                         f"[{int(flat.min())}, {int(flat.max())}]")
    return flat


def _check_series(fn: str, x: Tensor, y: Tensor) -> None:
    _check_float(fn, "x", x, 2)
    _check_float(fn, "y", y, 2)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"diffcomb.{fn}: x and y must have the same feature size D, got x of shape "
                         f"{tuple(x.shape)} and y of shape {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"diffcomb.{fn}: x and y must have the same dtype, got {x.dtype} and {y.dtype}")


def _check_pair(fn: str, x: Tensor, y: Tensor, x_lengths: Optional[Tensor],
                y_lengths: Optional[Tensor]) -> torch.Size:
    """Validates a pair of series and its lengths (named after fn) up to the lengths' values, which
    the function evaluated next checks (one host sync, not two); returns the batch shape."""
    _check_series(fn, x, y)
    batch_shape = _pair_batch_shape(fn, x, y)
    _check_lengths(fn, "x_lengths", x_lengths, batch_shape, x.shape[-2], x.device, values=False)
    _check_lengths(fn, "y_lengths", y_lengths, batch_shape, y.shape[-2], x.device, values=False)
    return batch_shape


def _pair_batch_shape(fn: str, x: Tensor, y: Tensor) -> torch.Size:
    try:
        return torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError as exc:
        raise ValueError(f"diffcomb.{fn}: the batch dimensions of x {tuple(x.shape[:-2])} and y "
                         f"{tuple(y.shape[:-2])} do not broadcast") from exc


def _on_series(fn: str, from_cost, x: Tensor, y: Tensor, cost: str, **kwargs) -> Tensor:
    """A cost-matrix function from_cost(fn, C, ...) applied to the pairwise costs of series x and y
    (already on one device and made float by the public function)."""
    _check_pair(fn, x, y, kwargs.get("x_lengths"), kwargs.get("y_lengths"))
    _check_cost(fn, cost)
    # Steps past a series' length may hold anything (NaN included); zeroed, they reach neither
    # the costs of used cells nor, through the pairwise costs' backward, the gradients.
    x = _zero_padding(x, kwargs.get("x_lengths"))
    y = _zero_padding(y, kwargs.get("y_lengths"))
    return from_cost(fn, _pairwise_cost(x, y, cost), **kwargs)


def _zero_padding(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    if lengths is None:
        return x
    steps = torch.arange(x.shape[-2], device=x.device)
    return torch.where((steps < lengths.unsqueeze(-1)).unsqueeze(-1), x, 0.0)


def _self_pair(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """x with the batch dimensions of its (validated) lengths, for the term f(x, x): lengths may
    broadcast over dimensions where x does not (x (3, 1, N, D) and lengths (3, 2))."""
    if lengths is None:
        return x
    shape = torch.broadcast_shapes(x.shape[:-2], lengths.shape)
    return x.expand(*shape, *x.shape[-2:])


def _divergence(fn: str, value, x: Tensor, y: Tensor, x_lengths: Optional[Tensor],
                y_lengths: Optional[Tensor]) -> Tensor:
    """f(x, y) - 1/2 f(x, x) - 1/2 f(y, y) for a series function value(a, b, a_lengths, b_lengths)
    that reports errors as fn (SPEC 3.9); gradients follow by autograd through the three evaluations.
    The lengths are checked against the batch shape of (x, y) first, then each self term runs on
    the batch shape of its series and lengths."""
    check_same_device(fn, x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    x, y = as_float(x), as_float(y)
    _check_pair(fn, x, y, x_lengths, y_lengths)
    xx, yy = _self_pair(x, x_lengths), _self_pair(y, y_lengths)
    return value(x, y, x_lengths, y_lengths) - 0.5 * (value(xx, xx, x_lengths, x_lengths)
                                                       + value(yy, yy, y_lengths, y_lengths))


# ---------------------------------------------------------------------------
# Custom ops on (B, N, M) cost batches.
#
# The ops trust neither their callers nor torch.ops users: each checks what the kernels rely on
# (ranks, sizes, dtypes, devices, contiguity, the scalar arguments' ranges) with torch._check
# before the native call and in its fake, so a bad direct call raises instead of reading out of
# bounds. Only metadata and Python scalars are read (no sync; the checks trace under compile).
# The lengths' values are not read: the kernels clamp them into [1, N] (softdtw.h, used_length).


def _op_check_array(op: str, name: str, t: Tensor, dim: int, like: Optional[Tensor] = None) -> None:
    torch._check(t.dim() == dim, lambda: f"diffcomb::{op}: {name} must have {dim} dimensions, got shape "
                                         f"{tuple(t.shape)}")
    torch._check(t.dtype in (torch.float32, torch.float64),
                 lambda: f"diffcomb::{op}: {name} must be float32 or float64, got {t.dtype}")
    torch._check(t.is_contiguous(), lambda: f"diffcomb::{op}: {name} must be contiguous")
    torch._check(t.device.type in ("cpu", "cuda", "meta"),
                 lambda: f"diffcomb::{op}: {name} is on {t.device}; the kernels run on cpu and cuda")
    if like is not None:
        torch._check(t.device == like.device, lambda: f"diffcomb::{op}: {name} is on {t.device}, expected "
                                                      f"{like.device}")
        torch._check(t.dtype == like.dtype, lambda: f"diffcomb::{op}: {name} has dtype {t.dtype}, expected "
                                                    f"{like.dtype}")


def _op_check_lengths(op: str, name: str, lengths: Optional[Tensor], like: Tensor) -> None:
    if lengths is None:
        return
    torch._check(lengths.dtype == torch.int64, lambda: f"diffcomb::{op}: {name} must be int64, got "
                                                       f"{lengths.dtype}")
    torch._check(lengths.dim() == 1 and lengths.shape[0] == like.shape[0],
                 lambda: f"diffcomb::{op}: {name} must have shape ({like.shape[0]},), got {tuple(lengths.shape)}")
    torch._check(lengths.is_contiguous(), lambda: f"diffcomb::{op}: {name} must be contiguous")
    torch._check(lengths.device == like.device, lambda: f"diffcomb::{op}: {name} is on {lengths.device}, "
                                                        f"expected {like.device}")


def _op_check_scalars(op: str, gamma: float, band: int) -> None:
    torch._check_value(gamma == 0.0 or _GAMMA_MIN <= gamma < math.inf,
                       lambda: f"diffcomb::{op}: gamma must be 0 or in [{_GAMMA_MIN}, inf), got {gamma}")
    torch._check_value(band >= -1, lambda: f"diffcomb::{op}: band must be >= -1 (-1: none), got {band}")


def _op_check_costs(op: str, C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                    band: int) -> None:
    _op_check_array(op, "C", C, 3)
    torch._check(C.shape[1] >= 1 and C.shape[2] >= 1,
                 lambda: f"diffcomb::{op}: C must have N, M >= 1, got shape {tuple(C.shape)}")
    _op_check_lengths(op, "lengths_x", lengths_x, C)
    _op_check_lengths(op, "lengths_y", lengths_y, C)
    _op_check_scalars(op, gamma, band)


def _op_check_series(op: str, x: Tensor, y: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor],
                     gamma: float, band: int, cost: int) -> None:
    _op_check_array(op, "x", x, 3)
    _op_check_array(op, "y", y, 3, like=x)
    torch._check(y.shape[0] == x.shape[0] and y.shape[2] == x.shape[2],
                 lambda: f"diffcomb::{op}: x (B, N, D) and y (B, M, D) must share B and D, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    torch._check(x.shape[1] >= 1 and y.shape[1] >= 1,
                 lambda: f"diffcomb::{op}: x and y need N, M >= 1 steps, got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    _op_check_lengths(op, "lengths_x", lengths_x, x)
    _op_check_lengths(op, "lengths_y", lengths_y, x)
    _op_check_scalars(op, gamma, band)
    torch._check_value(0 <= cost < len(_COSTS), lambda: f"diffcomb::{op}: cost must be a code in "
                                                         f"[0, {len(_COSTS) - 1}], got {cost}")


def _cuda_work(t: Tensor, m: int, n: int, band: int, second_order: bool = False) -> Tensor:
    nbytes = _native.cuda("soft_dtw").softdtw_work_bytes(t.shape[0], m, n, band, second_order)
    return torch.empty(nbytes, dtype=torch.uint8, device=t.device)


def _value_and_alignment_native(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                                band: int, alignment: bool) -> tuple[Tensor, Tensor]:
    """Values (B,) and, when asked, expected alignments (B, N, M) (else an empty tensor)."""
    batch, m, n = C.shape
    value = C.new_empty(batch)
    if not alignment:
        E = C.new_empty(0)
    elif C.is_cuda and (band >= 0 or lengths_x is not None or lengths_y is not None):
        E = C.new_zeros((batch, m, n))  # the kernel writes only the used, in-band cells
    else:
        E = C.new_empty((batch, m, n))
    if C.is_cuda:
        work = _cuda_work(C, m, n, band)  # held until the launches are queued (freeing it is stream-ordered)
        _native.cuda("soft_dtw").softdtw_value_and_alignment(
            _native.address(C), _native.address(value), _native.address(E), _native.address(lengths_x),
            _native.address(lengths_y), _native.address(work), batch, m, n, gamma, band,
            _native.dtype_code(C), *_native.stream_of(C))
    else:
        _native.cpu().softdtw_value_and_alignment(
            _native.address(C), _native.address(value), _native.address(E), _native.address(lengths_x),
            _native.address(lengths_y), batch, m, n, gamma, band, _native.dtype_code(C), _native.threads())
    return value, E


def _second_order_native(C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor],
                         gamma: float, band: int) -> tuple[Tensor, Tensor, Tensor]:
    """(<E, Z>, E, H Z) of costs C for directions Z, both (B, N, M) (SPEC 3.8)."""
    batch, m, n = C.shape
    jvp = C.new_empty(batch)
    E = C.new_zeros((batch, m, n)) if C.is_cuda else C.new_empty((batch, m, n))
    HZ = C.new_zeros((batch, m, n)) if C.is_cuda else C.new_empty((batch, m, n))
    args = (_native.address(C), _native.address(Z), _native.address(jvp), _native.address(E), _native.address(HZ),
            _native.address(lengths_x), _native.address(lengths_y))
    if C.is_cuda:
        work = _cuda_work(C, m, n, band, True)  # held until the launches are queued
        _native.cuda("soft_dtw").softdtw_second_order(
            *args, _native.address(work), batch, m, n, gamma, band, _native.dtype_code(C),
            *_native.stream_of(C))
    else:
        _native.cpu().softdtw_second_order(*args, batch, m, n, gamma, band, _native.dtype_code(C), _native.threads())
    return jvp, E, HZ


def _op_check_hvp(C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                  band: int) -> None:
    _op_check_costs("soft_dtw_hvp", C, lengths_x, lengths_y, gamma, band)
    _op_check_array("soft_dtw_hvp", "Z", Z, 3, like=C)
    torch._check(Z.shape == C.shape, lambda: f"diffcomb::soft_dtw_hvp: Z must have the shape of C "
                                             f"{tuple(C.shape)}, got {tuple(Z.shape)}")


@torch.library.custom_op("diffcomb::soft_dtw_cost", mutates_args=())
def _soft_dtw_op(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                 band: int, alignment: bool) -> tuple[Tensor, Tensor]:
    """Soft-DTW values (B,) of costs C (B, N, M) and, when ``alignment``, their gradients, the expected
    alignments (B, N, M) (else an empty tensor), computed in the same pass."""
    _op_check_costs("soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    return _value_and_alignment_native(C, lengths_x, lengths_y, gamma, band, alignment)


@torch.library.custom_op("diffcomb::sharp_soft_dtw_cost", mutates_args=())
def _sharp_op(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
              band: int) -> tuple[Tensor, Tensor]:
    """Sharp soft-DTW values <E, C> (B,) and their gradients E + H C (B, N, M)."""
    _op_check_costs("sharp_soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    sharp, E, HC = _second_order_native(C, C, lengths_x, lengths_y, gamma, band)
    return sharp, E + HC


@torch.library.custom_op("diffcomb::soft_dtw_alignment_cost", mutates_args=())
def _alignment_op(C: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
                  band: int) -> Tensor:
    """Expected alignments E (B, N, M) of costs C."""
    _op_check_costs("soft_dtw_alignment_cost", C, lengths_x, lengths_y, gamma, band)
    return _value_and_alignment_native(C, lengths_x, lengths_y, gamma, band, True)[1]


@torch.library.custom_op("diffcomb::soft_dtw_hvp", mutates_args=())
def _hvp_op(C: Tensor, Z: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
            band: int) -> Tensor:
    """Hessian-vector products H Z (B, N, M) of soft-DTW at costs C."""
    _op_check_hvp(C, Z, lengths_x, lengths_y, gamma, band)
    return _second_order_native(C, Z, lengths_x, lengths_y, gamma, band)[2]


@_soft_dtw_op.register_fake
def _(C, lengths_x, lengths_y, gamma, band, alignment):
    _op_check_costs("soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    batch, m, n = C.shape
    return C.new_empty(batch), C.new_empty((batch, m, n) if alignment else (0,))


@_sharp_op.register_fake
def _(C, lengths_x, lengths_y, gamma, band):
    _op_check_costs("sharp_soft_dtw_cost", C, lengths_x, lengths_y, gamma, band)
    return C.new_empty(C.shape[0]), torch.empty_like(C)


@_alignment_op.register_fake
def _(C, lengths_x, lengths_y, gamma, band):
    _op_check_costs("soft_dtw_alignment_cost", C, lengths_x, lengths_y, gamma, band)
    return torch.empty_like(C)


@_hvp_op.register_fake
def _(C, Z, lengths_x, lengths_y, gamma, band):
    _op_check_hvp(C, Z, lengths_x, lengths_y, gamma, band)
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


@torch.library.custom_op("diffcomb::soft_dtw_series", mutates_args=())
def _series_op(x: Tensor, y: Tensor, lengths_x: Optional[Tensor], lengths_y: Optional[Tensor], gamma: float,
               band: int, cost: int, grad_x: bool, grad_y: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-DTW values (B,) between series x (B, N, D) and y (B, M, D), the costs computed
    inside the kernel; with grad_x / grad_y also the gradients (B, N, D) / (B, M, D) (else empty)."""
    _op_check_series("soft_dtw_series", x, y, lengths_x, lengths_y, gamma, band, cost)
    batch, m, d = x.shape
    n = y.shape[1]
    value = x.new_empty(batch)
    if x.is_cuda:
        gx = x.new_zeros((batch, m, d)) if grad_x else x.new_empty(0)
        gy = y.new_zeros((batch, n, d)) if grad_y else y.new_empty(0)
        work = _cuda_work(x, m, n, band)  # held until the launches are queued
        _native.cuda("soft_dtw").softdtw_series(
            _native.address(x), _native.address(y), _native.address(value), _native.address(gx),
            _native.address(gy), _native.address(lengths_x), _native.address(lengths_y),
            _native.address(work), batch, m, n, d, cost, gamma, band,
            _native.dtype_code(x), *_native.stream_of(x))
        return value, gx, gy
    gx = x.new_empty((batch, m, d)) if grad_x else x.new_empty(0)
    gy = y.new_empty((batch, n, d)) if grad_y else y.new_empty(0)
    _native.cpu().softdtw_series(
        _native.address(x), _native.address(y), _native.address(value), _native.address(gx) if grad_x else 0,
        _native.address(gy) if grad_y else 0, _native.address(lengths_x), _native.address(lengths_y), batch, m, n, d,
        cost, gamma, band, _native.dtype_code(x), _native.threads())
    return value, gx, gy


@_series_op.register_fake
def _(x, y, lengths_x, lengths_y, gamma, band, cost, grad_x, grad_y):
    _op_check_series("soft_dtw_series", x, y, lengths_x, lengths_y, gamma, band, cost)
    return (x.new_empty(x.shape[0]), x.new_empty(x.shape if grad_x else (0,)),
            y.new_empty(y.shape if grad_y else (0,)))


def _setup_series(ctx, inputs, output) -> None:
    x, y, lengths_x, lengths_y, gamma, band, cost, _, _ = inputs
    _, gx, gy = output
    ctx.mark_non_differentiable(gx, gy)
    ctx.save_for_backward(x, y, gx, gy, lengths_x, lengths_y)
    ctx.gamma, ctx.band, ctx.cost = gamma, band, _COSTS[cost]


def _backward_series(ctx, grad_value, _grad_gx, _grad_gy):
    x, y, gx, gy, lengths_x, lengths_y = ctx.saved_tensors
    need_x, need_y = ctx.needs_input_grad[:2]
    if grad_value is None:
        return None, None, None, None, None, None, None, None, None
    g = grad_value[:, None, None]
    if torch.is_grad_enabled() or (need_x and gx.dim() != 3) or (need_y and gy.dim() != 3):
        # Double backward (create_graph=True), or a forward that did not compute the gradients:
        # E from the alignment op is differentiable (its backward is the Hessian-vector product).
        C = _pairwise_cost(x, y, ctx.cost)
        E = torch.ops.diffcomb.soft_dtw_alignment_cost(C, lengths_x, lengths_y, ctx.gamma, ctx.band)
        gx, gy = _cost_vjp(x, y, g * E, ctx.cost)
        return gx, gy, None, None, None, None, None, None, None
    return (g * gx if need_x else None), (g * gy if need_y else None), None, None, None, None, None, None, None


torch.library.register_autograd("diffcomb::soft_dtw_series", _backward_series, setup_context=_setup_series)


def _cost_vjp(x: Tensor, y: Tensor, G: Tensor, cost: str) -> tuple[Tensor, Tensor]:
    """Gradients with respect to x (B, N, D) and y (B, M, D) of <G, C(x, y)> (SPEC 3.3), in torch ops
    (differentiable again)."""
    if cost == "sqeuclidean":
        G = 2.0 * G
    elif cost == "log_augmented":
        e = torch.exp(-0.5 * _pairwise_cost(x, y, "sqeuclidean"))
        G = G * (1.0 + e / (2.0 - e))
    gx = G.sum(-1, keepdim=True) * x - G @ y
    gy = G.sum(-2).unsqueeze(-1) * y - G.transpose(-1, -2) @ x
    return gx, gy


def _soft_dtw_series(fn: str, x: Tensor, y: Tensor, gamma: float, cost: str, bandwidth: Optional[int],
                     x_lengths: Optional[Tensor], y_lengths: Optional[Tensor]) -> Tensor:
    """soft_dtw on series (on one device, made float by the caller): the in-kernel cost path (no
    (B, N, M) matrix) on CPU and CUDA; errors name fn."""
    _check_series(fn, x, y)
    _check_cost(fn, cost)
    gamma = _check_gamma(fn, gamma)
    band = _check_band(fn, bandwidth)
    *lead_x, m, d = x.shape
    *lead_y, n, _ = y.shape
    if m == 0 or n == 0:
        raise ValueError(f"diffcomb.{fn}: both series need at least one step, got x of shape {tuple(x.shape)} "
                         f"and y of shape {tuple(y.shape)}")
    if x.device.type not in ("cpu", "cuda"):
        return _sdtw_from_cost(fn, _pairwise_cost(x, y, cost), gamma, bandwidth, x_lengths, y_lengths)
    batch_shape = _pair_batch_shape(fn, x, y)
    lx = _check_lengths(fn, "x_lengths", x_lengths, batch_shape, m, x.device)
    ly = _check_lengths(fn, "y_lengths", y_lengths, batch_shape, n, x.device)
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    batch = math.prod(batch_shape)
    xs = x.expand(*batch_shape, m, d).reshape(batch, m, d).to(dtype).contiguous()
    ys = y.expand(*batch_shape, n, d).reshape(batch, n, d).to(dtype).contiguous()
    grad = torch.is_grad_enabled()
    value = torch.ops.diffcomb.soft_dtw_series(xs, ys, lx, ly, gamma, _band_for(band, m, n), _COSTS.index(cost),
                                               grad and xs.requires_grad, grad and ys.requires_grad)[0]
    return value.reshape(batch_shape).to(x.dtype)


def _batched(fn: str, C: Tensor, gamma: float, bandwidth: Optional[int], x_lengths: Optional[Tensor],
             y_lengths: Optional[Tensor]):
    _check_float(fn, "C", C, 2)
    gamma = _check_gamma(fn, gamma)
    band = _check_band(fn, bandwidth)
    *lead, m, n = C.shape
    if m == 0 or n == 0:
        raise ValueError(f"diffcomb.{fn}: both series need at least one step, got a {m} x {n} cost matrix")
    batch_shape = torch.Size(lead)
    lx = _check_lengths(fn, "x_lengths", x_lengths, batch_shape, m, C.device)
    ly = _check_lengths(fn, "y_lengths", y_lengths, batch_shape, n, C.device)
    dtype = torch.float32 if C.dtype in (torch.float16, torch.bfloat16) else C.dtype
    rows = C.reshape(math.prod(lead), m, n).to(dtype).contiguous()
    return rows, lx, ly, gamma, _band_for(band, m, n), batch_shape


def _sdtw_from_cost(fn: str, C: Tensor, gamma: float, bandwidth: Optional[int], x_lengths: Optional[Tensor],
                    y_lengths: Optional[Tensor]) -> Tensor:
    rows, lx, ly, gamma, band, batch_shape = _batched(fn, C, gamma, bandwidth, x_lengths, y_lengths)
    alignment = rows.requires_grad and torch.is_grad_enabled()
    value = torch.ops.diffcomb.soft_dtw_cost(rows, lx, ly, gamma, band, alignment)[0]
    return value.reshape(batch_shape).to(C.dtype)


def _sharp_from_cost(fn: str, C: Tensor, gamma: float, bandwidth: Optional[int], x_lengths: Optional[Tensor],
                     y_lengths: Optional[Tensor]) -> Tensor:
    rows, lx, ly, gamma, band, batch_shape = _batched(fn, C, gamma, bandwidth, x_lengths, y_lengths)
    value = torch.ops.diffcomb.sharp_soft_dtw_cost(rows, lx, ly, gamma, band)[0]
    return value.reshape(batch_shape).to(C.dtype)


def _mean_from_cost(fn: str, C: Tensor, bandwidth: Optional[int], x_lengths: Optional[Tensor],
                    y_lengths: Optional[Tensor]) -> Tensor:
    rows, lx, ly, _, band, batch_shape = _batched(fn, C, 1.0, bandwidth, x_lengths, y_lengths)
    # One pass on zero costs gives both the reachability (the value) and E_bar (its alignment).
    reachable, E_bar = torch.ops.diffcomb.soft_dtw_cost(torch.zeros_like(rows), lx, ly, 1.0, band, True)
    E_bar = E_bar.reshape(C.shape).to(C.dtype)
    # Padding and out-of-band cells (E_bar = 0) may hold anything, NaN included; a non-finite
    # used cell makes the pair NaN (SPEC 0).
    used = E_bar != 0
    value = torch.where(used, E_bar * C, 0.0).sum((-2, -1))
    value = torch.where((used & ~torch.isfinite(C)).any(-1).any(-1), torch.full_like(value, math.nan), value)
    return torch.where(torch.isinf(reachable.reshape(batch_shape)), torch.full_like(value, math.inf), value)


def _pairwise_cost(x: Tensor, y: Tensor, cost: str) -> Tensor:
    sq = (x.pow(2).sum(-1).unsqueeze(-1) + y.pow(2).sum(-1).unsqueeze(-2) - 2.0 * (x @ y.transpose(-1, -2)))
    sq = sq.clamp_min(0.0)
    if cost == "sqeuclidean":
        return sq
    half = 0.5 * sq
    if cost == "half_sqeuclidean":
        return half
    return half + torch.log(2.0 - torch.exp(-half))


# ---------------------------------------------------------------------------
# Public functions.


def soft_dtw_from_cost(
    C: Tensor,
    gamma: float = 1.0,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Soft-DTW value of cost matrices ``C``, differentiable in ``C``.

    .. math::
        \mathrm{sdtw}_\gamma(C) = \min{}^{\gamma}_{A \in \mathcal{A}(N, M)} \langle A, C \rangle,
        \qquad \min{}^{\gamma}(a) = -\gamma \log \sum_i e^{-a_i / \gamma}

    over the monotone alignments from (1, 1) to (N, M) with steps right, down and diagonal.

    Args:
        C (Tensor[..., N, M]): costs; float16/bfloat16 are computed in float32.
        gamma (float): smoothing, >= 0; 0 gives the hard DTW. Default 1.0.
        bandwidth (int, optional): Sakoe-Chiba band: only cells with ``|i - j| <= bandwidth``;
            any bandwidth >= max(N, M) (``sys.maxsize`` included) excludes nothing.
        x_lengths (Tensor[...] of ints, optional): used rows per pair, in [1, N] (padding ignored).
            Outside that range: a ValueError, or under ``torch.compile`` (where checking would
            synchronize with the device) the length clamped into it.
        y_lengths (Tensor[...] of ints, optional): used columns per pair, in [1, M]; likewise.

    Returns:
        Tensor[...]: the soft-DTW values, dtype of ``C``.

    Note:
        O(N M) time per pair (O((N + M) b) with a band b), computed in double precision; when
        ``C`` requires a gradient, the forward also computes it (two values per cell of
        scratch, no transition weights kept). The gradient
        with respect to ``C`` is the expected alignment. A band narrower than ``|N - M|``
        leaves (N, M) unreachable: the value is +inf and the gradient 0. A pair whose used
        costs contain NaN or +/-inf gives NaN; padding beyond the lengths and cells outside the
        band are never read, so they may hold anything. Finite costs whose sums overflow double
        (magnitudes near 1e308) give an infinite value and a NaN gradient. The gradient is
        a probability flow for any scale of the costs relative to ``gamma`` (entries in [0, 1]);
        when ``|C| / gamma`` exceeds about 1e13 its entries carry the rounding of the soft-DTW
        table (absolute error about ``ulp(value) / gamma``), as for any float64 evaluation.
        CPU and CUDA.

    Example:
        >>> diffcomb.soft_dtw_from_cost(torch.tensor([[0.0, 4.0], [1.0, 1.0]]))
        tensor(0.6734)

    References:
        M. Cuturi, M. Blondel. Soft-DTW: a Differentiable Loss Function for Time-Series.
        ICML 2017. arXiv:1703.01353
    """
    check_same_device("soft_dtw_from_cost", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    return _sdtw_from_cost("soft_dtw_from_cost", C, gamma, bandwidth, x_lengths, y_lengths)


def soft_dtw_alignment(
    C: Tensor,
    gamma: float = 1.0,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Expected alignment :math:`E = \nabla_C \mathrm{sdtw}_\gamma(C)` under the Gibbs distribution
    :math:`p(A) \propto e^{-\langle A, C \rangle / \gamma}` over alignments.

    Args:
        C (Tensor[..., N, M]): costs.
        gamma, bandwidth, x_lengths, y_lengths: as in :func:`soft_dtw_from_cost`.

    Returns:
        Tensor[..., N, M]: entries in [0, 1], E[0, 0] = E[N-1, M-1] = 1 (zero outside the used
        lengths and the band). Differentiable in ``C``: the backward is the Hessian-vector
        product of soft-DTW (SPEC 3.8), O(N M).

    Example:
        >>> diffcomb.soft_dtw_alignment(torch.tensor([[0.0, 4.0], [1.0, 1.0]]))
        tensor([[1.0000, 0.0132],
                [0.2654, 1.0000]])
    """
    check_same_device("soft_dtw_alignment", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    rows, lx, ly, gamma, band, batch_shape = _batched("soft_dtw_alignment", C, gamma, bandwidth, x_lengths,
                                                       y_lengths)
    E = torch.ops.diffcomb.soft_dtw_alignment_cost(rows, lx, ly, gamma, band)
    return E.reshape(C.shape).to(C.dtype)


def pairwise_cost(x: Tensor, y: Tensor, cost: str = "sqeuclidean") -> Tensor:
    r"""Cost matrices between the steps of series ``x`` (..., N, D) and ``y`` (..., M, D).

    ``"sqeuclidean"``: :math:`\|x_i - y_j\|^2`; ``"half_sqeuclidean"``: half of it;
    ``"log_augmented"``: :math:`c + \log(2 - e^{-c})` with :math:`c = \tfrac12 \|x_i - y_j\|^2`.
    Formed as :math:`\|x\|^2 + \|y\|^2 - 2 x y^\top` (one matrix product, no (N, M, D) tensor),
    clamped at 0; in float32 this loses relative accuracy for nearly equal steps of large norm.
    Integer and bool series are computed in torch's default float dtype; batch dimensions
    broadcast.
    """
    check_same_device("pairwise_cost", x=x, y=y)
    x, y = as_float(x), as_float(y)
    _check_series("pairwise_cost", x, y)
    _pair_batch_shape("pairwise_cost", x, y)
    return _pairwise_cost(x, y, _check_cost("pairwise_cost", cost))


def soft_dtw(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Soft-DTW between series ``x`` and ``y``: the value of :func:`soft_dtw_from_cost` on the costs
    between their steps, computed inside the kernel (no ``(N, M)`` cost matrix is formed).

    Args:
        x (Tensor[..., N, D]): first series (batch dimensions broadcast with ``y``'s). Integer
            and bool series are computed in torch's default float dtype.
        y (Tensor[..., M, D]): second series, same D.
        gamma (float): smoothing >= 0 (0: hard DTW). Default 1.0.
        cost (str): ``"sqeuclidean"`` (default), ``"half_sqeuclidean"`` or ``"log_augmented"``.
        bandwidth, x_lengths, y_lengths: as in :func:`soft_dtw_from_cost`.

    Returns:
        Tensor[...]: the values; differentiable in ``x`` and ``y``.

    Example:
        >>> diffcomb.soft_dtw(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]))
        tensor(0.6734)
    """
    check_same_device("soft_dtw", x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    return _soft_dtw_series("soft_dtw", as_float(x), as_float(y), gamma, cost, bandwidth, x_lengths, y_lengths)


def soft_dtw_divergence(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Soft-DTW divergence (Blondel, Mensch, Vert 2021):

    .. math::
        D_\gamma(x, y) = \mathrm{sdtw}_\gamma(x, y) - \tfrac12 \mathrm{sdtw}_\gamma(x, x)
        - \tfrac12 \mathrm{sdtw}_\gamma(y, y)

    Args:
        x (Tensor[..., N, D]), y (Tensor[..., M, D]): the series (integer and bool series are
            computed in torch's default float dtype).
        gamma, cost, bandwidth, x_lengths, y_lengths: as in :func:`soft_dtw`; the lengths may
            broadcast over batch dimensions where one series does not (each self term then
            runs on its series' and lengths' batch shape).

    Returns:
        Tensor[...]: the divergences; 0 when x equals y, symmetric in x and y; differentiable.

    Note:
        Three soft-DTW evaluations. Non-negative for the ``"log_augmented"`` cost; with the
        squared Euclidean cost it is typically, but not provably, non-negative.

    References:
        M. Blondel, A. Mensch, J.-P. Vert. Differentiable Divergences Between Time Series.
        AISTATS 2021. arXiv:2010.08354
    """
    fn = "soft_dtw_divergence"
    return _divergence(fn, lambda a, b, la, lb: _soft_dtw_series(fn, a, b, gamma, cost, bandwidth, la, lb),
                       x, y, x_lengths, y_lengths)


def sharp_soft_dtw_from_cost(
    C: Tensor,
    gamma: float = 1.0,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Sharp soft-DTW: the cost of the expected alignment, :math:`\langle E_\gamma(C), C \rangle`.

    Args:
        C (Tensor[..., N, M]): costs. gamma, bandwidth, x_lengths, y_lengths: as in
            :func:`soft_dtw_from_cost`.

    Returns:
        Tensor[...]: the values, >= the soft-DTW value; differentiable in ``C`` with the exact
        gradient :math:`E + H C` (H the soft-DTW Hessian, by the forward-on-backward pass of
        SPEC 3.8).

    Note:
        Tends to the DTW as :math:`\gamma \to 0` and to the mean alignment cost as
        :math:`\gamma \to \infty`. Three O(N M) passes. An unreachable end (band narrower than
        ``|N - M|``) gives +inf and a zero gradient; finite costs whose sums overflow double
        give NaN (value and gradient).

    References:
        M. Blondel, A. Mensch, J.-P. Vert. Differentiable Divergences Between Time Series.
        AISTATS 2021. arXiv:2010.08354
    """
    check_same_device("sharp_soft_dtw_from_cost", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    return _sharp_from_cost("sharp_soft_dtw_from_cost", C, gamma, bandwidth, x_lengths, y_lengths)


def sharp_soft_dtw(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    """Sharp soft-DTW between series: :func:`sharp_soft_dtw_from_cost` of :func:`pairwise_cost`
    (arguments as in :func:`soft_dtw`; integer and bool series are computed in torch's default
    float dtype)."""
    check_same_device("sharp_soft_dtw", x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    return _on_series("sharp_soft_dtw", _sharp_from_cost, as_float(x), as_float(y), cost, gamma=gamma,
                      bandwidth=bandwidth, x_lengths=x_lengths, y_lengths=y_lengths)


def sharp_soft_dtw_divergence(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Sharp soft-DTW divergence: :math:`s(x, y) - \tfrac12 s(x, x) - \tfrac12 s(y, y)` with
    :math:`s` = :func:`sharp_soft_dtw` (arguments as in :func:`soft_dtw_divergence`); 0 when x
    equals y."""
    fn = "sharp_soft_dtw_divergence"
    return _divergence(fn, lambda a, b, la, lb: _on_series(fn, _sharp_from_cost, a, b, cost, gamma=gamma,
                                                           bandwidth=bandwidth, x_lengths=la, y_lengths=lb),
                       x, y, x_lengths, y_lengths)


def mean_cost_from_cost(
    C: Tensor,
    *,
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r"""Mean alignment cost :math:`\langle \bar E, C \rangle`, :math:`\bar E` the average of all
    alignments (in the band, within the lengths): the :math:`\gamma \to \infty` limit of
    :func:`sharp_soft_dtw_from_cost`. Linear in ``C`` (gradient :math:`\bar E`).

    Note:
        With zero costs the soft-DTW table is :math:`-\gamma \log N` (N the path counts), so its
        transition weights are the counting weights of SPEC 3.9 and :math:`\bar E` is the
        alignment of a zero cost matrix, computed in the log domain (no overflow of the path
        counts). An unreachable end gives +inf and a zero gradient.
    """
    check_same_device("mean_cost_from_cost", C=C, x_lengths=x_lengths, y_lengths=y_lengths)
    return _mean_from_cost("mean_cost_from_cost", C, bandwidth, x_lengths, y_lengths)


def mean_cost(
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    """:func:`mean_cost_from_cost` of :func:`pairwise_cost` (arguments as in :func:`soft_dtw`;
    integer and bool series are computed in torch's default float dtype)."""
    check_same_device("mean_cost", x=x, y=y, x_lengths=x_lengths, y_lengths=y_lengths)
    return _on_series("mean_cost", _mean_from_cost, as_float(x), as_float(y), cost, bandwidth=bandwidth,
                      x_lengths=x_lengths, y_lengths=y_lengths)


def mean_cost_divergence(
    x: Tensor,
    y: Tensor,
    *,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    x_lengths: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
) -> Tensor:
    r""":math:`m(x, y) - \tfrac12 m(x, x) - \tfrac12 m(y, y)` with :math:`m` = :func:`mean_cost`
    (arguments as in :func:`soft_dtw_divergence`)."""
    fn = "mean_cost_divergence"
    return _divergence(fn, lambda a, b, la, lb: _on_series(fn, _mean_from_cost, a, b, cost, bandwidth=bandwidth,
                                                           x_lengths=la, y_lengths=lb), x, y, x_lengths, y_lengths)


def soft_dtw_barycenter(
    Y: Tensor,
    gamma: float = 1.0,
    *,
    weights: Optional[Tensor] = None,
    y_lengths: Optional[Tensor] = None,
    init: Optional[Tensor] = None,
    divergence: bool = False,
    cost: str = "sqeuclidean",
    bandwidth: Optional[int] = None,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> Tensor:
    r"""Soft-DTW barycenter of series ``Y``: the ``X`` minimizing :math:`\sum_k w_k f(X, Y_k)`
    with :math:`f` = :func:`soft_dtw` (or :func:`soft_dtw_divergence`), by L-BFGS.

    Args:
        Y (Tensor[K, M, D]): the series (padded to a common length M; see ``y_lengths``), K >= 1,
            M >= 1. Integer and bool tensors are computed in torch's default float dtype.
        gamma (float): soft-DTW smoothing. Default 1.0.
        weights (Tensor[K], optional): non-negative weights; default uniform 1/K.
        y_lengths (Tensor[K] of ints, optional): used length of each series.
        init (Tensor[L, D], optional): starting point; default the Euclidean mean of ``Y``
            (which requires equal lengths).
        divergence (bool): minimize the soft-DTW divergence instead (then ``Y_k`` itself is a
            stationary point for K = 1).
        cost, bandwidth: as in :func:`soft_dtw`.
        max_iter (int): L-BFGS iterations, >= 1. tol (float): its gradient tolerance, >= 0.

    Returns:
        Tensor[L, D]: the barycenter (no gradient), on the device and in the float dtype of ``Y``.

    Note:
        All K pairs go through one batched soft-DTW call per evaluation. The weights' values are
        not checked (that would synchronize with the device): negative weights make the objective
        unbounded below.
    """
    fn = "soft_dtw_barycenter"
    check_same_device(fn, Y=Y, weights=weights, y_lengths=y_lengths, init=init)
    divergence = check_flag(fn, "divergence", divergence)
    Y = _check_float(fn, "Y", as_float(Y), 3)
    if Y.dim() != 3 or Y.shape[0] == 0 or Y.shape[1] == 0:
        raise ValueError(f"diffcomb.{fn}: Y must be (K, M, D) with K >= 1 series of M >= 1 steps, got shape "
                         f"{tuple(Y.shape)}")
    K, M, D = Y.shape
    gamma = _check_gamma(fn, gamma)
    _check_cost(fn, cost)
    _check_band(fn, bandwidth)
    _check_lengths(fn, "y_lengths", y_lengths, torch.Size([K]), M, Y.device)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"diffcomb.{fn}: max_iter must be an int >= 1, got {max_iter!r}")
    if isinstance(tol, (bool, Tensor)) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
        raise ValueError(f"diffcomb.{fn}: tol must be a finite float >= 0, got {tol!r}")
    if init is None:
        if y_lengths is not None:
            raise ValueError(f"diffcomb.{fn}: pass init when the series have different lengths")
        init = Y.mean(0)
    else:
        init = _check_float(fn, "init", as_float(init), 2)
        if init.dim() != 2 or init.shape[0] == 0 or init.shape[1] != D:
            raise ValueError(f"diffcomb.{fn}: init must be (L, {D}) with L >= 1 (the feature size of Y), got "
                             f"shape {tuple(init.shape)}")
        init = init.to(Y.dtype)
    if weights is None:
        w = torch.full((K,), 1.0 / K, dtype=Y.dtype, device=Y.device)
    else:
        w = as_float(weights)
        if not isinstance(w, Tensor) or not w.is_floating_point() or w.shape != (K,):
            raise ValueError(f"diffcomb.{fn}: weights must be a real tensor of shape ({K},), got "
                             f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")
        w = w.to(Y.dtype)
    X = init.detach().clone().requires_grad_()
    optimizer = torch.optim.LBFGS([X], max_iter=max_iter, tolerance_grad=tol, line_search_fn="strong_wolfe")

    def values(a: Tensor, b: Tensor, la: Optional[Tensor], lb: Optional[Tensor]) -> Tensor:
        return _soft_dtw_series(fn, a, b, gamma, cost, bandwidth, la, lb)

    def closure():
        optimizer.zero_grad()
        Xs = X.expand(K, *X.shape)
        f = _divergence(fn, values, Xs, Y, None, y_lengths) if divergence else values(Xs, Y, None, y_lengths)
        loss = (w * f).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return X.detach()
