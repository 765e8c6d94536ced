"""Sparse soft top-k: the top-k mask as a p-norm regularized projection onto the permutahedron,
and a mixture-of-experts router built on it.

The mask is the solution of a strongly concave problem over the permutahedron of
``w_k = (1, ..., 1, 0, ..., 0)`` (k ones), which is the capped simplex
``{y in [0, 1]^n : sum(y) = k}``. After a stable descending sort it reduces to isotonic
regression, solved by the Pool Adjacent Violators machinery of the permutahedron family
(csrc/isotonic/isotonic.h) with a p-norm block solve (csrc/isotonic/sparse_topk.h): the
block value is the root of a monotone scalar equation, a mean for p = 2 and the root of a cubic
in the block's moments for p = 4/3. For any other p a block has no finite summary; since w
takes two values the solution has a single partly selected block, and its threshold is found
directly as the root of one monotone equation. The backward is the O(n) block
vector-Jacobian product of the same family.

This module shares the permutahedron family's native kernels and boundary helpers
(``diffcomb.isotonic``); its ops are ``torch.library`` custom ops with fake implementations and
autograd, so they work under ``torch.compile(fullgraph=True)``, gradcheck and opcheck.

Math: M. E. Sander, J. Puigcerver, J. Djolonga, G. Peyre, M. Blondel. Fast, Differentiable and
Sparse Top-k: a Convex Analysis Perspective. ICML 2023, arXiv:2302.01425.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import _native
from ._checks import as_float, check_flag
from .isotonic import _VJP_RANK, _argsort_descending, _check_dim, _check_strength, _check_tensor, _to_rows

__all__ = ["TopKRouting", "sparse_soft_topk", "topk_routing"]

_QUADRATIC, _CUBIC, _POWER = 0, 1, 2  # csrc/isotonic/sparse_topk.h, TopkMethod


# ---------------------------------------------------------------------------
# Validation, at the public boundary only.


def _check_p(fn: str, p: float) -> float:
    if isinstance(p, Tensor) or isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"diffcomb.{fn}: p must be a Python float, got {type(p).__name__}")
    # Comparisons only (no math.isfinite), so a symbolic float under torch.compile passes.
    if not 1.0 < p <= 2.0:
        raise ValueError(f"diffcomb.{fn}: p must satisfy 1 < p <= 2, got {p}")
    return float(p)


def _check_k(fn: str, k: int, n: int, what: str = "n") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"diffcomb.{fn}: k must be an int with 0 <= k <= {what} = {n}, got {k!r}")
    return k


def _method(p: float) -> tuple[int, float]:
    """(block-solve code, psi exponent r = 1 / (p - 1))."""
    if p == 2.0:
        return _QUADRATIC, 1.0
    if p == 4.0 / 3.0:
        return _CUBIC, 3.0
    return _POWER, 1.0 / (p - 1.0)


# ---------------------------------------------------------------------------
# Custom ops. The forward returns its saved block structure as extra outputs:
#   perm    int32 (B, n)      the stable descending argsort of x
#   starts  int32 (B, n + 1)  block starts, starts[:, n] = number of blocks
#   weights (B, n)            the VJP's block weights a / sum_B(a), sorted order
#   deriv   (B, n)            a = psi'(s - v), input order (0 on blocks of only 0s or only 1s)


@torch.library.custom_op("diffcomb::sparse_topk", mutates_args=())
def _sparse_topk_op(x: Tensor, k: int, scale: float, method: int,
                    exponent: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The sparse soft top-k mask of rows x (B, n) with z = scale * x; method and exponent as _method."""
    rows, n = x.shape
    s, perm = _argsort_descending(x, scale)
    out = torch.empty_like(x)
    deriv = torch.empty_like(x)
    starts = torch.empty((rows, n + 1), dtype=torch.int32, device=x.device)
    weights = torch.empty_like(x)
    args = (_native.address(s), _native.address(perm), _native.address(out), _native.address(deriv),
            _native.address(starts), _native.address(weights))
    if x.is_cuda:
        module = _native.cuda("sparse_soft_topk")
        work = torch.empty(module.sparse_topk_work_bytes(rows, n), dtype=torch.uint8, device=x.device)
        device, stream = _native.stream_of(x)
        module.sparse_topk(*args, _native.address(work), rows, n, k, exponent, method, _native.dtype_code(x),
                           device, stream)
    else:
        _native.cpu().sparse_topk(*args, rows, n, k, exponent, method, _native.dtype_code(x), _native.threads(), 0)
    return out, perm, starts, weights, deriv


