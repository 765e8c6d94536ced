"""The options of diffcomb.sinkhorn beyond the plain balanced solve, turned into the per problem
parameters of the extended custom ops (diffcomb._transport_ops): relative epsilon, epsilon scaling,
unbalanced marginals (ott-jax's ``tau_a``/``tau_b`` or POT's ``reg_m``) and warm starts.

Each problem gets ``params = (eps, eps0, rho_a, rho_b, symmetric)`` (float64): its epsilon
(``epsilon`` times its cost scale when relative), the start of epsilon scaling, the KL penalties of
its marginals (``inf``: a constraint) and 1 for a symmetric problem (the debiasing terms of
sinkhorn_divergence). Scales are computed per problem from that problem's cost only (SPEC 0: a
result does not depend on the other problems of the batch) and are constants (no gradient flows
through them, as in ott-jax).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_choice, check_float, message

__all__ = ["Options", "RELATIVE", "cloud_scale", "dense_scale", "options", "params", "warm_start"]

RELATIVE = ("mean", "max", "diameter")


class Options(NamedTuple):
    """The validated options of one call (scales and tensors come later, per problem)."""

    relative: Optional[str]
    scaling: Optional[float]
    tau_a: float
    tau_b: float
    rho_a: Optional[float]  # reg_m's, when given (then tau_* are 1)
    rho_b: Optional[float]

    @property
    def unbalanced(self) -> bool:
        return self.tau_a < 1.0 or self.tau_b < 1.0 or self.rho_a is not None or self.rho_b is not None

    @property
    def extended(self) -> bool:
        """Whether the call needs the extended solver (any option beyond the plain solve)."""
        return self.relative is not None or self.scaling is not None or self.unbalanced


def _penalty(fn: str, name: str, value: object) -> Optional[float]:
    """A reg_m entry: a positive number, math.inf for a balanced marginal."""
    v = check_float(fn, name, value, maximum=math.inf, allow_maximum=True)
    return None if v == math.inf else v


def options(fn: str, relative_epsilon: Optional[str], epsilon_scaling: Optional[float], tau_a: float, tau_b: float,
            reg_m: Union[None, float, Sequence[float]]) -> Options:
    """Checks the options with messages naming ``fn`` and the argument."""
    relative = None if relative_epsilon is None else check_choice(fn, "relative_epsilon", relative_epsilon, RELATIVE)
    scaling = None if epsilon_scaling is None else check_float(fn, "epsilon_scaling", epsilon_scaling, maximum=1.0)
    tau_a = check_float(fn, "tau_a", tau_a, maximum=1.0, allow_maximum=True)
    tau_b = check_float(fn, "tau_b", tau_b, maximum=1.0, allow_maximum=True)
    rho_a = rho_b = None
    if reg_m is not None:
        if tau_a != 1.0 or tau_b != 1.0:
            raise ValueError(message(fn, "give either reg_m (POT's convention) or tau_a/tau_b (ott-jax's), not both"))
        if isinstance(reg_m, (tuple, list)):
            if len(reg_m) != 2:
                raise ValueError(message(fn, f"reg_m must be a number or a pair (reg_m_a, reg_m_b), got {reg_m!r}"))
            rho_a, rho_b = _penalty(fn, "reg_m[0]", reg_m[0]), _penalty(fn, "reg_m[1]", reg_m[1])
        else:
            rho_a = rho_b = _penalty(fn, "reg_m", reg_m)
    return Options(relative, scaling, tau_a, tau_b, rho_a, rho_b)


def dense_scale(fn: str, relative: Optional[str], C: Tensor) -> Tensor:
    """Per problem (B,) float64 scale of a dense cost C (B, n, m): its mean or its max (detached; a
    scale that is not positive is taken as 1)."""
    if relative is None or C.numel() == 0:
        return torch.ones(C.shape[0], dtype=torch.float64, device=C.device)
    if relative == "diameter":
        raise ValueError(message(fn, "relative_epsilon='diameter' needs point clouds (x, y); for a cost matrix use "
                                     "'mean' or 'max'"))
    C = C.detach().double()
    scale = C.mean((-2, -1)) if relative == "mean" else C.amax((-2, -1))
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _diameter(x: Tensor, y: Tensor) -> Tensor:
    """The diagonal of the bounding box of both clouds (B,) (geomloss's diameter)."""
    lo = torch.minimum(x.amin(-2), y.amin(-2))
    hi = torch.maximum(x.amax(-2), y.amax(-2))
    return (hi - lo).norm(dim=-1)


def cloud_scale(fn: str, relative: Optional[str], x: Tensor, y: Tensor, metric: str) -> Tensor:
    """Per problem (B,) float64 scale of the point-cloud cost: the mean of |x_i - y_j|^2 over the pairs
    (squared Euclidean only, in closed form) or the bounding-box diameter (to the power 2 for the
    squared Euclidean cost); detached, 1 where it is not positive."""
    batch = x.shape[0]
    if relative is None or x.shape[1] == 0 or y.shape[1] == 0:
        return torch.ones(batch, dtype=torch.float64, device=x.device)
    x, y = x.detach().double(), y.detach().double()
    if relative == "max":
        raise ValueError(message(fn, "relative_epsilon='max' needs the whole cost matrix; for point clouds use "
                                     "'diameter' (the bounding box's, an upper bound of the largest distance) or "
                                     "'mean'"))
    if relative == "mean":
        if metric != "sqeuclidean":
            raise ValueError(message(fn, "relative_epsilon='mean' of point clouds is available for the "
                                         "'sqeuclidean' metric (closed form); use 'diameter' for 'euclidean'"))
        mx, my = x.mean(-2), y.mean(-2)
        scale = x.square().sum(-1).mean(-1) + y.square().sum(-1).mean(-1) - 2.0 * (mx * my).sum(-1)
    else:
        scale = _diameter(x, y)
        scale = scale.square() if metric == "sqeuclidean" else scale
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def params(opts: Options, eps: float, scale: Tensor, start: Optional[Tensor], symmetric: bool = False) -> Tensor:
    """The (B, 5) float64 parameters: eps_b = eps scale_b; eps0_b = start_b (epsilon scaling, never
    below eps_b) or eps_b; rho from reg_m, or rho = eps_b tau / (1 - tau) (ott-jax's tau, inf for 1);
    the symmetric flag."""
    eps_b = eps * scale
    eps0 = eps_b if start is None or opts.scaling is None else torch.maximum(start.double(), eps_b)
    inf = torch.full_like(eps_b, math.inf)

    def rho(tau: float, given: Optional[float]) -> Tensor:
        if given is not None:
            return torch.full_like(eps_b, given)
        return inf if tau == 1.0 else eps_b * (tau / (1.0 - tau))

    if opts.rho_a is not None or opts.rho_b is not None:
        ra = rho(1.0, opts.rho_a)
        rb = rho(1.0, opts.rho_b)
    else:
        ra, rb = rho(opts.tau_a, None), rho(opts.tau_b, None)
    flag = torch.full_like(eps_b, 1.0 if symmetric else 0.0)
    return torch.stack([eps_b, eps0, ra, rb, flag], dim=-1).contiguous()


def warm_start(fn: str, init: object, lead: torch.Size, n: int, m: int, like: Tensor) -> tuple[Optional[Tensor],
                                                                                            Optional[Tensor]]:
    """init = (f, g), either None: the potentials broadcast to (B, n), (B, m) in like's dtype, detached."""
    if init is None:
        return None, None
    if not isinstance(init, (tuple, list)) or len(init) != 2:
        raise TypeError(message(fn, f"init must be a pair (f, g) of potentials (either may be None), got "
                                    f"{type(init).__name__}"))
    out = []
    for name, t, size in (("init[0] (f)", init[0], n), ("init[1] (g)", init[1], m)):
        if t is None:
            out.append(None)
            continue
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(message(fn, f"{name} must be a floating-point tensor or None, got {type(t).__name__}"))
        if t.device != like.device:
            raise ValueError(message(fn, f"{name} is on {t.device}, the problem on {like.device}"))
        if t.dim() < 1 or t.shape[-1] != size:
            raise ValueError(message(fn, f"{name} must have shape (..., {size}), got {tuple(t.shape)}"))
        try:
            t = t.detach().to(like.dtype).broadcast_to((*lead, size))
        except RuntimeError as exc:
            raise ValueError(message(fn, f"{name} of shape {tuple(t.shape)} does not broadcast to the batch shape "
                                         f"{tuple(lead)}")) from exc
        out.append(t.reshape(-1, size).contiguous())
    return out[0], out[1]
