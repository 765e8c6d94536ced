"""Soft sort, soft rank and isotonic regression by projection onto the permutahedron.

The native kernels (csrc/isotonic) solve one canonical problem on a contiguous
``(B, n)`` batch: isotonic regression by Pool Adjacent Violators on rows that
are already sorted, and the O(n) block vector-Jacobian product. This module
moves the user's ``dim`` to the end, flattens the batch, sorts (the CPU uses
diffcomb's native stable radix argsort, CUDA uses ``torch.sort``), and
registers everything as ``torch.library`` custom ops with fake (meta)
implementations and autograd, so the functions work under
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and
``torch.library.opcheck``.

Math: SPEC.md section 1 (Blondel et al., "Fast Differentiable Sorting and
Ranking", ICML 2020).
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from . import _native
from ._checks import as_float, check_flag, check_op, check_op_tensor, check_same_device

__all__ = [
    "isotonic_regression",
    "soft_quantile",
    "soft_rank",
    "soft_sort",
    "soft_topk",
]

_REGULARIZATIONS = ("l2", "kl")
_MAX_N = 2**31 - 1  # perm and block starts are int32
_MIN_STRENGTH = sys.float_info.min
_VJP_RANK, _VJP_SORT, _VJP_PLAIN = 0, 1, 2  # csrc/isotonic/api.h, VjpCode


# ---------------------------------------------------------------------------
# Validation, at the public boundary only.


def _check_tensor(fn: str, name: str, x: object) -> Tensor:
    """A real tensor of values; integer and bool tensors must already be converted (as_float)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"diffcomb.{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"diffcomb.{fn}: {name} must be a real tensor (float16, bfloat16, float32, float64, or an "
            f"integer or bool dtype computed in the default float dtype), got dtype {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"diffcomb.{fn}: {name} must have at least one dimension, got a 0-d tensor")
    if x.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"diffcomb.{fn}: {name} is on device {x.device}; diffcomb supports cpu and cuda")
    if x.device.type == "cuda":
        _native.cuda(fn)
    return x


def _check_dim(fn: str, x: Tensor, dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"diffcomb.{fn}: dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise IndexError(
            f"diffcomb.{fn}: dim={dim} is out of range for a tensor with {x.dim()} dimension(s) "
            f"(shape {tuple(x.shape)}); expected -{x.dim()} <= dim < {x.dim()}"
        )
    return dim % x.dim()


def _check_strength(fn: str, strength: float) -> float:
    if isinstance(strength, Tensor) or isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(
            f"diffcomb.{fn}: regularization_strength must be a Python float, got {type(strength).__name__}"
        )
    # Comparisons only (no math.isfinite), so a symbolic float under torch.compile passes.
    if not 0.0 < strength < math.inf:
        raise ValueError(f"diffcomb.{fn}: regularization_strength must be positive and finite, got {strength}")
    if strength < _MIN_STRENGTH:  # 1 / strength, the projections' scale, would overflow to inf
        raise ValueError(f"diffcomb.{fn}: regularization_strength must be at least {_MIN_STRENGTH} (the "
                         f"smallest normal double, so that 1 / regularization_strength is finite), got {strength}")
    return strength


def _check_regularization(fn: str, regularization: str) -> bool:
    """True for KL, False for L2."""
    if regularization not in _REGULARIZATIONS:
        raise ValueError(f"diffcomb.{fn}: regularization must be 'l2' or 'kl', got {regularization!r}")
    return regularization == "kl"


