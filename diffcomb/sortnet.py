"""Monotonic differentiable sorting networks (SPEC.md section 5).

A sorting network (odd-even transposition or bitonic) whose conditional swaps
are relaxed by a sigmoid of the gap between the two values: the outputs are
soft sorted values and a relaxed, doubly stochastic permutation matrix ``P``
(``P[i, k]`` = weight of input ``i`` at output position ``k``; ``values =
P^T x``). The native kernels (csrc/sortnet) run the swaps layer by layer:
O(1) per comparator for the values and O(n) per comparator (O(n^2) per
layer) for ``P``, whose rows evolve independently, and their backward keeps
only the per-swap mixing weights from the forward.

A bitonic network for ``n`` not a power of two is, by default, the network on
the next power of two without its first wires and the comparators that touch
them (SPEC 5.1, the papers' code); ``bitonic_padding="inf"`` instead appends
values that sort last and routes them exactly, which :func:`network_layout`
does once on the host by renaming wires. Either way the kernels only see a
list of comparators between real values.

This module builds each network's layout once per ``(network, n)``, flattens
the batch, and registers the kernels as ``torch.library`` custom ops with
fake (meta) implementations and autograd, so the functions work under
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and
``torch.library.opcheck``.

References:
    F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Differentiable Sorting Networks for Scalable
    Sorting and Ranking Supervision. ICML 2021. arXiv:2105.04019
    F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Monotonic Differentiable Sorting Networks.
    ICLR 2022. arXiv:2203.09630
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import _native
from ._checks import as_float, check_flag, check_same_device

__all__ = [
    "BITONIC_PADDINGS",
    "DiffSortNet",
    "NETWORKS",
    "NetworkLayout",
    "RankingLoss",
    "SIGMOIDS",
    "SortingNetworkResult",
    "network_layout",
    "ranking_loss",
    "sorting_network",
]

NETWORKS = ("odd_even", "bitonic")
# How a bitonic network runs for n not a power of two (see network_layout).
BITONIC_PADDINGS = ("prune", "inf")
# Codes shared with csrc/sortnet/sortnet.h (enum Sigmoid).
SIGMOIDS = ("logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy", "optimal")
_MAX_COMPARATORS = 2**31 - 1  # int32 comparator indices
_REDUCTIONS = ("mean", "sum", "none")
# Bytes of scratch per chunk of the CUDA backward of P (see _p_backward_cuda).
_CUDA_TAPE_BYTES = 1 << 31


class SortingNetworkResult(NamedTuple):
    """What :func:`sorting_network` returns."""

    values: Tensor
    """Tensor[..., n]: the relaxed sorted values."""
    matrix: Optional[Tensor]
    """Tensor[..., n, n]: the relaxed permutation matrix P (None when ``return_matrix=False``)."""


# ---------------------------------------------------------------------------
# Network layouts (SPEC 5.1).


class NetworkLayout(NamedTuple):
    """The relaxed comparators of a network on ``n`` wires (see :func:`network_layout`)."""

    lo: np.ndarray
    """int32 (C,): the wire that receives the smaller value of comparator c."""
    hi: np.ndarray
    """int32 (C,): the wire that receives the larger value."""
    offsets: np.ndarray
    """int32 (layers + 1,): layer l holds comparators ``offsets[l]:offsets[l + 1]``."""
    reach: np.ndarray
    """int32 (layers,): the largest ``|hi - lo|`` of each layer."""
    output: np.ndarray
    """int64 (n,): ``output[k]`` is the wire that holds output position k at the end."""

    @property
    def permuted(self) -> bool:
        """Whether the outputs leave the network on other wires than their positions."""
        return bool(np.any(self.output != np.arange(len(self.output))))


def _bitonic_layers(N: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The bitonic network on N = 2^k wires (SPEC 5.1), as (lo, hi) arrays per layer."""
    wires = np.arange(N)
    layers = []
    for t in range(N.bit_length() - 1):
        for u in range(t + 1):
            h = 1 << (t - u)
            a = wires[(wires & h) == 0]
            b = a + h
            flip = ((a >> (t + 1)) & 1) == 1
            layers.append((np.where(flip, b, a), np.where(flip, a, b)))
    return layers


def _pruned_bitonic_sorts(n: int) -> bool:
    """Whether the pruned bitonic network on n wires (see _pruned_bitonic) is a sorting network.

    With p = N - n deleted wires, N = 2^ceil(log2 n): write p in binary as a run of ones, then a
    zero, then b more bits s. The network sorts unless b >= 2 and 2 <= s <= 2^b - 2; the first
    n that it does not sort are 22, 38, 42..46, 54, 70, 74..78, 82..94 (p = 10, 26, 18..22, ...),
    and above n = 64 most n are among them.

    Why p alone decides it: a deleted wire is never moved, so it acts as -inf in an ascending
    merge and as +inf in a descending one, and only a descending group of the network that has
    fewer than half of its wires deleted sees a merge input that is not bitonic; whether the
    network recovers from that depends on the bits of p below. The closed form is an observed
    rule, not a proof: tests/test_sortnet.py checks it exhaustively by the 0-1 principle (n < 80)
    and against random inputs (n < 600); it was also checked exhaustively for every n < 260 and
    against random inputs for every n < 2200.
    """
    N = 1 << max(n - 1, 0).bit_length()
    bits = format(N - n, "b") if N > n else ""
    rest = bits.lstrip("1")[1:]  # after the leading ones and the zero that ends them
    return len(rest) < 2 or not 2 <= int(rest, 2) <= 2 ** len(rest) - 2


