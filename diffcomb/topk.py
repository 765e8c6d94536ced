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

This module shares the permutahedron family's native kernels, custom ops and checks
(``diffcomb._isotonic_ops``, ``diffcomb._isotonic_checks``); its op is wired by
``diffcomb._autodiff.define`` (a ``torch.library`` custom op with a fake implementation and autograd,
forward mode, a folding vmap rule and exact second derivatives), so it works under every autodiff
mode, ``torch.compile(fullgraph=True)``, gradcheck and opcheck.

Math: M. E. Sander, J. Puigcerver, J. Djolonga, G. Peyre, M. Blondel. Fast, Differentiable and
Sparse Top-k: a Convex Analysis Perspective. ICML 2023, arXiv:2302.01425.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import _native
from ._checks import as_float, check_dim, check_flag, check_int, check_op, check_tensor
from ._isotonic_checks import check_p, check_strength
from ._autodiff import ROW, define, save
from ._isotonic_ops import (VJP, VJP_PLAIN, VJP_RANK, argsort_descending, block_sum, check_op_rows, from_sorted,
                            to_rows, to_sorted, vjp_transpose)

__all__ = ["TopKRouting", "sparse_soft_topk", "topk_routing"]

_QUADRATIC, _CUBIC, _POWER = 0, 1, 2  # csrc/isotonic/sparse_topk.h, TopkMethod


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


def _check_op_args(x: Tensor, k: int, scale: float, method: int, exponent: float) -> None:
    """The op's own arguments (a direct torch.ops.diffcomb.sparse_topk call), as diffcomb._isotonic_ops."""
    op = "torch.ops.diffcomb.sparse_topk"
    check_op_rows("sparse_topk", "x", x)
    n = x.shape[1]
    check_op(0 <= k <= n, lambda: f"{op}: k must be in [0, {n}], got {k}", ValueError)
    check_op(-math.inf < scale < math.inf, lambda: f"{op}: scale must be a finite float, got {scale}", ValueError)
    check_op(method in (_QUADRATIC, _CUBIC, _POWER),
             lambda: f"{op}: method must be {_QUADRATIC}, {_CUBIC} or {_POWER}, got {method}", ValueError)
    check_op(1.0 <= exponent < math.inf, lambda: f"{op}: exponent must be >= 1 and finite, got {exponent}", ValueError)


def sparse_topk_rows(x: Tensor, k: int, scale: float, method: int, exponent: float,
                     chunk: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out, perm, starts, weights, deriv) of rows x (B, n); chunk > 0 (CPU, tests) runs the chunked PAV."""
    rows, n = x.shape
    s, perm = argsort_descending(x, scale)
    out = torch.empty_like(x)
    deriv = torch.empty_like(x)
    starts = torch.empty((rows, n + 1), dtype=torch.int32, device=x.device)
    weights = torch.empty_like(x)
    args = (_native.address(s), _native.address(perm), _native.address(out), _native.address(deriv),
            _native.address(starts), _native.address(weights), rows, n, k, exponent, method, _native.dtype_code(x))
    if chunk:
        _native.cpu().sparse_topk(*args, _native.threads(), chunk)
    else:
        _native.launch("sparse_soft_topk", "sparse_topk", x, *args, workspace=("sparse_topk_work_bytes", (rows, n)))
    return out, perm, starts, weights, deriv


def _sparse_topk_impl(x: Tensor, k: int, scale: float, method: int,
                      exponent: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The sparse soft top-k mask of rows x (B, n) with z = scale * x; method and exponent as _method."""
    _check_op_args(x, k, scale, method, exponent)
    return sparse_topk_rows(x, k, scale, method, exponent)


