"""The Sinkhorn family in the op x mode x dtype matrix (tests/test_autodiff_modes.py).

Every public differentiable op and module built on diffcomb's Sinkhorn: the transport (plan and cost) with
both gradient methods (implicit differentiation and unrolling), given and uniform weights, the Sinkhorn
divergence, the OT sort / rank / quantile in both directions and with both methods, Gumbel-Sinkhorn
and the Fenchel-Young loss over the Birkhoff polytope.

Given weights enter through a softmax of free parameters, so that every perturbation keeps
sum(a) == sum(b) (the transport is defined only there: unequal masses raise). The implicit cases
converge tightly in float64 (the implicit derivative is that of the converged transport; finite
differences see the forward's own tolerance); the unrolled cases run a fixed iteration count (tol=0),
whose derivative is exact. No cell is undefined.
"""

from __future__ import annotations

import torch

import diffcomb
from tests.autodiff_cases import Case


def _tol(x: torch.Tensor):
    """A tight tolerance in float64 (finite differences of the converged transport), the default in float32."""
    return 1e-13 if x.dtype == torch.float64 else None


def _transport_inputs(dtype, device, gen):
    return (torch.rand(2, 4, 5, generator=gen, dtype=dtype, device=device),
            torch.randn(2, 4, generator=gen, dtype=dtype, device=device) * 0.5,
            torch.randn(5, generator=gen, dtype=dtype, device=device) * 0.5)


def _transport(backward: str):
    def fn(C, la, lb):
        unroll = backward == "unroll"
        out = diffcomb.sinkhorn(C, la.softmax(-1), lb.softmax(-1), 0.5, max_iter=30 if unroll else 1000,
                                tol=0.0 if unroll else _tol(C), backward=backward)
        return out.plan, out.cost

    return fn


def _uniform(C):
    out = diffcomb.sinkhorn(C, epsilon=0.3, tol=_tol(C))
    return out.plan, out.cost


def _values(shape):
    def inputs(dtype, device, gen):
        return (torch.randn(*shape, generator=gen, dtype=dtype, device=device),)

    return inputs


def _sort(op, backward: str, descending: bool = False, **kw):
    def fn(x):
        unroll = backward == "unroll"
        return op(x, 0.3, descending=descending, backward=backward, max_iter=40 if unroll else 1000,
                  tol=0.0 if unroll else _tol(x), **kw)

    return fn


def _quantile(x):
    return diffcomb.sinkhorn_quantile(x, [0.3, 0.6], 0.3, width=0.2, tol=_tol(x), dim=0)


def _divergence_inputs(dtype, device, gen):
    return (torch.randn(2, 4, 2, generator=gen, dtype=dtype, device=device),
            torch.randn(2, 3, 2, generator=gen, dtype=dtype, device=device))


def _divergence(x, y):
    # epsilon on the scale of the squared distances: the symmetric terms converge fast (their envelope
    # gradient is exact at convergence).
    return diffcomb.sinkhorn_divergence(x, y, 2.0, tol=_tol(x), max_iter=5000)


def _scores(dtype, device, gen):
    return (torch.randn(2, 4, 4, generator=gen, dtype=dtype, device=device),)


def _gumbel(X):
    return diffcomb.gumbel_sinkhorn(X, 0.7, 15, noise=False)


def _fenchel_young(theta):
    target = torch.eye(4, dtype=theta.dtype, device=theta.device)[[1, 0, 3, 2]]
    return diffcomb.fenchel_young_loss(theta, target.expand_as(theta), "birkhoff", regularization_strength=0.5,
                                       reduction="none", tol=_tol(theta))


def _module(make):
    def fn(*x):
        layer = make(x[0])
        out = layer(*x)
        return (out.plan, out.cost) if isinstance(out, diffcomb.SinkhornResult) else out

    return fn


CASES = [
    Case("sinkhorn-implicit", _transport("implicit"), _transport_inputs),
    Case("sinkhorn-unroll", _transport("unroll"), _transport_inputs),
    Case("sinkhorn-uniform", _uniform, lambda dtype, device, gen: (
        torch.rand(3, 3, 4, generator=gen, dtype=dtype, device=device),)),
    Case("sinkhorn_divergence", _divergence, _divergence_inputs),
    Case("sinkhorn_sort-implicit", _sort(diffcomb.sinkhorn_sort, "implicit"), _values((2, 5))),
    Case("sinkhorn_sort-unroll-descending", _sort(diffcomb.sinkhorn_sort, "unroll", True), _values((2, 5))),
    Case("sinkhorn_sort-targets", _sort(diffcomb.sinkhorn_sort, "implicit", num_targets=3, squash="none"),
         _values((2, 5))),
    Case("sinkhorn_rank-implicit-descending", _sort(diffcomb.sinkhorn_rank, "implicit", True), _values((2, 5))),
    Case("sinkhorn_rank-unroll", _sort(diffcomb.sinkhorn_rank, "unroll"), _values((2, 5))),
    Case("sinkhorn_quantile", _quantile, _values((6, 2))),
    Case("gumbel_sinkhorn", _gumbel, _scores),
    Case("fenchel_young_loss-birkhoff", _fenchel_young, _scores),
    Case("Sinkhorn", _module(lambda C: diffcomb.nn.Sinkhorn(1.0, max_iter=100, tol=0.0, backward="unroll")), _scores),
    Case("SinkhornSort", _module(lambda x: diffcomb.nn.SinkhornSort(0.3, tol=_tol(x))), _values((2, 5))),
    Case("SinkhornRank", _module(lambda x: diffcomb.nn.SinkhornRank(0.3, tol=_tol(x))), _values((2, 5))),
    Case("SinkhornQuantile", _module(lambda x: diffcomb.nn.SinkhornQuantile(0.5, 0.3, width=0.2, tol=_tol(x))),
         _values((2, 6))),
    Case("GumbelSinkhorn", _module(lambda X: diffcomb.nn.GumbelSinkhorn(0.7, 15, noise=False)), _scores),
    Case("SinkhornDivergence", _module(lambda x: diffcomb.nn.SinkhornDivergence(2.0, 5000, _tol(x), "none")),
         _divergence_inputs),
]
