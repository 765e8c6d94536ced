"""Soft sort, soft rank, soft top-k, soft quantiles and isotonic regression by projection onto the
permutahedron: the public functions of the family.

Each function checks its arguments once, here (diffcomb._checks, diffcomb._isotonic_checks), moves
the user's ``dim`` to the end and flattens the batch (``to_rows``), and calls the family's custom
ops (diffcomb._isotonic_ops: the sort, Pool Adjacent Violators and the O(n) block VJP in
csrc/isotonic), so the functions work under ``torch.compile(fullgraph=True)``,
``torch.autograd.gradcheck`` and ``torch.library.opcheck``.

Math: SPEC.md section 1 (Blondel et al., "Fast Differentiable Sorting and Ranking", ICML 2020).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import as_float, check_dim, check_flag, check_int, check_same_device, check_tensor, message
from ._isotonic_checks import check_quantile_levels, check_regularization, check_strength
from . import _isotonic_lean as lean
from ._autodiff import lean_ready
from ._isotonic_ops import ISOTONIC, PROJECT_RANK, PROJECT_SORT, to_rows

__all__ = [
    "isotonic_regression",
    "soft_quantile",
    "soft_rank",
    "soft_sort",
    "soft_topk",
]


def _prepare(fn: str, x: Tensor, dim: int, descending: bool, strength: float,
             regularization: str) -> tuple[Tensor, Callable[[Tensor], Tensor], bool, float, bool]:
    """Validates a soft sort/rank call; returns (rows, restore, descending, eps, kl)."""
    x = check_tensor(fn, "x", as_float(x))
    dim = check_dim(fn, x, dim)
    descending = check_flag(fn, "descending", descending)
    eps = check_strength(fn, strength)
    kl = check_regularization(fn, regularization)
    rows, restore = to_rows(fn, x, dim)
    return rows, restore, descending, eps, kl


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
    kl = lean.sort_args(x, dim, descending, regularization_strength, regularization)
    if kl is not None:
        return lean.soft_rank(x, descending, float(regularization_strength), kl)
    rows, restore, descending, eps, kl = _prepare("soft_rank", x, dim, descending, regularization_strength,
                                                  regularization)
    n = rows.shape[-1]
    rho = torch.arange(n, 0, -1, dtype=rows.dtype, device=rows.device)
    scale = (-1.0 if descending else 1.0) / eps
    out = PROJECT_RANK(rows, rho.log() if kl else rho, scale, kl)[0]
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
    kl = lean.sort_args(x, dim, descending, regularization_strength, regularization)
    if kl is not None:
        return lean.soft_sort(x, descending, float(regularization_strength), kl)
    rows, restore, descending, eps, kl = _prepare("soft_sort", x, dim, descending, regularization_strength,
                                                  regularization)
    n = rows.shape[-1]
    c = torch.arange(n, 0, -1, dtype=rows.dtype, device=rows.device) / eps
    sign = 1.0 if descending else -1.0
    out = PROJECT_SORT(rows, c, sign, kl)[0]
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
    if (lean_ready(x) and lean.common(x, dim, regularization_strength) and type(k) is int
            and 0 <= k <= x.shape[-1]):
        return lean.soft_topk(x, k, float(regularization_strength))
    fn = "soft_topk"
    x = check_tensor(fn, "x", as_float(x))
    dim = check_dim(fn, x, dim)
    eps = check_strength(fn, regularization_strength)
    n = x.shape[dim]
    check_int(fn, "k", k, 0, n)
    rows, restore = to_rows(fn, x, dim)
    w = (torch.arange(n, device=rows.device) < k).to(rows.dtype)
    out = PROJECT_RANK(rows, w, 1.0 / eps, False)[0]
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
    x = check_tensor("soft_quantile", "x", as_float(x))
    dim = check_dim("soft_quantile", x, dim)
    check_strength("soft_quantile", regularization_strength)
    check_regularization("soft_quantile", regularization)
    n = x.shape[dim]
    if n == 0:
        raise ValueError(message("soft_quantile", f"x must have at least one element along dim={dim}"))
    scalar, levels = check_quantile_levels("soft_quantile", q)
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
    if sample_weight is None and lean_ready(y) and lean.common(y, dim) and (increasing is True or increasing is False):
        return lean.isotonic(y, increasing)
    fn = "isotonic_regression"
    check_same_device(fn, y=y, sample_weight=sample_weight)
    y = check_tensor(fn, "y", as_float(y))
    dim = check_dim(fn, y, dim)
    increasing = check_flag(fn, "increasing", increasing)
    rows, restore = to_rows(fn, y, dim)
    weight_rows = None
    if sample_weight is not None:
        sample_weight = check_tensor(fn, "sample_weight", as_float(sample_weight))
        try:
            expanded = sample_weight.broadcast_to(y.shape)
        except RuntimeError as exc:
            raise ValueError(message(fn, f"sample_weight of shape {tuple(sample_weight.shape)} does not broadcast "
                                         f"to y's shape {tuple(y.shape)}")) from exc
        weight_rows, _ = to_rows(fn, expanded.to(y.dtype), dim)
    out = ISOTONIC(rows, weight_rows, increasing)[0]
    return restore(out)