@functools.lru_cache(maxsize=None)
def _warn_if_pruned_bitonic_unsorted(n: int) -> None:
    """The warning, once per n, where the pruned bitonic network does not sort."""
    if not _pruned_bitonic_sorts(n):
        warnings.warn(
            f"diffcomb.sorting_network: the bitonic network with bitonic_padding='prune' (the default, the papers' "
            f"convention, as in diffsort) is not a sorting network for n = {n}: its steep limit leaves some inputs "
            f"unsorted. bitonic_padding='inf' (a different relaxation that sorts for every n) or network='odd_even' "
            f"sort every input.", UserWarning, stacklevel=3)


def _pruned_bitonic(n: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The bitonic network on N = 2^ceil(log2 n) wires without its first N-n wires (SPEC 5.1).

    Every comparator that touches one of wires 0..N-n-1 is deleted and the other wires are
    renumbered (index - (N - n)); the outputs stay on their positions. This is the convention of
    the sorting-network papers' code (diffsort), whose comparators on a deleted wire are
    identities. It is not a sorting network for every n (_pruned_bitonic_sorts): then a
    warning, once per n.
    """
    N = 1 << max(n - 1, 0).bit_length()
    p = N - n
    _warn_if_pruned_bitonic_unsorted(n)
    layers = []
    for lo, hi in _bitonic_layers(N):
        keep = np.minimum(lo, hi) >= p
        layers.append((lo[keep] - p, hi[keep] - p))
    return layers, np.arange(n)


def _padded_bitonic(n: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The bitonic network on N = 2^ceil(log2 n) wires with +inf on wires n..N-1, run exactly.

    A comparator that meets a padding value routes it without mixing: +inf is the larger value,
    so a real value on wire hi facing +inf on wire lo moves to lo, and every other comparator
    with a padding value changes nothing. Where the padding values go is therefore fixed by the
    layout alone. Each real value keeps its own storage slot (its input index) wherever it
    moves, and only the comparators between two real values remain, written on slots. Returns
    those layers and the slot that ends on each output position (the padding ends on N-n..N-1,
    SPEC 5.1's 0-1 principle, and is stripped).
    """
    N = 1 << max(n - 1, 0).bit_length()
    slot = np.concatenate([np.arange(n), np.full(N - n, -1)])  # what each physical wire holds; -1: padding
    layers = []
    for lo, hi in _bitonic_layers(N):
        a, b = slot[lo], slot[hi]
        real = (a >= 0) & (b >= 0)
        move = (a < 0) & (b >= 0)
        slot[lo[move]] = b[move]
        slot[hi[move]] = -1
        layers.append((a[real], b[real]))
    assert np.all(slot[:n] >= 0) and np.all(slot[n:] < 0), "the padding must end last"
    return layers, slot[:n]


@functools.lru_cache(maxsize=64)
def network_layout(network: str, n: int, bitonic_padding: str = "prune") -> NetworkLayout:
    """The relaxed comparators of a network on ``n`` wires, as int numpy arrays (read-only).

    Comparator ``c`` puts the smaller value on wire ``lo[c]`` and the larger on ``hi[c]``;
    layer ``l`` holds comparators ``offsets[l]:offsets[l + 1]`` (empty layers are left out).
    Within a layer the comparators are disjoint and sorted by their smaller wire, and
    ``reach[l]`` is their largest span ``|hi - lo|`` (the CPU kernels skip comparators by it).
    Output position ``k`` is read from wire ``output[k]``.

    ``bitonic_padding`` decides the bitonic network for ``n`` not a power of two (the odd-even
    network ignores it); both come from the network on ``N = 2^ceil(log2 n)`` wires, and they
    are different relaxations (soft-sorted values differ by up to about 1 at n = 5, cauchy,
    steepness 1, standard normal inputs):

    - ``"prune"`` (SPEC 5.1, the papers' code diffsort): the first ``N - n`` wires are deleted
      with every comparator that touches one of them, the others renumbered; ``output`` is the
      identity. Not a sorting network for every n (22, 38, 42..46, ...: a warning, once per n,
      when the layout is built).
    - ``"inf"``: ``N - n`` values that sort last (+inf) are appended, the network runs exactly
      and they are stripped; a sorting network for every n. A padding value never mixes with a
      real one, it only moves real values between wires; those moves are done here, once, by
      renaming the wires, so the kernels see only the comparators between real values on ``n``
      wires, and ``output`` is the renaming left at the end.
    """
    if network == "odd_even":
        layers = []
        for l in range(n):
            a = np.arange(l % 2, n - 1, 2)
            layers.append((a, a + 1))
        output = np.arange(n)
    elif network == "bitonic" and bitonic_padding == "prune":
        layers, output = _pruned_bitonic(n)
    elif network == "bitonic" and bitonic_padding == "inf":
        layers, output = _padded_bitonic(n)
    else:  # pragma: no cover - checked by the callers
        raise ValueError(f"unknown network {network!r} with bitonic_padding {bitonic_padding!r}")
    layers = [(lo, hi) for lo, hi in layers if len(lo)]
    layers = [(lo[order], hi[order]) for lo, hi in layers for order in [np.argsort(np.minimum(lo, hi))]]
    sizes = [len(lo) for lo, _ in layers]
    if sum(sizes) > _MAX_COMPARATORS:
        raise ValueError(f"diffcomb.sorting_network: the {network} network on n = {n} wires has {sum(sizes)} "
                         f"comparators; at most {_MAX_COMPARATORS} are supported (int32 indices)")
    offsets = np.zeros(len(layers) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(sizes)
    lo = np.concatenate([lo for lo, _ in layers]).astype(np.int32) if layers else np.zeros(0, np.int32)
    hi = np.concatenate([hi for _, hi in layers]).astype(np.int32) if layers else np.zeros(0, np.int32)
    reach = np.array([np.abs(hi - lo).max() for lo, hi in layers], dtype=np.int32)
    layout = NetworkLayout(lo, hi, offsets, reach, output.astype(np.int64))
    for arr in layout:
        arr.setflags(write=False)
    return layout


class _DeviceLayout(NamedTuple):
    lo: Tensor
    hi: Tensor
    offsets: Tensor
    reach: Tensor
    output: Optional[Tensor]
    """int64 (n,): NetworkLayout.output (None: the identity)."""
    place: Optional[Tensor]
    """int64 (n,): its inverse, the output position of each wire (None: the identity)."""


@functools.lru_cache(maxsize=64)
def _layout_tensors(network: int, padding: int, n: int, device: torch.device) -> _DeviceLayout:
    layout = network_layout(NETWORKS[network], n, BITONIC_PADDINGS[padding])
    lo, hi, offsets, reach = (torch.from_numpy(a.copy()).to(device) for a in layout[:4])
    if not layout.permuted:
        return _DeviceLayout(lo, hi, offsets, reach, None, None)
    output = torch.from_numpy(layout.output.copy()).to(device)
    return _DeviceLayout(lo, hi, offsets, reach, output, torch.argsort(output))


def _comparators(network: int, padding: int, n: int) -> int:
    return int(network_layout(NETWORKS[network], n, BITONIC_PADDINGS[padding]).offsets[-1])


# ---------------------------------------------------------------------------
# Custom ops on contiguous (B, n) rows. Pt is the transposed matrix,
# Pt[b, k, i] = P[b, i, k]; the public function returns its transpose (a view).
#
# The ops check what they are given before anything reaches the native code
# (shapes, dtypes, devices, contiguity and the scalar codes; no tensor values
# are read), in the real and the fake implementation alike, so a direct call
# with bad arguments raises instead of reading or writing out of bounds.


def _check_op_scalars(op: str, network: int, padding: int, sigmoid: int, steepness: float,
                      art_lambda: float) -> None:
    for name, code, names in (("network", network, NETWORKS), ("bitonic_padding", padding, BITONIC_PADDINGS),
                              ("sigmoid", sigmoid, SIGMOIDS)):
        torch._check_value(0 <= code < len(names), lambda: f"diffcomb::{op}: {name} must be a code in "
                           f"[0, {len(names)}) ({', '.join(names)}), got {code}")
    torch._check_value(0.0 < steepness < math.inf,
                       lambda: f"diffcomb::{op}: steepness must be positive and finite, got {steepness}")
    torch._check_value(0.0 <= art_lambda <= 1.0, lambda: f"diffcomb::{op}: art_lambda must be in [0, 1], got "
                       f"{art_lambda}")


def _check_op_tensor(op: str, name: str, t: Tensor, shape: tuple, like: Tensor) -> None:
    """t has the given shape, like's dtype and device, and is contiguous."""
    torch._check(t.dim() == len(shape) and all(a == b for a, b in zip(t.shape, shape)),
                 lambda: f"diffcomb::{op}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    torch._check(t.dtype == like.dtype, lambda: f"diffcomb::{op}: {name} must have dtype {like.dtype}, got {t.dtype}")
    torch._check(t.device == like.device,
                 lambda: f"diffcomb::{op}: {name} is on {t.device}, but x is on {like.device}")
    torch._check(t.is_contiguous(), lambda: f"diffcomb::{op}: {name} must be contiguous")


def _check_op_x(op: str, x: Tensor) -> None:
    torch._check(x.dim() == 2, lambda: f"diffcomb::{op}: x must have shape (B, n), got {tuple(x.shape)}")
    torch._check(x.dtype in (torch.float32, torch.float64),
                 lambda: f"diffcomb::{op}: x must be float32 or float64, got {x.dtype}")
    torch._check(x.device.type in ("cpu", "cuda", "meta"),
                 lambda: f"diffcomb::{op}: x is on {x.device}; the op runs on cpu and cuda")
    torch._check(x.is_contiguous(), lambda: f"diffcomb::{op}: x must be contiguous")


def _check_forward_op(x: Tensor, network: int, padding: int, sigmoid: int, steepness: float,
                      art_lambda: float) -> None:
    _check_op_x("sorting_network", x)
    _check_op_scalars("sorting_network", network, padding, sigmoid, steepness, art_lambda)


def _check_backward_op(x: Tensor, alpha: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor],
                       network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float) -> None:
    op = "sorting_network_backward"
    _check_op_x(op, x)
    _check_op_scalars(op, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    _check_op_tensor(op, "alpha", alpha, (batch, _comparators(network, padding, int(n))), x)
    if grad_values is not None:
        _check_op_tensor(op, "grad_values", grad_values, (batch, n), x)
    if grad_P is not None:
        _check_op_tensor(op, "grad_P", grad_P, (batch, n, n), x)


@torch.library.custom_op("diffcomb::sorting_network", mutates_args=())
def _sortnet_op(x: Tensor, network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float,
                with_matrix: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Relaxed sorted values (B, n), Pt (B, n, n) or (B, 0, 0), and the mixing weights alpha (B, C).
    network, padding and sigmoid are indices into NETWORKS, BITONIC_PADDINGS and SIGMOIDS."""
    _check_forward_op(x, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    layout = _layout_tensors(network, padding, n, x.device)
    lo, hi, offsets = layout.lo, layout.hi, layout.offsets
    values = torch.empty_like(x)
    alpha = x.new_empty((batch, lo.numel()))
    Pt = x.new_empty((batch, n, n) if with_matrix else (batch, 0, 0))
    args = (_native.address(x), _native.address(values), _native.address(alpha), _native.address(Pt),
            _native.address(lo), _native.address(hi), _native.address(offsets), batch, n, offsets.numel() - 1,
            sigmoid, steepness, art_lambda, _native.dtype_code(x))
    if x.is_cuda:
        device, stream = _native.stream_of(x)
        _native.cuda("sorting_network").sortnet_forward(*args[:10], lo.numel(), *args[10:], device, stream)
    else:
        _native.cpu().sortnet_forward(*args[:7], _native.address(layout.reach), *args[7:], _native.threads())
    if layout.output is not None:  # the outputs leave a padded bitonic network on renamed wires
        values = values.index_select(1, layout.output)
        if with_matrix:
            Pt = Pt.index_select(1, layout.output)
    return values, Pt, alpha


@_sortnet_op.register_fake
def _(x: Tensor, network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float,
      with_matrix: bool) -> tuple[Tensor, Tensor, Tensor]:
    _check_forward_op(x, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    comparators = _comparators(network, padding, int(n))
    return (torch.empty_like(x), x.new_empty((batch, n, n) if with_matrix else (batch, 0, 0)),
            x.new_empty((batch, comparators)))


def _p_backward_cuda(alpha: Tensor, grad_Pt: Tensor, lo: Tensor, hi: Tensor, offsets: Tensor) -> Tensor:
    """The P part of dL/dalpha (B, C) in float64: the kernel leaves one term per row of P in a
    tape (chunk, C, n); torch sums them. Chunks of the batch bound the tape's size."""
    batch, comparators = alpha.shape
    n = grad_Pt.shape[-1]
    per_row = (comparators * n + n * n) * alpha.element_size()
    chunk = max(1, min(batch, _CUDA_TAPE_BYTES // max(per_row, 1)))
    tape = alpha.new_empty((chunk, comparators, n))
    state = alpha.new_empty((chunk, n, n))
    dalpha = torch.empty((batch, comparators), dtype=torch.float64, device=alpha.device)
    device, stream = _native.stream_of(alpha)
    module = _native.cuda("sorting_network")
    for b0 in range(0, batch, chunk):
        rows = min(chunk, batch - b0)
        module.sortnet_p_backward(
            _native.address(alpha[b0:b0 + rows]), _native.address(grad_Pt[b0:b0 + rows]), _native.address(tape),
            _native.address(state), _native.address(lo), _native.address(hi), _native.address(offsets), rows, n,
            offsets.numel() - 1, comparators, _native.dtype_code(alpha), device, stream)
        torch.sum(tape[:rows], dim=-1, dtype=torch.float64, out=dalpha[b0:b0 + rows])
    return dalpha


@torch.library.custom_op("diffcomb::sorting_network_backward", mutates_args=())
def _sortnet_backward_op(x: Tensor, alpha: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor],
                         network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float) -> Tensor:
    """dL/dx (B, n) from the upstream gradients of the values and of P (B, n, n), in P's own
    layout (grad_P[b, i, k] = dL/dP[b, i, k]); None: zero."""
    _check_backward_op(x, alpha, grad_values, grad_P, network, padding, sigmoid, steepness, art_lambda)
    batch, n = x.shape
    layout = _layout_tensors(network, padding, n, x.device)
    lo, hi, offsets = layout.lo, layout.hi, layout.offsets
    if layout.place is not None:  # back to the wires the outputs left on
        grad_values = grad_values.index_select(1, layout.place) if grad_values is not None else None
        grad_P = grad_P.index_select(2, layout.place) if grad_P is not None else None
    dx = torch.empty_like(x)
    layers = offsets.numel() - 1
    if x.is_cuda:
        device, stream = _native.stream_of(x)
        module = _native.cuda("sorting_network")
        dalpha = None
        if grad_P is not None and alpha.numel():
            dalpha = _p_backward_cuda(alpha, grad_P.mT.contiguous(), lo, hi, offsets)
        work = torch.empty(module.sortnet_values_backward_work_bytes(batch, n, alpha.shape[1], _native.dtype_code(x)),
                           dtype=torch.uint8, device=x.device)
        module.sortnet_values_backward(
            _native.address(x), _native.address(alpha), _native.address(grad_values), _native.address(dalpha),
            _native.address(dx), _native.address(work), _native.address(lo), _native.address(hi),
            _native.address(offsets), batch, n, layers, lo.numel(), sigmoid, steepness, art_lambda,
            _native.dtype_code(x), device, stream)
    else:
        _native.cpu().sortnet_backward(
            _native.address(x), _native.address(alpha), _native.address(grad_values), _native.address(grad_P),
            _native.address(dx), _native.address(lo), _native.address(hi), _native.address(offsets),
            _native.address(layout.reach), batch, n,
            layers, sigmoid, steepness, art_lambda, _native.dtype_code(x), _native.threads())
    return dx


@_sortnet_backward_op.register_fake
def _(x: Tensor, alpha: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor], network: int,
      padding: int, sigmoid: int, steepness: float, art_lambda: float) -> Tensor:
    _check_backward_op(x, alpha, grad_values, grad_P, network, padding, sigmoid, steepness, art_lambda)
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output) -> None:
    x, network, padding, sigmoid, steepness, art_lambda, with_matrix = inputs
    _, _, alpha = output
    ctx.mark_non_differentiable(alpha)
    ctx.save_for_backward(x, alpha)
    ctx.params = (network, padding, sigmoid, steepness, art_lambda)
    ctx.with_matrix = with_matrix


def _backward(ctx, grad_values, grad_Pt, _grad_alpha):
    x, alpha = ctx.saved_tensors
    if grad_values is not None:
        grad_values = grad_values.contiguous()
    # The gradient of Pt is usually the transpose of a contiguous dL/dP: hand the kernel
    # dL/dP in P's layout, which then costs no copy.
    grad_P = grad_Pt.mT.contiguous() if grad_Pt is not None and ctx.with_matrix and grad_Pt.numel() else None
    dx = torch.ops.diffcomb.sorting_network_backward(x, alpha, grad_values, grad_P, *ctx.params)
    return dx, None, None, None, None, None, None


torch.library.register_autograd("diffcomb::sorting_network", _backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------
# Validation, at the public boundary.


def _check_x(fn: str, x: object) -> Tensor:
    """x as a real tensor with at least one dimension; integer and bool tensors in torch's default
    float dtype."""
    if not isinstance(x, Tensor):
        raise TypeError(f"diffcomb.{fn}: x must be a torch.Tensor, got {type(x).__name__}")
    x = as_float(x)
    if not x.is_floating_point():
        raise TypeError(f"diffcomb.{fn}: x must be a real tensor (floating-point, integer or bool), got dtype "
                        f"{x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"diffcomb.{fn}: x must have at least one dimension (..., n), got a 0-d tensor")
    if x.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"diffcomb.{fn}: x is on device {x.device}; diffcomb supports cpu and cuda")
    if x.device.type == "cuda":
        _native.cuda(fn)
    return x


def _check_choice(fn: str, name: str, value: object, choices: tuple[str, ...]) -> int:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"diffcomb.{fn}: {name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return choices.index(value)


def _check_steepness(fn: str, steepness: object) -> float:
    if isinstance(steepness, (Tensor, bool)) or not isinstance(steepness, (int, float)):
        raise TypeError(f"diffcomb.{fn}: steepness must be a Python float, got {type(steepness).__name__}")
    # Comparisons only (no math.isfinite), so a symbolic float under torch.compile passes.
    if not 0.0 < steepness < math.inf:
        raise ValueError(f"diffcomb.{fn}: steepness must be positive and finite, got {steepness}")
    return float(steepness)


def _check_art_lambda(fn: str, art_lambda: object) -> float:
    if isinstance(art_lambda, (Tensor, bool)) or not isinstance(art_lambda, (int, float)):
        raise TypeError(f"diffcomb.{fn}: art_lambda must be a Python float, got {type(art_lambda).__name__}")
    if not 0.0 <= art_lambda <= 1.0:
        raise ValueError(f"diffcomb.{fn}: art_lambda must be in [0, 1], got {art_lambda}")
    return float(art_lambda)


# ---------------------------------------------------------------------------
# Public API.


def sorting_network(
    x: Tensor,
    *,
    network: str = "odd_even",
    sigmoid: str = "cauchy",
    steepness: float = 10.0,
    art_lambda: float = 0.25,
    return_matrix: bool = True,
    descending: bool = False,
    bitonic_padding: str = "prune",
) -> SortingNetworkResult:
    r"""Differentiable sorting network: relaxed sorted values and relaxed permutation matrix of ``x``.

    Every comparator ``(lo, hi)`` of the network replaces the values :math:`a` (wire lo) and
    :math:`b` (wire hi) by a convex mix with :math:`\alpha = f(b - a)`:

    .. math::
        a' = \alpha a + (1 - \alpha) b, \qquad b' = (1 - \alpha) a + \alpha b, \qquad
        P' = P\, M, \quad M_{lo,lo} = M_{hi,hi} = \alpha,\ M_{lo,hi} = M_{hi,lo} = 1 - \alpha

    starting from :math:`P = I`, so that ``values`` :math:`= P^\top x`. With
    :math:`v = \beta d` (:math:`\beta` = ``steepness``) the sigmoids :math:`f(d)` are
    ``logistic`` :math:`1/(1 + e^{-v})`; ``logistic_phi`` the logistic of
    :math:`\beta d / (|d| + 10^{-10})^{\lambda}`; ``gaussian`` :math:`\Phi(v)`;
    ``reciprocal`` :math:`\tfrac12 (v / (2 + |v|) + 1)`; ``cauchy``
    :math:`\arctan(v)/\pi + \tfrac12`; ``optimal`` :math:`v + \tfrac12` for :math:`|v| \le \tfrac14`,
    :math:`1 - 1/(16 v)` above and :math:`-1/(16 v)` below.

    The networks, sigmoids and ``steepness`` are those of the papers' code (diffsort):
    ``sorting_network(x, network=net, sigmoid=s, steepness=b)`` gives the values, P and
    gradients of ``diffsort.DiffSortNet(net, n, steepness=b, distribution=s)(x)`` for every n,
    to rounding where diffsort is exact (its ``optimal`` sigmoid adds 1e-10 to :math:`|v|`, a
    relative change of about 1e-10, and its ``gaussian`` backward rounds :math:`1/\beta` to
    float32).

    Args:
        x (Tensor[..., n]): values to sort along the last dimension; every other dimension is a
            batch. float16/bfloat16 are computed in float32; integer and bool tensors in
            torch's default float dtype (the outputs then have that dtype).
        network (str): ``"odd_even"`` (transposition network, depth n) or ``"bitonic"`` (depth
            :math:`k(k+1)/2`, :math:`k = \lceil \log_2 n \rceil`; for n not a power of two see
            ``bitonic_padding``). Default ``"odd_even"``.
        sigmoid (str): ``"logistic"``, ``"logistic_phi"``, ``"gaussian"``, ``"reciprocal"``,
            ``"cauchy"`` or ``"optimal"``. Default ``"cauchy"``.
        steepness (float): :math:`\beta > 0`, finite. Default 10.
        art_lambda (float): :math:`\lambda \in [0, 1]` of ``logistic_phi`` (the activation
            replacement trick). Default 0.25.
        return_matrix (bool): also compute P. Default True.
        descending (bool): largest value first (reverses the outputs and the columns of P).
        bitonic_padding (str): how the bitonic network runs for n not a power of two, on
            :math:`2^k` virtual wires. ``"prune"`` (default, the papers' convention): the first
            :math:`2^k - n` wires are deleted with every comparator that touches them.
            ``"inf"``: :math:`2^k - n` values that sort last (+inf) are appended, routed exactly
            (they never mix with a real value, they only move real values between wires) and
            stripped. They are different relaxations (the soft values differ by up to about 1
            at n = 5, cauchy, steepness 1), and only ``"inf"`` is a sorting network for every
            n: the pruned one leaves some inputs unsorted even in the steep limit for n = 22,
            38, 42..46, 54, 70, ... and most n above 64 (it sorts for n <= 21 and the papers'
            sizes); it then warns, once per n. Ignored by ``"odd_even"`` and for n a power of
            two, where both are the same network.

    Returns:
        SortingNetworkResult: ``values`` (Tensor[..., n], x's dtype) and ``matrix``
        (Tensor[..., n, n] with ``matrix[..., i, k]`` = weight of input i at output k, doubly
        stochastic; a transposed view of a contiguous buffer), or ``matrix=None``.

    Note:
        Cost: O(n) per layer for the values and O(n^2) per layer for P (rows of P outside
        the range a comparator can reach are skipped), forward and backward; memory: the
        output, plus one mixing weight per comparator saved for the backward
        (n(n-1)/2 for odd-even, about :math:`n k (k+1)/4` for bitonic).
        As ``steepness`` grows the values tend to the hard sort and P to the permutation
        matrix (an exact tie gives :math:`\alpha = 1/2`). ``reciprocal``, ``cauchy`` and
        ``optimal`` are monotonic: every value is a non-decreasing function of every input,
        so gradients never have the wrong sign; ``logistic`` is not.
        A row containing NaN or +/-inf gives NaN values, P and gradients for that row only.

    Example:
        >>> r = diffcomb.sorting_network(torch.tensor([2.0, 0.0, 1.0]), steepness=1.0)
        >>> r.values
        tensor([0.5373, 0.9725, 1.4902])
        >>> r.matrix.sum(0), r.matrix.sum(1)
        (tensor([1., 1., 1.]), tensor([1., 1., 1.]))

    References:
        F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Differentiable Sorting Networks for
        Scalable Sorting and Ranking Supervision. ICML 2021. arXiv:2105.04019;
        Monotonic Differentiable Sorting Networks. ICLR 2022. arXiv:2203.09630
    """
    fn = "sorting_network"
    x = _check_x(fn, x)
    net = _check_choice(fn, "network", network, NETWORKS)
    padding = _check_choice(fn, "bitonic_padding", bitonic_padding, BITONIC_PADDINGS)
    sig = _check_choice(fn, "sigmoid", sigmoid, SIGMOIDS)
    beta = _check_steepness(fn, steepness)
    lam = _check_art_lambda(fn, art_lambda)
    with_matrix = check_flag(fn, "return_matrix", return_matrix)
    descending = check_flag(fn, "descending", descending)
    n = x.shape[-1]
    lead = x.shape[:-1]
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    rows = x.reshape(math.prod(lead), n).to(compute).contiguous()
    values, Pt, _ = torch.ops.diffcomb.sorting_network(rows, net, padding, sig, beta, lam, with_matrix)
    values = values.reshape(*lead, n).to(x.dtype)
    matrix = Pt.mT.reshape(*lead, n, n).to(x.dtype) if with_matrix else None
    if descending:
        values = values.flip(-1)
        matrix = matrix.flip(-1) if matrix is not None else None
    return SortingNetworkResult(values, matrix)


def ranking_loss(P: Tensor, target_ranks: Tensor, reduction: str = "mean") -> Tensor:
    r"""Ranking-supervision loss: binary cross-entropy between a relaxed permutation matrix and the
    true one.

    With :math:`Q_{ik} = 1` iff input :math:`i` has ascending rank :math:`k` (0-based) among
    ``target_ranks`` (a stable argsort, so ties keep input order):

    .. math::
        L = -\frac{1}{n^2} \sum_{i,k} Q_{ik} \log P_{ik} + (1 - Q_{ik}) \log (1 - P_{ik})

    computed by ``torch.nn.functional.binary_cross_entropy``, as the papers' code does
    (``torch.nn.BCELoss()(P, Q)``): each log is clamped below at -100, and the gradient is
    :math:`(P_{ik} - Q_{ik}) / (n^2 \max(P_{ik} (1 - P_{ik}), 10^{-12}))`, so that a confidently
    wrong P (entries within 1e-12 of 0 or 1) still gets a gradient. With ``reduction="mean"``
    the loss and its gradient equal ``BCELoss()(P, Q)``.

    Args:
        P (Tensor[..., n, n]): relaxed permutation matrices (``sorting_network(...).matrix``),
            ``P[..., i, k]`` = weight of input i at ascending position k; entries are clamped
            to [0, 1] (rounding can leave them just outside).
        target_ranks (Tensor[..., n]): the true ranks, or any values whose ascending order is
            the target order (only their order is used; no gradient). Integer and bool tensors
            are used as they are (their order is exact).
        reduction (str): ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (shape ``...``).

    Returns:
        Tensor: the loss, reduced over the batch dimensions.

    Note:
        A row with non-finite targets or a NaN in P gives NaN; n = 0 gives NaN (a mean over
        no entries). For a descending P, pass the negated targets.

    Example:
        >>> P = diffcomb.sorting_network(torch.tensor([2.0, 0.0, 1.0]), steepness=1.0).matrix
        >>> diffcomb.ranking_loss(P, torch.tensor([30.0, 10.0, 20.0]))
        tensor(0.3407)

    References:
        F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Differentiable Sorting Networks for
        Scalable Sorting and Ranking Supervision. ICML 2021. arXiv:2105.04019
    """
    fn = "ranking_loss"
    check_same_device(fn, P=P, target_ranks=target_ranks)
    if not isinstance(P, Tensor) or not P.is_floating_point():
        raise TypeError(f"diffcomb.{fn}: P must be a floating-point torch.Tensor, got "
                        f"{type(P).__name__ if not isinstance(P, Tensor) else P.dtype}")
    if not isinstance(target_ranks, Tensor) or target_ranks.is_complex():
        got = target_ranks.dtype if isinstance(target_ranks, Tensor) else type(target_ranks).__name__
        raise TypeError(f"diffcomb.{fn}: target_ranks must be a real torch.Tensor, got {got}")
    if P.dim() < 2 or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"diffcomb.{fn}: P must have shape (..., n, n), got {tuple(P.shape)}")
    if tuple(target_ranks.shape) != tuple(P.shape[:-1]):
        raise ValueError(f"diffcomb.{fn}: target_ranks must have shape {tuple(P.shape[:-1])} (P's shape without "
                         f"the last dimension), got {tuple(target_ranks.shape)}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"diffcomb.{fn}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    t = target_ranks.detach()
    order = torch.argsort(t.to(torch.uint8) if t.dtype == torch.bool else t, dim=-1, stable=True)
    # float16/bfloat16 in float32 (binary_cross_entropy's 1e-12 and -100 are float32 numbers)
    out_dtype = P.dtype
    P = P.float() if P.dtype in (torch.float16, torch.bfloat16) else P
    Q = torch.zeros_like(P).scatter_(-2, order.unsqueeze(-2), 1.0)
    # binary_cross_entropy requires every entry in [0, 1] and checks it by reading the values (a
    # device-side assert on CUDA): NaN entries are replaced here and their rows made NaN after.
    p = P.clamp(0.0, 1.0)
    nan = torch.isnan(p)
    bce = F.binary_cross_entropy(torch.where(nan, 0.5, p), Q, reduction="none")
    loss = bce.mean(dim=(-2, -1))
    bad = nan.any(dim=-1).any(dim=-1)
    if t.is_floating_point():
        bad = bad | ~torch.isfinite(t).all(dim=-1)
    loss = torch.where(bad, torch.full_like(loss, math.nan), loss).to(out_dtype)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class DiffSortNet(nn.Module):
    """Module form of :func:`sorting_network` for inputs of a fixed ``size`` n.

    ``forward(x)`` with x (Tensor[..., size]) returns a :class:`SortingNetworkResult`
    ``(values, matrix)``. The arguments are those of :func:`sorting_network`; for code written
    for the papers' diffsort, ``diffsort.DiffSortNet(network, size, device, steepness=b,
    distribution=s)`` is ``diffcomb.DiffSortNet(network, size, steepness=b, sigmoid=s)`` (no
    device: it follows the input), with the same outputs for every size.

    Example:
        >>> sorter = diffcomb.DiffSortNet("bitonic", 4, steepness=50.0)
        >>> values, P = sorter(torch.tensor([[3.0, 1.0, 4.0, 2.0]]))
        >>> values.round(decimals=2)
        tensor([[1.0200, 2.0100, 2.9900, 3.9800]])
    """

    def __init__(self, network: str, size: int, steepness: float = 10.0, sigmoid: str = "cauchy",
                 art_lambda: float = 0.25, return_matrix: bool = True, descending: bool = False,
                 bitonic_padding: str = "prune") -> None:
        super().__init__()
        name = "DiffSortNet"
        _check_choice(name, "network", network, NETWORKS)
        _check_choice(name, "bitonic_padding", bitonic_padding, BITONIC_PADDINGS)
        _check_choice(name, "sigmoid", sigmoid, SIGMOIDS)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"diffcomb.{name}: size must be an int >= 0, got {size!r}")
        self.network = network
        self.size = size
        self.steepness = _check_steepness(name, steepness)
        self.sigmoid = sigmoid
        self.art_lambda = _check_art_lambda(name, art_lambda)
        self.return_matrix = check_flag(name, "return_matrix", return_matrix)
        self.descending = check_flag(name, "descending", descending)
        self.bitonic_padding = bitonic_padding
        if network == "bitonic" and bitonic_padding == "prune":
            _warn_if_pruned_bitonic_unsorted(size)  # now rather than at the first call

    def extra_repr(self) -> str:
        return (f"network={self.network!r}, size={self.size}, steepness={self.steepness}, sigmoid={self.sigmoid!r}, "
                f"art_lambda={self.art_lambda}, return_matrix={self.return_matrix}, descending={self.descending}, "
                f"bitonic_padding={self.bitonic_padding!r}")

    def forward(self, x: Tensor) -> SortingNetworkResult:
        if isinstance(x, Tensor) and x.dim() >= 1 and x.shape[-1] != self.size:
            raise ValueError(f"diffcomb.DiffSortNet: expected x of shape (..., {self.size}), got {tuple(x.shape)}")
        return sorting_network(x, network=self.network, sigmoid=self.sigmoid, steepness=self.steepness,
                               art_lambda=self.art_lambda, return_matrix=self.return_matrix,
                               descending=self.descending, bitonic_padding=self.bitonic_padding)


class RankingLoss(nn.Module):
    """Module form of :func:`ranking_loss`: ``forward(P, target_ranks)``."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"diffcomb.RankingLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, P: Tensor, target_ranks: Tensor) -> Tensor:
        return ranking_loss(P, target_ranks, self.reduction)
