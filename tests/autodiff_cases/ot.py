"""Cases of the op x mode matrix for the extended optimal transport solvers: diffcomb.sinkhorn with
unbalanced marginals (implicit and unrolled), with epsilon scaling and relative epsilon, with a warm
start, between point clouds (both metrics), and diffcomb.sinkhorn_divergence between point clouds. No
cell is undefined: forward mode and the second derivatives solve the damped implicit system again
(between point clouds with the (n, m) cost and plan formed for them)."""

import torch

import diffcomb
from tests.autodiff_cases import Case

def _tight(t):
    """Converged to the dtype's precision (the envelope gradients are exact at convergence)."""
    return dict(tol=1e-13 if t.dtype == torch.float64 else 1e-6, max_iter=100000)


def _cost(dtype, device, gen):
    return (torch.rand(4, 3, generator=gen, dtype=dtype, device=device),)


def _clouds(dtype, device, gen):
    return (torch.rand(2, 4, 2, generator=gen, dtype=dtype, device=device),
            torch.rand(2, 3, 2, generator=gen, dtype=dtype, device=device))


def _unbalanced(C):
    out = diffcomb.sinkhorn(C, epsilon=0.5, tau_a=0.8, tau_b=0.6, **_tight(C))
    return out.plan, out.cost


def _cloud(x, y):
    return diffcomb.sinkhorn(x=x, y=y, epsilon=0.5, **_tight(x)).cost


def _divergence(x, y):
    return diffcomb.sinkhorn_divergence(x, y, 0.5, metric="euclidean", **_tight(x))


def _unbalanced_unrolled(C):
    out = diffcomb.sinkhorn(C, epsilon=0.5, reg_m=(0.7, float("inf")), max_iter=12, tol=0, backward="unroll")
    return out.plan, out.cost


def _weights(dtype, device, gen):
    return (torch.rand(4, 3, generator=gen, dtype=dtype, device=device),
            torch.randn(4, generator=gen, dtype=dtype, device=device),
            torch.randn(3, generator=gen, dtype=dtype, device=device))


def _unbalanced_weights(C, la, lb):
    # positive weights of different masses (unbalanced transport allows them)
    out = diffcomb.sinkhorn(C, la.exp(), 0.5 * lb.exp(), epsilon=0.5, tau_a=0.7, tau_b=0.8, **_tight(C))
    return out.plan, out.cost


def _scaled(C, la, lb):
    # balanced, with epsilon scaling and a warm start: the extended solver's balanced derivatives
    # (weights through a softmax: equal masses; a relative epsilon's scale is a constant, so finite
    # differences would see what the derivatives leave out by design)
    out = diffcomb.sinkhorn(C, la.softmax(-1), lb.softmax(-1), epsilon=0.5, epsilon_scaling=0.7, init=(None, torch.zeros(3, dtype=C.dtype, device=C.device)),
                            **_tight(C))
    return out.plan, out.cost


def _cloud_euclidean(x, y):
    return diffcomb.sinkhorn(x=x, y=y, epsilon=0.5, metric="euclidean", reg_m=1.0, **_tight(x)).cost


CASES = [
    Case("sinkhorn-unbalanced", _unbalanced, _cost),
    Case("sinkhorn-unbalanced-unroll", _unbalanced_unrolled, _cost),
    Case("sinkhorn-unbalanced-weights", _unbalanced_weights, _weights),
    Case("sinkhorn-scaling-warm", _scaled, _weights),
    Case("sinkhorn-clouds", _cloud, _clouds),
    Case("sinkhorn-clouds-euclidean-unbalanced", _cloud_euclidean, _clouds),
    Case("sinkhorn_divergence-euclidean", _divergence, _clouds),
]
