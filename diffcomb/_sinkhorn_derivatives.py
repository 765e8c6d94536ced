"""Forward-mode and second derivatives of the Sinkhorn family's custom ops (SPEC.md 4.3), written with
differentiable calls: torch ops and the family's native ops (diffcomb._sinkhorn_ops), so every
formula here can itself be differentiated.

Implicit mode. The returned plan P_ij = exp(alpha_i + beta_j - C_ij / eps) (alpha = log a + f / eps,
beta = log b + g / eps) is the exact entropic plan of its own marginals r = P 1, c = P^T 1 (SPEC 4.3 b).
Differentiating the marginal conditions P 1 - a = r - a, P^T 1 - b = c - b (held fixed) in a direction
(dC, da, db):

    H [dalpha; dbeta] = [da + (P o dC) 1 / eps; db + (P o dC)^T 1 / eps],   H = [[diag r, P], [P^T, diag c]]
    dP = P o (dalpha_i + dbeta_j - dC_ij / eps)

H has the constant null vector e = [1; -1] (on the rows and columns of positive marginals): the
solve (``solve``) projects the right-hand side and the solution onto its complement, which fixes the
potentials' gauge (alpha + k, beta - k). The implicit backward (the native kernel) is the transpose
of this map; its derivative is the Hessian-vector product of <G, P> + gcost OT_eps (``hvp``),
obtained by differentiating the backward's own system once more:

    d[u; v] = H^-1 (d[Q 1; Q^T 1] - dH [u; v]),  Q = G o P,  dH [u; v] = [dr o u + dP v; dP^T u + dc o v]

Unrolled mode. The derivatives of the unrolled backward differentiate the recorded iterations,
replayed with torch ops (``replay``; SPEC 4.1's two log-sum-exp updates) under torch.func.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["cost_tangent", "hvp", "jvp_by_vjp", "marginals", "plan_cotangent", "plan_tangent", "project", "replay",
           "solve_derivatives", "system_tangent", "unrolled_first_order"]


def _zeros(t: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if t is None else t


def _line_sums(M: Tensor) -> Tensor:
    """[M 1; M^T 1] of (B, n, m) matrices: (B, n + m)."""
    return torch.cat((M.sum(-1), M.sum(-2)), -1)


def _outer_sum(x: Tensor, n: int) -> Tensor:
    """x_i + x_{n + j} of x = [u; v] (B, n + m): (B, n, m)."""
    return x[..., :n, None] + x[..., None, n:]


def _null_vector(support: Tensor, n: int) -> Tensor:
    sign = torch.ones_like(support)
    sign[..., n:] = -1.0
    return support * sign


def project(w: Tensor, support: Tensor, n: int) -> Tensor:
    """Pi w: w on the support, minus its component along e (the range of H)."""
    e = _null_vector(support, n)
    k = (w * e).sum(-1, keepdim=True) / support.sum(-1, keepdim=True).clamp_min(1.0)
    return w * support - k * e


def marginals(P: Tensor) -> Tensor:
    """[P 1; P^T 1] (B, n + m) in float64: H's diagonal."""
    return torch.cat((P.sum(-1, dtype=torch.float64), P.sum(-2, dtype=torch.float64)), -1)


# ---------------------------------------------------------------------------
# The implicit system.


def solve_derivatives(solve: Callable[[Tensor, Tensor, Tensor], Tensor]):
    """backward and jvp of the op ``solve(P, w, lam) = x = H(P)^+ w`` (min-norm on H's range; H's
    diagonal divided by the damping lam = (lam_a, lam_b), which is a constant): dx = H^+ (dw - dH x);
    the cotangent l = H^+ xbar gives wbar = l and
    Pbar_ij = -(l_i (u_i / lam_a + v_j) + l_{n+j} (u_i + v_j / lam_b))."""

    def backward(ctx, xbar: Tensor):
        P, x, lam = ctx.saved_tensors
        n = P.shape[-2]
        l = solve(P, xbar, lam)
        Pbar = -_damped_outer(l, x, lam.to(P.dtype), n)
        return Pbar, l, None

    def jvp(ctx, tP: Optional[Tensor], tw: Optional[Tensor], _tlam: Optional[Tensor]) -> Tensor:
        P, x, lam = ctx.saved_tensors
        rhs = _zeros(tw, x)
        if tP is not None:
            rhs = rhs - system_tangent(tP, x, P.shape[-2], lam.to(P.dtype))
        return solve(P, rhs, lam)

    return backward, jvp


