"""Cases of the op x mode matrix for the extended optimal transport solvers (diffcomb.sinkhorn with
unbalanced marginals, with point clouds, and diffcomb.sinkhorn_divergence).

The dense extended solver has no forward mode (the plan's tangent needs a forward-mode implicit
solve, not implemented) and no second derivatives; between point clouds only the cost is
differentiable, with a jvp (its envelope gradient against the tangents) and no second derivatives.
The matrix checks jvp and forward_ad against a reverse-mode Jacobian built by double backward, which
needs the second derivatives: for the point-cloud cases those two modes are therefore listed with the
second-derivative error, and the jvp itself is checked against reverse mode and finite differences in
tests/test_transport_ext.py (test_cloud_jvp_and_forward_ad).
"""

import torch

import diffcomb
from tests.autodiff_cases import Case

_NO_FORWARD = "sinkhorn: the forward-mode derivative is not defined"
_NO_SECOND = "sinkhorn: the second derivative is not defined"


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


CASES = [
    Case("sinkhorn-unbalanced", _unbalanced, _cost,
         undefined={"jacfwd": _NO_FORWARD, "jvp": _NO_FORWARD, "forward_ad": _NO_FORWARD, "gradgrad": _NO_SECOND}),
    Case("sinkhorn-clouds", _cloud, _clouds, undefined=dict.fromkeys(("jvp", "forward_ad", "gradgrad"), _NO_SECOND)),
    Case("sinkhorn_divergence-euclidean", _divergence, _clouds,
         undefined=dict.fromkeys(("jvp", "forward_ad", "gradgrad"), _NO_SECOND)),
]
