"""Monotonic differentiable sorting networks (SPEC.md section 5): the public function.

A sorting network (odd-even transposition or bitonic) whose conditional swaps
are relaxed by a sigmoid of the gap between the two values: the outputs are
soft sorted values and a relaxed, doubly stochastic permutation matrix ``P``
(``P[i, k]`` = weight of input ``i`` at output position ``k``; ``values =
P^T x``). The pieces, one concern a file:

- diffcomb/_sortnet_layout.py: the networks' comparators, layer by layer (SPEC 5.1),
  built once per ``(network, n)``;
- diffcomb/_sortnet_ops.py: the custom ops over the native kernels (csrc/sortnet),
  with fake implementations and their autograd in every mode (diffcomb/_autodiff.py);
- diffcomb/_sortnet_tangent.py: forward mode and second derivatives (torch ops);
- this module: :func:`sorting_network` (validation, ``dim``, the batch);
- diffcomb/nn/sortnet.py: :class:`DiffSortNet`, :class:`RankingLoss`;
- diffcomb/losses/sortnet.py: :func:`ranking_loss`.

``diffcomb.sortnet.DiffSortNet``, ``RankingLoss`` and ``ranking_loss`` still resolve here.

References:
    F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Differentiable Sorting Networks for Scalable
    Sorting and Ranking Supervision. ICML 2021. arXiv:2105.04019
    F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Monotonic Differentiable Sorting Networks.
    ICLR 2022. arXiv:2203.09630
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import _sortnet_lean as lean
from ._checks import as_float, check_choice, check_dim, check_flag, check_float, check_tensor, compute_dtype
from ._sortnet_layout import BITONIC_PADDINGS, NETWORKS, NetworkLayout, network_layout
from ._sortnet_ops import SIGMOIDS, SORTING_NETWORK

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


class SortingNetworkResult(NamedTuple):
    """What :func:`sorting_network` returns.

    Example:
        >>> res = diffcomb.sorting_network(torch.tensor([2.0, 0.0, 1.0]), steepness=100.0)
        >>> res.values.round(decimals=2)
        tensor([0.0100, 1.0000, 1.9900])
        >>> res.matrix.round(decimals=2)
        tensor([[0.0000, 0.0000, 1.0000],
                [1.0000, 0.0000, 0.0000],
                [0.0000, 0.9900, 0.0000]])
    """

    values: Tensor
    """Tensor[..., n]: the relaxed sorted values."""
    matrix: Optional[Tensor]
    """Tensor[..., n, n]: the relaxed permutation matrix P (None when ``return_matrix=False``)."""


def check_options(fn: str, network: object, sigmoid: object, steepness: object, art_lambda: object,
                  bitonic_padding: object) -> None:
    """The hyper-parameters of a sorting network, as :func:`sorting_network` and DiffSortNet take them."""
    check_choice(fn, "network", network, NETWORKS)
    check_choice(fn, "sigmoid", sigmoid, SIGMOIDS)
    check_float(fn, "steepness", steepness)
    check_float(fn, "art_lambda", art_lambda, allow_minimum=True, maximum=1.0, allow_maximum=True)
    check_choice(fn, "bitonic_padding", bitonic_padding, BITONIC_PADDINGS)


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
    dim: int = -1,
) -> SortingNetworkResult:
    r"""Differentiable sorting network: relaxed sorted values and relaxed permutation matrix of ``x``
    along ``dim``.

    Every comparator ``(lo, hi)`` of the network replaces the values :math:`a` (wire lo) and
    :math:`b` (wire hi) by a convex mix with :math:`\alpha = f(b - a)`:

    .. math::
        a' = \alpha a + (1 - \alpha) b, \qquad b' = (1 - \alpha) a + \alpha b, \qquad
        P' = P\, M, \quad M_{lo,lo} = M_{hi,hi} = \alpha,\ M_{lo,hi} = M_{hi,lo} = 1 - \alpha

    starting from :math:`P = I`, so that ``values`` :math:`= P^\top x`. With
    :math:`v = \beta d` (:math:`\beta` = ``steepness``, beta in the papers) the sigmoids :math:`f(d)` are
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
        x (Tensor[..., n, ...]): values to sort along ``dim``; every other dimension is a batch.
            float16/bfloat16 are computed in float32; integer and bool tensors in torch's
            default float dtype (the outputs then have that dtype).
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
        dim (int): the axis to sort. Default -1.

    Returns:
        SortingNetworkResult: ``values`` (x's shape and dtype) and ``matrix``, the axis ``dim``
        of x replaced by two axes ``i, k`` (Tensor[..., n, n] for ``dim=-1``; x of shape
        (B, n, C) with ``dim=1`` gives (B, n, n, C)), ``matrix[..., i, k, ...]`` = weight of input
        i at output k, doubly stochastic (a transposed view of a contiguous buffer); or
        ``matrix=None``. :func:`ranking_loss` with the same ``dim`` reads this placement.

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
    codes = lean.args(x, network, sigmoid, steepness, art_lambda, return_matrix, descending, bitonic_padding, dim)
    if codes is not None:
        result = lean.sorting_network(x, codes, steepness, art_lambda, return_matrix, descending)
        if result is not None:
            return SortingNetworkResult(*result)
    fn = "sorting_network"
    x = check_tensor(fn, "x", as_float(x))
    check_options(fn, network, sigmoid, steepness, art_lambda, bitonic_padding)
    with_matrix = check_flag(fn, "return_matrix", return_matrix)
    descending = check_flag(fn, "descending", descending)
    dim = check_dim(fn, x, dim)
    moved = x.movedim(dim, -1)
    n = moved.shape[-1]
    lead = moved.shape[:-1]
    rows = moved.reshape(math.prod(lead), n).to(compute_dtype(x.dtype)).contiguous()
    values, Pt, _ = SORTING_NETWORK(
        rows, NETWORKS.index(network), BITONIC_PADDINGS.index(bitonic_padding), SIGMOIDS.index(sigmoid),
        float(steepness), float(art_lambda), with_matrix)
    values = values.reshape(*lead, n).to(x.dtype)
    matrix = Pt.mT.reshape(*lead, n, n).to(x.dtype) if with_matrix else None
    if descending:
        values = values.flip(-1)
        matrix = matrix.flip(-1) if matrix is not None else None
    if dim != x.dim() - 1:
        values = values.movedim(-1, dim)
        matrix = matrix.movedim((-2, -1), (dim, dim + 1)) if matrix is not None else None
    return SortingNetworkResult(values, matrix)


_MOVED = {"DiffSortNet": "nn", "RankingLoss": "nn", "ranking_loss": "losses"}


def __getattr__(name: str) -> object:
    """diffcomb.sortnet.DiffSortNet, RankingLoss and ranking_loss, which moved to diffcomb.nn and
    diffcomb.losses (imported on first use: those packages import this module)."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"diffcomb.{_MOVED[name]}.sortnet"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