def _prepare(fn: str, x: Tensor, dim: int, strength: float,
             regularization: str) -> tuple[Tensor, Callable[[Tensor], Tensor], float, bool]:
    """Validates a soft sort/rank call; returns (rows, restore, eps, kl)."""
    x = _check_tensor(fn, "x", as_float(x))
    dim = _check_dim(fn, x, dim)
    eps = _check_strength(fn, strength)
    kl = _check_regularization(fn, regularization)
    rows, restore = _to_rows(x, dim)
    return rows, restore, eps, kl


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _to_rows(x: Tensor, dim: int) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """(B, n) contiguous view of x with `dim` last, and the function that maps
    a (B, n) result back to x's layout and dtype."""
    shape = x.shape
    n = shape[dim]
    if n >= _MAX_N:
        raise ValueError(f"diffcomb: the sorted dimension has length {n}; at most {_MAX_N - 1} is supported (int32 indices)")
    if dim == x.dim() - 1 and x.dtype in (torch.float32, torch.float64) and x.is_contiguous():
        # The common case, views only (per-call overhead matters for small inputs).
        return x.view(-1, n) if n else x.reshape(math.prod(shape[:-1]), 0), lambda out: out.view(shape)
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    rows = moved.reshape(math.prod(lead), n).to(_compute_dtype(x.dtype)).contiguous()

    def restore(out: Tensor) -> Tensor:
        return out.reshape(*lead, n).to(x.dtype).movedim(-1, dim)

    return rows, restore


# ---------------------------------------------------------------------------
# Native calls (inside the custom ops).


