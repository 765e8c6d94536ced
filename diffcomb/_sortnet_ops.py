"""The custom ops of the sorting networks: ``diffcomb::sorting_network`` and its backward, on
contiguous ``(B, n)`` rows, with fake (meta) implementations, wired by ``_autodiff.define`` for every
autodiff mode (eager autograd, torch.func, forward mode, vmap by folding into the batch, double
backward), so that :func:`diffcomb.sorting_network` works under all of them and under
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and ``torch.library.opcheck``.
The backward op's own derivatives (w.r.t. the cotangent: the forward's jvp; w.r.t. x: a
Hessian-vector product) and the forward's jvp are torch code in diffcomb/_sortnet_tangent.py.

The native kernels (csrc/sortnet) run the swaps layer by layer: O(1) per comparator for the values
and O(n) per comparator (O(n^2) per layer) for ``P``, whose rows evolve independently; their
backward keeps only the per-swap mixing weights ``alpha`` from the forward. The forward returns
``Pt``, the transposed matrix (``Pt[b, k, i] = P[b, i, k]``, the layout both devices write); the
backward takes ``dL/dP`` in either of the two layouts autograd hands back (P's or Pt's, see
csrc/sortnet/api.h), so it never copies the gradient.

The ops check what they are given before anything reaches the native code (shapes, dtypes,
devices, contiguity and the scalar codes; no tensor values are read), in the real and the fake
implementation alike, so a direct call with bad arguments raises instead of reading or writing out
of bounds.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import _native
from . import _sortnet_tangent
from ._autodiff import ROW, define, save
from ._checks import check_op, check_op_tensor
from ._sortnet_layout import BITONIC_PADDINGS, NETWORKS, network_layout

__all__ = ["BACKWARD", "SIGMOIDS", "SORTING_NETWORK", "native_backward", "native_forward"]

# Codes shared with csrc/sortnet/sortnet.h (enum Sigmoid).
SIGMOIDS = ("logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy", "optimal")
_FLOATS = (torch.float32, torch.float64)


class _DeviceLayout(NamedTuple):
    """A network layout on one device, with the native SortLayout of its arrays' addresses."""

    arrays: tuple[Tensor, Tensor, Tensor, Tensor]
    """lo, hi, offsets, reach (int32), kept alive for the addresses in ``native``."""
    native: object
    """diffcomb._C.SortLayout (taken by the CPU and the CUDA entry points alike)."""
    output: Optional[Tensor]
    """int64 (n,): NetworkLayout.output (None: the identity)."""
    place: Optional[Tensor]
    """int64 (n,): its inverse, the output position of each wire (None: the identity)."""


@functools.lru_cache(maxsize=64)
def _layout_tensors(network: int, padding: int, n: int, device: torch.device) -> _DeviceLayout:
    layout = network_layout(NETWORKS[network], n, BITONIC_PADDINGS[padding])
    arrays = tuple(torch.from_numpy(a.copy()).to(device) for a in layout[:4])
    lo, hi, offsets, reach = arrays
    native = _native.cpu().SortLayout(_native.address(lo), _native.address(hi), _native.address(offsets),
                                      _native.address(reach), offsets.numel() - 1, lo.numel())
    if not layout.permuted:
        return _DeviceLayout(arrays, native, None, None)
    output = torch.from_numpy(layout.output.copy()).to(device)
    return _DeviceLayout(arrays, native, output, torch.argsort(output))


def _comparators(network: int, padding: int, n: int) -> int:
    return int(network_layout(NETWORKS[network], n, BITONIC_PADDINGS[padding]).offsets[-1])


# ---------------------------------------------------------------------------
# Checks of the raw ops' own arguments.


def _check_scalars(op: str, network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float) -> None:
    where = f"torch.ops.diffcomb.{op}"
    for name, code, names in (("network", network, NETWORKS), ("padding", padding, BITONIC_PADDINGS),
                              ("sigmoid", sigmoid, SIGMOIDS)):
        check_op(0 <= code < len(names), lambda: f"{where}: {name} must be a code in [0, {len(names)}) "
                 f"({', '.join(names)}), got {code}", ValueError)
    check_op(0.0 < steepness < float("inf"), lambda: f"{where}: steepness must be positive and finite, got "
             f"{steepness}", ValueError)
    check_op(0.0 <= art_lambda <= 1.0, lambda: f"{where}: art_lambda must be in [0, 1], got {art_lambda}", ValueError)


def _check_forward(x: Tensor, network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float) -> None:
    check_op_tensor("sorting_network", "x", x, _FLOATS, 2)
    _check_scalars("sorting_network", network, padding, sigmoid, steepness, art_lambda)


