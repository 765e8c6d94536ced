"""Forward-mode and higher derivatives of the extended Sinkhorn ops (diffcomb._transport_ops:
relative epsilon, epsilon scaling, warm starts, unbalanced marginals, point clouds), written with
differentiable calls so that every formula here can be differentiated again.

The returned plan P_ij = exp(alpha_i + beta_j - C_ij / eps) (alpha = log a + f / eps, beta = log b +
g / eps) is the exact fixed point of its own row and column sums r = P 1, c = P^T 1. A relaxed
marginal (KL penalty rho_a, damping lam_a = rho_a / (rho_a + eps), sinkhorn.h) has r_i = a_i
exp(-f_i / rho_a), so log r_i = log a_i / lam_a + (1 - 1 / lam_a) alpha_i; a constrained one has
r = a (lam_a = 1). Differentiating these conditions in a direction (dC, da, db):

    H [dalpha; dbeta] = [w_a o da + (P o dC) 1 / eps; w_b o db + (P o dC)^T 1 / eps],
    H = [[diag(r) / lam_a, P], [P^T, diag(c) / lam_b]],   w_a = exp(-f / rho_a) / lam_a (1 if constrained)
    dP = P o (dalpha_i + dbeta_j - dC_ij / eps)

solved by diffcomb._sinkhorn_ops.solve_system with the damping (balanced problems: on H's range).
The potentials follow from the f- and g-updates' linearizations, f_i = -lam_a eps log sum_j
exp(beta_j - C_ij / eps) (and g alike), with pi the update's softmax:

    df_i = lam_a (sum_j pi_ij dC_ij - eps sum_j pi_ij dbeta_j)

``tangent`` is this linear map at a solution ``Point``; ``transpose`` its adjoint. ``POINT`` is the op
that hands out a solution (P, f, g) as a differentiable function of (C, a, b) with exactly these
derivatives; the first-order backward passes written with it (``implicit_first``, ``cloud_first``,
``unrolled_first``) equal the native kernels' and are what their own derivatives differentiate.
The cost's derivative is its envelope gradient (``envelope``: the native one, sinkhorn.h).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._autodiff import ROW, define, save
from ._checks import check_op_tensor
from ._sinkhorn_derivatives import _log_weight, jvp_by_vjp
from ._sinkhorn_ops import solve_system

__all__ = ["POINT", "Point", "cloud_first", "cost_tangent", "damping", "envelope", "implicit_first", "jvp_by_vjp", "pairwise",
           "plan_of", "replay", "tangent", "transpose", "unrolled_first"]


class Point(NamedTuple):
    """A solution of a batch of problems (B, n, m): the problem, its plan and potentials, and the
    per problem constants from params (B, 5) (csrc/sinkhorn/sinkhorn.h, Options)."""

    C: Tensor
    a: Tensor
    b: Tensor
    P: Tensor
    f: Tensor
    g: Tensor
    params: Tensor

    @property
    def eps(self) -> Tensor:
        """(B, 1) in the problem's dtype."""
        return self.params[:, :1].to(self.C.dtype)

    @property
    def relaxed(self) -> Tensor:
        """(B, 2) bool: whether each marginal is a KL penalty."""
        return torch.isfinite(self.params[:, 2:4])

    @property
    def rho(self) -> Tensor:
        """(B, 2) penalties in the problem's dtype, 1 where constrained (masked by ``relaxed``)."""
        return torch.where(self.relaxed, self.params[:, 2:4], torch.ones_like(self.params[:, 2:4])).to(self.C.dtype)

    @property
    def lam(self) -> Tensor:
        """(B, 2) float64 dampings rho / (rho + eps), 1 where constrained."""
        return damping(self.params)


def damping(params: Tensor) -> Tensor:
    """(B, 2) float64 dampings lam = rho / (rho + eps) of params (B, 5), 1 where a marginal is constrained."""
    rho = params[:, 2:4]
    return torch.where(torch.isfinite(rho), rho / (rho + params[:, :1]), torch.ones_like(rho))


def _line_sums(M: Tensor) -> Tensor:
    return torch.cat((M.sum(-1), M.sum(-2)), -1)


def _outer_sum(x: Tensor, n: int) -> Tensor:
    return x[..., :n, None] + x[..., None, n:]