@_sparse_topk_op.register_fake
def _(x: Tensor, k: int, scale: float, method: int, exponent: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    rows, n = x.shape
    return (torch.empty_like(x), x.new_empty((rows, n), dtype=torch.int32),
            x.new_empty((rows, n + 1), dtype=torch.int32), torch.empty_like(x), torch.empty_like(x))


def _setup_sparse_topk(ctx, inputs, output) -> None:
    _, _, scale, _, _ = inputs
    _, perm, starts, weights, deriv = output
    ctx.mark_non_differentiable(perm, starts, weights, deriv)
    ctx.save_for_backward(perm, starts, weights, deriv)
    ctx.scale = scale


def _backward_sparse_topk(ctx, grad_out, *_):
    perm, starts, weights, deriv = ctx.saved_tensors
    g = torch.zeros_like(deriv) if grad_out is None else grad_out
    # dx = scale * (u - pi * sum_B u) with u = a * g: the permutahedron family's rank-mode block VJP.
    u = (deriv * g).contiguous()
    dx = torch.ops.diffcomb.isotonic_vjp(u, perm, starts, weights, ctx.scale, _VJP_RANK)
    return dx, None, None, None, None


torch.library.register_autograd("diffcomb::sparse_topk", _backward_sparse_topk, setup_context=_setup_sparse_topk)


# ---------------------------------------------------------------------------
# Public functions.


def sparse_soft_topk(
    x: Tensor,
    k: int,
    dim: int = -1,
    regularization_strength: float = 1.0,
    p: float = 4.0 / 3.0,
    magnitude: bool = False,
) -> Tensor:
    r"""Sparse soft top-k mask of ``x`` along ``dim``: entries in [0, 1], exactly 0 outside a
    neighbourhood of the top k, summing to ``k``.

    The mask maximizes a p-norm regularized linear objective over the permutahedron of
    :math:`w_k = (1, \dots, 1, 0, \dots, 0)` (``k`` ones), the capped simplex:

    .. math::
        m = \arg\max_{\mu \in \mathcal{P}(w_k)} \langle \mu, x \rangle
            - \frac{\varepsilon}{p} \sum_i |\mu_i|^p,
        \qquad \mathcal{P}(w_k) = \{\mu \in [0, 1]^n : \textstyle\sum_i \mu_i = k\}

    Equivalently :math:`m_i = \mathrm{clip}((x_i / \varepsilon - \tau)^{1/(p-1)}, 0, 1)` with the
    threshold :math:`\tau` that makes the entries sum to ``k``. ``p = 2`` is the Euclidean
    projection, :func:`diffcomb.soft_topk` (same values); ``p < 2`` makes the mask smoother at the
    edges of its support (``p = 4/3`` is continuously differentiable) while keeping it sparse.

    Args:
        x (Tensor[..., n, ...]): scores; integer tensors are converted to the default float dtype,
            float16/bfloat16 are computed in float32.
        k (int): how many entries to select, ``0 <= k <= n``.
        dim (int): the dimension to select along; every other dimension is a batch. Default -1.
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        p (float): the norm, ``1 < p <= 2``. Default 4/3.
        magnitude (bool): select the ``k`` entries largest in absolute value: the result is the
            mask of ``|x|`` (its gradient reaches ``x`` through ``sign(x)``), and ``x * mask`` is the
            soft top-k in magnitude (its hard limit is ``x`` on the ``k`` largest ``|x|``, 0
            elsewhere). Default False.

    Returns:
        Tensor[..., n, ...]: the mask, same shape and dtype as ``x``.

    Note:
        O(n log n) forward (a stable sort, then PAV for ``p = 2`` and ``p = 4/3``, a threshold
        solve in O(log n + m) per Newton step for other ``p``, m = the number of entries strictly
        between 0 and 1) and O(n) backward. Values are exact to machine precision. As
        :math:`\varepsilon \to 0` the mask is the hard top-k indicator (exactly, once
        :math:`\varepsilon` is below the gap between the k-th and (k+1)-th largest values); as
        :math:`\varepsilon \to \infty` every entry tends to ``k / n``. Ties between the k-th and
        (k+1)-th values share the mass. Entries equal to 0 or 1 have zero gradient. A slice
        containing NaN or +/-inf gives NaN for that slice (values and gradients).
        ``p`` close to 1 approaches the unregularized problem (p = 1, a linear program whose
        solution is the hard top-k), which is excluded.

    Example:
        >>> diffcomb.sparse_soft_topk(torch.tensor([0.1, 2.0, -1.0, 1.5, 0.3]), k=2, regularization_strength=2.0, p=2)
        tensor([0.0667, 1.0000, 0.0000, 0.7667, 0.1667])

    References:
        M. E. Sander, J. Puigcerver, J. Djolonga, G. Peyre, M. Blondel. Fast, Differentiable and
        Sparse Top-k: a Convex Analysis Perspective. ICML 2023. arXiv:2302.01425
    """
    fn = "sparse_soft_topk"
    x = as_float(x)
    _check_tensor(fn, "x", x)
    dim = _check_dim(fn, x, dim)
    eps = _check_strength(fn, regularization_strength)
    p = _check_p(fn, p)
    check_flag(fn, "magnitude", magnitude)
    _check_k(fn, k, x.shape[dim])
    if magnitude:
        x = x.abs()
    rows, restore = _to_rows(x, dim)
    method, exponent = _method(p)
    out = torch.ops.diffcomb.sparse_topk(rows, k, 1.0 / eps, method, exponent)[0]
    return restore(out)


class TopKRouting(NamedTuple):
    """The result of :func:`topk_routing` (``E`` experts, tokens ``...``).

    Attributes:
        combine_weights (Tensor[..., E]): the weight of each expert's output in the token's
            output; exactly 0 for the experts a token does not use.
        mask (Tensor[..., E]): the sparse soft top-k mask of the logits (in [0, 1], sums to k).
        gates (Tensor[..., E]): softmax of the logits.
        load (Tensor[E]): the fraction of tokens dispatched to each expert (mask > 0); no gradient.
        importance (Tensor[E]): the mean gate of each expert over the tokens (sums to 1).
        balance_loss (Tensor[]): ``E * sum_e (mean mask_e / k) * importance_e``, 1 for a uniform
            router; differentiable through both factors (the mask is soft), add it times a small
            coefficient to the training loss to balance the experts.
        experts_per_token (Tensor[]): the mean number of experts a token uses (>= k: tokens whose
            k-th and (k+1)-th experts score closely use both, with fractional weights).
    """

    combine_weights: Tensor
    mask: Tensor
    gates: Tensor
    load: Tensor
    importance: Tensor
    balance_loss: Tensor
    experts_per_token: Tensor


def topk_routing(
    logits: Tensor,
    k: int,
    regularization_strength: float = 1.0,
    p: float = 4.0 / 3.0,
    normalize: bool = False,
) -> TopKRouting:
    r"""Mixture-of-experts routing with the sparse soft top-k: each token uses about ``k`` experts,
    with weights that are differentiable in the router logits.

    .. math::
        m = \mathrm{sparse\_soft\_topk}(\ell, k; \varepsilon, p), \qquad
        g = \mathrm{softmax}(\ell), \qquad
        c = m \odot g \quad (\text{or } m \odot g / \textstyle\sum_e m_e g_e \text{ with normalize})

    Args:
        logits (Tensor[..., E]): router logits of each token over ``E`` experts.
        k (int): experts per token, ``1 <= k <= E``.
        regularization_strength (float): :math:`\varepsilon > 0` of the top-k, in the units of
            the logits. Default 1.0.
        p (float): the norm of :func:`sparse_soft_topk`, ``1 < p <= 2``. Default 4/3.
        normalize (bool): rescale each token's combine weights to sum to 1. Default False.

    Returns:
        TopKRouting: combine weights, mask, gates and the load statistics (see its attributes).

    Note:
        Dispatch a token only to the experts with ``combine_weights > 0`` (or ``mask > 0``); the
        other experts contribute exactly 0. Unlike a hard top-k router, the selection itself
        receives a gradient: the logits of experts near the k-th place are pushed by the loss.
        O(E log E) per token.

    Example:
        >>> r = diffcomb.topk_routing(torch.tensor([[2.0, 1.0, -1.0, 0.5]]), k=2, regularization_strength=0.5)
        >>> r.mask
        tensor([[1., 1., 0., 0.]])

    References:
        M. E. Sander, J. Puigcerver, J. Djolonga, G. Peyre, M. Blondel. Fast, Differentiable and
        Sparse Top-k: a Convex Analysis Perspective. ICML 2023. arXiv:2302.01425
    """
    fn = "topk_routing"
    logits = as_float(logits)
    _check_tensor(fn, "logits", logits)
    num_experts = logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_experts:
        raise ValueError(f"diffcomb.{fn}: k must be an int with 1 <= k <= E = {num_experts} (the number of "
                         f"experts, logits.shape[-1]), got {k!r}")
    check_flag(fn, "normalize", normalize)
    mask = sparse_soft_topk(logits, k, -1, regularization_strength, p)
    gates = torch.softmax(logits, dim=-1)
    combine = mask * gates
    if normalize:
        combine = combine / combine.sum(-1, keepdim=True)
    flat_mask = mask.reshape(-1, num_experts)
    tokens = flat_mask.shape[0]
    selected = (flat_mask > 0).to(mask.dtype)
    load = selected.mean(0) if tokens else selected.sum(0)
    importance = gates.reshape(-1, num_experts).mean(0)
    balance_loss = num_experts * ((flat_mask.mean(0) / k) * importance).sum()
    experts_per_token = selected.sum(-1).mean()
    return TopKRouting(combine, mask, gates, load, importance, balance_loss, experts_per_token)