def _grad_P_transposed(grad_P: Tensor) -> bool:
    """Whether dL/dP is stored in Pt's layout (its transpose is contiguous) rather than P's."""
    return not grad_P.is_contiguous() and grad_P.mT.is_contiguous()


def _check_backward(x: Tensor, alpha: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor],
                    network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float) -> None:
    op = "sorting_network_backward"
    check_op_tensor(op, "x", x, _FLOATS, 2)
    _check_scalars(op, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    check_op_tensor(op, "alpha", alpha, (x.dtype,), (batch, _comparators(network, padding, int(n))), x.device)
    if grad_values is not None:
        check_op_tensor(op, "grad_values", grad_values, (x.dtype,), (batch, n), x.device)
    if grad_P is not None:
        # P's layout or Pt's (a transposed view of a contiguous tensor); the shape is square
        check_op_tensor(op, "grad_P (or its transpose)", grad_P.mT if _grad_P_transposed(grad_P) else grad_P,
                        (x.dtype,), (batch, n, n), x.device)


# ---------------------------------------------------------------------------
# The ops.


def _forward_impl(x: Tensor, network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float,
                  with_matrix: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Relaxed sorted values (B, n), Pt (B, n, n) or (B, 0, 0), and the mixing weights alpha (B, C).
    network, padding and sigmoid are indices into NETWORKS, BITONIC_PADDINGS and SIGMOIDS."""
    _check_forward(x, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    layout = _layout_tensors(network, padding, n, x.device)
    values = torch.empty_like(x)
    alpha = x.new_empty((batch, layout.native.comparators))
    Pt = x.new_empty((batch, n, n) if with_matrix else (batch, 0, 0))
    native_forward(x, values, alpha, Pt, layout, sigmoid, steepness, art_lambda)
    if layout.output is not None:  # the outputs leave a padded bitonic network on renamed wires
        values = values.index_select(1, layout.output)
        if with_matrix:
            Pt = Pt.index_select(1, layout.output)
    return values, Pt, alpha


def _forward_fake(x: Tensor, network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float,
                  with_matrix: bool) -> tuple[Tensor, Tensor, Tensor]:
    _check_forward(x, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    comparators = _comparators(network, padding, int(n))
    return (torch.empty_like(x), x.new_empty((batch, n, n) if with_matrix else (batch, 0, 0)),
            x.new_empty((batch, comparators)))


def _backward_impl(x: Tensor, alpha: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor], network: int,
                   padding: int, sigmoid: int, steepness: float, art_lambda: float) -> Tensor:
    """dL/dx (B, n) from the upstream gradients of the values and of P (B, n, n), grad_P[b, i, k] =
    dL/dP[b, i, k], either contiguous or the transpose of a contiguous tensor; None: zero."""
    _check_backward(x, alpha, grad_values, grad_P, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    layout = _layout_tensors(network, padding, n, x.device)
    if layout.place is not None:  # back to the wires the outputs left on
        grad_values = grad_values.index_select(1, layout.place) if grad_values is not None else None
        grad_P = grad_P.index_select(2, layout.place) if grad_P is not None else None
    return native_backward(x, alpha, grad_values, grad_P, layout, sigmoid, steepness, art_lambda)


def native_forward(x: Tensor, values: Tensor, alpha: Tensor, Pt: Tensor, layout: _DeviceLayout, sigmoid: int,
                   steepness: float, art_lambda: float) -> None:
    """sortnet_forward on rows x (batch = x.numel() / n, n = x's last size) into values, alpha, Pt
    (all contiguous; Pt empty: no matrix), on the network's wires."""
    n = x.shape[-1]
    _native.launch("sorting_network", "sortnet_forward", x, _native.address(x), _native.address(values),
                   _native.address(alpha), _native.address(Pt), math.prod(x.shape[:-1]), n, _native.DTYPE_CODES[x.dtype],
                   layout.native, _native.cpu().Relaxation(sigmoid, steepness, art_lambda))


def native_backward(x: Tensor, alpha: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor],
                    layout: _DeviceLayout, sigmoid: int, steepness: float, art_lambda: float) -> Tensor:
    """sortnet_backward: dL/dx (x's shape) from grad_values (contiguous, x's shape) and grad_P (P's
    layout or its transpose contiguous), on the network's wires; None: zero."""
    n = x.shape[-1]
    batch = math.prod(x.shape[:-1])
    with_P = grad_P is not None and alpha.numel() > 0
    transposed = with_P and _grad_P_transposed(grad_P)
    dx = torch.empty_like(x)
    dtype = _native.DTYPE_CODES[x.dtype]
    relaxation = _native.cpu().Relaxation(sigmoid, steepness, art_lambda)
    _native.launch("sorting_network", "sortnet_backward", x, _native.address(x), _native.address(alpha),
                   _native.address(grad_values), _native.address(grad_P) if with_P else 0, transposed,
                   _native.address(dx), batch, n, dtype, layout.native, relaxation,
                   workspace=("sortnet_backward_work_bytes", (batch, n, alpha.shape[-1], dtype, with_P)))
    return dx


def _backward_fake(x: Tensor, alpha: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor], network: int,
                   padding: int, sigmoid: int, steepness: float, art_lambda: float) -> Tensor:
    _check_backward(x, alpha, grad_values, grad_P, network, padding, sigmoid, steepness, art_lambda)
    return torch.empty_like(x)


def _kernel_layout(grad_P: Tensor) -> Tensor:
    """dL/dP as the kernels take it without a copy: contiguous in P's layout (a loss on P with its
    own contiguous gradient) or in Pt's (a gradient that kept P's strides); else a contiguous copy."""
    if grad_P.is_contiguous() or grad_P.mT.is_contiguous():
        return grad_P
    return grad_P.contiguous()


# The autograd of diffcomb::sorting_network: backward = the native VJP (a NativeOp of its own, so that
# it is differentiable again); jvp = the tangents of the swaps (_sortnet_tangent.jvp).


def _forward_setup(ctx, inputs, output) -> None:
    x, network, padding, sigmoid, steepness, art_lambda, with_matrix = inputs
    ctx.mark_non_differentiable(output[2])
    save(ctx, x, output[2])
    ctx.params = (network, padding, sigmoid, steepness, art_lambda)
    ctx.with_matrix = with_matrix


def _forward_backward(ctx, grad_values, grad_Pt, _grad_alpha):
    x, alpha = ctx.saved_tensors
    if grad_values is not None:
        grad_values = grad_values.contiguous()
    grad_P = None
    if grad_Pt is not None and ctx.with_matrix and grad_Pt.numel():
        grad_P = _kernel_layout(grad_Pt.mT)
    dx = BACKWARD(x, alpha, grad_values, grad_P, *ctx.params)
    return dx, None, None, None, None, None, None


def _forward_jvp(ctx, tx, *_):
    x, _alpha = ctx.saved_tensors
    if tx is None:
        tx = torch.zeros_like(x)
    tv, tPt = _sortnet_tangent.jvp(x, tx, *ctx.params, ctx.with_matrix)
    return tv, tPt, None


# The autograd of diffcomb::sorting_network_backward, dx = J(x)^T g (linear in g = (grad_values,
# grad_P)): w.r.t. g the transpose J(x) w, the forward's jvp; w.r.t. x the Hessian of <g, outputs>
# times w (_sortnet_tangent.hvp; alpha is a function of x, accounted for there). Its jvp is the same
# two terms: J^T tg + H tx.


def _backward_setup(ctx, inputs, output) -> None:
    x, alpha, grad_values, grad_P, *params = inputs
    save(ctx, x, alpha, grad_values, grad_P)
    ctx.params = tuple(params)


def _backward_backward(ctx, w):
    x, _alpha, grad_values, grad_P = ctx.saved_tensors
    dx = _sortnet_tangent.hvp(x, w, grad_values, grad_P, *ctx.params)
    d_values = d_P = None
    if grad_values is not None or grad_P is not None:
        d_values, d_Pt = _sortnet_tangent.jvp(x, w, *ctx.params, grad_P is not None)
        d_P = d_Pt.mT if grad_P is not None else None
    return dx, None, d_values if grad_values is not None else None, d_P, None, None, None, None, None


def _backward_jvp(ctx, tx, _talpha, t_values, t_P, *_):
    x, alpha, grad_values, grad_P = ctx.saved_tensors
    out = torch.zeros_like(x)
    if t_values is not None or t_P is not None:
        out = out + BACKWARD(x, alpha, None if t_values is None else t_values.contiguous(),
                             None if t_P is None else _kernel_layout(t_P), *ctx.params)
    if tx is not None:
        out = out + _sortnet_tangent.hvp(x, tx, grad_values, grad_P, *ctx.params)
    return out


_PARAMS = (None, None, None, None, None)
BACKWARD = define("sorting_network_backward", _backward_impl, _backward_fake, kinds=(ROW, ROW, ROW, ROW, *_PARAMS),
                  setup=_backward_setup, backward=_backward_backward, jvp=_backward_jvp)
SORTING_NETWORK = define("sorting_network", _forward_impl, _forward_fake, kinds=(ROW, *_PARAMS, None),
                         setup=_forward_setup, backward=_forward_backward, jvp=_forward_jvp)
_sortnet_op = SORTING_NETWORK.op
