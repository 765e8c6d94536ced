"""Entropic optimal transport by log-domain Sinkhorn (SPEC.md section 4): :func:`sinkhorn` between
histograms, and the debiased :func:`sinkhorn_divergence` between point clouds. The custom ops and
their backward passes are diffcomb._sinkhorn_ops; the soft sort, rank and quantiles through
transport are diffcomb.transport_sort, Gumbel-Sinkhorn diffcomb.transport_permutation.

References:
    M. Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013.
    arXiv:1306.0895
    J. Feydy, T. Sejourne, F.-X. Vialard, S. Amari, A. Trouve, G. Peyre. Interpolating between
    Optimal Transport and MMD using Sinkhorn Divergences. AISTATS 2019. arXiv:1810.08278
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._checks import as_float, check_choice, check_float, check_int, check_same_device, check_tensor, check_tol
from ._checks import compute_dtype, message
from ._sinkhorn_ops import BACKWARDS, default_tol, solve

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_divergence"]


class SinkhornResult(NamedTuple):
    """Output of :func:`sinkhorn` (leading batch shape ``...``).

    plan (Tensor[..., n, m]): the transport plan P.
    cost (Tensor[...]): the regularized cost OT_eps = <P, C> + eps KL(P || a b^T).
    f (Tensor[..., n]), g (Tensor[..., m]): dual potentials (0 at zero weights).
    n_iter (Tensor[...], int64): iterations executed.
    converged (Tensor[...], bool): whether the row-marginal error reached ``tol``.

    Example:
        >>> out = diffcomb.sinkhorn(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), epsilon=0.1)
        >>> out.plan.sum(), out.converged, out.plan.round(decimals=3)
        (tensor(1.), tensor(True), tensor([[0.5000, 0.0000],
                [0.0000, 0.5000]]))
    """

    plan: Tensor
    cost: Tensor
    f: Tensor
    g: Tensor
    n_iter: Tensor
    converged: Tensor



def _marginal(fn: str, name: str, w: Optional[Tensor], lead: torch.Size, size: int, like: Tensor) -> Tensor:
    """The weights broadcast to (*lead, size) in like's dtype (uniform 1/size when None)."""
    if w is None:
        return torch.full((*lead, size), 1.0 / size if size else 0.0, dtype=like.dtype, device=like.device)
    check_tensor(fn, name, w, 1)
    if w.shape[-1] != size:
        raise ValueError(message(fn, f"{name} must have shape (..., {size}) to match the cost of shape "
                                     f"(..., {like.shape[-2]}, {like.shape[-1]}), got {tuple(w.shape)}"))
    try:
        return w.to(like.dtype).broadcast_to((*lead, size))
    except RuntimeError as exc:
        raise ValueError(message(fn, f"{name} of shape {tuple(w.shape)} does not broadcast to the batch shape "
                                     f"{tuple(lead)} of the cost")) from exc



