"""Fenchel-Young losses over the permutahedron and the Birkhoff polytope.

For a regularizer :math:`\\Omega` restricted to a polytope :math:`\\mathcal C`, the Fenchel-Young
loss of scores :math:`\\theta` against a target :math:`y \\in \\mathcal C` is

.. math::
    L(\\theta; y) = \\Omega^*(\\theta) + \\Omega(y) - \\langle \\theta, y \\rangle \\ge 0,
    \\qquad \\nabla_\\theta L = \\hat y(\\theta) - y,
    \\qquad \\hat y(\\theta) = \\arg\\max_{\\mu \\in \\mathcal C} \\langle \\theta, \\mu \\rangle - \\Omega(\\mu)

so the prediction diffcomb already computes (a permutahedron projection, an entropic transport
plan) is the loss's gradient: label ranking and permutation learning get a convex loss in
:math:`\\theta` whose gradient needs no sampling and no differentiation through the solver.

The value is exact for the computed prediction: :math:`\\Omega^*(\\theta) = \\langle \\theta, \\hat
y\\rangle - \\Omega(\\hat y)`, evaluated in a form whose terms are all non-negative (no cancellation
when the prediction is close to the target). Each polytope is one ``torch.library`` custom op
with a fake kernel and a registered autograd rule (gradient :math:`\\hat y - y`), so the loss
works under ``torch.compile(fullgraph=True)``, ``gradcheck`` and ``opcheck``.

References:
    M. Blondel, A. F. T. Martins, V. Niculae. Learning with Fenchel-Young Losses. JMLR 21(35), 2020.
    arXiv:1901.02324
    M. Blondel. Structured Prediction with Projection Oracles. NeurIPS 2019. arXiv:1910.11369
    M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking.
    ICML 2020. arXiv:2002.08871
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ._checks import (check_choice, check_dim, check_int, check_reduction, check_tensor, check_tol,
                      compute_dtype, message, reduce)
from ._checks import check_target
from ._isotonic_checks import check_regularization, check_strength
from ._autodiff import ROW, define, save
from ._isotonic_ops import PROJECT_RANK, project_rank_impl, to_rows
from ._sinkhorn_derivatives import plan_cotangent, plan_tangent
from ._sinkhorn_ops import solve_system, warn
from .transport import sinkhorn

__all__ = ["fenchel_young_loss"]

POLYTOPES = ("permutahedron", "birkhoff")


# ---------------------------------------------------------------------------
# Target membership (read on the device, never raised: a target outside the polytope gives an
# infinite loss, as Omega(y) = +inf there, and NaN gradients).


def _in_permutahedron(target: Tensor) -> Tensor:
    """(B,) bool: whether each row of target (B, n) lies in P(rho), rho = (n, ..., 1): sorted
    descending, every prefix sum is at most that of rho, and the sums are equal (SPEC 1.1)."""
    rows, n = target.shape
    if n == 0:
        return torch.ones(rows, dtype=torch.bool, device=target.device)
    t = target.to(torch.float64)
    prefix = t.sort(-1, descending=True).values.cumsum(-1)
    k = torch.arange(1, n + 1, dtype=torch.float64, device=target.device)
    bound = k * n - k * (k - 1) / 2  # sum of the k largest entries of rho
    total = n * (n + 1) / 2
    # Targets rounded entry by entry to the input dtype (e.g. float32 soft ranks) pass; a shift
    # of the whole vector by 1 (0-based ranks) moves the sum by n and does not.
    tol = 4.0 * torch.finfo(target.dtype).eps * total
    return (prefix <= bound + tol).all(-1) & ((prefix[:, -1] - total).abs() <= tol)


def _in_birkhoff(target: Tensor) -> Tensor:
    """(B,) bool: whether each matrix of target (B, n, n) is doubly stochastic (rows and columns
    sum to 1, entries >= 0)."""
    batch, n, _ = target.shape
    if n == 0:
        return torch.ones(batch, dtype=torch.bool, device=target.device)
    t = target.to(torch.float64)
    tol = 4.0 * n * torch.finfo(target.dtype).eps
    rows_ok = ((t.sum(-1) - 1).abs() <= tol).all(-1)
    cols_ok = ((t.sum(-2) - 1).abs() <= tol).all(-1)
    return rows_ok & cols_ok & (t >= 0).flatten(1).all(-1)


# ---------------------------------------------------------------------------
# Permutahedron: prediction = soft rank (ascending), i.e. the projection of theta / eps onto
# P(rho) (L2) or its KL analogue (SPEC 1.1). Omega(mu) = eps/2 ||mu||^2 (l2) or
# eps <mu, log mu - 1> (kl), restricted to P(rho).


def _rank_prediction(theta: Tensor, eps: float, kl: bool, differentiable: bool = True) -> Tensor:
    """The ascending soft rank of rows theta (B, n) (its log for kl), through the differentiable
    projection op (or, inside the op's own implementation, the projection's implementation)."""
    n = theta.shape[-1]
    rho = torch.arange(n, 0, -1, dtype=theta.dtype, device=theta.device)
    project = PROJECT_RANK if differentiable else project_rank_impl
    return project(theta, rho.log() if kl else rho, 1.0 / eps, kl)[0]


def _fy_permutahedron_impl(theta: Tensor, target: Tensor, eps: float, kl: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(loss (B), prediction (B, n), valid (B) bool) for rows theta, target (B, n)."""
    out = _rank_prediction(theta, eps, kl, differentiable=False)
    if kl:
        # L = eps [<theta/eps - log r, r - y> + sum(y log(y/r) - y + r)]: the first term is >= 0
        # (optimality of r), the second a generalized KL divergence (>= 0 term by term).
        r = out.exp()
        kl_terms = torch.xlogy(target, target) - target * out - target + r
        loss = eps * ((theta / eps - out) * (r - target) + kl_terms).sum(-1)
    else:
        # L = <theta - eps r, r - y> + eps/2 ||r - y||^2, both terms >= 0 (r is the projection).
        r = out
        diff = r - target
        loss = ((theta - eps * r) * diff + 0.5 * eps * diff * diff).sum(-1)
    loss = loss.clamp_min(0.0)  # >= 0 in exact arithmetic; rounding may leave -1e-16 (NaN stays NaN)
    valid = _in_permutahedron(target)
    loss = torch.where(valid, loss, torch.full_like(loss, math.inf))
    return loss, r, valid