def _weight_factors(pt: Point) -> tuple[Tensor, Tensor]:
    """w_a, w_b (module docstring): the row equations' derivative in the weights."""
    relaxed, rho, lam = pt.relaxed, pt.rho, pt.lam.to(pt.C.dtype)

    def side(h: Tensor, k: int) -> Tensor:
        factor = torch.exp(-h / rho[:, k:k + 1]) / lam[:, k:k + 1]
        return torch.where(relaxed[:, k:k + 1], factor, torch.ones_like(h))

    return side(pt.f, 0), side(pt.g, 1)


def _update_weights(pt: Point) -> tuple[Tensor, Tensor]:
    """The softmaxes of the f-update (over j, rows) and of the g-update (over i, columns)."""
    scaled = -pt.C / pt.eps[..., None]
    rows = torch.softmax(_log_weight(pt.b)[..., None, :] + pt.g[..., None, :] / pt.eps[..., None] + scaled, -1)
    cols = torch.softmax(_log_weight(pt.a)[..., :, None] + pt.f[..., :, None] / pt.eps[..., None] + scaled, -2)
    return rows, cols


def tangent(pt: Point, tC: Optional[Tensor], ta: Optional[Tensor],
            tb: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(dP, df, dg) at the solution pt in the direction (tC, ta, tb) (None: zero)."""
    P, n = pt.P, pt.P.shape[-2]
    eps = pt.eps
    wa, wb = _weight_factors(pt)
    rhs = P.new_zeros(P.shape[:-2] + (n + P.shape[-1],))
    if ta is not None:
        rhs = rhs + torch.cat((ta * wa, torch.zeros_like(pt.b)), -1)
    if tb is not None:
        rhs = rhs + torch.cat((torch.zeros_like(pt.a), tb * wb), -1)
    if tC is not None:
        rhs = rhs + _line_sums(P * tC) / eps
    x = solve_system(P, rhs, pt.lam)
    scaled = _outer_sum(x, n) if tC is None else _outer_sum(x, n) - tC / eps[..., None]
    rows, cols = _update_weights(pt)
    lam = pt.lam.to(P.dtype)
    df = -eps * (rows @ x[..., n:, None]).squeeze(-1)
    dg = -eps * (cols.transpose(-1, -2) @ x[..., :n, None]).squeeze(-1)
    if tC is not None:
        df = df + (rows * tC).sum(-1)
        dg = dg + (cols * tC).sum(-2)
    return P * scaled, lam[:, :1] * df, lam[:, 1:] * dg


def transpose(pt: Point, Pbar: Optional[Tensor], fbar: Optional[Tensor],
              gbar: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(Cbar, abar, bbar): the adjoint of ``tangent`` at pt applied to (Pbar, fbar, gbar)."""
    P, n = pt.P, pt.P.shape[-2]
    eps = pt.eps
    lam = pt.lam.to(P.dtype)
    xbar = P.new_zeros(P.shape[:-2] + (n + P.shape[-1],))
    Cbar = torch.zeros_like(P)
    if Pbar is not None:
        Q = Pbar * P
        xbar = xbar + _line_sums(Q)
        Cbar = Cbar - Q / eps[..., None]
    if fbar is not None or gbar is not None:
        rows, cols = _update_weights(pt)
        if fbar is not None:
            s = lam[:, :1] * fbar
            Cbar = Cbar + rows * s[..., :, None]
            xbar = xbar + torch.cat((torch.zeros_like(s), -eps * (s[..., None, :] @ rows).squeeze(-2)), -1)
        if gbar is not None:
            s = lam[:, 1:] * gbar
            Cbar = Cbar + cols * s[..., None, :]
            xbar = xbar + torch.cat((-eps * (cols @ s[..., :, None]).squeeze(-1), torch.zeros_like(s)), -1)
    rbar = solve_system(P, xbar, pt.lam)
    wa, wb = _weight_factors(pt)
    Cbar = Cbar + P * _outer_sum(rbar, n) / eps[..., None]
    return Cbar, rbar[..., :n] * wa, rbar[..., n:] * wb


def envelope(pt: Point) -> tuple[Tensor, Tensor]:
    """The cost's derivatives in a and b at the solution (sinkhorn.h: cost_weight_gradient for balanced
    problems, unbalanced_weight_gradient otherwise)."""
    eps, rho, relaxed = pt.eps, pt.rho, pt.relaxed
    balanced = ~relaxed.any(-1, keepdim=True)
    mass = (pt.b.sum(-1, keepdim=True), pt.a.sum(-1, keepdim=True))

    def side(h: Tensor, k: int) -> Tensor:
        r = rho[:, k:k + 1]
        penalized = -r * torch.expm1(-h / r) - eps * (torch.exp(-h / r) - mass[k])
        unbalanced = torch.where(relaxed[:, k:k + 1], penalized, h - eps * (1.0 - mass[k]))
        return torch.where(balanced, h - 0.5 * eps, unbalanced)

    return side(pt.f, 0), side(pt.g, 1)


def cost_tangent(pt: Point, tC: Optional[Tensor], ta: Optional[Tensor], tb: Optional[Tensor]) -> Tensor:
    """<P, dC> + <envelope_a, da> + <envelope_b, db>."""
    out = pt.P.new_zeros(pt.P.shape[:-2])
    if tC is not None:
        out = out + (pt.P * tC).sum((-2, -1))
    if ta is not None or tb is not None:
        ea, eb = envelope(pt)
        out = out + (0.0 if ta is None else (ea * ta).sum(-1)) + (0.0 if tb is None else (eb * tb).sum(-1))
    return out


# ---------------------------------------------------------------------------
# The solution as a differentiable function of the problem.


def _check_point(C: Tensor, a: Tensor, b: Tensor, params: Tensor, P: Tensor, f: Tensor, g: Tensor) -> None:
    op = "sinkhorn_ext_point"
    check_op_tensor(op, "C", C, (torch.float32, torch.float64), 3)
    batch, n, m = C.shape
    for name, t, shape in (("a", a, (batch, n)), ("b", b, (batch, m)), ("P", P, (batch, n, m)),
                           ("f", f, (batch, n)), ("g", g, (batch, m))):
        check_op_tensor(op, name, t, (C.dtype,), shape, C.device)
    check_op_tensor(op, "params", params, (torch.float64,), (batch, 5), C.device)


def _point_impl(C: Tensor, a: Tensor, b: Tensor, params: Tensor, P: Tensor, f: Tensor,
                g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(P, f, g): the given solution of the problems (C, a, b), whose derivatives are the implicit ones."""
    _check_point(C, a, b, params, P, f, g)
    return P.clone(), f.clone(), g.clone()


def _point_fake(C, a, b, params, P, f, g):
    _check_point(C, a, b, params, P, f, g)
    return torch.empty_like(P), torch.empty_like(f), torch.empty_like(g)


def _point_setup(ctx, inputs, output) -> None:
    save(ctx, *inputs)


def _differentiable_point(ctx) -> Point:
    """The saved solution, again as a function of (C, a, b) (so that the derivatives below can be
    differentiated once more)."""
    C, a, b, params, P, f, g = ctx.saved_tensors
    return Point(C, a, b, *POINT(C, a, b, params, P, f, g), params)


def _point_backward(ctx, Pbar, fbar, gbar):
    return transpose(_differentiable_point(ctx), Pbar, fbar, gbar) + (None,) * 4


def _point_jvp(ctx, tC, ta, tb, *_):
    return tangent(_differentiable_point(ctx), tC, ta, tb)


POINT = define("sinkhorn_ext_point", _point_impl, _point_fake, kinds=(ROW,) * 7, setup=_point_setup,
               backward=_point_backward, jvp=_point_jvp)


def point(C: Tensor, a: Tensor, b: Tensor, params: Tensor, P: Tensor, f: Tensor, g: Tensor) -> Point:
    """The solution (P, f, g) of (C, a, b) as a differentiable Point."""
    return Point(C, a, b, *POINT(C, a, b, params, P.contiguous(), f.contiguous(), g.contiguous()), params)


# ---------------------------------------------------------------------------
# The first-order backward passes as torch functions.


def implicit_first(C: Tensor, a: Tensor, b: Tensor, params: Tensor, P: Tensor, f: Tensor, g: Tensor,
                   G: Optional[Tensor], gcost: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """The implicit backward (dC, da, db) for plan gradients G and cost gradients gcost."""
    pt = point(C, a, b, params, P, f, g)
    dC, da, db = transpose(pt, G, None, None)
    if gcost is not None:
        ea, eb = envelope(pt)
        dC = dC + gcost[:, None, None] * pt.P
        da = da + gcost[:, None] * ea
        db = db + gcost[:, None] * eb
    return dC, da, db


def plan_of(C: Tensor, a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: Tensor) -> Tensor:
    """P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) (eps (B, 1))."""
    e = eps[..., None]
    return torch.exp(_log_weight(a)[..., :, None] + _log_weight(b)[..., None, :]
                     + (f[..., :, None] + g[..., None, :] - C) / e)


def pairwise(x: Tensor, y: Tensor, metric: int) -> Tensor:
    """The cost C_ij = |x_i - y_j|^2 (metric 0) or |x_i - y_j| (1, with derivatives 0 where x_i = y_j)."""
    d2 = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    if metric == 0:
        return d2
    positive = d2 > 0
    return torch.where(positive, torch.where(positive, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def _pairwise_vjp(x: Tensor, y: Tensor, W: Tensor, metric: int) -> tuple[Tensor, Tensor]:
    """(sum_j W_ij dC_ij / dx_i, sum_i W_ij dC_ij / dy_j)."""
    if metric == 0:
        W = 2.0 * W
    else:
        D = pairwise(x, y, 1)
        W = torch.where(D > 0, W / torch.where(D > 0, D, torch.ones_like(D)), torch.zeros_like(W))
    dx = W.sum(-1, keepdim=True) * x - W @ y
    dy = W.sum(-2)[..., None] * y - W.transpose(-1, -2) @ x
    return dx, dy


def cloud_first(x: Tensor, y: Tensor, a: Tensor, b: Tensor, params: Tensor, f: Tensor, g: Tensor, gcost: Tensor,
                metric: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The point clouds' cost gradient (dx, dy, da, db) for gcost (B), with the (n, m) cost and plan
    formed (only the derivatives of this gradient come here; the gradient itself is computed on the
    fly by the kernels)."""
    C = pairwise(x, y, metric)
    with torch.no_grad():
        P = plan_of(C, a, b, f, g, params[:, :1].to(x.dtype))
    pt = point(C, a, b, params, P, f, g)
    dx, dy = _pairwise_vjp(x, y, gcost[:, None, None] * pt.P, metric)
    ea, eb = envelope(pt)
    return dx, dy, gcost[:, None] * ea, gcost[:, None] * eb


def replay(C: Tensor, a: Tensor, b: Tensor, params: Tensor, g0: Tensor, n_iter: Tensor,
           steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """(P, f, g) after each problem's own n_iter of ``steps`` recorded iterations from g0, with the
    dampings of relaxed marginals (forward.h), as differentiable torch ops."""
    eps, lam = params[:, :1].to(C.dtype), damping(params).to(C.dtype)
    la, lb = _log_weight(a), _log_weight(b)
    e = eps[..., None]
    f, g = torch.zeros_like(a), g0
    for t in range(steps):
        f_new = -lam[:, :1] * eps * torch.logsumexp(lb[..., None, :] + (g[..., None, :] - C) / e, -1)
        g_new = -lam[:, 1:] * eps * torch.logsumexp(la[..., :, None] + (f_new[..., :, None] - C) / e, -2)
        live = (n_iter > t)[..., None]
        f = torch.where(live, f_new, f)
        g = torch.where(live, g_new, g)
    return plan_of(C, a, b, f, g, eps), f, g


def unrolled_first(C: Tensor, a: Tensor, b: Tensor, params: Tensor, g0: Tensor, n_iter: Tensor, steps: int,
                   G: Optional[Tensor], gcost: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """The unrolled backward (dC, da, db): the vector-Jacobian product of the replayed plan with G,
    plus gcost times the envelope gradients at the replayed solution."""
    (P, f, g), pull = torch.func.vjp(lambda C, a, b: replay(C, a, b, params, g0, n_iter, steps), C, a, b)
    dC, da, db = pull((torch.zeros_like(P) if G is None else G, torch.zeros_like(f), torch.zeros_like(g)))
    if gcost is not None:
        ea, eb = envelope(Point(C, a, b, P, f, g, params))
        dC = dC + gcost[:, None, None] * P
        da = da + gcost[:, None] * ea
        db = db + gcost[:, None] * eb
    return dC, da, db
