"""The soft-DTW family's own argument checks and batching, on the shared boundary (diffcomb._checks):
smoothing, band, cost names, per-pair lengths, series pairs, and the flattening of a batch of cost
matrices or series into the (B, N, M) / (B, N, D) layouts of the custom ops."""

from __future__ import annotations

import math
import sys
from typing import Optional

import torch
from torch import Tensor

from .._checks import check_choice, check_float, check_int, check_tensor, compute_dtype, message

COSTS = ("sqeuclidean", "half_sqeuclidean", "log_augmented")  # codes 0, 1, 2 (csrc/softdtw/softdtw.h, CostCode)
# The smallest positive gamma: below it (subnormal) 1 / gamma overflows and the weights turn NaN.
GAMMA_MIN = sys.float_info.min


def check_gamma(fn: str, gamma: object) -> float:
    gamma = check_float(fn, "gamma", gamma, allow_minimum=True)
    if 0.0 < gamma < GAMMA_MIN:
        raise ValueError(message(fn, f"gamma must be 0 (hard DTW) or at least {GAMMA_MIN} (a subnormal gamma "
                                     f"overflows 1 / gamma), got {gamma}"))
    return gamma


def check_band(fn: str, bandwidth: object) -> int:
    """The band as the ops take it: -1 for None (no band), else the int >= 0."""
    band = check_int(fn, "bandwidth", bandwidth, 0, optional=True)
    return -1 if band is None else band


def band_for(band: int, m: int, n: int) -> int:
    """The band passed to the kernels: one at least as wide as the longer side excludes no cell and
    is no band (-1), which also keeps any Python int (sys.maxsize, 2**70) within int64."""
    return -1 if band >= max(m, n) else band


def check_cost(fn: str, cost: object) -> str:
    return check_choice(fn, "cost", cost, COSTS)


def check_lengths(fn: str, name: str, lengths: Optional[Tensor], batch_shape: torch.Size, size: int,
                  device: torch.device, values: bool = True) -> Optional[Tensor]:
    """The lengths flattened to int64 (B,), after checking their type, device and shape and, with
    ``values``, their range (a host sync, skipped under torch.compile)."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor) or lengths.is_floating_point() or lengths.is_complex() \
            or lengths.dtype == torch.bool:
        raise TypeError(message(fn, f"{name} must be an integer tensor"))
    if lengths.device != device:
        raise RuntimeError(message(fn, f"{name} is on {lengths.device}, the series are on {device}"))
    try:
        lengths = lengths.broadcast_to(batch_shape)
    except RuntimeError as exc:
        raise ValueError(message(fn, f"{name} of shape {tuple(lengths.shape)} does not match the batch shape "
                                     f"{tuple(batch_shape)}")) from exc
    flat = lengths.reshape(-1).to(torch.int64).contiguous()
    if values and flat.numel() and flat.device.type != "meta" and not torch.compiler.is_compiling():
        every = _unbatched(flat)
        low, high = int(every.min()), int(every.max())
        if low < 1 or high > size:
            raise ValueError(message(fn, f"{name} must lie in [1, {size}], got values in [{low}, {high}]"))
    return flat


def _unbatched(t: Tensor) -> Tensor:
    """The values behind torch.func's wrappers (under vmap: the lengths of every vmapped sample), which
    can be read on the host where a batched wrapper cannot."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def check_series(fn: str, x: Tensor, y: Tensor) -> None:
    check_tensor(fn, "x", x, 2)
    check_tensor(fn, "y", y, 2)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(message(fn, f"x and y must have the same feature size D, got x of shape {tuple(x.shape)} "
                                     f"and y of shape {tuple(y.shape)}"))
    if x.dtype != y.dtype:
        raise TypeError(message(fn, f"x and y must have the same dtype, got {x.dtype} and {y.dtype}"))


def pair_batch_shape(fn: str, x: Tensor, y: Tensor) -> torch.Size:
    try:
        return torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError as exc:
        raise ValueError(message(fn, f"the batch dimensions of x {tuple(x.shape[:-2])} and y {tuple(y.shape[:-2])} "
                                     f"do not broadcast")) from exc