def _argsort_descending(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """(scale * x) sorted descending along the last axis, stably, and int32 indices."""
    if x.is_cuda:
        values, perm = torch.sort(x * scale, dim=-1, descending=True, stable=True)
        return values, perm.to(torch.int32)
    rows, n = x.shape
    values = torch.empty_like(x)
    perm = torch.empty((rows, n), dtype=torch.int32, device=x.device)
    _native.cpu().argsort_descending(
        _native.address(x), _native.address(values), _native.address(perm), rows, n, scale,
        _native.dtype_code(x), _native.threads(),
    )
    return values, perm


def _cuda_work(x: Tensor, fn: str) -> Tensor:
    rows, n = x.shape
    nbytes = _native.cuda(fn).work_bytes(rows, n)
    return torch.empty(nbytes, dtype=torch.uint8, device=x.device)


def _project(a: Tensor, c: Tensor, perm: Tensor, out_scale: float, rank: bool, kl: bool,
             chunk: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """PAV on sorted rows a (B, n) against the shared sorted vector c (n,)."""
    rows, n = a.shape
    out = torch.empty_like(a)
    starts = torch.empty((rows, n + 1), dtype=torch.int32, device=a.device)
    weights = torch.empty_like(a)
    args = (_native.address(a), _native.address(c), _native.address(perm), _native.address(out),
            _native.address(starts), _native.address(weights))
    if a.is_cuda:
        work = _cuda_work(a, "soft_sort")
        device, stream = _native.stream_of(a)
        _native.cuda("soft_sort").project(*args, _native.address(work), rows, n, out_scale, rank, kl,
                                          _native.dtype_code(a), device, stream)
    else:
        _native.cpu().project(*args, rows, n, out_scale, rank, kl, _native.dtype_code(a), _native.threads(),
                              chunk)
    return out, starts, weights


# ---------------------------------------------------------------------------
# Custom ops. Each returns its saved block structure as extra outputs:
#   perm    int32 (B, n)      the stable descending argsort of the sorted input
#   starts  int32 (B, n + 1)  block starts, starts[:, n] = number of blocks
#   weights (B, n)            per-element block weights of the VJP


# Checks of the custom ops' own arguments, run by their implementations and fake implementations,
# so that a direct torch.ops.diffcomb.* call with bad arguments raises instead of handing native
# code addresses it would read or write out of bounds. Shapes, dtypes, strides, devices and the
# Python scalars only: no tensor values are read (the index arrays of isotonic_vjp are range-checked
# by the native VJP itself, which gives a NaN row for indices out of range).

_FLOATS = (torch.float32, torch.float64)


def _check_op_rows(op: str, name: str, x: Tensor) -> None:
    check_op_tensor(op, name, x, _FLOATS, 2)
    check_op(x.shape[1] < _MAX_N, lambda: f"torch.ops.diffcomb.{op}: rows of length {x.shape[1]} are too long; at "
                                          f"most {_MAX_N - 1} (int32 indices)")


def _check_op_finite(op: str, name: str, value: float) -> None:
    check_op(-math.inf < value < math.inf, lambda: f"torch.ops.diffcomb.{op}: {name} must be a finite float, got "
                                                   f"{value}", ValueError)


def _check_projection_args(op: str, x: Tensor, c: Tensor, scale: float) -> None:
    """project_rank's scale, or project_sort's sign (then scale is the sign)."""
    _check_op_rows(op, "x", x)
    check_op_tensor(op, "c", c, (x.dtype,), (x.shape[1],), x.device)
    if op == "project_sort":
        check_op(scale in (-1.0, 1.0), lambda: f"torch.ops.diffcomb.{op}: sign must be 1.0 or -1.0, got {scale}",
                 ValueError)
    else:
        _check_op_finite(op, "scale", scale)


def _check_isotonic_args(y: Tensor, sample_weight: Optional[Tensor]) -> None:
    _check_op_rows("isotonic", "y", y)
    if sample_weight is not None:
        check_op_tensor("isotonic", "sample_weight", sample_weight, (y.dtype,), tuple(y.shape), y.device)


def _check_vjp_args(grad: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> None:
    op = "isotonic_vjp"
    _check_op_rows(op, "grad", grad)
    rows, n = grad.shape
    check_op(mode in (_VJP_RANK, _VJP_SORT, _VJP_PLAIN),
             lambda: f"torch.ops.diffcomb.{op}: mode must be {_VJP_RANK} (rank), {_VJP_SORT} (sort) or {_VJP_PLAIN} "
                     f"(plain), got {mode}", ValueError)
    device = grad.device
    if mode != _VJP_PLAIN:  # the plain VJP reads no permutation
        check_op_tensor(op, "perm", perm, (torch.int32,), (rows, n), device)
    check_op_tensor(op, "starts", starts, (torch.int32,), (rows, n + 1), device)
    check_op_tensor(op, "weights", weights, (grad.dtype,), (rows, n), device)
    _check_op_finite(op, "scale", scale)


@torch.library.custom_op("diffcomb::project_rank", mutates_args=())
def _project_rank_op(x: Tensor, c: Tensor, scale: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """P(scale * x, c) for rows x (B, n) and sorted weights c (n,) (log-space for KL)."""
    _check_projection_args("project_rank", x, c, scale)
    a, perm = _argsort_descending(x, scale)
    out, starts, weights = _project(a, c, perm, 1.0, True, kl)
    return out, perm, starts, weights


@torch.library.custom_op("diffcomb::project_sort", mutates_args=())
def _project_sort_op(x: Tensor, c: Tensor, sign: float, kl: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sign * P(c, sort_desc(sign * x)) for rows x (B, n) and sorted c = rho / eps (n,)."""
    _check_projection_args("project_sort", x, c, sign)
    a, perm = _argsort_descending(x, sign)
    out, starts, weights = _project(a, c, perm, sign, False, kl)
    return out, perm, starts, weights


@torch.library.custom_op("diffcomb::isotonic", mutates_args=())
def _isotonic_op(y: Tensor, sample_weight: Optional[Tensor], increasing: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted least-squares isotonic fit of rows y (B, n)."""
    _check_isotonic_args(y, sample_weight)
    rows, n = y.shape
    out = torch.empty_like(y)
    starts = torch.empty((rows, n + 1), dtype=torch.int32, device=y.device)
    weights = torch.empty_like(y)
    sign = -1.0 if increasing else 1.0
    args = (_native.address(y), _native.address(sample_weight), _native.address(out), _native.address(starts),
            _native.address(weights))
    if y.is_cuda:
        work = _cuda_work(y, "isotonic_regression")
        device, stream = _native.stream_of(y)
        _native.cuda("isotonic_regression").isotonic(*args, _native.address(work), rows, n, sign,
                                                     _native.dtype_code(y), device, stream)
    else:
        _native.cpu().isotonic(*args, rows, n, sign, _native.dtype_code(y), _native.threads(), 0)
    return out, starts, weights


@torch.library.custom_op("diffcomb::isotonic_vjp", mutates_args=())
def _vjp_op(grad: Tensor, perm: Tensor, starts: Tensor, weights: Tensor, scale: float, mode: int) -> Tensor:
    """Block VJP r_i = weights_i * sum_{j in B(i)} u_j (csrc/isotonic/isotonic.h, vjp_row)."""
    _check_vjp_args(grad, perm, starts, weights, scale, mode)
    rows, n = grad.shape
    dx = torch.empty_like(grad)
    args = (_native.address(grad), _native.address(perm), _native.address(starts), _native.address(weights),
            _native.address(dx), rows, n, scale, mode, _native.dtype_code(grad))
    if grad.is_cuda:
        device, stream = _native.stream_of(grad)
        _native.cuda("soft_sort").vjp(*args, device, stream)
    else:
        _native.cpu().vjp(*args, _native.threads())
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


def _grad_or_zeros(grad: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _setup_projection(ctx, inputs, output) -> None:
    _, _, scale, _ = inputs
    out, perm, starts, weights = output
    ctx.mark_non_differentiable(perm, starts, weights)
    ctx.save_for_backward(perm, starts, weights)
    ctx.scale = scale


def _backward_rank(ctx, grad_out, *_):
    perm, starts, weights = ctx.saved_tensors
    g = _grad_or_zeros(grad_out, weights)
    return torch.ops.diffcomb.isotonic_vjp(g, perm, starts, weights, ctx.scale, _VJP_RANK), None, None, None


def _backward_sort(ctx, grad_out, *_):
    perm, starts, weights = ctx.saved_tensors
    g = _grad_or_zeros(grad_out, weights)
    return torch.ops.diffcomb.isotonic_vjp(g, perm, starts, weights, 1.0, _VJP_SORT), None, None, None


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
    g = _grad_or_zeros(grad_out, weights)
    no_perm = starts.new_empty(0)
    dy = torch.ops.diffcomb.isotonic_vjp(g, no_perm, starts, weights, 1.0, _VJP_PLAIN)
    dweight = None
    if ctx.needs_input_grad[1]:
        _, _, y, sample_weight, out = ctx.saved_tensors
        # d out_B / d c_j = (y_j - out_B) / W_B and dy_j = c_j / W_B * G_B.
        dweight = (y - out) * dy / sample_weight
    return dy if ctx.needs_input_grad[0] else None, dweight, None


torch.library.register_autograd("diffcomb::project_rank", _backward_rank, setup_context=_setup_projection)
torch.library.register_autograd("diffcomb::project_sort", _backward_sort, setup_context=_setup_projection)
torch.library.register_autograd("diffcomb::isotonic", _backward_isotonic, setup_context=_setup_isotonic)


# ---------------------------------------------------------------------------
# Public functions.


def soft_rank(
    x: Tensor,
    dim: int = -1,
    descending: bool = False,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
) -> Tensor:
    r"""Soft ranks of ``x`` along ``dim``: a differentiable relaxation of the hard ranks.

    The ranks are the projection of :math:`z = \pm x / \varepsilon` onto the
    permutahedron of :math:`\rho = (n, n - 1, \dots, 1)`:

    .. math::
        r = \arg\min_{\mu \in \mathcal{P}(\rho)} \tfrac12 \|\mu - z\|^2 \quad (\text{l2}), \qquad
        r = \exp \arg\min_{\mu \in \mathcal{P}(\log \rho)} \mathrm{KL}(e^{\mu}, e^{z}) \quad (\text{kl})

    Args:
        x (Tensor[..., n, ...]): values to rank; float16/bfloat16 are computed in float32, integer
            and bool tensors in the default float dtype (``torch.get_default_dtype()``, also the
            result's dtype).
        dim (int): the dimension to rank along; every other dimension is a batch. Default -1.
        descending (bool): rank 1 for the largest value instead of the smallest. Default False.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        regularization (str): ``"l2"`` (quadratic) or ``"kl"`` (entropic). Default ``"l2"``.

    Returns:
        Tensor[..., n, ...]: soft ranks in :math:`[1, n]`, same shape and dtype as ``x``.
        Each slice sums to :math:`n(n+1)/2`.

    Note:
        O(n log n) forward (a stable sort, then PAV in O(n)), O(n) backward.
        As :math:`\varepsilon \to 0` the result is the hard rank (ties get their average rank;
        l2 is exact once :math:`\varepsilon` is below the smallest gap between sorted values);
        as :math:`\varepsilon \to \infty` every rank tends to :math:`(n + 1)/2`.
        A slice containing NaN or +/-inf gives NaN ranks and NaN gradients for that slice only.

    Example:
        >>> diffcomb.soft_rank(torch.tensor([3.0, 1.0, 2.0]), regularization_strength=2.0)
        tensor([2.5000, 1.5000, 2.0000])

    References:
        M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
        ICML 2020. arXiv:2002.08871
    """
    rows, restore, eps, kl = _prepare("soft_rank", x, dim, regularization_strength, regularization)
    descending = check_flag("soft_rank", "descending", descending)
    n = rows.shape[-1]
    rho = torch.arange(n, 0, -1, dtype=rows.dtype, device=rows.device)
    scale = (-1.0 if descending else 1.0) / eps
    out = torch.ops.diffcomb.project_rank(rows, rho.log() if kl else rho, scale, kl)[0]
    return restore(out.exp() if kl else out)


def soft_sort(
    x: Tensor,
    dim: int = -1,
    descending: bool = False,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
) -> Tensor:
    r"""Soft sort of ``x`` along ``dim``: a differentiable relaxation of the sorted values.

    With :math:`s = +1` for descending and :math:`-1` for ascending and
    :math:`w = \mathrm{sort\_desc}(s x)`, the result is :math:`s\, P(\rho / \varepsilon, w)`:
    the projection of :math:`\rho / \varepsilon` onto the permutahedron of the values,

    .. math::
        \arg\min_{\mu \in \mathcal{P}(w)} \tfrac12 \|\mu - \rho / \varepsilon\|^2 \quad (\text{l2}), \qquad
        \log \arg\min_{\mu \in \mathcal{P}(e^{w})} \mathrm{KL}(\mu, e^{\rho/\varepsilon}) \quad (\text{kl})

    Args:
        x (Tensor[..., n, ...]): values to sort; float16/bfloat16 are computed in float32, integer
            and bool tensors in the default float dtype (``torch.get_default_dtype()``, also the
            result's dtype).
        dim (int): the dimension to sort along; every other dimension is a batch. Default -1.
        descending (bool): largest first instead of smallest first. Default False.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        regularization (str): ``"l2"`` or ``"kl"``. Default ``"l2"``.

    Returns:
        Tensor[..., n, ...]: monotone soft-sorted values, same shape and dtype as ``x``.
        l2 preserves each slice's sum.

    Note:
        O(n log n) forward, O(n) backward. l2 equals the hard sort once
        :math:`\varepsilon \le 1 / \max_i (s_i - s_{i+1})` over the sorted values; large
        :math:`\varepsilon` pulls every value toward the mean (l2) or the log-mean-exp (kl).
        At exact ties the gradient is the one-sided derivative that keeps the tied elements in
        input order (stable sort). NaN/inf in a slice give NaN for that slice.

    Example:
        >>> diffcomb.soft_sort(torch.tensor([3.0, 1.0, 2.0]), regularization_strength=2.0)
        tensor([1.5000, 2.0000, 2.5000])

    References:
        M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
        ICML 2020. arXiv:2002.08871
    """
    rows, restore, eps, kl = _prepare("soft_sort", x, dim, regularization_strength, regularization)
    descending = check_flag("soft_sort", "descending", descending)
    n = rows.shape[-1]
    c = torch.arange(n, 0, -1, dtype=rows.dtype, device=rows.device) / eps
    sign = 1.0 if descending else -1.0
    out = torch.ops.diffcomb.project_sort(rows, c, sign, kl)[0]
    return restore(out)


def soft_topk(x: Tensor, k: int, dim: int = -1, regularization_strength: float = 1.0) -> Tensor:
    r"""Soft top-k mask of ``x`` along ``dim``: entries in [0, 1] that sum to ``k``.

    The mask is the projection of :math:`x / \varepsilon` onto the permutahedron of
    :math:`w_k = (1, \dots, 1, 0, \dots, 0)` (``k`` ones):

    .. math::
        m = \arg\min_{\mu \in \mathcal{P}(w_k)} \tfrac12 \|\mu - x / \varepsilon\|^2

    Args:
        x (Tensor[..., n, ...]): scores; integer and bool tensors are computed in the default float
            dtype (``torch.get_default_dtype()``, also the result's dtype).
        k (int): how many entries to select, ``0 <= k <= n``.
        dim (int): the dimension to select along. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.

    Returns:
        Tensor[..., n, ...]: the soft mask, same shape and dtype as ``x``.

    Note:
        Tends to the hard top-k indicator as :math:`\varepsilon \to 0`; k = 0 gives zeros and
        k = n ones, with zero gradient. O(n log n) forward, O(n) backward.

    Example:
        >>> diffcomb.soft_topk(torch.tensor([0.1, 2.0, -1.0, 1.5, 0.3]), k=2, regularization_strength=0.1)
        tensor([0., 1., 0., 1., 0.])

    References:
        M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
        ICML 2020. arXiv:2002.08871
    """
    x = _check_tensor("soft_topk", "x", as_float(x))
    dim = _check_dim("soft_topk", x, dim)
    eps = _check_strength("soft_topk", regularization_strength)
    n = x.shape[dim]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"diffcomb.soft_topk: k must be an int with 0 <= k <= n = {n}, got {k!r}")
    rows, restore = _to_rows(x, dim)
    w = (torch.arange(n, device=rows.device) < k).to(rows.dtype)
    out = torch.ops.diffcomb.project_rank(rows, w, 1.0 / eps, False)[0]
    return restore(out)


def soft_quantile(
    x: Tensor,
    q: Union[float, Sequence[float], Tensor],
    dim: int = -1,
    regularization_strength: float = 1.0,
    regularization: str = "l2",
) -> Tensor:
    r"""Soft quantile(s) of ``x`` along ``dim``, by linear interpolation of the soft sort.

    With :math:`s` = the ascending soft sort and :math:`p = q (n - 1)`:

    .. math::
        Q_q = (1 - (p - \lfloor p \rfloor))\, s_{\lfloor p \rfloor} + (p - \lfloor p \rfloor)\, s_{\min(\lfloor p \rfloor + 1, n - 1)}

    which is ``torch.quantile``'s "linear" rule when :math:`\varepsilon \to 0`.

    Args:
        x (Tensor[..., n, ...]): values, ``n >= 1``; integer and bool tensors are computed in the
            default float dtype (``torch.get_default_dtype()``, also the result's dtype).
        q (float or sequence of floats or Tensor[k]): quantile level(s) in [0, 1]; a tensor (of a
            floating-point or integer dtype) must be on ``x``'s device and is read on the host.
        dim (int): the dimension to reduce. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        regularization (str): ``"l2"`` or ``"kl"``. Default ``"l2"``.

    Returns:
        Tensor: ``x``'s shape without ``dim``; for a sequence or 1-D tensor ``q`` a leading
        dimension of size ``len(q)`` is added, as in ``torch.quantile``.

    Note:
        As :math:`\varepsilon \to \infty` (l2) every quantile tends to the mean. O(n log n).

    Example:
        >>> diffcomb.soft_quantile(torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]), 0.5)
        tensor(3.)

    References:
        M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
        ICML 2020. arXiv:2002.08871
    """
    check_same_device("soft_quantile", x=x, q=q)
    x = _check_tensor("soft_quantile", "x", as_float(x))
    dim = _check_dim("soft_quantile", x, dim)
    _check_strength("soft_quantile", regularization_strength)
    _check_regularization("soft_quantile", regularization)
    n = x.shape[dim]
    if n == 0:
        raise ValueError(f"diffcomb.soft_quantile: x must have at least one element along dim={dim}")
    scalar, levels = _quantile_levels(q)
    if not levels:
        shape = list(x.shape)
        del shape[dim]
        return x.new_empty((0, *shape))
    s = soft_sort(x, dim=dim, regularization_strength=regularization_strength, regularization=regularization)
    results = []
    for level in levels:
        pos = level * (n - 1)
        lo = min(int(math.floor(pos)), n - 1)
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        results.append((1.0 - frac) * s.select(dim, lo) + frac * s.select(dim, hi))
    return results[0] if scalar else torch.stack(results)


def _quantile_levels(q: object) -> tuple[bool, list[float]]:
    """(is_scalar, levels) of soft_quantile's q, validated."""
    if isinstance(q, Tensor):
        if q.dtype == torch.bool or q.is_complex():
            raise TypeError(f"diffcomb.soft_quantile: q must be a tensor of a floating-point or integer dtype, "
                            f"got {q.dtype}")
        if q.dim() > 1:
            raise ValueError(f"diffcomb.soft_quantile: q must be a float or a 1-D tensor, got shape {tuple(q.shape)}")
        scalar, levels = q.dim() == 0, [float(v) for v in q.reshape(-1).tolist()]
    elif isinstance(q, (int, float)) and not isinstance(q, bool):
        scalar, levels = True, [float(q)]
    elif isinstance(q, Sequence) and not isinstance(q, str) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in q
    ):
        scalar, levels = False, [float(v) for v in q]
    else:
        raise TypeError(f"diffcomb.soft_quantile: q must be a float, a sequence of floats or a tensor, got {q!r}")
    for level in levels:
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"diffcomb.soft_quantile: q must be in [0, 1], got {level}")
    return scalar, levels


def isotonic_regression(
    y: Tensor,
    sample_weight: Optional[Tensor] = None,
    dim: int = -1,
    increasing: bool = True,
) -> Tensor:
    r"""Weighted least-squares isotonic regression of ``y`` along ``dim``, differentiable.

    .. math::
        \hat y = \arg\min_{v_1 \le v_2 \le \dots \le v_n} \sum_i c_i (v_i - y_i)^2

    (non-increasing when ``increasing=False``), as scikit-learn's ``IsotonicRegression`` fits
    a sequence in its given order. Solved by Pool Adjacent Violators in O(n).

    Args:
        y (Tensor[..., n, ...]): the sequence(s) to fit; integer and bool tensors are computed in
            the default float dtype (``torch.get_default_dtype()``, also the result's dtype).
        sample_weight (Tensor, optional): positive weights :math:`c`, broadcastable to ``y`` and
            on its device (integer or bool weights are converted like ``y``). Default: all ones.
        dim (int): the sequence dimension; every other dimension is a batch. Default -1.
        increasing (bool): fit a non-decreasing (True) or non-increasing (False) sequence.

    Returns:
        Tensor[..., n, ...]: the fit, same shape and dtype as ``y``.

    Note:
        The fit is piecewise constant: each block holds the weighted mean of its ``y``. The
        gradient flows to ``y`` (:math:`c_j / W_B` within a block) and to ``sample_weight``
        (:math:`(y_j - \hat y_j) / W_B`). Weights must be positive; a zero total weight in a
        block gives NaN. A slice with NaN or +/-inf (in ``y`` or the weights) or a negative
        weight gives NaN. O(n) forward and backward.

    Example:
        >>> diffcomb.isotonic_regression(torch.tensor([1.0, 3.0, 2.0, 4.0]))
        tensor([1.0000, 2.5000, 2.5000, 4.0000])

    References:
        R. E. Barlow, D. J. Bartholomew, J. M. Bremner, H. D. Brunk. Statistical Inference under
        Order Restrictions. Wiley, 1972.
    """
    fn = "isotonic_regression"
    check_same_device(fn, y=y, sample_weight=sample_weight)
    y = _check_tensor(fn, "y", as_float(y))
    dim = _check_dim(fn, y, dim)
    increasing = check_flag(fn, "increasing", increasing)
    rows, restore = _to_rows(y, dim)
    weight_rows = None
    if sample_weight is not None:
        sample_weight = _check_tensor(fn, "sample_weight", as_float(sample_weight))
        try:
            expanded = sample_weight.broadcast_to(y.shape)
        except RuntimeError as exc:
            raise ValueError(
                f"diffcomb.isotonic_regression: sample_weight of shape {tuple(sample_weight.shape)} does not "
                f"broadcast to y's shape {tuple(y.shape)}"
            ) from exc
        weight_rows, _ = _to_rows(expanded.to(y.dtype), dim)
    out = torch.ops.diffcomb.isotonic(rows, weight_rows, increasing)[0]
    return restore(out)
