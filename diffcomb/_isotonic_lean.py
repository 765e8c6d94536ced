"""The lean eager path of the permutahedron family (diffcomb._autodiff, "The lean eager path").

soft_rank, soft_sort, soft_topk and isotonic_regression (without sample weights) take this path
when ``lean_ready(x)`` and ``common(...)`` hold: a plain float32/float64 tensor, contiguous and not
empty, with ``dim`` its last dimension, and plain Python scalars in range. Then no argument needs a
message, and the call does only what produces the result:

- the shared vector of a projection (rho, log rho, rho / eps, the top-k mask) comes from a small
  cache keyed by (kind, n, dtype, device, parameter), built by the same torch expression as the
  checked path;
- one native call solves the forward: on the CPU ``isotonic_sort_project`` (the stable argsort and
  PAV fused; the sorted row is scratch), on CUDA ``torch.sort`` then ``isotonic_project``;
- the output has x's shape (no reshapes); the saved state (perm, block starts and block weights)
  is one int32 buffer;
- without a gradient to record there is no autograd.Function; with one, a small Function whose
  backward calls the native block VJP on the saved buffer. Where the backward itself is recorded
  (create_graph=True, double backward) or runs under a transform, it calls the family's NativeOp
  VJP instead, on views of the buffer (l2: the block structure is constant) or, for KL, on the
  block structure recomputed by the NativeOp projection (its block weights depend on x).

The results, and every error (the other calls take the checked path), are those of the NativeOp
path. Math: SPEC.md section 1.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._autodiff import lean_apply, lean_backward_ready, lean_ready
from ._isotonic_checks import MIN_STRENGTH
from ._isotonic_ops import MAX_N, PROJECT_RANK, PROJECT_SORT, VJP, VJP_PLAIN, VJP_RANK, VJP_SORT

__all__ = ["common", "isotonic", "soft_rank", "soft_sort", "soft_topk", "sort_args"]

_FLOATS = (torch.float32, torch.float64)
_CODES = _native.DTYPE_CODES
_CACHE_MAX_N = 4096  # longer shared vectors: one slot (_long), not the LRU cache


def common(x: Tensor, dim: object, strength: object = 1.0) -> bool:
    """The arguments shared by the family's functions need no check: x a float32/float64 tensor of
    at least one dimension, contiguous, not empty, on the CPU or on CUDA with diffcomb's CUDA
    module; ``dim`` (an int) its last dimension; ``strength`` a Python float or int in [MIN_STRENGTH,
    inf). Anything else (including values that are valid but unusual) takes the checked path."""
    nd = x.dim()
    return (x.dtype in _FLOATS and nd > 0 and type(dim) is int and (dim == -1 or dim == nd - 1)
            and x.is_contiguous() and (x.is_cpu or (x.is_cuda and _native.cuda_available()))
            and type(strength) in (float, int) and MIN_STRENGTH <= strength < math.inf
            and 0 < x.shape[-1] < MAX_N and x.numel() > 0)


def sort_args(x: Tensor, dim: object, descending: object, strength: object, regularization: object) -> Optional[bool]:
    """Whether a soft sort / rank call takes the lean path: None if not, else whether it is KL."""
    if lean_ready(x) and common(x, dim, strength) and (descending is True or descending is False) \
            and type(regularization) is str:
        if regularization == "l2":
            return False
        if regularization == "kl":
            return True
    return None


# ---------------------------------------------------------------------------
# Shared vectors.


@functools.lru_cache(maxsize=64)
def _cached(kind: str, n: int, dtype: torch.dtype, device: torch.device, param: float) -> Tensor:
    return _shared(kind, n, dtype, device, param)


def _shared(kind: str, n: int, dtype: torch.dtype, device: torch.device, param: float) -> Tensor:
    """The expressions of diffcomb.isotonic's checked path, bit for bit."""
    if kind == "topk":
        return (torch.arange(n, device=device) < param).to(dtype)
    rho = torch.arange(n, 0, -1, dtype=dtype, device=device)
    if kind == "log_rho":
        return rho.log()
    return rho / param if kind == "rho_over" else rho


