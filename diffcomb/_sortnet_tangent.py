"""Forward mode and second derivatives of the sorting networks (SPEC 5.2-5.4), written with torch ops.

The native kernels (diffcomb/_sortnet_ops.py) compute the values, ``P`` and the VJP. What autodiff needs
beyond them is expressed here, as differentiable torch code on contiguous ``(B, n)`` rows:

- :func:`jvp`: the directional derivative of the values and of ``P`` along ``tx`` (forward mode through
  the swaps: every comparator's mixing weight ``alpha = f(d)`` moves by ``f'(d) td``);
- :func:`hvp`: the derivative of the VJP along ``u``, ``d/de VJP(x + e u; g_values, g_P)``, which is
  the Hessian of ``<g_values, values> + <g_P, P>`` times ``u`` (the forward pass of :func:`jvp` carried
  through the reverse sweep of SPEC 5.4, with ``f''`` for the change of ``f'``).

Both recompute the network from ``x`` (the mixing weights are not taken from the forward's tape), so
they are functions of ``x`` alone and autograd differentiates them again: third derivatives, forward
over forward (``jacfwd`` of ``jacfwd``) and every mix of modes follow.

A layer of disjoint comparators is applied to all wires at once: wire ``w`` meets its partner ``q[w]``
(itself where no comparator touches it) and ``v'[w] = v[q] + alpha_w (v[w] - v[q])`` with ``alpha_w``
the weight of its comparator (for wire lo that is the soft min, for wire hi the soft max; an untouched
wire is left as it is), ``d = s_w (v[q] - v[w])``, ``s = +1`` on lo, ``-1`` on hi, 0 elsewhere. Each
comparator is thus evaluated on its two wires (twice the sigmoid evaluations of the kernels), with
gathers and elementwise ops only, which every transform (vmap, forward AD) supports.

Cost: O(n) per layer for the values and O(n^2) for ``P`` (as the kernels), plus a Python loop over the
layers; :func:`hvp` with ``g_P`` keeps two ``(B, n, n)`` tensors per layer.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._sortnet_layout import BITONIC_PADDINGS, NETWORKS, network_layout

__all__ = ["hvp", "jvp"]

_PHI_C = 1e-10  # the constant c of logistic_phi (SPEC 5.2, csrc/sortnet/sortnet.h)


class _Layers(NamedTuple):
    """A network as per-wire partners and signs, one entry per layer (see the module docstring)."""

    partner: tuple[Tensor, ...]
    """int64 (n,) per layer: the wire each wire meets (itself where no comparator touches it)."""
    sign: tuple[Tensor, ...]
    """(n,) per layer, of the rows' dtype: +1 on lo wires, -1 on hi wires, 0 elsewhere."""
    output: Optional[Tensor]
    """int64 (n,): the wire of each output position (None: the identity)."""
    place: Optional[Tensor]
    """int64 (n,): the output position of each wire (None: the identity)."""


@functools.lru_cache(maxsize=64)
def _layers(network: int, padding: int, n: int, device: torch.device, dtype: torch.dtype) -> _Layers:
    layout = network_layout(NETWORKS[network], n, BITONIC_PADDINGS[padding])
    partners, signs = [], []
    for layer in range(len(layout.offsets) - 1):
        lo = layout.lo[layout.offsets[layer]:layout.offsets[layer + 1]].astype("int64")
        hi = layout.hi[layout.offsets[layer]:layout.offsets[layer + 1]].astype("int64")
        partner = torch.arange(n, dtype=torch.int64)
        sign = torch.zeros(n, dtype=torch.float64)
        partner[lo], partner[hi] = torch.from_numpy(hi), torch.from_numpy(lo)
        sign[lo], sign[hi] = 1.0, -1.0
        partners.append(partner.to(device))
        signs.append(sign.to(device=device, dtype=dtype))
    if not layout.permuted:
        return _Layers(tuple(partners), tuple(signs), None, None)
    output = torch.from_numpy(layout.output.copy()).to(device)
    return _Layers(tuple(partners), tuple(signs), output, torch.argsort(output))