def sinkhorn(cost: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None, epsilon: float = 0.1, *,
             max_iter: int = 1000, tol: Optional[float] = None, check_every: int = 10,
             backward: str = "implicit") -> SinkhornResult:
    r"""Entropic optimal transport between histograms by log-domain Sinkhorn iterations.

    .. math::
        \mathrm{OT}_\varepsilon(a, b, C) = \min_{P \ge 0,\ P 1 = a,\ P^\top 1 = b}
            \langle P, C\rangle + \varepsilon\, \mathrm{KL}(P \,\|\, a b^\top),
        \qquad P_{ij} = a_i b_j \exp\big((f_i + g_j - C_{ij})/\varepsilon\big)

    Args:
        cost (Tensor[..., n, m]): cost matrices; any leading batch dimensions.
        a (Tensor[..., n], optional): source weights, non-negative; uniform ``1/n`` when None.
            Broadcast against the batch.
        b (Tensor[..., m], optional): target weights with ``sum(b) == sum(a)``; uniform ``1/m`` when None.
        epsilon (float): entropic regularization, > 0. Default 0.1.
        max_iter (int): iteration limit (one iteration = the f- and the g-update). Default 1000.
        tol (float, optional): stop when ``sum_i |sum_j P_ij - a_i| <= tol`` (columns are exact after
            each iteration). Default 1e-6 for float64, 1e-4 for float32 (SPEC 4.1). ``tol=0`` runs
            exactly ``max_iter`` iterations (``converged`` is then False).
        check_every (int): test convergence every this many iterations (and at the last one). Default 10.
        backward (str): ``"implicit"`` (default): implicit differentiation of the returned plan's
            optimality conditions (see Note), no stored iterates; ``"unroll"``: backpropagation through
            the executed iterations, exact for the truncated algorithm, stores the iterates
            (``O(T (n + m))`` memory per problem).

    Returns:
        SinkhornResult: ``plan (Tensor[..., n, m])``, ``cost (Tensor[...])`` (the regularized cost above),
        ``f (Tensor[..., n])``, ``g (Tensor[..., m])`` (dual potentials, 0 at zero weights),
        ``n_iter (Tensor[...], int64)``, ``converged (Tensor[...], bool)``.

    Note:
        Each problem iterates until its own convergence, so a result does not depend on the other
        problems of the batch. Time ``O(T n m)``, memory ``O(n m)`` beyond the plan. Gradients flow to
        ``cost``, ``a`` and ``b`` from ``plan`` and ``cost``; the cost's gradient is the envelope
        gradient ``(P, f, g)`` (SPEC 4.2, exact at convergence); the potentials, ``n_iter`` and
        ``converged`` are not differentiable. Gradients with respect to ``a`` and ``b`` are defined up
        to an additive constant (the mass constraint). The implicit backward differentiates the
        optimality conditions of the returned plan with that plan's own row and column sums (they
        differ from ``a`` and ``b`` by up to ``tol``; the plan is the exact transport between them),
        so it is exact for the returned plan, converged or not. Its distance to the derivative of
        the exact transport between ``a`` and ``b`` is the forward's own error, about
        ``tol / epsilon`` relative on well-conditioned problems (up to ``tol * n_iter / epsilon``
        on slowly converging ones): lower ``tol`` when that matters.

        Autodiff: every mode (``torch.func`` transforms, ``vmap``, forward mode, double backward).
        Forward mode and the second derivatives solve the implicit system again (one conjugate
        gradient per direction); with ``backward="unroll"`` they replay the recorded iterations with
        torch ops (``O(T n m)`` time and memory). The cost's second derivative is that of its envelope
        gradient (symmetric at convergence). They hold zero weights at 0 (reverse mode gives the
        one-sided derivative of moving mass onto them).

        Convergence: a problem that stops at ``max_iter`` with a marginal error above ``tol`` has
        ``converged = False``, and the call emits one ``UserWarning`` naming the worst error (raise
        ``max_iter`` or ``epsilon``). The warning is given on every device, also inside
        ``torch.compile``d graphs (it is issued by the custom op at run time); on CUDA reading the
        errors costs one device synchronization per call (skipped while a CUDA graph is captured).
        ``tol=0`` asks for exactly ``max_iter`` iterations and never warns.

        Errors and NaN: a problem whose cost or weights contain NaN or infinity gives NaN outputs (no
        error); a problem with ``n = 0`` or ``m = 0`` has an empty plan and a NaN cost (there is no
        transport between masses 0 and 1). Shape mismatches, tensors on different devices,
        ``epsilon <= 0``, and, when ``a`` or ``b`` is given, negative weights or unequal masses raise
        (eagerly and under ``torch.compile``; checking the weights' values synchronizes once on
        CUDA). Small ``epsilon`` needs more iterations (about ``1/epsilon`` on a unit-scale cost);
        float32 with ``epsilon`` below about ``1e-3 max|C|`` is fragile.

    Example:
        >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> out = sinkhorn(C, epsilon=1.0, tol=1e-9)
        >>> out.plan
        tensor([[0.3655, 0.1345],
                [0.1345, 0.3655]])
        >>> round(float(out.cost), 4)
        0.3799

    References:
        M. Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013.
    """
    return _sinkhorn("sinkhorn", cost, a, b, epsilon, max_iter, tol, check_every, backward)