def _damped_outer(l: Tensor, x: Tensor, lam: Tensor, n: int) -> Tensor:
    """l_i (u_i / lam_a + v_j) + l_{n+j} (u_i + v_j / lam_b) of l, x = [u; v] (B, n + m): (B, n, m)."""
    u, v = x[..., :n], x[..., n:]
    la, lb = lam[..., :1], lam[..., 1:]
    return (l[..., :n, None] * (u / la)[..., :, None] + l[..., :n, None] * v[..., None, :]
            + l[..., None, n:] * u[..., :, None] + l[..., None, n:] * (v / lb)[..., None, :])


def system_tangent(dP: Tensor, x: Tensor, n: int, lam: Optional[Tensor] = None) -> Tensor:
    """dH x = [dr o u / lam_a + dP v; dP^T u + dc o v / lam_b] for x = [u; v] (lam None: 1)."""
    if lam is None:
        return _line_sums(dP * _outer_sum(x, n))
    u, v = x[..., :n], x[..., n:]
    la, lb = lam[..., :1], lam[..., 1:]
    rows = (dP * ((u / la)[..., :, None] + v[..., None, :])).sum(-1)
    cols = (dP * (u[..., :, None] + (v / lb)[..., None, :])).sum(-2)
    return torch.cat((rows, cols), -1)