def _sigmoid(code: int, d: Tensor, beta: float, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """f(d), f'(d) and f''(d) of the sigmoid with code ``code`` (SIGMOIDS; SPEC 5.2), elementwise.

    Written so that no branch of a ``torch.where`` divides by zero or overflows (their gradients
    would otherwise turn into NaN where the branch is not taken)."""
    v = beta * d
    if code in (0, 1):  # logistic, logistic_phi: f = sigmoid(u(d))
        if code == 0:
            u, u1, u2 = v, torch.full_like(d, beta), torch.zeros_like(d)
        else:
            a = d.abs()
            x = a + _PHI_C
            p = x.pow(lam)
            u = beta * d / p
            u1 = beta * (x - lam * a) / (x * p)
            u2 = beta * lam * torch.sign(d) * ((1.0 + lam) * a - 2.0 * x) / (x * x * p)
        f = torch.sigmoid(u)
        s = f * (1.0 - f)
        return f, s * u1, s * (1.0 - 2.0 * f) * u1 * u1 + s * u2
    if code == 2:  # gaussian
        pdf = torch.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
        return 0.5 * torch.erfc(-v / math.sqrt(2.0)), beta * pdf, -beta * beta * v * pdf
    if code == 3:  # reciprocal (saturated where steepness d overflows, as the kernels)
        infinite = v.isinf()
        w = torch.where(infinite, torch.zeros_like(v), v)
        s = 2.0 + w.abs()
        f = torch.where(infinite, (v > 0).to(v.dtype), 0.5 * (w / s + 1.0))
        return f, beta / (s * s), -2.0 * beta * beta * torch.sign(w) / (s * s * s)
    if code == 4:  # cauchy
        q = 1.0 + v * v
        return torch.atan(v) / math.pi + 0.5, beta / (math.pi * q), -2.0 * beta * beta * v / (math.pi * q * q)
    # optimal: linear for |v| <= 1/4, hyperbolic tails
    inner = v.abs() <= 0.25
    w = torch.where(inner, torch.ones_like(v), v)
    tail = torch.where(w > 0, 1.0 - 1.0 / (16.0 * w), -1.0 / (16.0 * w))
    f = torch.where(inner, v + 0.5, tail)
    f1 = torch.where(inner, torch.full_like(v, beta), beta / (16.0 * w * w))
    f2 = torch.where(inner, torch.zeros_like(v), -beta * beta / (8.0 * w * w * w))
    return f, f1, f2


class _Step(NamedTuple):
    """One layer of the forward pass with tangents, as the reverse sweep of :func:`hvp` reads it."""

    partner: Tensor
    sign: Tensor
    alpha: Tensor  # (B, n): f(d) per wire
    alpha_t: Tensor  # its tangent f'(d) td
    f1: Tensor  # f'(d)
    f2_td: Tensor  # f''(d) td, the tangent of f'(d)
    delta: Tensor  # v - v[q], pre-swap
    delta_t: Tensor  # its tangent
    lanes: Optional[tuple[Tensor, Tensor]]  # P - P[..., q] and its tangent (B, n, n), pre-swap


def _mix(x: Tensor, tx: Tensor, q: Tensor, alpha: Tensor, alpha_t: Tensor, dim: int
         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The layer's mix of wires along ``dim`` and its tangent: (x', tx', x - x[q], tx - tx[q])."""
    xq, tq = x.index_select(dim, q), tx.index_select(dim, q)
    delta, delta_t = x - xq, tx - tq
    return xq + alpha * delta, tq + alpha * delta_t + alpha_t * delta, delta, delta_t


def _forward(x: Tensor, tx: Tensor, layers: _Layers, code: int, beta: float, lam: float, with_P: bool,
             keep: bool) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor], list[_Step]]:
    """The network on rows x with tangent tx: values, their tangent, P and its tangent (wire order)."""
    v, tv = x, tx
    P = tP = None
    if with_P:
        batch, n = x.shape
        P = torch.eye(n, dtype=x.dtype, device=x.device).expand(batch, n, n)
        tP = torch.zeros_like(P)
    steps = []
    for q, s in zip(layers.partner, layers.sign):
        d = s * (v.index_select(1, q) - v)
        td = s * (tv.index_select(1, q) - tv)
        alpha, f1, f2 = _sigmoid(code, d, beta, lam)
        alpha_t = f1 * td
        v, tv, delta, delta_t = _mix(v, tv, q, alpha, alpha_t, 1)
        lanes = None
        if with_P:
            P, tP, D, tD = _mix(P, tP, q, alpha.unsqueeze(1), alpha_t.unsqueeze(1), 2)
            lanes = (D, tD)
        if keep:
            steps.append(_Step(q, s, alpha, alpha_t, f1, f2 * td, delta, delta_t, lanes))
    return v, tv, P, tP, steps


