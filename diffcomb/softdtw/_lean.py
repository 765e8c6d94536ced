"""The lean eager path of soft-DTW on series (diffcomb._autodiff, "The lean eager path").

``soft_dtw(x, y, gamma, cost=...)`` takes this path when ``common(...)`` holds: plain float32 /
float64 tensors x (B, N, D) and y (B, M, D) of one dtype and device, contiguous, with N, M, B >= 1,
no band and no lengths, gamma a Python float or int that is 0 or in [GAMMA_MIN, inf), and a known
cost name. One native call (``softdtw_series``) gives the values and, where a gradient is needed,
the gradients; a small autograd.Function keeps them on its node and its backward scales them in
place by the upstream gradient (on the CPU one native loop, ``scale_rows``). Where the backward itself is recorded (create_graph=True) or runs under a transform or a
forward-AD level, it takes the NativeOp path's differentiable route instead (the alignment op, whose
derivative is the Hessian-vector product). The results, and every error (the other calls take the
checked path), are those of the NativeOp path. Math: SPEC.md section 3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _native
from .._autodiff import lean_apply, lean_backward_ready
from ._boundary import COSTS, GAMMA_MIN
from ._ops import _series_gradients

__all__ = ["common", "soft_dtw"]

_FLOATS = (torch.float32, torch.float64)


def common(x: Tensor, y: Tensor, gamma: object, cost: object) -> bool:
    """The call needs no check and no reshaping (see the module docstring)."""
    if type(y) is not type(x) or type(gamma) not in (float, int) or type(cost) is not str:
        return False
    xs, ys = x.shape, y.shape
    return (len(xs) == 3 and len(ys) == 3 and xs[0] == ys[0] and xs[2] == ys[2] and 0 not in xs and 0 not in ys
            and x.dtype in _FLOATS and y.dtype == x.dtype and x.is_contiguous() and y.is_contiguous()
            and ((x.is_cpu and y.is_cpu) or (x.is_cuda and y.is_cuda and x.device == y.device
                                             and _native.cuda_available()))
            and (gamma == 0 or GAMMA_MIN <= gamma < math.inf) and cost in COSTS)


def _series(x: Tensor, y: Tensor, gamma: float, cost: int, grad_x: bool,
            grad_y: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Values (B,) and, when asked, the gradients of x (B, N, D) and y (B, M, D) (softdtw_series)."""
    batch, m, d = x.shape
    value = x.new_empty(batch)
    gx = torch.empty_like(x) if grad_x else None
    gy = torch.empty_like(y) if grad_y else None
    args = (x.data_ptr(), y.data_ptr(), value.data_ptr(), 0 if gx is None else gx.data_ptr(),
            0 if gy is None else gy.data_ptr(), 0, 0, batch, m, y.shape[1], d, cost, gamma, -1, _CODES[x.dtype])
    if x.is_cuda:
        _native.launch("soft_dtw", "softdtw_series", x, *args, workspace=("softdtw_work_bytes", (batch, m, y.shape[1],
                                                                                                 -1, False)))
    else:
        _cpu().softdtw_series(*args, _threads())
    return value, gx, gy


def _scaled(g: Tensor, grad: Tensor) -> Tensor:
    """grad (B, N, D) times the per-pair upstream gradient g (B,), in place (the backward owns grad)."""
    if grad.is_cuda:
        return grad.mul_(g.view(-1, 1, 1))
    batch = grad.shape[0]
    _cpu().scale_rows(g.data_ptr(), g.stride(0) if batch > 1 else 0, grad.data_ptr(), grad.data_ptr(), batch,
                    grad.numel() // batch if batch else 0, _CODES[grad.dtype], _threads())
    return grad


class _Series(torch.autograd.Function):
    """soft-DTW values of series on the lean path; the forward computes the gradients it will need.

    The gradients are kept on the node (not saved tensors: nothing else sees them) and handed to
    the first lean backward, which scales them in place and lets go of them; a second backward of
    the same graph (retain_graph=True) computes them again with the same kernel (the same bits). A
    recorded backward (create_graph=True) or one under a transform takes the differentiable route
    of the NativeOp path from the saved x and y instead."""

    @staticmethod
    def forward(ctx, x, y, gamma, cost):
        need_x, need_y, _, _ = ctx.needs_input_grad
        if x.is_cuda:
            value, ctx.gx, ctx.gy = _series(x, y, gamma, cost, need_x, need_y)
        else:  # _series inlined: a call of a few microseconds pays for every line here
            batch, m, d = x.shape
            value = x.new_empty(batch)
            ctx.gx = gx = torch.empty_like(x) if need_x else None
            ctx.gy = gy = torch.empty_like(y) if need_y else None
            _cpu().softdtw_series(x.data_ptr(), y.data_ptr(), value.data_ptr(), gx.data_ptr() if need_x else 0,
                                  gy.data_ptr() if need_y else 0, 0, 0, batch, m, y.shape[1], d, cost, gamma, -1,
                                  _CODES[x.dtype], _threads())
        ctx.save_for_backward(x, y)
        ctx.gamma, ctx.band, ctx.cost = gamma, -1, COSTS[cost]
        return value

    @staticmethod
    def backward(ctx, g):
        gx, gy = ctx.gx, ctx.gy
        ctx.gx = ctx.gy = None
        need_x, need_y, _, _ = ctx.needs_input_grad
        if not lean_backward_ready(g):
            # The differentiable route of the NativeOp path (double backward, transforms).
            x, y = ctx.saved_tensors
            gx, gy = _series_gradients(ctx, x, y, None, None)
            g = g.view(-1, 1, 1)
            return (g * gx if need_x else None), (g * gy if need_y else None), None, None
        if (need_x and gx is None) or (need_y and gy is None):  # a second backward: the kernel again
            x, y = ctx.saved_tensors
            _, gx, gy = _series(x, y, ctx.gamma, COSTS.index(ctx.cost), need_x, need_y)
        return (_scaled(g, gx) if need_x else None), (_scaled(g, gy) if need_y else None), None, None


_apply = lean_apply(_Series)
_CODES = _native.DTYPE_CODES
_threads = torch.get_num_threads
_cpu = _native.cpu


def soft_dtw(x: Tensor, y: Tensor, gamma: float, cost: str) -> Tensor:
    code = COSTS.index(cost)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return _apply(x, y, gamma, code)
    return _series(x, y, gamma, code, False, False)[0]