def check_pair(fn: str, x: Tensor, y: Tensor, x_lengths: Optional[Tensor], y_lengths: Optional[Tensor]) -> torch.Size:
    """Validates a pair of series and its lengths up to the lengths' values, which the function
    evaluated next checks (one host sync, not two); returns the batch shape."""
    check_series(fn, x, y)
    batch_shape = pair_batch_shape(fn, x, y)
    check_lengths(fn, "x_lengths", x_lengths, batch_shape, x.shape[-2], x.device, values=False)
    check_lengths(fn, "y_lengths", y_lengths, batch_shape, y.shape[-2], x.device, values=False)
    return batch_shape


def _need_steps(fn: str, m: int, n: int, what: str) -> None:
    if m == 0 or n == 0:
        raise ValueError(message(fn, f"both series need at least one step, got {what}"))


class Batch:
    """A batch in the custom ops' layout: ``rows`` (B, N, M) costs or ``x`` (B, N, D), ``y`` (B, M, D)
    series in the compute dtype, the flat int64 lengths (or None), gamma, the kernels' band, and the
    batch shape to restore."""

    __slots__ = ("rows", "x", "y", "lengths_x", "lengths_y", "gamma", "band", "shape")

    def restore(self, values: Tensor, dtype: torch.dtype) -> Tensor:
        return values.reshape(self.shape).to(dtype)


def cost_batch(fn: str, C: Tensor, gamma: float, bandwidth: Optional[int], x_lengths: Optional[Tensor],
               y_lengths: Optional[Tensor]) -> Batch:
    """Checks a cost-matrix function's arguments and flattens C (..., N, M) to (B, N, M)."""
    check_tensor(fn, "C", C, 2)
    b = Batch()
    b.gamma = check_gamma(fn, gamma)
    band = check_band(fn, bandwidth)
    *lead, m, n = C.shape
    _need_steps(fn, m, n, f"a {m} x {n} cost matrix")
    b.shape = torch.Size(lead)
    b.lengths_x = check_lengths(fn, "x_lengths", x_lengths, b.shape, m, C.device)
    b.lengths_y = check_lengths(fn, "y_lengths", y_lengths, b.shape, n, C.device)
    b.rows = C.reshape(math.prod(lead), m, n).to(compute_dtype(C.dtype)).contiguous()
    b.band = band_for(band, m, n)
    return b


def series_batch(fn: str, x: Tensor, y: Tensor, gamma: float, cost: str, bandwidth: Optional[int],
                 x_lengths: Optional[Tensor], y_lengths: Optional[Tensor]) -> Batch:
    """Checks a series function's arguments and broadcasts x (..., N, D), y (..., M, D) to
    (B, N, D), (B, M, D)."""
    check_series(fn, x, y)
    check_cost(fn, cost)
    b = Batch()
    b.gamma = check_gamma(fn, gamma)
    band = check_band(fn, bandwidth)
    *_, m, d = x.shape
    n = y.shape[-2]
    _need_steps(fn, m, n, f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}")
    b.shape = pair_batch_shape(fn, x, y)
    b.lengths_x = check_lengths(fn, "x_lengths", x_lengths, b.shape, m, x.device)
    b.lengths_y = check_lengths(fn, "y_lengths", y_lengths, b.shape, n, x.device)
    dtype, batch = compute_dtype(x.dtype), math.prod(b.shape)
    b.x = x.expand(*b.shape, m, d).reshape(batch, m, d).to(dtype).contiguous()
    b.y = y.expand(*b.shape, n, d).reshape(batch, n, d).to(dtype).contiguous()
    b.band = band_for(band, m, n)
    return b


def zero_padding(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """x with the steps past its lengths set to 0: they may hold anything (NaN included) and then
    reach neither the costs of used cells nor, through the pairwise costs' backward, the gradients."""
    if lengths is None:
        return x
    steps = torch.arange(x.shape[-2], device=x.device)
    return torch.where((steps < lengths.unsqueeze(-1)).unsqueeze(-1), x, 0.0)


def self_pair(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """x with the batch dimensions of its (validated) lengths, for the term f(x, x): lengths may
    broadcast over dimensions where x does not (x (3, 1, N, D) and lengths (3, 2))."""
    if lengths is None:
        return x
    shape = torch.broadcast_shapes(x.shape[:-2], lengths.shape)
    return x.expand(*shape, *x.shape[-2:])