def plan_tangent(solve: Callable[[Tensor, Tensor], Tensor], P: Tensor, eps: float, tC: Optional[Tensor],
                 ta: Optional[Tensor], tb: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(dP, [dalpha; dbeta]) of the returned plan in the direction (tC, ta, tb) (module docstring)."""
    n, m = P.shape[-2], P.shape[-1]
    batch = P.shape[:-2]
    rhs = P.new_zeros((*batch, n + m))
    if ta is not None:
        rhs = rhs + torch.cat((ta, ta.new_zeros((*batch, m))), -1)
    if tb is not None:
        rhs = rhs + torch.cat((tb.new_zeros((*batch, n)), tb), -1)
    if tC is not None:
        rhs = rhs + _line_sums(P * tC) / eps
    x = solve(P, rhs)
    scaled = _outer_sum(x, n) if tC is None else _outer_sum(x, n) - tC / eps
    return P * scaled, x


def plan_cotangent(solve: Callable[[Tensor, Tensor], Tensor], P: Tensor, eps: float,
                   G: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dC, da, db): the transpose of plan_tangent (SPEC 4.3 b with the plan's own marginals), as torch ops
    around ``solve``: the plan's vector-Jacobian product where it must be differentiable again."""
    n = P.shape[-2]
    Q = G * P
    x = solve(P, _line_sums(Q))
    return (P * _outer_sum(x, n) - Q) / eps, x[..., :n], x[..., n:]


def cost_tangent(P: Tensor, f: Tensor, g: Tensor, eps: float, tC: Optional[Tensor], ta: Optional[Tensor],
                 tb: Optional[Tensor]) -> Tensor:
    """The envelope derivative of OT_eps (SPEC 4.2): <P, dC> + <f - eps/2, da> + <g - eps/2, db>."""
    out = P.new_zeros(P.shape[:-2])
    if tC is not None:
        out = out + (P * tC).sum((-2, -1))
    if ta is not None:
        out = out + ((f - 0.5 * eps) * ta).sum(-1)
    if tb is not None:
        out = out + ((g - 0.5 * eps) * tb).sum(-1)
    return out


def _over(t: Optional[Tensor], w: Tensor) -> Optional[Tensor]:
    """t / w where w > 0, else 0 (None stays None)."""
    if t is None:
        return None
    return torch.where(w > 0, t / torch.where(w > 0, w, torch.ones_like(w)), torch.zeros_like(t))


def hvp(solve: Callable[[Tensor, Tensor], Tensor], C: Tensor, a: Tensor, b: Tensor, P: Tensor, G: Optional[Tensor],
        gcost: Optional[Tensor], u: Tensor, eps: float, tC: Optional[Tensor], ta: Optional[Tensor],
        tb: Optional[Tensor]) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
    """The derivative of the implicit backward (dC, da, db) = grad <G, P> + gcost grad OT_eps in the
    direction (tC, ta, tb) of (C, a, b): the Hessian-vector product (symmetric, so it is also the
    backward's own vector-Jacobian product). u = [u; v]: the backward's system solution. Also returns
    dP (the plan's tangent: the backward's derivative with respect to G)."""
    n = P.shape[-2]
    dP, x = plan_tangent(solve, P, eps, tC, ta, tb)
    out_C = dP * (gcost[..., None, None] if gcost is not None else 0.0)
    out_ab = torch.zeros_like(x)
    if gcost is not None:
        # d(f - eps/2) = eps (dalpha - da / a), likewise g (the gauge of x cancels against mass-preserving
        # directions).
        tab = torch.cat((_zeros(_over(ta, a), a), _zeros(_over(tb, b), b)), -1)
        out_ab = out_ab + gcost[..., None] * eps * (x - tab)
    if G is not None:
        dQ = G * dP
        dw = _line_sums(dQ) - system_tangent(dP, u, n)
        du = solve(P, dw)
        out_C = out_C + (dP * _outer_sum(u, n) + P * _outer_sum(du, n) - dQ) / eps
        out_ab = out_ab + du
    return (out_C, out_ab[..., :n], out_ab[..., n:]), dP


# ---------------------------------------------------------------------------
# Unrolled mode: the recorded iterations replayed with torch ops.


def _log_weight(w: Tensor) -> Tensor:
    """log w, -inf at zero weights with a zero derivative there (a zero weight stays out of the sums)."""
    positive = w > 0
    return torch.where(positive, torch.where(positive, w, torch.ones_like(w)).log(), torch.full_like(w, -torch.inf))


def replay(C: Tensor, a: Tensor, b: Tensor, g0: Tensor, n_iter: Tensor, steps: int,
           eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(P, f, g) after each problem's own n_iter of the ``steps`` recorded iterations of SPEC 4.1 from
    g0 (the kernel's initial potential), as differentiable torch ops."""
    la, lb = _log_weight(a), _log_weight(b)
    f = torch.zeros_like(a)
    g = g0
    for t in range(steps):
        f_new = -eps * torch.logsumexp(lb[..., None, :] + (g[..., None, :] - C) / eps, -1)
        g_new = -eps * torch.logsumexp(la[..., :, None] + (f_new[..., :, None] - C) / eps, -2)
        live = (n_iter > t)[..., None]
        f = torch.where(live, f_new, f)
        g = torch.where(live, g_new, g)
    P = torch.exp(la[..., :, None] + lb[..., None, :] + (f[..., :, None] + g[..., None, :] - C) / eps)
    return P, f, g


def jvp_by_vjp(fn: Callable[..., object], primals: tuple, tangents: tuple) -> object:
    """The Jacobian-vector product of fn (tensors to a tensor or a tuple of tensors) at primals in the
    direction tangents, as the vector-Jacobian product of fn's (linear) pullback: reverse mode only, so
    it also runs inside a forward-mode level (torch.autograd.forward_ad, torch.func.jvp), which cannot
    nest."""
    tangents = tuple(torch.zeros_like(p) if t is None else t for p, t in zip(primals, tangents))
    out, pull = torch.func.vjp(fn, *primals)
    single = isinstance(out, Tensor)
    zeros = torch.zeros_like(out) if single else tuple(torch.zeros_like(o) for o in out)
    _, pull_pull = torch.func.vjp(pull, zeros)
    (result,) = pull_pull(tangents)
    return result


def unrolled_first_order(C: Tensor, a: Tensor, b: Tensor, G: Optional[Tensor], gcost: Optional[Tensor],
                         g0: Tensor, n_iter: Tensor, steps: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The unrolled backward (dC, da, db) as torch ops: the vector-Jacobian product of the replayed
    plan with G, plus gcost times the envelope gradients (P, f - eps/2, g - eps/2) of the cost."""
    (P, f, g), pull = torch.func.vjp(lambda C, a, b: replay(C, a, b, g0, n_iter, steps, eps), C, a, b)
    dC, da, db = pull((_zeros(G, P), torch.zeros_like(f), torch.zeros_like(g)))
    if gcost is not None:
        dC = dC + gcost[..., None, None] * P
        da = da + gcost[..., None] * (f - 0.5 * eps)
        db = db + gcost[..., None] * (g - 0.5 * eps)
    return dC, da, db