def _sinkhorn(fn: str, cost: Tensor, a: Optional[Tensor], b: Optional[Tensor], epsilon: float, max_iter: int,
              tol: Optional[float], check_every: int, backward: str) -> SinkhornResult:
    """sinkhorn, with messages in the name of the public function fn."""
    check_same_device(fn, cost=cost, a=a, b=b)
    check_tensor(fn, "cost", cost, 2)
    eps = check_float(fn, "epsilon", epsilon)
    max_iter = check_int(fn, "max_iter", max_iter, 1)
    check_every = check_int(fn, "check_every", check_every, 1)
    backward = check_choice(fn, "backward", backward, BACKWARDS)
    dtype = compute_dtype(cost.dtype)
    tol = check_tol(fn, tol, default_tol(dtype))
    C = cost.to(dtype)
    *lead, n, m = C.shape
    lead = torch.Size(lead)
    aw = _marginal(fn, "a", a, lead, n, C)
    bw = _marginal(fn, "b", b, lead, m, C)
    batch = math.prod(lead)
    # Uniform default weights are valid by construction: only given weights are checked.
    P, f, g, value, n_iter, err = solve(fn, C.reshape(batch, n, m), aw.reshape(batch, n), bw.reshape(batch, m), eps,
                                         max_iter, tol, check_every, backward == "unroll",
                                         check_weights=a is not None or b is not None)
    f = torch.where(aw.reshape(batch, n) == 0, torch.zeros_like(f), f)
    g = torch.where(bw.reshape(batch, m) == 0, torch.zeros_like(g), g)
    out_dtype = cost.dtype
    return SinkhornResult(P.reshape(*lead, n, m).to(out_dtype), value.reshape(lead).to(out_dtype),
                          f.reshape(*lead, n).to(out_dtype), g.reshape(*lead, m).to(out_dtype),
                          n_iter.reshape(lead), (err <= tol).reshape(lead))



def _sqeuclidean(x: Tensor, y: Tensor) -> Tensor:
    """|x_i - y_j|^2: by differences for few features (exact, and faster than a batched matrix
    product with an inner size of 2 or 3), else by the quadratic expansion."""
    if x.shape[-1] <= 4:
        return (x.unsqueeze(-2) - y.unsqueeze(-3)).square().sum(-1)
    return (x.square().sum(-1).unsqueeze(-1) + y.square().sum(-1).unsqueeze(-2)
            - 2.0 * (x @ y.transpose(-1, -2)))


def sinkhorn_divergence(x: Tensor, y: Tensor, epsilon: float = 0.1, *, a: Optional[Tensor] = None,
                        b: Optional[Tensor] = None, max_iter: int = 1000, tol: Optional[float] = None) -> Tensor:
    r"""Debiased Sinkhorn divergence between point clouds, squared Euclidean cost.

    .. math::
        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
            - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha) - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),
        \qquad C_{ij} = \|x_i - y_j\|^2

    Args:
        x (Tensor[..., n, d]): source points; y (Tensor[..., m, d]): target points (batch shapes
            broadcast); integer and bool tensors are used in torch's default float dtype.
        epsilon (float): entropic regularization, on the scale of the squared distances. Default 0.1.
        a (Tensor[..., n], optional), b (Tensor[..., m], optional): weights (uniform when None).
        max_iter, tol: as in :func:`sinkhorn`.

    Returns:
        Tensor[...]: the divergences (0 when the clouds are equal; non-negative).

    Note:
        Three :func:`sinkhorn` solves; gradients with respect to the points and weights are the
        envelope gradients of each term (exact at convergence). Each solve that stops at
        ``max_iter`` above ``tol`` warns as in :func:`sinkhorn`. A cloud with no points (``n = 0`` or
        ``m = 0``) gives NaN: there is no transport between masses 0 and 1 (SPEC 0).

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> float(sinkhorn_divergence(x, x, 0.1))
        0.0

    References:
        J. Feydy, T. Sejourne, F.-X. Vialard, S. Amari, A. Trouve, G. Peyre. Interpolating between
        Optimal Transport and MMD using Sinkhorn Divergences. AISTATS 2019.
    """
    fn = "sinkhorn_divergence"
    check_same_device(fn, x=x, y=y, a=a, b=b)
    x, y = as_float(x), as_float(y)
    check_tensor(fn, "x", x, 2)
    check_tensor(fn, "y", y, 2)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(message(fn, f"x and y must have the same point dimension d, got x of shape "
                                     f"{tuple(x.shape)} and y of shape {tuple(y.shape)}"))
    if x.dtype != y.dtype:
        raise TypeError(message(fn, f"x and y must have the same dtype, got {x.dtype} and {y.dtype}"))
    lead = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    x = x.expand(*lead, *x.shape[-2:])
    y = y.expand(*lead, *y.shape[-2:])

    def ot(p: Tensor, q: Tensor, wp: Optional[Tensor], wq: Optional[Tensor]) -> Tensor:
        return _sinkhorn(fn, _sqeuclidean(p, q), wp, wq, epsilon, max_iter, tol, 10, "implicit").cost

    return ot(x, y, a, b) - 0.5 * (ot(x, x, a, a) + ot(y, y, b, b))