_long: list = [None]  # the last longer shared vector, as one (key, tensor) entry


def _vector(kind: str, x: Tensor, param: float = 0.0) -> Tensor:
    n = x.shape[-1]
    if n > _CACHE_MAX_N:  # one slot: repeated calls on one long row reuse it, and at most one is kept
        key = (kind, n, x.dtype, x.device, param)
        entry = _long[0]
        if entry is None or entry[0] != key:
            entry = (key, _shared(kind, n, x.dtype, x.device, param))
            _long[0] = entry
        return entry[1]
    return _cached(kind, n, x.dtype, x.device, param)


# ---------------------------------------------------------------------------
# The saved state: one int32 buffer of perm (rows, n), starts (rows, n + 1) and the block weights
# (rows, n) of the dtype, these at an 8-byte aligned offset.


def _weights_offset(rows: int, n: int) -> int:
    words = rows * (2 * n + 1)
    return words + (words & 1)


def _new_state(x: Tensor, rows: int, n: int) -> Tensor:
    return x.new_empty(_weights_offset(rows, n) + rows * n * (x.element_size() // 4), dtype=torch.int32)


def _state_views(state: Tensor, rows: int, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(perm, starts, weights) as tensors (for the NativeOp VJP)."""
    split = rows * n
    off = _weights_offset(rows, n)
    return (state[:split].view(rows, n), state[split:split + rows * (n + 1)].view(rows, n + 1),
            state[off:].view(dtype).view(rows, n))


def _project(x: Tensor, c: Tensor, scale: float, out_scale: float, rank: bool, kl: bool) -> tuple[Tensor, Tensor]:
    """(out, state): the projection of the sorted rows of scale * x (isotonic_sort_project)."""
    n = x.shape[-1]
    rows = x.numel() // n
    out = torch.empty_like(x)
    state = _new_state(x, rows, n)
    base = state.data_ptr()
    starts, weights = base + 4 * rows * n, base + 4 * _weights_offset(rows, n)
    code = _CODES[x.dtype]
    if x.is_cuda:
        values, perm = torch.sort(x * scale, dim=-1, descending=True, stable=True)
        _state_views(state, rows, n, x.dtype)[0].view(perm.shape).copy_(perm)
        _native.launch("soft_sort", "isotonic_project", x, values.data_ptr(), c.data_ptr(), base, out.data_ptr(),
                       starts, weights, rows, n, out_scale, rank, kl, code,
                       workspace=("isotonic_work_bytes", (rows, n)))
    else:
        _native.cpu().isotonic_sort_project(x.data_ptr(), c.data_ptr(), out.data_ptr(), base, starts, weights, rows,
                                            n, scale, out_scale, rank, kl, code, torch.get_num_threads())
    return out, state


def _fit(y: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    """(out, state) of the unweighted isotonic fit (isotonic_regression); state's perm is unused."""
    n = y.shape[-1]
    rows = y.numel() // n
    out = torch.empty_like(y)
    state = _new_state(y, rows, n)
    base = state.data_ptr()
    args = (y.data_ptr(), 0, out.data_ptr(), base + 4 * rows * n, base + 4 * _weights_offset(rows, n), rows, n, sign,
            _CODES[y.dtype])
    if y.is_cuda:
        _native.launch("isotonic_regression", "isotonic_regression", y, *args,
                       workspace=("isotonic_work_bytes", (rows, n)))
    else:
        _native.cpu().isotonic_regression(*args, torch.get_num_threads(), 0)
    return out, state


def _vjp(g: Tensor, state: Tensor, scale: float, mode: int) -> Tensor:
    """The native block VJP of grad g on the saved state (isotonic_vjp)."""
    g = g.contiguous()
    n = g.shape[-1]
    rows = g.numel() // n
    dx = torch.empty_like(g)
    base = state.data_ptr()
    args = (g.data_ptr(), base, base + 4 * rows * n, base + 4 * _weights_offset(rows, n), dx.data_ptr(), rows, n,
            scale, mode, _CODES[g.dtype])
    if g.is_cuda:
        _native.launch("soft_sort", "isotonic_vjp", g, *args)
    else:
        _native.cpu().isotonic_vjp(*args, torch.get_num_threads())
    return dx


def _recorded_vjp(g: Tensor, state: Tensor, scale: float, mode: int) -> Tensor:
    """The block VJP through the NativeOp (differentiable in g), on views of the state."""
    n = g.shape[-1]
    rows = g.numel() // n
    perm, starts, weights = _state_views(state, rows, n, g.dtype)
    if mode == VJP_PLAIN:
        perm = starts
    return VJP(g.reshape(rows, n).contiguous(), perm, starts, weights, scale, mode).view(g.shape)


class _Projection(torch.autograd.Function):
    """A projection of the lean path: out = P(x); backward: the block VJP of the saved state."""

    @staticmethod
    def forward(ctx, x, c, scale, out_scale, rank, kl):
        out, state = _project(x, c, scale, out_scale, rank, kl)
        ctx.save_for_backward(state, x if kl else None)
        ctx.lean = (c, scale, rank, kl)
        return out

    @staticmethod
    def backward(ctx, g):
        state, x = ctx.saved_tensors
        c, scale, rank, kl = ctx.lean
        mode, vjp_scale = (VJP_RANK, scale) if rank else (VJP_SORT, 1.0)
        if lean_backward_ready(g):
            return _vjp(g, state, vjp_scale, mode), None, None, None, None, None
        if not kl:
            return _recorded_vjp(g, state, vjp_scale, mode), None, None, None, None, None
        # KL: the block weights are the block softmax of the sorted row, a function of x. The
        # NativeOp projection recomputes them (the same values) with their derivative.
        n = x.shape[-1]
        rows = x.numel() // n
        _, perm, starts, weights = (PROJECT_RANK if rank else PROJECT_SORT)(x.reshape(rows, n), c, scale, kl)
        dx = VJP(g.reshape(rows, n).contiguous(), perm, starts, weights, vjp_scale, mode)
        return dx.view(g.shape), None, None, None, None, None


class _Fit(torch.autograd.Function):
    """The unweighted isotonic fit of the lean path (block weights 1/|B|, constant)."""

    @staticmethod
    def forward(ctx, y, sign):
        out, state = _fit(y, sign)
        ctx.save_for_backward(state)
        return out

    @staticmethod
    def backward(ctx, g):
        (state,) = ctx.saved_tensors
        if lean_backward_ready(g):
            return _vjp(g, state, 1.0, VJP_PLAIN), None
        return _recorded_vjp(g, state, 1.0, VJP_PLAIN), None


_project_apply = lean_apply(_Projection)
_fit_apply = lean_apply(_Fit)


def _projection(x: Tensor, c: Tensor, scale: float, out_scale: float, rank: bool, kl: bool) -> Tensor:
    if x.requires_grad and torch.is_grad_enabled():
        return _project_apply(x, c, scale, out_scale, rank, kl)
    return _project(x, c, scale, out_scale, rank, kl)[0]


# ---------------------------------------------------------------------------
# The public functions' lean bodies (arguments already known to be the common case).


def soft_rank(x: Tensor, descending: bool, eps: float, kl: bool) -> Tensor:
    c = _vector("log_rho" if kl else "rho", x)
    out = _projection(x, c, (-1.0 if descending else 1.0) / eps, 1.0, True, kl)
    return out.exp() if kl else out


def soft_sort(x: Tensor, descending: bool, eps: float, kl: bool) -> Tensor:
    sign = 1.0 if descending else -1.0
    return _projection(x, _vector("rho_over", x, eps), sign, sign, False, kl)


def soft_topk(x: Tensor, k: int, eps: float) -> Tensor:
    return _projection(x, _vector("topk", x, k), 1.0 / eps, 1.0, True, False)


def isotonic(y: Tensor, increasing: bool) -> Tensor:
    sign = -1.0 if increasing else 1.0
    if y.requires_grad and torch.is_grad_enabled():
        return _fit_apply(y, sign)
    return _fit(y, sign)[0]

