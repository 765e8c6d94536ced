"""The lean eager path of the sorting networks (diffcomb._autodiff, "The lean eager path").

``sorting_network`` takes this path when ``args(...)`` holds: a plain float32/float64 tensor,
contiguous and not empty, ``dim`` its last dimension, known option names, flags that are bools and
numbers in range, and a network whose outputs stay on their wires (every network but a padded
bitonic one with ``bitonic_padding="inf"``). One native call gives the values, the mixing weights
and, when asked, Pt straight in the shapes of the result (no reshapes or copies); a small
autograd.Function saves x and the weights, and its backward calls the native VJP. Where the backward
itself is recorded (create_graph=True) or runs under a transform or a forward-AD level, it calls the
NativeOp VJP (``BACKWARD``, differentiable) instead. Results and errors are those of the NativeOp
path. Math: SPEC.md section 5.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._autodiff import lean_apply, lean_backward_ready, lean_ready
from ._sortnet_layout import BITONIC_PADDINGS, NETWORKS
from ._sortnet_ops import BACKWARD, SIGMOIDS, _kernel_layout, _layout_tensors, native_backward, native_forward

__all__ = ["args", "sorting_network"]

_FLOATS = (torch.float32, torch.float64)


def _code(value: object, names: tuple[str, ...]) -> int:
    return names.index(value) if type(value) is str and value in names else -1


def args(x: Tensor, network: object, sigmoid: object, steepness: object, art_lambda: object, return_matrix: object,
         descending: object, bitonic_padding: object, dim: object) -> Optional[tuple]:
    """(network, padding, sigmoid) codes when the call takes the lean path, else None."""
    if not lean_ready(x):
        return None
    nd = x.dim()
    codes = (_code(network, NETWORKS), _code(bitonic_padding, BITONIC_PADDINGS), _code(sigmoid, SIGMOIDS))
    if (min(codes) < 0 or x.dtype not in _FLOATS or nd == 0 or type(dim) is not int or not (dim == -1 or dim == nd - 1)
            or not x.is_contiguous() or x.numel() == 0 or not (x.is_cpu or (x.is_cuda and _native.cuda_available()))
            or type(steepness) not in (float, int) or not 0.0 < steepness < math.inf
            or type(art_lambda) not in (float, int) or not 0.0 <= art_lambda <= 1.0
            or (return_matrix is not True and return_matrix is not False)
            or (descending is not True and descending is not False)):
        return None
    return codes


def _forward(x: Tensor, layout, params: tuple, with_matrix: bool) -> tuple[Tensor, Tensor, Tensor]:
    n = x.shape[-1]
    values = torch.empty_like(x)
    alpha = x.new_empty((x.numel() // n, layout.native.comparators))
    Pt = x.new_empty((*x.shape, n) if with_matrix else (0,))
    native_forward(x, values, alpha, Pt, layout, *params)
    return values, alpha, Pt


class _Network(torch.autograd.Function):
    """A sorting network on the lean path: outputs values and Pt (Pt[..., k, i] = P[..., i, k])."""

    @staticmethod
    def forward(ctx, x, layout, codes, params, with_matrix):
        values, alpha, Pt = _forward(x, layout, params, with_matrix)
        ctx.save_for_backward(x, alpha)
        ctx.lean = (layout, codes, params, with_matrix)
        return (values, Pt) if with_matrix else values

    @staticmethod
    def backward(ctx, grad_values, grad_Pt=None):
        x, alpha = ctx.saved_tensors
        layout, codes, params, with_matrix = ctx.lean
        grad_P = _kernel_layout(grad_Pt.mT) if grad_Pt is not None else None
        ready = lean_backward_ready(grad_values if grad_values is not None else grad_Pt)
        if grad_values is not None:
            grad_values = grad_values.contiguous()
        if ready and (grad_Pt is None or lean_backward_ready(grad_Pt)):
            return native_backward(x, alpha, grad_values, grad_P, layout, *params), None, None, None, None
        n = x.shape[-1]
        rows = x.numel() // n
        dx = BACKWARD(x.view(rows, n), alpha, None if grad_values is None else grad_values.view(rows, n),
                      None if grad_P is None else grad_P.reshape(rows, n, n), *codes[:2], *params)
        return dx.view(x.shape), None, None, None, None


_apply = lean_apply(_Network)


def sorting_network(x: Tensor, codes: tuple, steepness: float, art_lambda: float, with_matrix: bool,
                    descending: bool) -> Optional[tuple[Tensor, Optional[Tensor]]]:
    """(values, matrix) in the result's layout, or None where the network renames its outputs."""
    network, padding, sigmoid = codes
    layout = _layout_tensors(network, padding, x.shape[-1], x.device)
    if layout.output is not None:
        return None
    params = (sigmoid, float(steepness), float(art_lambda))
    if x.requires_grad and torch.is_grad_enabled():
        out = _apply(x, layout, (network, padding, sigmoid), params, with_matrix)
        values, Pt = out if with_matrix else (out, None)
    else:
        values, _, Pt = _forward(x, layout, params, with_matrix)
    matrix = Pt.mT if with_matrix else None
    if descending:
        values = values.flip(-1)
        matrix = matrix.flip(-1) if matrix is not None else None
    return values, matrix