def _fy_permutahedron_fake(theta: Tensor, target: Tensor, eps: float, kl: bool) -> tuple[Tensor, Tensor, Tensor]:
    rows, n = theta.shape
    return theta.new_empty(rows), torch.empty_like(theta), theta.new_empty(rows, dtype=torch.bool)


def _setup_permutahedron(ctx, inputs, output) -> None:
    theta, target, eps, kl = inputs
    _, r, valid = output
    ctx.mark_non_differentiable(r, valid)
    save(ctx, theta, target, r, valid)
    ctx.eps, ctx.kl = eps, kl


def _gradient_permutahedron(ctx, differentiable: bool) -> Tensor:
    """The loss's gradient r - y (NaN rows for targets outside the polytope). differentiable: the
    prediction rebuilt with the differentiable soft-rank op, whose Jacobian is the loss's Hessian
    (double backward, forward mode nested in reverse mode, and higher orders)."""
    theta, target, r, valid = ctx.saved_tensors
    if differentiable:
        r = _rank_prediction(theta, ctx.eps, ctx.kl)
        r = r.exp() if ctx.kl else r
    return torch.where(valid.unsqueeze(-1), r - target, torch.full_like(r, math.nan))


def _backward_permutahedron(ctx, grad_loss, _grad_r, _grad_valid):
    grad = grad_loss.unsqueeze(-1) * _gradient_permutahedron(ctx, torch.is_grad_enabled())
    return grad, None, None, None


def _jvp_permutahedron(ctx, ttheta, _target, _eps, _kl):
    theta = ctx.saved_tensors[0]
    if ttheta is None:
        return theta.new_zeros(theta.shape[0]), None, None
    return (_gradient_permutahedron(ctx, True) * ttheta).sum(-1), None, None


FY_PERMUTAHEDRON = define("fenchel_young_permutahedron", _fy_permutahedron_impl, _fy_permutahedron_fake,
                          kinds=(ROW, ROW, None, None), setup=_setup_permutahedron, backward=_backward_permutahedron,
                          jvp=_jvp_permutahedron)


# ---------------------------------------------------------------------------
# Birkhoff polytope (doubly stochastic n x n matrices): prediction = the entropic transport plan
# P = argmax <theta, P> - eps <P, log P> (SPEC 4.1 with C = -theta, a = b = 1/n, P = n x plan).


