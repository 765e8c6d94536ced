"""Randomized gradient cross-checks of every differentiable public op (issue 12, item 5).

Each op runs with its DEFAULT hyper-parameters on seeded random float64 inputs of random shapes
(random leading dimensions, random n, a random ``dim`` where the op takes one). A random upstream
gradient ``w`` turns the outputs into the scalar ``L = sum_k <w_k, out_k>``; autograd's
``<grad L, v>`` along a random direction ``v`` is compared with the central difference
``(L(x + h v) - L(x - h v)) / (2 h)``, ``h = 1e-6 max(1, max |x|)``, within

    |fd - <grad, v>| <= rtol * sum_i |grad_i v_i| + 1e-8 * max(1, sum_k |w_k| . |out_k|)

(``rtol = 1e-6`` unless a family states otherwise; the second term covers the rounding noise of
the difference quotient, about 1e-16 |L| / h). The draws are continuous, so exact ties
(non-differentiable points) have probability zero. Each case has its own seed, ``zlib.crc32`` of
the test id. The hand-picked inputs of the family test files did not catch the wrong
default-argument gradients of issue 12; these draws are meant to.

Sinkhorn-based ops differentiate the solution map implicitly: the gradient is exact at
convergence (SPEC 4.3 b), not for the truncated iteration. Their finite differences are taken of
the converged map (the same call with ``tol=1e-12``), while the gradient under test comes from the
default call; ``rtol = 1e-4`` covers the default tolerance (1e-6) of the forward. Their gradients
in the marginals a and b are defined up to additive constants: the directions for a and b sum to
zero, and the tolerance's scale uses the centered gradients (so that a blown-up constant cannot
hide an error).

A mismatch is accepted only where the library itself flags the result: a warning that says the result is inexact (e.g. the
implicit backward of a Sinkhorn run that did not converge) or a documented output saying so
(``SinkhornResult.converged`` is False) -- "a result that is wrong must never look fine".

``test_every_public_name_is_covered`` fails when a public name is added to ``diffcomb.__all__``
without being listed here, either in the gradient matrix or in ``EXCLUDED`` with its reason.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pytest
import torch

import diffcomb
from tests.conftest import flags_inexact as _flags_inexact

F64 = torch.float64
N_CASES = 16  # random cases per matrix entry
FD_STEP = 1e-6  # relative central-difference step
RTOL = 1e-6
FD_NOISE = 1e-8  # rounding allowance of the difference quotient, relative to max(1, sum_k |w_k| . |out_k|)
SINKHORN_RTOL = 1e-4
SINKHORN_CASES = 24  # more cases: the default-tolerance failures of issue 12 hit about one draw in six
CONVERGED = dict(tol=1e-12, max_iter=100_000)  # the converged map, for Sinkhorn finite differences


# ------------------------------------------------------------------------------------------------
# Random draws (all from the case's own generator).


def seeded(request) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform int in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=F64))


def log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(uniform(g, math.log(lo), math.log(hi)))


def lead_shape(g: torch.Generator, max_dims: int = 2) -> list[int]:
    """0 to max_dims leading (batch) dimensions of sizes 1 to 3."""
    return [randint(g, 1, 3) for _ in range(randint(g, 0, max_dims))]


def normal(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=F64) * scale


def with_dim(g: torch.Generator, n: int) -> tuple[list[int], int]:
    """A random shape holding n at a random position, and that position as a random (possibly
    negative) dim."""
    shape = lead_shape(g)
    pos = randint(g, 0, len(shape))
    shape.insert(pos, n)
    dim = pos if randint(g, 0, 1) else pos - len(shape)
    return shape, dim


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def simplex(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Positive weights summing to 1 along the last dimension, bounded away from 0."""
    w = torch.rand(shape, generator=g, dtype=F64) + 0.2
    return w / w.sum(-1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# The check.


@dataclass
class Problem:
    """One random instance: fn(*inputs) -> Tensor or tuple of Tensors (the differentiable outputs).

    inputs with requires_grad are differentiated; reference (default: fn) is what the finite
    difference evaluates; directions(g, inputs) may replace the standard normal directions (e.g.
    zero-sum directions for transport marginals); centered lists the inputs whose gradient is only
    defined up to an additive constant along the last dimension (their directions must sum to 0
    there): the tolerance's scale sum_i |grad_i v_i| then uses the centered gradient, so that an
    arbitrary (or blown-up) constant cannot inflate it. reported_inexact(*inputs) -> bool says
    whether the library itself reports the result as inexact through a documented output (e.g.
    SinkhornResult.converged is False); like such a warning, that excuses a mismatch."""

    fn: Callable[..., object]
    inputs: Sequence[torch.Tensor]
    rtol: float = RTOL
    reference: Optional[Callable[..., object]] = None
    directions: Optional[Callable[[torch.Generator, Sequence[torch.Tensor]], list]] = None
    centered: tuple = ()
    reported_inexact: Optional[Callable[..., bool]] = None


def outputs_of(result: object) -> list[torch.Tensor]:
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    outs = [t for t in items if isinstance(t, torch.Tensor)]
    assert outs and all(t.is_floating_point() for t in outs), "a case must return floating tensors only"
    return outs


def check_gradient(p: Problem, g: torch.Generator) -> None:
    inputs = list(p.inputs)
    diff = [i for i, t in enumerate(inputs) if t.requires_grad]
    assert diff, "a case must differentiate at least one input"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = outputs_of(p.fn(*inputs))
        weights = [torch.randn(o.shape, generator=g, dtype=F64) for o in outs]
        loss = sum((w * o).sum() for w, o in zip(weights, outs))
        grads = torch.autograd.grad(loss, [inputs[i] for i in diff], allow_unused=True)
    flagged = [str(w.message) for w in caught if _flags_inexact(w)]
    if p.reported_inexact is not None and p.reported_inexact(*[t.detach() for t in inputs]):
        flagged.append("reported inexact by the result")
    grads = [torch.zeros_like(inputs[i]) if gr is None else gr for i, gr in zip(diff, grads)]
    for i, gr in zip(diff, grads):
        assert gr.shape == inputs[i].shape, f"gradient of input {i} has shape {tuple(gr.shape)}"
        assert torch.isfinite(gr).all(), f"non-finite gradient for input {i}: {gr}"

    if p.directions is not None:
        dirs = p.directions(g, inputs)
    else:
        dirs = [torch.randn(inputs[i].shape, generator=g, dtype=F64) if i in diff else None
                for i in range(len(inputs))]
    analytic = sum(float((gr * dirs[i]).sum()) for i, gr in zip(diff, grads))
    for i in p.centered:
        assert float(dirs[i].sum(-1).abs().max()) < 1e-12, "directions of a centered input must sum to 0"
    scale = sum(float(((gr - gr.mean(-1, keepdim=True) if i in p.centered else gr) * dirs[i]).abs().sum())
                for i, gr in zip(diff, grads))

    x_max = max((float(inputs[i].detach().abs().max()) for i in diff if inputs[i].numel()), default=1.0)
    h = FD_STEP * max(1.0, x_max)
    reference = p.reference or p.fn

    def value(sign: float) -> tuple[float, float]:
        moved = [t.detach() + sign * h * dirs[i] if i in diff else t.detach() for i, t in enumerate(inputs)]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs = outputs_of(reference(*moved))
        terms = [(w * o) for w, o in zip(weights, outs)]
        return sum(float(t.sum()) for t in terms), sum(float(t.abs().sum()) for t in terms)

    (plus, mag_p), (minus, mag_m) = value(1.0), value(-1.0)
    fd = (plus - minus) / (2 * h)
    tol = p.rtol * scale + FD_NOISE * max(mag_p, mag_m, 1.0)
    error = abs(fd - analytic)
    if error <= tol:
        return
    assert flagged, (
        f"<grad, v> = {analytic!r} but the central difference is {fd!r} (error {error:.3g} > tolerance "
        f"{tol:.3g}; sum|grad v| = {scale:.3g}, h = {h:.3g}); input shapes "
        f"{[tuple(t.shape) for t in inputs]}, and neither a warning nor the result flagged it")


# ------------------------------------------------------------------------------------------------
# The matrix: public name -> builders of random problems. One entry per (name, variant).


@dataclass
class Entry:
    name: str  # the public name in diffcomb.__all__
    variant: str
    build: Callable[[torch.Generator], Problem]
    cases: int = N_CASES

    @property
    def id(self) -> str:
        return f"{self.name}[{self.variant}]" if self.variant else self.name


MATRIX: list[Entry] = []


def entry(name: str, variant: str = "", cases: int = N_CASES):
    def register(build):
        MATRIX.append(Entry(name, variant, build, cases))
        return build
    return register


# --- permutahedron (SPEC 1, 2): eps = 1, l2, ascending by default --------------------------------


def _values(g: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
    """Continuous values on a random scale, so that blocks of every size occur at eps = 1."""
    return normal(g, *shape, scale=log_uniform(g, 0.3, 5.0))


def _permutahedron(fn: Callable, **kwargs):
    def build(g):
        shape, dim = with_dim(g, randint(g, 1, 9))
        return Problem(lambda x: fn(x, dim=dim, **kwargs), [leaf(_values(g, shape))])
    return build


entry("soft_rank")(_permutahedron(diffcomb.soft_rank))
entry("soft_rank", "kl")(_permutahedron(diffcomb.soft_rank, regularization="kl"))
entry("soft_sort")(_permutahedron(diffcomb.soft_sort))
entry("soft_sort", "kl")(_permutahedron(diffcomb.soft_sort, regularization="kl"))


@entry("soft_topk")
def _soft_topk(g):
    n = randint(g, 1, 9)
    shape, dim = with_dim(g, n)
    k = randint(g, 0, n)
    return Problem(lambda x: diffcomb.soft_topk(x, k, dim=dim), [leaf(_values(g, shape))])


@entry("soft_quantile")
def _soft_quantile(g):
    shape, dim = with_dim(g, randint(g, 1, 9))
    levels = [uniform(g, 0.0, 1.0) for _ in range(randint(g, 1, 3))]
    q = levels[0] if len(levels) == 1 else levels
    return Problem(lambda x: diffcomb.soft_quantile(x, q, dim=dim), [leaf(_values(g, shape))])


@entry("isotonic_regression")
def _isotonic(g):
    shape, dim = with_dim(g, randint(g, 1, 9))
    y = leaf(_values(g, shape))
    if randint(g, 0, 1):
        w = leaf(torch.rand(shape, generator=g, dtype=F64) * 2 + 0.1)
        return Problem(lambda y, w: diffcomb.isotonic_regression(y, w, dim=dim), [y, w])
    return Problem(lambda y: diffcomb.isotonic_regression(y, dim=dim), [y])


def _spearman(fn: Callable):
    def build(g):
        shape, dim = with_dim(g, randint(g, 2, 9))
        target = normal(g, *shape)
        return Problem(lambda pred: fn(pred, target, dim=dim), [leaf(_values(g, shape))])
    return build


entry("soft_spearman")(_spearman(diffcomb.soft_spearman))
entry("spearman_loss")(_spearman(diffcomb.spearman_loss))


@entry("soft_lts")
def _soft_lts(g):
    n = randint(g, 1, 9)
    shape, dim = with_dim(g, n)
    k = randint(g, 0, n - 1)
    losses = _values(g, shape).square()
    return Problem(lambda l: diffcomb.soft_lts(l, k, dim=dim), [leaf(losses)])


# --- soft-DTW (SPEC 3): gamma = 1, squared Euclidean cost by default -----------------------------


def _series(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lead = lead_shape(g)
    d = randint(g, 1, 3)
    scale = log_uniform(g, 0.3, 3.0)
    return leaf(normal(g, *lead, randint(g, 1, 7), d, scale=scale)), \
        leaf(normal(g, *lead, randint(g, 1, 7), d, scale=scale))


def _on_series(fn: Callable):
    def build(g):
        return Problem(lambda x, y: fn(x, y), list(_series(g)))
    return build


def _on_cost(fn: Callable):
    def build(g):
        C = torch.rand(*lead_shape(g), randint(g, 1, 7), randint(g, 1, 7), generator=g, dtype=F64)
        return Problem(lambda C: fn(C), [leaf(C * log_uniform(g, 0.1, 10.0))])
    return build


for _name in ("soft_dtw", "soft_dtw_divergence", "sharp_soft_dtw", "sharp_soft_dtw_divergence", "mean_cost",
              "mean_cost_divergence", "pairwise_cost"):
    entry(_name)(_on_series(getattr(diffcomb, _name)))
for _name in ("soft_dtw_from_cost", "soft_dtw_alignment", "sharp_soft_dtw_from_cost", "mean_cost_from_cost"):
    entry(_name)(_on_cost(getattr(diffcomb, _name)))


# --- Sinkhorn (SPEC 4): epsilon = 0.1 (transport) / 0.01 (sort, rank, quantile) by default ----------


def _mass_preserving_directions(g: torch.Generator, inputs: Sequence[torch.Tensor]) -> list:
    """Standard normal directions for (C, a, b), with zero-sum directions for a and b: the
    gradients in a and b are documented "up to an additive constant (the mass constraint)", which
    such directions do not see. (Directions that change both masses equally are checked in
    test_sinkhorn_gradients_along_a_mass_change.)"""
    C, a, b = inputs
    vC = torch.randn(C.shape, generator=g, dtype=F64)
    va = torch.randn(a.shape, generator=g, dtype=F64)
    vb = torch.randn(b.shape, generator=g, dtype=F64)
    return [vC, va - va.mean(-1, keepdim=True), vb - vb.mean(-1, keepdim=True)]


def _transport(output: str, module: bool = False):
    def build(g):
        lead = lead_shape(g)
        n, m = randint(g, 1, 7), randint(g, 1, 7)
        C = torch.rand(*lead, n, m, generator=g, dtype=F64) * log_uniform(g, 0.3, 3.0)
        a, b = simplex(g, *lead, n), simplex(g, *lead, m)
        pick = (lambda r: r.plan) if output == "plan" else (lambda r: r.cost)
        solve = diffcomb.Sinkhorn() if module else diffcomb.sinkhorn
        converged = diffcomb.Sinkhorn(**CONVERGED) if module else \
            (lambda C, a, b: diffcomb.sinkhorn(C, a, b, **CONVERGED))
        return Problem(lambda C, a, b: pick(solve(C, a, b)), [leaf(C), leaf(a), leaf(b)], SINKHORN_RTOL,
                       lambda C, a, b: pick(converged(C, a, b)), _mass_preserving_directions, centered=(1, 2),
                       reported_inexact=lambda C, a, b: not bool(solve(C, a, b).converged.all()))
    return build


entry("sinkhorn", "plan", SINKHORN_CASES)(_transport("plan"))
entry("sinkhorn", "cost", SINKHORN_CASES)(_transport("cost"))
entry("Sinkhorn", "plan", SINKHORN_CASES)(_transport("plan", module=True))
entry("Sinkhorn", "cost", SINKHORN_CASES)(_transport("cost", module=True))


def _ot_sort(fn: Callable, **kwargs):
    def build(g):
        shape, dim = with_dim(g, randint(g, 1, 7))
        return Problem(lambda x: fn(x, dim=dim, **kwargs), [leaf(_values(g, shape))], SINKHORN_RTOL,
                       lambda x: fn(x, dim=dim, **kwargs, **CONVERGED))
    return build


def _ot_sort_module(cls: type):
    def build(g):
        shape, dim = with_dim(g, randint(g, 1, 7))
        return Problem(cls(dim=dim), [leaf(_values(g, shape))], SINKHORN_RTOL, cls(dim=dim, **CONVERGED))
    return build


entry("sinkhorn_rank", cases=SINKHORN_CASES)(_ot_sort(diffcomb.sinkhorn_rank))
entry("sinkhorn_sort", cases=SINKHORN_CASES)(_ot_sort(diffcomb.sinkhorn_sort))
entry("SinkhornRank", cases=SINKHORN_CASES)(_ot_sort_module(diffcomb.SinkhornRank))
entry("SinkhornSort", cases=SINKHORN_CASES)(_ot_sort_module(diffcomb.SinkhornSort))


def _quantile(module: bool):
    def build(g):
        shape, dim = with_dim(g, randint(g, 1, 7))
        levels = [uniform(g, 0.05, 0.95) for _ in range(randint(g, 1, 3))]  # width/2 <= q <= 1 - width/2
        q = levels[0] if len(levels) == 1 else levels
        if module:
            solve, converged = diffcomb.SinkhornQuantile(q, dim=dim), diffcomb.SinkhornQuantile(q, dim=dim, **CONVERGED)
        else:
            solve = (lambda x: diffcomb.sinkhorn_quantile(x, q, dim=dim))
            converged = (lambda x: diffcomb.sinkhorn_quantile(x, q, dim=dim, **CONVERGED))
        return Problem(solve, [leaf(_values(g, shape))], SINKHORN_RTOL, converged)
    return build


entry("sinkhorn_quantile", cases=SINKHORN_CASES)(_quantile(module=False))
entry("SinkhornQuantile", cases=SINKHORN_CASES)(_quantile(module=True))


def _sinkhorn_divergence(g, module: bool = False):
    lead = lead_shape(g)
    d = randint(g, 1, 3)
    x = normal(g, *lead, randint(g, 1, 6), d)
    y = normal(g, *lead, randint(g, 1, 6), d)
    a, b = simplex(g, *lead, x.shape[-2]), simplex(g, *lead, y.shape[-2])

    def directions(g, inputs):
        x, y, a, b = inputs
        vx, vy = torch.randn(x.shape, generator=g, dtype=F64), torch.randn(y.shape, generator=g, dtype=F64)
        va = torch.randn(a.shape, generator=g, dtype=F64)
        vb = torch.randn(b.shape, generator=g, dtype=F64)
        return [vx, vy, va - va.mean(-1, keepdim=True), vb - vb.mean(-1, keepdim=True)]

    if module:  # the loss, summed over the batch
        solve, converged = diffcomb.SinkhornDivergence(reduction="sum"), diffcomb.SinkhornDivergence(
            reduction="sum", **CONVERGED)
    else:
        solve = (lambda x, y, a, b: diffcomb.sinkhorn_divergence(x, y, a=a, b=b))
        converged = (lambda x, y, a, b: diffcomb.sinkhorn_divergence(x, y, a=a, b=b, **CONVERGED))
    return Problem(solve, [leaf(x), leaf(y), leaf(a), leaf(b)], SINKHORN_RTOL, converged, directions,
                   centered=(2, 3))


entry("sinkhorn_divergence", cases=SINKHORN_CASES)(_sinkhorn_divergence)
entry("SinkhornDivergence", cases=SINKHORN_CASES)(lambda g: _sinkhorn_divergence(g, module=True))


@entry("gumbel_sinkhorn", "noise=False")
def _gumbel_sinkhorn(g):
    n = randint(g, 1, 6)
    X = normal(g, *lead_shape(g), n, n, scale=log_uniform(g, 0.3, 3.0))
    return Problem(lambda X: diffcomb.gumbel_sinkhorn(X, noise=False), [leaf(X)])


@entry("GumbelSinkhorn", "noise=False")
def _gumbel_sinkhorn_module(g):
    n = randint(g, 1, 6)
    X = normal(g, *lead_shape(g), n, n, scale=log_uniform(g, 0.3, 3.0))
    return Problem(diffcomb.GumbelSinkhorn(noise=False), [leaf(X)])


# --- sorting networks (SPEC 5): cauchy, steepness 10 by default ----------------------------------


def _network(network: str, module: bool = False):
    def build(g):
        n = randint(g, 1, 10)
        x = normal(g, *lead_shape(g), n, scale=log_uniform(g, 0.1, 3.0))
        if module:
            sorter = diffcomb.DiffSortNet(network, n)
            return Problem(lambda x: tuple(sorter(x)), [leaf(x)])
        return Problem(lambda x: tuple(diffcomb.sorting_network(x, network=network)), [leaf(x)])
    return build


entry("sorting_network", "odd_even")(_network("odd_even"))
entry("sorting_network", "bitonic")(_network("bitonic"))
entry("DiffSortNet", "odd_even")(_network("odd_even", module=True))
entry("DiffSortNet", "bitonic")(_network("bitonic", module=True))


def _ranking_loss(module: bool):
    def build(g):
        lead = lead_shape(g)
        n = randint(g, 1, 8)
        P = torch.rand(*lead, n, n, generator=g, dtype=F64) * 0.96 + 0.02  # inside the BCE clamp
        target = normal(g, *lead, n)
        loss = diffcomb.RankingLoss() if module else (lambda P, t: diffcomb.ranking_loss(P, t))
        return Problem(lambda P: loss(P, target), [leaf(P)])
    return build


entry("ranking_loss")(_ranking_loss(False))
entry("RankingLoss")(_ranking_loss(True))


@entry("ranking_loss", "of sorting_network")
def _ranking_loss_of_network(g):
    lead = lead_shape(g)
    n = randint(g, 1, 8)
    network = ("odd_even", "bitonic")[randint(g, 0, 1)]
    target = normal(g, *lead, n)
    x = normal(g, *lead, n, scale=log_uniform(g, 0.1, 1.0))
    return Problem(lambda x: diffcomb.ranking_loss(diffcomb.sorting_network(x, network=network).matrix, target),
                   [leaf(x)])


# --- nn modules over the permutahedron and soft-DTW ops (default constructor arguments) ----------


def _module(make: Callable[[torch.Generator, int], torch.nn.Module], targets: bool = False, lo: int = 1):
    def build(g):
        n = randint(g, lo, 9)
        shape = lead_shape(g) + [n]
        layer = make(g, n)
        if targets:
            target = normal(g, *shape)
            return Problem(lambda x: layer(x, target), [leaf(_values(g, shape))])
        return Problem(lambda x: layer(x), [leaf(_values(g, shape))])
    return build


entry("SoftRank")(_module(lambda g, n: diffcomb.SoftRank()))
entry("SoftSort")(_module(lambda g, n: diffcomb.SoftSort()))
entry("SpearmanLoss")(_module(lambda g, n: diffcomb.SpearmanLoss(), targets=True, lo=2))
entry("SoftLTSLoss")(_module(lambda g, n: diffcomb.SoftLTSLoss(randint(g, 0, n - 1))))
entry("SoftTopK")(_module(lambda g, n: diffcomb.SoftTopK(randint(g, 0, n))))
entry("SoftQuantile")(_module(lambda g, n: diffcomb.SoftQuantile(uniform(g, 0.0, 1.0))))
entry("IsotonicRegression")(_module(lambda g, n: diffcomb.IsotonicRegression()))
entry("SoftSpearman")(_module(lambda g, n: diffcomb.SoftSpearman(), targets=True, lo=2))


def _on_batched_series(module: torch.nn.Module):
    """The soft-DTW modules take (B, N, D) series with at least one batch dimension."""
    def build(g):
        lead = [randint(g, 1, 3)] + lead_shape(g, 1)
        d = randint(g, 1, 3)
        scale = log_uniform(g, 0.3, 3.0)
        x = leaf(normal(g, *lead, randint(g, 1, 7), d, scale=scale))
        y = leaf(normal(g, *lead, randint(g, 1, 7), d, scale=scale))
        return Problem(lambda x, y: module(x, y), [x, y])
    return build


for _name in ("SoftDTW", "SoftDTWDivergence", "SharpSoftDTW", "SharpSoftDTWDivergence", "SoftDTWAlignment"):
    entry(_name)(_on_batched_series(getattr(diffcomb, _name)()))


# --- ranking metrics and Fenchel-Young losses (SPEC 2.5, 2.6): eps = 1 by default --------------------


def _labels(g: torch.Generator, shape: Sequence[int], dim: int) -> torch.Tensor:
    """0/1 labels with a positive and a negative in every row (the metrics are NaN otherwise)."""
    labels = (torch.rand(shape, generator=g, dtype=F64) < 0.5).to(F64)
    labels.narrow(dim, 0, 1).fill_(1.0)
    labels.narrow(dim, 1, 1).fill_(0.0)
    return labels


def _ranking_metric(fn: Callable, graded: bool = False, with_k: bool = False):
    def build(g):
        n = randint(g, 2, 9)
        shape, dim = with_dim(g, n)
        if graded:
            target = torch.randint(0, 4, shape, generator=g).to(F64)
            target.narrow(dim, 0, 1).fill_(3.0)  # a positive gain in every row
        else:
            target = _labels(g, shape, dim)
        kwargs = {"k": randint(g, 1, n)} if with_k else {}
        return Problem(lambda s: fn(s, target, dim=dim, **kwargs), [leaf(_values(g, shape))])
    return build


for _fn, _graded in (("soft_ndcg", True), ("ndcg_loss", True), ("soft_average_precision", False),
                     ("average_precision_loss", False), ("soft_auc", False), ("auc_loss", False)):
    entry(_fn)(_ranking_metric(getattr(diffcomb, _fn), graded=_graded))
entry("soft_ndcg", "k")(_ranking_metric(diffcomb.soft_ndcg, graded=True, with_k=True))
entry("soft_recall_at_k")(_ranking_metric(diffcomb.soft_recall_at_k, with_k=True))
entry("recall_at_k_loss")(_ranking_metric(diffcomb.recall_at_k_loss, with_k=True))


def _fenchel_young(make: Callable[[], Callable], regularization: str = "l2"):
    def build(g):
        n = randint(g, 1, 8)
        shape, dim = with_dim(g, n)
        ranks = torch.rand(shape, generator=g, dtype=F64).argsort(dim=dim).argsort(dim=dim).to(F64) + 1.0
        loss = make()
        return Problem(lambda t: loss(t, ranks, regularization=regularization, dim=dim),
                       [leaf(_values(g, shape))])
    return build


entry("fenchel_young_loss")(_fenchel_young(lambda: diffcomb.fenchel_young_loss))
entry("fenchel_young_loss", "kl")(_fenchel_young(lambda: diffcomb.fenchel_young_loss, "kl"))


@entry("fenchel_young_loss", "birkhoff")
def _fenchel_young_birkhoff(g):
    lead, n = lead_shape(g), randint(g, 1, 6)
    perm = torch.rand(*lead, n, generator=g, dtype=F64).argsort(dim=-1)
    target = torch.nn.functional.one_hot(perm, n).to(F64)
    theta = normal(g, *lead, n, n, scale=log_uniform(g, 0.3, 3.0))
    return Problem(lambda t: diffcomb.fenchel_young_loss(t, target, polytope="birkhoff"), [leaf(theta)])


def _metric_module(make: Callable[[int], torch.nn.Module], graded: bool = False):
    def build(g):
        n = randint(g, 2, 9)
        shape = lead_shape(g) + [n]
        layer = make(n)
        target = _ranking_metric_target(g, shape, graded)
        return Problem(lambda s: layer(s, target), [leaf(_values(g, shape))])
    return build


def _ranking_metric_target(g: torch.Generator, shape: Sequence[int], graded: bool) -> torch.Tensor:
    if not graded:
        return _labels(g, shape, -1)
    target = torch.randint(0, 4, shape, generator=g).to(F64)
    target[..., 0] = 3.0
    return target


entry("NDCGLoss")(_metric_module(lambda n: diffcomb.NDCGLoss(k=n), graded=True))
entry("AveragePrecisionLoss")(_metric_module(lambda n: diffcomb.AveragePrecisionLoss()))
entry("RecallAtKLoss")(_metric_module(lambda n: diffcomb.RecallAtKLoss(1)))
entry("AUCLoss")(_metric_module(lambda n: diffcomb.AUCLoss()))


@entry("FenchelYoungLoss")
def _fenchel_young_module(g):
    n = randint(g, 1, 8)
    shape = lead_shape(g) + [n]
    ranks = torch.rand(shape, generator=g, dtype=F64).argsort(dim=-1).argsort(dim=-1).to(F64) + 1.0
    layer = diffcomb.FenchelYoungLoss()
    return Problem(lambda t: layer(t, ranks), [leaf(_values(g, shape))])


# --- sparse soft top-k and the router (p = 4/3, eps = 1 by default) -------------------------------


def _sparse_topk(magnitude: bool = False):
    def build(g):
        n = randint(g, 1, 9)
        shape, dim = with_dim(g, n)
        k = randint(g, 0, n)
        return Problem(lambda x: diffcomb.sparse_soft_topk(x, k, dim=dim, magnitude=magnitude),
                       [leaf(_values(g, shape))])
    return build


entry("sparse_soft_topk")(_sparse_topk())
entry("sparse_soft_topk", "magnitude")(_sparse_topk(magnitude=True))


def _routing_outputs(r) -> list[torch.Tensor]:
    """The differentiable fields of a TopKRouting (load counts tokens: piecewise constant)."""
    return [r.combine_weights, r.mask, r.gates, r.importance, r.balance_loss]


@entry("topk_routing")
def _topk_routing(g):
    experts = randint(g, 2, 8)
    logits = _values(g, lead_shape(g) + [experts])
    k = randint(g, 1, experts)
    return Problem(lambda z: _routing_outputs(diffcomb.topk_routing(z, k)), [leaf(logits)])


@entry("SparseSoftTopK")
def _sparse_topk_module(g):
    n = randint(g, 1, 9)
    layer = diffcomb.SparseSoftTopK(randint(g, 0, n))
    return Problem(lambda x: layer(x), [leaf(_values(g, lead_shape(g) + [n]))])


@entry("TopKRouter")
def _topk_router(g):
    features, experts = randint(g, 1, 5), randint(g, 2, 8)
    torch.manual_seed(randint(g, 0, 2**31 - 1))
    router = diffcomb.TopKRouter(features, experts, randint(g, 1, experts)).double()
    return Problem(lambda x: _routing_outputs(router(x)), [leaf(normal(g, *lead_shape(g), features))])


# ------------------------------------------------------------------------------------------------
# Public names that are not in the gradient matrix, and why.

_HARD = ("hard MAP solver: piecewise-constant output with no gradient (differentiated through perturbed, imle "
         "or blackbox)")
_SAMPLER = "noise sampler: no differentiable input"
_STOCHASTIC = ("stochastic gradient estimator (Monte-Carlo or interpolation, not the derivative of its forward): "
               "checked by test_stochastic_estimators_* below and by tests/test_perturb.py")
_FACTORY = "the callable returned by a stochastic estimator factory (see its factory)"

EXCLUDED: dict[str, str] = {
    "argmax_onehot": _HARD,
    "topk_mask": _HARD,
    "sort_permutation": _HARD,
    "grid_shortest_path": _HARD,
    "linear_assignment": _HARD,
    "sample_gumbel": _SAMPLER,
    "sample_normal": _SAMPLER,
    "sample_sum_of_gamma": _SAMPLER,
    "perturbed": _STOCHASTIC,
    "imle": _STOCHASTIC,
    "blackbox": _STOCHASTIC,
    "perturbed_fenchel_young_loss": _STOCHASTIC + "; its gradient is also checked against finite differences at "
                                                  "fixed noise in test_fenchel_young_loss_matches_finite_differences",
    "PerturbedTopK": _STOCHASTIC,
    "PerturbedArgmax": _STOCHASTIC,
    "PerturbedShortestPath": _STOCHASTIC,
    "IMLETopK": _STOCHASTIC,
    "IMLEShortestPath": _STOCHASTIC,
    "BlackboxShortestPath": _STOCHASTIC,
    "PerturbedFenchelYoungLoss": _STOCHASTIC,
    "PerturbedSolver": _FACTORY,
    "IMLESolver": _FACTORY,
    "BlackboxSolver": _FACTORY,
    "SinkhornResult": "result type (NamedTuple), not an op",
    "SortingNetworkResult": "result type (NamedTuple), not an op",
    "TopKRouting": "result type (NamedTuple), not an op",
    "soft_dtw_barycenter": "an L-BFGS solve whose result is returned detached (no gradient by design)",
}


def test_every_public_name_is_covered():
    public = set(diffcomb.__all__)
    in_matrix = {e.name for e in MATRIX}
    assert not in_matrix & EXCLUDED.keys(), f"listed both as differentiable and excluded: {in_matrix & EXCLUDED.keys()}"
    missing = public - in_matrix - EXCLUDED.keys()
    assert not missing, (f"public names in diffcomb.__all__ with no randomized gradient check: {sorted(missing)}; "
                         "add them to MATRIX in tests/test_random_gradients.py, or to EXCLUDED with the reason")
    stale = (in_matrix | EXCLUDED.keys()) - public
    assert not stale, f"names listed here that are not in diffcomb.__all__ (renamed or removed?): {sorted(stale)}"


@pytest.mark.parametrize("op, case", [pytest.param(e, i, id=f"{e.id}-{i}") for e in MATRIX for i in range(e.cases)])
def test_gradient_matches_finite_differences(op: Entry, case: int, request):
    g = seeded(request)
    check_gradient(op.build(g), g)


# ------------------------------------------------------------------------------------------------
# Two Sinkhorn findings of these random draws, pinned with explicit tests.


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("output", ["plan", "cost"])
def test_sinkhorn_gradients_along_a_mass_change(output: str, case: int, request):
    """sinkhorn accepts any equal masses sum(a) == sum(b), so a direction (v_a, v_b) with
    sum(v_a) == sum(v_b) != 0 stays feasible and the directional derivative along it is
    well-defined; the documented "up to an additive constant" freedom (+c on a, -c on b) does not
    change it. The matrix above uses zero-sum directions; here the masses change.
    (Found by these tests: the cost's gradient in a and b is (f, g), which misses -epsilon per unit
    of mass change for the cost as defined, <P, C> + eps KL(P || a b^T); the plan's is right.)"""
    g = seeded(request)
    lead = lead_shape(g)
    n, m = randint(g, 1, 6), randint(g, 1, 6)
    C = torch.rand(*lead, n, m, generator=g, dtype=F64) * log_uniform(g, 0.3, 3.0)
    a, b = simplex(g, *lead, n), simplex(g, *lead, m)

    def directions(g, inputs):
        C, a, b = inputs
        mass = torch.rand(*a.shape[:-1], 1, generator=g, dtype=F64) + 0.5
        va = torch.randn(a.shape, generator=g, dtype=F64)
        vb = torch.randn(b.shape, generator=g, dtype=F64)
        va = va - va.mean(-1, keepdim=True) + mass / a.shape[-1]
        vb = vb - vb.mean(-1, keepdim=True) + mass / b.shape[-1]
        return [torch.randn(C.shape, generator=g, dtype=F64), va, vb]

    pick = (lambda r: r.plan) if output == "plan" else (lambda r: r.cost)
    check_gradient(Problem(lambda C, a, b: pick(diffcomb.sinkhorn(C, a, b, tol=1e-12, max_iter=100_000)),
                           [leaf(C), leaf(a), leaf(b)], SINKHORN_RTOL, directions=directions), g)


def test_sinkhorn_divergence_does_not_hide_an_unconverged_solve():
    """Default epsilon = 0.1 on these points: the x-y solve stops at max_iter = 1000 unconverged
    (sinkhorn(...).converged is False there). sinkhorn_divergence returns a bare tensor, so unless it
    warns, its value and gradient must be those of the converged problem. (Found by these tests:
    both are silently about 5-7% off.)"""
    x = torch.tensor([[0.2, 0.4], [1.4, -1.9], [1.5, 0.1]], dtype=F64)
    y = torch.tensor([[-0.1, -0.7], [0.6, 2.7]], dtype=F64)
    a = torch.tensor([0.22, 0.38, 0.40], dtype=F64)
    b = torch.tensor([0.36, 0.64], dtype=F64)
    assert not bool(diffcomb.sinkhorn(torch.cdist(x, y).square(), a, b).converged)
    xd = leaf(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = diffcomb.sinkhorn_divergence(xd, y, a=a, b=b)
        (grad,) = torch.autograd.grad(value, xd)
    if any(_flags_inexact(w) for w in caught):
        return
    xc = leaf(x)
    exact = diffcomb.sinkhorn_divergence(xc, y, a=a, b=b, **CONVERGED)
    (exact_grad,) = torch.autograd.grad(exact, xc)
    torch.testing.assert_close(value, exact, rtol=1e-4, atol=0)
    torch.testing.assert_close(grad, exact_grad, rtol=1e-4, atol=1e-4 * float(exact_grad.abs().max()))


# ------------------------------------------------------------------------------------------------
# Stochastic estimators: their gradients are not derivatives of their (random, piecewise-constant)
# forward, so the check above does not apply. Here: on random shapes, every estimator's gradient is
# finite and of theta's shape; the Fenchel-Young loss, whose value at fixed noise is piecewise
# linear with exactly the gradient it returns, matches finite differences at fixed noise.
# The expectation-level checks (perturbed argmax = softmax and its Jacobian, perturbed top-k VJP vs
# finite differences of the exact expectation, I-MLE on Gumbel argmax vs the exact expectation,
# blackbox = noiseless I-MLE / lambda) are in tests/test_perturb.py and are not repeated here.


def _estimators(g: torch.Generator):
    """(name, callable(theta, generator) -> output, theta) on random shapes."""
    lead = lead_shape(g)
    n = randint(g, 2, 8)
    k = randint(g, 1, n - 1)
    h, w = randint(g, 2, 5), randint(g, 2, 5)
    vec = normal(g, *lead, n)
    grid = torch.rand(*lead, h, w, generator=g, dtype=F64) * 5 + 0.1
    topk = lambda t: diffcomb.topk_mask(t, k)  # noqa: E731
    return [
        ("perturbed(argmax_onehot)", diffcomb.perturbed(diffcomb.argmax_onehot), vec),
        ("perturbed(topk, normal)", diffcomb.perturbed(topk, noise="normal"), vec),
        ("imle(topk)", diffcomb.imle(topk, k=k), vec),
        ("imle(argmax, gumbel)", diffcomb.imle(diffcomb.argmax_onehot, noise="gumbel"), vec),
        ("blackbox(topk)", lambda t, gen: diffcomb.blackbox(topk)(t), vec),
        ("PerturbedTopK", diffcomb.PerturbedTopK(k), vec),
        ("PerturbedArgmax", diffcomb.PerturbedArgmax(), vec),
        ("PerturbedShortestPath", diffcomb.PerturbedShortestPath(), grid),
        ("IMLETopK", diffcomb.IMLETopK(k), vec),
        ("IMLEShortestPath", diffcomb.IMLEShortestPath(), grid),
        ("BlackboxShortestPath", lambda t, gen: diffcomb.BlackboxShortestPath()(t), grid),
    ]


@pytest.mark.parametrize("case", range(4))
def test_stochastic_estimators_give_finite_gradients_of_the_right_shape(case: int, request):
    g = seeded(request)
    for name, estimator, theta in _estimators(g):
        theta = leaf(theta)
        out = estimator(theta, torch.Generator().manual_seed(randint(g, 0, 2**31 - 1)))
        assert out.shape == theta.shape and out.dtype == theta.dtype, name
        upstream = torch.randn(out.shape, generator=g, dtype=F64)
        (grad,) = torch.autograd.grad((out * upstream).sum(), theta)
        assert grad.shape == theta.shape, name
        assert torch.isfinite(grad).all(), f"{name}: non-finite gradient {grad}"


@pytest.mark.parametrize("case", range(N_CASES))
@pytest.mark.parametrize("module", [False, True], ids=["function", "module"])
def test_fenchel_young_loss_matches_finite_differences(module: bool, case: int, request):
    """At fixed noise the loss is (1/M) sum_m max_y <y, theta + sigma Z_m> - <theta, y_true>:
    piecewise linear in theta, with gradient y_hat - y_true, the estimator the library returns.
    So a central difference (same seed on both sides) must match it away from solver switches."""
    g = seeded(request)
    lead = lead_shape(g)
    n = randint(g, 2, 8)
    theta = normal(g, *lead, n)
    target = diffcomb.argmax_onehot(normal(g, *lead, n))
    seed = randint(g, 0, 2**31 - 1)
    if module:
        layer = diffcomb.PerturbedFenchelYoungLoss(diffcomb.argmax_onehot)
        fn = lambda t: layer(t, target, torch.Generator().manual_seed(seed))  # noqa: E731
    else:
        fn = lambda t: diffcomb.perturbed_fenchel_young_loss(  # noqa: E731
            t, target, diffcomb.argmax_onehot, generator=torch.Generator().manual_seed(seed))
    check_gradient(Problem(fn, [leaf(theta)]), g)