def jvp(x: Tensor, tx: Tensor, network: int, padding: int, sigmoid: int, steepness: float, art_lambda: float,
        with_matrix: bool) -> tuple[Tensor, Tensor]:
    """Tangents of diffcomb::sorting_network's values (B, n) and Pt (B, n, n), or (B, 0, 0) without
    the matrix, along tx (B, n)."""
    layers = _layers(network, padding, x.shape[1], x.device, x.dtype)
    _, tv, _, tP, _ = _forward(x, tx, layers, sigmoid, steepness, art_lambda, with_matrix, False)
    if layers.output is not None:
        tv = tv.index_select(1, layers.output)
        tP = tP.index_select(2, layers.output) if with_matrix else None
    tPt = tP.mT.contiguous() if with_matrix else x.new_zeros((x.shape[0], 0, 0))
    return tv, tPt


def hvp(x: Tensor, u: Tensor, grad_values: Optional[Tensor], grad_P: Optional[Tensor], network: int,
        padding: int, sigmoid: int, steepness: float, art_lambda: float) -> Tensor:
    """d/de of diffcomb::sorting_network_backward(x + e u, ..., grad_values, grad_P) at e = 0 (B, n):
    the Hessian of <grad_values, values> + <grad_P, P> (P's layout, output order) times u."""
    layers = _layers(network, padding, x.shape[1], x.device, x.dtype)
    if layers.place is not None:  # to the wires the outputs leave on
        grad_values = grad_values.index_select(1, layers.place) if grad_values is not None else None
        grad_P = grad_P.index_select(2, layers.place) if grad_P is not None else None
    with_P = grad_P is not None
    *_, steps = _forward(x, u, layers, sigmoid, steepness, art_lambda, with_P, True)
    g = grad_values if grad_values is not None else torch.zeros_like(x)
    tg = torch.zeros_like(x)
    G, tG = (grad_P, torch.zeros_like(grad_P)) if with_P else (None, None)
    for step in reversed(steps):
        # The adjoints mix like the values (the mix is symmetric); dL/dalpha (SPEC 5.4) and its tangent.
        q, alpha, alpha_t = step.partner, step.alpha, step.alpha_t
        g, tg_mixed, e, te = _mix(g, tg, q, alpha, alpha_t, 1)
        dalpha = e * step.delta
        dalpha_t = te * step.delta + e * step.delta_t
        if with_P:
            D, tD = step.lanes
            G, tG, E, tE = _mix(G, tG, q, alpha.unsqueeze(1), alpha_t.unsqueeze(1), 2)
            dalpha = dalpha + (E * D).sum(1)
            dalpha_t = dalpha_t + (tE * D + E * tD).sum(1)
        g = g - step.sign * dalpha * step.f1
        tg = tg_mixed - step.sign * (dalpha_t * step.f1 + dalpha * step.f2_td)
    return tg