def _sparse_topk_fake(x: Tensor, k: int, scale: float, method: int,
                      exponent: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    _check_op_args(x, k, scale, method, exponent)
    rows, n = x.shape
    return (torch.empty_like(x), x.new_empty((rows, n), dtype=torch.int32),
            x.new_empty((rows, n + 1), dtype=torch.int32), torch.empty_like(x), torch.empty_like(x))


# Derivatives. With P the gather through perm, S the block sums and a, pi as above, the mask's
# Jacobian is J = scale D_a P^T (I - S D_pi) P: the backward is the family's rank-mode block VJP of
# a * g, the jvp its transpose times a. On a mixed block a = r |y|^(2 - p) (y the mask), so a and
# pi = P a / S P a are functions of the mask: differentiable outputs (da = (2 - p) a / y dy, dpi =
# (dPa - pi S dPa) / S P a) whose cotangents fold into the mask's, which makes the backward's VJP
# call exactly differentiable (double backward). p = 2: a and pi are piecewise constant.


def _setup_sparse_topk(ctx, inputs, output) -> None:
    _, _, scale, _, exponent = inputs
    out, perm, starts, weights, deriv = output
    ctx.power = 1.0 - 1.0 / exponent  # 2 - p
    ctx.mark_non_differentiable(perm, starts, *(() if ctx.power else (weights, deriv)))
    ctx.set_materialize_grads(False)
    save(ctx, perm, starts, weights, deriv, out)
    ctx.scale = scale


def _deriv_ratio(deriv: Tensor, out: Tensor, power: float) -> Tensor:
    """d a / d y = (2 - p) a / y (0 where y = 0, where a = 0 too)."""
    return power * deriv / torch.where(out == 0, torch.ones_like(out), out)


def _block_total(deriv: Tensor, perm: Tensor, starts: Tensor) -> Tensor:
    """S P a, 1 on pure blocks (where a = pi = 0)."""
    total = block_sum(to_sorted(deriv, perm), starts)
    return torch.where(total > 0, total, torch.ones_like(total))


def _backward_sparse_topk(ctx, grad_out, _perm, _starts, grad_weights, grad_deriv):
    perm, starts, weights, deriv, out = ctx.saved_tensors
    u = grad_out
    if grad_weights is not None or grad_deriv is not None:  # second derivatives (p < 2)
        dderiv = torch.zeros_like(deriv) if grad_deriv is None else grad_deriv
        if grad_weights is not None:
            dsorted = (grad_weights - block_sum(weights * grad_weights, starts)) / _block_total(deriv, perm, starts)
            dderiv = dderiv + from_sorted(dsorted, perm)
        dy = dderiv * _deriv_ratio(deriv, out, ctx.power)
        u = dy if u is None else u + dy
    if u is None:
        return None, None, None, None, None
    dx = VJP((deriv * u).contiguous(), perm, starts, weights, ctx.scale, VJP_RANK)
    return dx, None, None, None, None


def _jvp_sparse_topk(ctx, tx, *_):
    perm, starts, weights, deriv, out = ctx.saved_tensors
    if tx is None:
        zeros = torch.zeros_like(deriv)
        return (zeros, None, None) + ((zeros, zeros) if ctx.power else (None, None))
    tx = tx.contiguous()
    if not ctx.power:  # p = 2: pi = 1/|B| on the mixed block (0 elsewhere) is block-constant, S D_pi = D_pi S
        return deriv * VJP(tx, perm, starts, weights, ctx.scale, VJP_RANK), None, None, None, None
    tout = deriv * vjp_transpose(tx, perm, starts, weights, ctx.scale, VJP_RANK)
    tderiv = _deriv_ratio(deriv, out, ctx.power) * tout
    tsorted = to_sorted(tderiv, perm).contiguous()
    tweights = (tsorted - VJP(tsorted, starts, starts, weights, 1.0, VJP_PLAIN)) / _block_total(deriv, perm, starts)
    return tout, None, None, tweights, tderiv


SPARSE_TOPK = define("sparse_topk", _sparse_topk_impl, _sparse_topk_fake, kinds=(ROW, None, None, None, None),
                     setup=_setup_sparse_topk, backward=_backward_sparse_topk, jvp=_jvp_sparse_topk)


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
    x = check_tensor(fn, "x", as_float(x))
    dim = check_dim(fn, x, dim)
    eps = check_strength(fn, regularization_strength)
    p = check_p(fn, p)
    check_flag(fn, "magnitude", magnitude)
    check_int(fn, "k", k, 0, x.shape[dim])
    if magnitude:
        x = x.abs()
    rows, restore = to_rows(fn, x, dim)
    method, exponent = _method(p)
    out = SPARSE_TOPK(rows, k, 1.0 / eps, method, exponent)[0]
    return restore(out)


class TopKRouting(NamedTuple):
    """The result of :func:`topk_routing` (``E`` experts, tokens ``...``; the expert dimension is
    the routing's ``dim``, shown last here).

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

    Example:
        >>> r = diffcomb.topk_routing(torch.tensor([[2.0, 0.0, 1.0, -1.0]]), k=1, regularization_strength=0.1)
        >>> r.mask
        tensor([[1., 0., 0., 0.]])
        >>> r.load
        tensor([1., 0., 0., 0.])
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
    dim: int = -1,
) -> TopKRouting:
    r"""Mixture-of-experts routing with the sparse soft top-k: each token uses about ``k`` experts,
    with weights that are differentiable in the router logits.

    .. math::
        m = \mathrm{sparse\_soft\_topk}(\ell, k; \varepsilon, p), \qquad
        g = \mathrm{softmax}(\ell), \qquad
        c = m \odot g \quad (\text{or } m \odot g / \textstyle\sum_e m_e g_e \text{ with normalize})

    Args:
        logits (Tensor[..., E, ...]): router logits of each token over ``E`` experts (along ``dim``).
        k (int): experts per token, ``1 <= k <= E``.
        regularization_strength (float): :math:`\varepsilon > 0` of the top-k, in the units of
            the logits. Default 1.0.
        p (float): the norm of :func:`sparse_soft_topk`, ``1 < p <= 2``. Default 4/3.
        normalize (bool): rescale each token's combine weights to sum to 1. Default False.
        dim (int): the expert dimension; every other dimension indexes tokens. Default -1.

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
    logits = check_tensor(fn, "logits", as_float(logits))
    dim = check_dim(fn, logits, dim)
    num_experts = logits.shape[dim]
    check_int(fn, "k", k, 1, num_experts)
    check_flag(fn, "normalize", normalize)
    mask = sparse_soft_topk(logits, k, dim, regularization_strength, p)
    gates = torch.softmax(logits, dim=dim)
    combine = mask * gates
    if normalize:
        combine = combine / combine.sum(dim, keepdim=True)
    flat_mask = mask.movedim(dim, -1).reshape(-1, num_experts)
    tokens = flat_mask.shape[0]
    selected = (flat_mask > 0).to(mask.dtype)
    load = selected.mean(0) if tokens else selected.sum(0)
    importance = gates.movedim(dim, -1).reshape(-1, num_experts).mean(0)
    balance_loss = num_experts * ((flat_mask.mean(0) / k) * importance).sum()
    experts_per_token = selected.sum(-1).mean()
    return TopKRouting(combine, mask, gates, load, importance, balance_loss, experts_per_token)
