"""The layouts of the sorting networks (SPEC 5.1): which comparators a network on ``n`` wires runs,
layer by layer, as int32 numpy arrays that the kernels of csrc/sortnet read (sortnet.h, "Layout of a
network"). Built once per ``(network, n, bitonic_padding)`` and cached; diffcomb/_sortnet_ops.py
moves them to the device of a call.

A bitonic network for ``n`` not a power of two is, by default, the network on the next power of two
without its first wires and the comparators that touch them (SPEC 5.1, the papers' code);
``bitonic_padding="inf"`` instead appends values that sort last and routes them exactly, which
:func:`network_layout` does once, here, by renaming wires. Either way the kernels only see a list
of comparators between real values.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["BITONIC_PADDINGS", "NETWORKS", "NetworkLayout", "network_layout"]

NETWORKS = ("odd_even", "bitonic")
# How a bitonic network runs for n not a power of two (see network_layout).
BITONIC_PADDINGS = ("prune", "inf")
_MAX_COMPARATORS = 2**31 - 1  # int32 comparator indices


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
def warn_if_pruned_bitonic_unsorted(n: int) -> None:
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
    warn_if_pruned_bitonic_unsorted(n)
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