def _fy_birkhoff_impl(theta: Tensor, target: Tensor, eps: float, max_iter: int,
                      tol: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss (B), prediction (B, n, n), valid (B) bool, converged (B) bool) for theta, target (B, n, n).
    Warns (RuntimeWarning, in the op, so that compiled graphs warn too) when some problem did not
    converge."""
    batch, n, _ = theta.shape
    if n == 0:
        flags = torch.ones(batch, dtype=torch.bool, device=theta.device)
        return theta.new_zeros(batch), torch.empty_like(theta), flags, flags.clone()
    res = sinkhorn(-theta, epsilon=eps, max_iter=max_iter, tol=tol)
    P = n * res.plan
    f, g = res.f, res.g
    log_n = math.log(n)
    log_P = (f.unsqueeze(-1) + g.unsqueeze(-2) + theta) / eps - log_n
    # L = eps [<theta/eps - log P, P - Y> + sum(Y log(Y/P))], with theta/eps - log P_ij =
    # log n - (f_i + g_j)/eps: the first term vanishes once P's marginals are exact.
    dP = P - target
    first = log_n * dP.sum((-2, -1)) - ((f * dP.sum(-1)).sum(-1) + (g * dP.sum(-2)).sum(-1)) / eps
    second = (torch.xlogy(target, target) - target * log_P).sum((-2, -1))
    loss = (eps * (first + second)).clamp_min(0.0)  # >= 0 in exact arithmetic, up to rounding
    valid = _in_birkhoff(target)
    loss = torch.where(valid, loss, torch.full_like(loss, math.inf))
    converged = res.converged
    if theta.device.type != "meta" and batch and not bool(converged.all()):
        warn(message("fenchel_young_loss", f"Sinkhorn did not converge within max_iter={max_iter} for "
                     f"{int((~converged).sum())} of {batch} problem(s); the loss and its gradient are inexact (raise "
                     "max_iter or regularization_strength)"), RuntimeWarning)
    return loss, P, valid, converged


def _fy_birkhoff_fake(theta, target, eps, max_iter, tol):
    batch = theta.shape[0]
    flags = theta.new_empty(batch, dtype=torch.bool)
    return theta.new_empty(batch), torch.empty_like(theta), flags, torch.empty_like(flags)


def _setup_birkhoff(ctx, inputs, output) -> None:
    theta, target, eps, max_iter, tol = inputs
    _, P, valid, converged = output
    ctx.mark_non_differentiable(valid, converged)
    ctx.set_materialize_grads(False)  # no prediction gradient: no solve
    save(ctx, target, P, valid)
    ctx.eps = eps


def _plan_of(P: Tensor) -> tuple[Tensor, int]:
    n = P.shape[-1]
    return P / max(n, 1), n


def _backward_birkhoff(ctx, grad_loss, grad_P, _grad_valid, _grad_converged):
    # The prediction P = n plan(C = -theta) is a differentiable output (its derivative: the implicit
    # system, diffcomb._sinkhorn_derivatives), so this formula differentiates again: the Hessian of the
    # loss is the prediction's Jacobian.
    target, P, valid = ctx.saved_tensors
    if grad_loss is None and grad_P is None:
        return None, None, None, None, None
    grad = torch.zeros_like(P)
    if grad_loss is not None:
        grad = grad + grad_loss.view(-1, 1, 1) * (P - target)
    if grad_P is not None:
        plan, n = _plan_of(P)
        grad = grad - plan_cotangent(solve_system, plan, ctx.eps, n * grad_P)[0]
    grad = torch.where(valid.view(-1, 1, 1), grad, torch.full_like(grad, math.nan))
    return grad, None, None, None, None


def _jvp_birkhoff(ctx, t_theta, *_):
    target, P, valid = ctx.saved_tensors
    plan, n = _plan_of(P)
    dP = n * plan_tangent(solve_system, plan, ctx.eps, -t_theta, None, None)[0]
    dloss = ((P - target) * t_theta).sum((-2, -1))
    dloss = torch.where(valid, dloss, torch.full_like(dloss, math.nan))
    return dloss, dP, None, None


FY_BIRKHOFF = define("fenchel_young_birkhoff", _fy_birkhoff_impl, _fy_birkhoff_fake, kinds=(ROW, ROW, None, None, None),
                     setup=_setup_birkhoff, backward=_backward_birkhoff, jvp=_jvp_birkhoff)


# ---------------------------------------------------------------------------
# Public function.


def _check_target(fn: str, theta: Tensor, target: object) -> Tensor:
    target = check_target(fn, "target", target, theta, "theta")
    if target.requires_grad:
        raise ValueError(message(fn, "target requires grad; the loss is differentiated with respect to theta only "
                                     "(pass target.detach())"))
    return target


def check_options(fn: str, polytope: object, regularization: object, dim: object) -> tuple[str, str]:
    """(polytope, regularization) with the polytope's default regularization; the options that only one
    polytope takes (the functional op and FenchelYoungLoss check them here)."""
    check_choice(fn, "polytope", polytope, POLYTOPES)
    if polytope == "permutahedron":
        regularization = "l2" if regularization is None else regularization
        check_regularization(fn, regularization)
        return polytope, regularization  # type: ignore[return-value]
    if regularization not in (None, "kl"):
        raise ValueError(message(fn, f"the Birkhoff polytope supports regularization='kl' (entropic, through "
                                     f"Sinkhorn) only, got {regularization!r}"))
    if isinstance(dim, bool) or not isinstance(dim, int) or dim != -1:
        raise ValueError(message(fn, f"polytope='birkhoff' uses the last two dimensions; dim must be -1, got {dim!r}"))
    return polytope, "kl"


_DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-6}  # as diffcomb.sinkhorn (SPEC 4.1)


def fenchel_young_loss(
    theta: Tensor,
    target: Tensor,
    polytope: str = "permutahedron",
    regularization: Optional[str] = None,
    regularization_strength: float = 1.0,
    reduction: str = "mean",
    dim: int = -1,
    *,
    max_iter: int = 1000,
    tol: Optional[float] = None,
) -> Tensor:
    r"""Fenchel-Young loss of scores ``theta`` against a ranking or a permutation ``target``.

    .. math::
        L_\varepsilon(\theta; y) = \max_{\mu \in \mathcal C} \big(\langle \theta, \mu \rangle
            - \varepsilon\,\Omega(\mu)\big) + \varepsilon\,\Omega(y) - \langle \theta, y \rangle,
        \qquad \nabla_\theta L_\varepsilon = \hat y_\varepsilon(\theta) - y

    - ``polytope="permutahedron"``: :math:`\mathcal C = \mathcal P(\rho)`, :math:`\rho = (n, \dots, 1)`,
      over the ``n`` items of ``dim``; the target is a ranking vector in :math:`\mathcal P(\rho)`:
      the 1-based ascending ranks (rank ``n`` for the largest score; ties may share their average
      rank), or any convex combination of permutations of :math:`\rho`. ``regularization="l2"``:
      :math:`\Omega(\mu) = \tfrac12 \|\mu\|^2`, and :math:`\hat y` is
      ``soft_rank(theta, regularization_strength=eps)``; ``"kl"``: :math:`\Omega(\mu) = \langle \mu,
      \log \mu - 1 \rangle`, and :math:`\hat y` is ``soft_rank(..., regularization="kl")``.
    - ``polytope="birkhoff"``: :math:`\mathcal C` = the doubly stochastic ``n x n`` matrices (last two
      dimensions); the target is a permutation matrix (or any doubly stochastic matrix); only
      ``regularization="kl"`` (negative entropy :math:`\langle P, \log P \rangle`): :math:`\hat y` is
      the entropic transport plan ``n * sinkhorn(-theta, epsilon=eps).plan`` (uniform marginals).

    Args:
        theta (Tensor[..., n] or Tensor[..., n, n]): scores (permutahedron: along ``dim``; Birkhoff:
            the last two dimensions; every other dimension is a batch).
        target (Tensor): same shape as ``theta``; integer tensors are taken as floats. Not
            differentiated (a target that requires grad raises).
        polytope (str): ``"permutahedron"`` (default) or ``"birkhoff"``.
        regularization (str, optional): ``"l2"`` or ``"kl"`` (permutahedron; default ``"l2"``),
            ``"kl"`` (Birkhoff; the default).
        regularization_strength (float): :math:`\varepsilon > 0`. Default 1.0.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"`` over the batch. Default ``"mean"``.
        dim (int): the item dimension (permutahedron only; Birkhoff requires the default -1).
        max_iter (int): Birkhoff only: Sinkhorn's iteration limit. Default 1000.
        tol (float, optional): Birkhoff only: Sinkhorn's tolerance on the plan's row marginals
            (:func:`diffcomb.sinkhorn`). Default 1e-6 (float64) / 1e-4 (float32).

    Returns:
        Tensor: a scalar, or ``Tensor[...]`` (the batch shape) for ``reduction="none"``; every
        term is >= 0 (rounding below 0 is clamped) and 0 exactly when the prediction equals the
        target.

    Note:
        The value is :math:`\langle \theta, \hat y \rangle - \varepsilon\Omega(\hat y) + \varepsilon
        \Omega(y) - \langle \theta, y\rangle` for the computed prediction, written as a sum of
        non-negative terms (l2: :math:`\langle \theta - \varepsilon \hat y, \hat y - y\rangle +
        \tfrac\varepsilon2 \|\hat y - y\|^2`; kl: :math:`\varepsilon[\langle \theta/\varepsilon - \log
        \hat y, \hat y - y\rangle + \mathrm{KL}(y, \hat y)]`). The gradient :math:`\hat y - y` is a
        registered autograd rule: the solver is never differentiated for the first derivative.
        Second derivatives (``create_graph=True``) are exact: the backward then rebuilds the
        prediction with the differentiable soft rank / Sinkhorn op, so the Hessian is the
        prediction's Jacobian (Birkhoff: implicit differentiation, exact at convergence; the
        permutahedron's forward mode and higher orders also go through the soft rank). Permutahedron: O(n log n) per row; Birkhoff: O(T n^2)
        Sinkhorn iterations, and a warning when some problem did not converge (raise ``max_iter``
        or ``regularization_strength``). A target outside the polytope (e.g. 0-based ranks, rows
        that do not sum to 1) has :math:`\Omega(y) = +\infty`: its loss is ``inf`` and its
        gradient NaN. NaN or infinite scores give NaN for their row.

    Example:
        >>> theta = torch.tensor([[0.1, 2.0, 1.2]])
        >>> fenchel_young_loss(theta, torch.tensor([[1.0, 3.0, 2.0]]), regularization_strength=0.1)
        tensor(0.)
        >>> fenchel_young_loss(theta, torch.tensor([[3.0, 1.0, 2.0]]), regularization_strength=0.1)
        tensor(3.8000)

    References:
        M. Blondel, A. F. T. Martins, V. Niculae. Learning with Fenchel-Young Losses. JMLR 2020.
        arXiv:1901.02324. M. Blondel. Structured Prediction with Projection Oracles. NeurIPS 2019.
        arXiv:1910.11369
    """
    fn = "fenchel_young_loss"
    check_tensor(fn, "theta", theta)
    polytope, regularization = check_options(fn, polytope, regularization, dim)
    target = _check_target(fn, theta, target)
    eps = check_strength(fn, regularization_strength)
    check_reduction(fn, reduction)
    max_iter = check_int(fn, "max_iter", max_iter, 1)
    tol = check_tol(fn, tol, None, allow_zero=False)
    if polytope == "permutahedron":
        kl = check_regularization(fn, regularization)
        dim = check_dim(fn, theta, dim)
        rows, _ = to_rows(fn, theta, dim)
        target_rows, _ = to_rows(fn, target.to(rows.dtype), dim)
        lead = theta.movedim(dim, -1).shape[:-1]
        loss = FY_PERMUTAHEDRON(rows, target_rows, eps, kl)[0]
        return reduce(loss.reshape(lead).to(theta.dtype), reduction)
    if theta.dim() < 2 or theta.shape[-1] != theta.shape[-2]:
        raise ValueError(message(fn, f"polytope='birkhoff' needs square score matrices theta of shape (..., n, n), "
                                     f"got {tuple(theta.shape)}"))
    dtype = compute_dtype(theta.dtype)
    *lead, n, _ = theta.shape
    batch = math.prod(lead)
    rows = theta.to(dtype).reshape(batch, n, n).contiguous()
    target_rows = target.to(dtype).reshape(batch, n, n).contiguous()
    tol_value = _DEFAULT_TOL[dtype] if tol is None else tol
    loss = FY_BIRKHOFF(rows, target_rows, eps, max_iter, tol_value)[0]
    return reduce(loss.reshape(lead).to(theta.dtype), reduction)
