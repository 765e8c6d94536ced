"""The Sinkhorn family's modules (diffcomb/nn/sinkhorn.py) and the dim= of its OT sort, rank and
quantile: each module's forward equals the functional call (values and gradients), its
hyper-parameters are checked in __init__ and shown in repr; dim= equals moving the axis last."""

from __future__ import annotations

import pytest
import torch

import diffcomb
from diffcomb import (
    GumbelSinkhorn,
    SinkhornDivergence,
    SinkhornQuantile,
    SinkhornRank,
    SinkhornSort,
    gumbel_sinkhorn,
    sinkhorn_divergence,
    sinkhorn_quantile,
    sinkhorn_rank,
    sinkhorn_sort,
)
from tests.conftest import DEVICES

F64 = torch.float64


def _grads(out, x):
    return torch.autograd.grad(out.sum() if out.dim() else out, x)[0]


# ------------------------------------------------------------------------------------------------
# dim= on sinkhorn_sort / sinkhorn_rank / sinkhorn_quantile.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [0, 1, -2, 2])
@pytest.mark.parametrize("op", ["sort", "rank"])
def test_sort_rank_dim_equals_movedim(gen, device, dim, op):
    fn = {"sort": sinkhorn_sort, "rank": sinkhorn_rank}[op]
    x = torch.randn(4, 5, 6, generator=gen, dtype=F64).to(device).requires_grad_()
    out = fn(x, 0.05, dim=dim, descending=True)
    moved = fn(x.movedim(dim, -1), 0.05, descending=True).movedim(-1, dim)
    assert out.shape == x.shape
    torch.testing.assert_close(out, moved, rtol=0, atol=1e-12)
    torch.testing.assert_close(_grads(out * torch.arange(6.0, dtype=F64, device=device).sin().expand_as(out), x),
                               _grads(moved * torch.arange(6.0, dtype=F64, device=device).sin().expand_as(out), x),
                               rtol=0, atol=1e-12)
    if dim in (2, -1):  # the default is the last axis
        torch.testing.assert_close(out, fn(x, 0.05, descending=True), rtol=0, atol=0)


