"""The lean eager path of soft-DTW on series (diffcomb._autodiff, "The lean eager path").

``soft_dtw(x, y, gamma, cost=...)`` takes this path when ``common(...)`` holds: plain float32 /
float64 tensors x (B, N, D) and y (B, M, D) of one dtype and device, contiguous, with N, M, B >= 1,
no band and no lengths, gamma a Python float or int that is 0 or in [GAMMA_MIN, inf), and a known
cost name. One native call (``softdtw_series``) gives the values and, where a gradient is needed,
the gradients; a small autograd.Function saves them and its backward scales them by the upstream
gradient. Where the backward itself is recorded (create_graph=True) or runs under a transform or a
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
    n = y.shape[1]
    value = x.new_empty(batch)
    gx = torch.empty_like(x) if grad_x else None
    gy = torch.empty_like(y) if grad_y else None
    args = (x.data_ptr(), y.data_ptr(), value.data_ptr(), 0 if gx is None else gx.data_ptr(),
            0 if gy is None else gy.data_ptr(), 0, 0, batch, m, n, d, cost, gamma, -1, _native.DTYPE_CODES[x.dtype])
    if x.is_cuda:
        _native.launch("soft_dtw", "softdtw_series", x, *args, workspace=("softdtw_work_bytes", (batch, m, n, -1, False)))
    else:
        _native.cpu().softdtw_series(*args, torch.get_num_threads())
    return value, gx, gy


class _Series(torch.autograd.Function):
    """soft-DTW values of series on the lean path; the forward computes the gradients it will need."""

    @staticmethod
    def forward(ctx, x, y, gamma, cost):
        need_x, need_y = ctx.needs_input_grad[:2]
        value, gx, gy = _series(x, y, gamma, cost, need_x, need_y)
        ctx.save_for_backward(x, y, gx, gy)
        ctx.gamma, ctx.band, ctx.cost = gamma, -1, COSTS[cost]
        return value

    @staticmethod
    def backward(ctx, g):
        x, y, gx, gy = ctx.saved_tensors
        if not lean_backward_ready(g):
            # The differentiable route of the NativeOp path (double backward, transforms).
            gx, gy = _series_gradients(ctx, x, y, None, None)
        g = g.view(-1, 1, 1)
        return (None if gx is None else g * gx), (None if gy is None else g * gy), None, None


_apply = lean_apply(_Series)


def soft_dtw(x: Tensor, y: Tensor, gamma: float, cost: str) -> Tensor:
    code = COSTS.index(cost)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return _apply(x, y, gamma, code)
    return _series(x, y, gamma, code, False, False)[0]