def test_sort_dim_with_fewer_targets(gen):
    x = torch.randn(3, 8, 2, generator=gen, dtype=F64)
    out = sinkhorn_sort(x, 0.05, dim=1, num_targets=3)
    assert out.shape == (3, 3, 2)
    torch.testing.assert_close(out, sinkhorn_sort(x.movedim(1, -1), 0.05, num_targets=3).movedim(-1, 1),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_quantile_dim_equals_movedim(gen, device, dim):
    x = torch.randn(7, 9, 3, generator=gen, dtype=F64).to(device)
    for q in (0.5, [0.25, 0.5, 0.75]):
        out = sinkhorn_quantile(x, q, 0.05, width=0.2, dim=dim)
        moved = sinkhorn_quantile(x.movedim(dim, -1), q, 0.05, width=0.2)
        torch.testing.assert_close(out, moved, rtol=0, atol=1e-12)
        removed = list(x.shape)
        del removed[dim]
        assert out.shape == (tuple(removed) if isinstance(q, float) else (*removed, 3))
    # the median of well-separated values, per column along dim 0
    y = torch.arange(1.0, 12.0, dtype=F64).unsqueeze(1).expand(11, 2) * torch.tensor([1.0, 2.0], dtype=F64)
    torch.testing.assert_close(sinkhorn_quantile(y, 0.5, 1e-3, width=0.1, dim=0, max_iter=20000),
                               torch.tensor([6.0, 12.0], dtype=F64), rtol=0, atol=1e-2)


@pytest.mark.parametrize("fn", [sinkhorn_sort, sinkhorn_rank, lambda x, **kw: sinkhorn_quantile(x, 0.5, **kw)])
def test_bad_dim(fn):
    x = torch.rand(3, 4)
    with pytest.raises(IndexError, match=r"diffcomb\.sinkhorn_\w+: dim=2 is out of range"):
        fn(x, dim=2)
    with pytest.raises(TypeError, match=r"diffcomb\.sinkhorn_\w+: dim must be an int, got float"):
        fn(x, dim=1.0)


# ------------------------------------------------------------------------------------------------
# Modules equal their functions.


# The default epsilon on random values can stop at max_iter above the float64 tol and warn, in the
# module and the function alike: what is compared is that the two are the same computation.
@pytest.mark.filterwarnings("ignore:.*Sinkhorn did not converge")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("module,function,kwargs", [
    (SinkhornSort, sinkhorn_sort, dict()),
    (SinkhornSort, sinkhorn_sort, dict(epsilon=0.05, dim=0, descending=True, num_targets=3, backward="unroll")),
    (SinkhornRank, sinkhorn_rank, dict()),
    (SinkhornRank, sinkhorn_rank, dict(epsilon=0.1, dim=1, descending=True, squash="none", tol=1e-8)),
])
def test_sort_rank_modules_equal_functions(gen, device, module, function, kwargs):
    x = torch.rand(4, 5, generator=gen, dtype=F64).to(device).requires_grad_()
    layer = module(**kwargs)
    out = layer(x)
    args = dict(kwargs)
    expected = function(x, args.pop("epsilon", 1e-2), **args)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(_grads(out, x), _grads(expected, x), rtol=0, atol=0)
    assert list(layer.parameters()) == [] and list(layer.buffers()) == []


@pytest.mark.parametrize("device", DEVICES)
def test_quantile_module_equals_function(gen, device):
    x = torch.randn(3, 10, generator=gen, dtype=F64).to(device).requires_grad_()
    for q, kwargs in ((0.5, dict()), ([0.2, 0.8], dict(epsilon=0.05, width=0.2, dim=0, backward="unroll"))):
        layer = SinkhornQuantile(q, **kwargs)
        args = dict(kwargs)
        expected = sinkhorn_quantile(x, q, args.pop("epsilon", 1e-2), **args)
        out = layer(x)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        torch.testing.assert_close(_grads(out, x), _grads(expected, x), rtol=0, atol=0)
    assert SinkhornQuantile(0.5)(x).shape == (3,)


@pytest.mark.parametrize("device", DEVICES)
def test_gumbel_module_equals_function(gen, device):
    X = torch.randn(2, 4, 4, generator=gen, dtype=F64).to(device).requires_grad_()
    layer = GumbelSinkhorn(tau=0.5, n_iter=7, noise=False)
    out = layer(X)
    expected = gumbel_sinkhorn(X, 0.5, 7, noise=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(_grads(out * out, X), _grads(expected * expected, X), rtol=0, atol=0)
    # noise from the given generator, as the function draws it
    g1 = torch.Generator(device=device).manual_seed(3)
    g2 = torch.Generator(device=device).manual_seed(3)
    noisy = GumbelSinkhorn(0.7, 5, noise_factor=0.5, n_samples=2, hard=True)
    torch.testing.assert_close(noisy(X, g1), gumbel_sinkhorn(X, 0.7, 5, generator=g2, noise_factor=0.5, n_samples=2,
                                                             hard=True), rtol=0, atol=0)


# The self-transport terms OT(y, y) of small clouds converge slowly (symmetric problems): some
# stop at max_iter and warn, the same in the module and the function, which is what is compared.
@pytest.mark.filterwarnings("ignore:.*Sinkhorn did not converge")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_divergence_module_equals_function(gen, device, reduction):
    x = torch.randn(3, 5, 2, generator=gen, dtype=F64).to(device).requires_grad_()
    y = torch.randn(3, 4, 2, generator=gen, dtype=F64).to(device)
    b = (torch.rand(3, 4, generator=gen, dtype=F64) + 0.5).to(device)
    b = b / b.sum(-1, keepdim=True)
    loss = SinkhornDivergence(1.0, max_iter=2000, reduction=reduction)
    out = loss(x, y, None, b)
    values = sinkhorn_divergence(x, y, 1.0, b=b, max_iter=2000)
    expected = {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(_grads(out, x), _grads(expected, x), rtol=0, atol=0)
    assert out.shape == (() if reduction != "none" else (3,))
    assert bool((values > 0).all())  # different clouds


def test_modules_are_exported():
    for name in ("SinkhornSort", "SinkhornRank", "SinkhornQuantile", "GumbelSinkhorn", "SinkhornDivergence",
                 "Sinkhorn"):
        assert getattr(diffcomb, name) is getattr(diffcomb.nn, name)
        assert name in diffcomb.__all__ and name in diffcomb.nn.__all__


# ------------------------------------------------------------------------------------------------
# repr and bad hyper-parameters.


@pytest.mark.parametrize("layer,pieces", [
    (SinkhornSort(0.05, dim=1, descending=True, num_targets=4), ["epsilon=0.05", "dim=1", "descending=True",
                                                                 "num_targets=4", "squash='sigmoid'"]),
    (SinkhornRank(backward="unroll", tol=1e-7), ["epsilon=0.01", "backward='unroll'", "tol=1e-07"]),
    (SinkhornQuantile([0.25, 0.75], width=0.2), ["q=(0.25, 0.75)", "width=0.2"]),
    (SinkhornQuantile(0.5), ["q=0.5", "width=0.1"]),
    (GumbelSinkhorn(0.3, 9, hard=True), ["tau=0.3", "n_iter=9", "hard=True", "noise=True"]),
    (SinkhornDivergence(0.2, reduction="sum"), ["epsilon=0.2", "reduction='sum'", "max_iter=1000"]),
])
def test_module_repr(layer, pieces):
    text = repr(layer)
    assert text.startswith(type(layer).__name__)
    for piece in pieces:
        assert piece in text, text


@pytest.mark.parametrize("module,kwargs,error,match", [
    (SinkhornSort, dict(epsilon=0.0), ValueError, "epsilon must be positive"),
    (SinkhornSort, dict(dim=1.5), TypeError, "dim must be an int"),
    (SinkhornSort, dict(descending="no"), TypeError, "descending must be a bool"),
    (SinkhornSort, dict(num_targets=0), ValueError, "num_targets must be an int >= 1"),
    (SinkhornRank, dict(squash="tanh"), ValueError, "squash must be one of"),
    (SinkhornRank, dict(backward="adjoint"), ValueError, "backward must be one of"),
    (SinkhornRank, dict(max_iter=0), ValueError, "max_iter must be an int >= 1"),
    (SinkhornRank, dict(tol=-1.0), ValueError, "tol must be >= 0"),
    (SinkhornQuantile, dict(q=0.01), ValueError, r"width/2 <= q"),
    (SinkhornQuantile, dict(q=[]), ValueError, "non-empty sequence"),
    (SinkhornQuantile, dict(q="0.5"), TypeError, "q must be a float"),
    (SinkhornQuantile, dict(q=0.5, width=-0.1), ValueError, "width must be positive"),
    (GumbelSinkhorn, dict(tau=0.0), ValueError, "tau must be positive"),
    (GumbelSinkhorn, dict(n_iter=-1), ValueError, "n_iter must be an int >= 0"),
    (GumbelSinkhorn, dict(noise=1), TypeError, "noise must be a bool"),
    (GumbelSinkhorn, dict(noise_factor=-1.0), ValueError, "noise_factor must be >= 0"),
    (GumbelSinkhorn, dict(n_samples=0), ValueError, "n_samples must be an int >= 1"),
    (GumbelSinkhorn, dict(hard=None), TypeError, "hard must be a bool"),
    (SinkhornDivergence, dict(epsilon=float("nan")), ValueError, "epsilon must be positive"),
    (SinkhornDivergence, dict(reduction="max"), ValueError, "reduction must be"),
    (SinkhornDivergence, dict(max_iter=2.5), TypeError, "max_iter must be an int"),
])
def test_module_bad_hyper_parameters(module, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        module(**kwargs)
    assert f"diffcomb.{module.__name__}: " in str(info.value)


def test_divergence_module_bad_input_names_the_function():
    with pytest.raises(ValueError, match=r"diffcomb\.sinkhorn_divergence: x and y must have the same point dimension"):
        SinkhornDivergence()(torch.rand(3, 2), torch.rand(4, 3))
