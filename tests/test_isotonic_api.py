"""The permutahedron family's API conventions (issue 15): ``dim=`` on every op that sorts or reduces
along an axis equals moving that axis last; a module for every functional op (SoftTopK,
SoftQuantile, IsotonicRegression, SoftSpearman) equal to its function, with its hyper-parameters
checked in ``__init__``; the raw sparse_topk op checks its own arguments."""

from __future__ import annotations

import pytest
import torch

import diffcomb
from tests.conftest import DEVICES, randn

# (name, call(x, dim), result axes): the result keeps the op's axis ("same") or drops it ("reduce").
# Ranking metrics and losses take a second tensor of x's shape (relevance or labels, target).


def _labels(x, dim):
    """Binary labels that follow x's layout, with a positive (the maximum) and a negative (the minimum)
    in every row."""
    d = x.detach()
    positive = ((d > 0.5) | (d == d.amax(dim, keepdim=True))) & (d != d.amin(dim, keepdim=True))
    return positive.to(x.dtype)


def _ranks(x, dim):
    return x.argsort(dim).argsort(dim).to(x.dtype) + 1.0  # a valid permutahedron target


OPS = {
    "soft_rank": (lambda x, dim: diffcomb.soft_rank(x, dim=dim, regularization_strength=0.7), "same"),
    "soft_sort": (lambda x, dim: diffcomb.soft_sort(x, dim=dim, descending=True, regularization="kl"), "same"),
    "soft_topk": (lambda x, dim: diffcomb.soft_topk(x, 2, dim=dim, regularization_strength=0.5), "same"),
    "soft_quantile": (lambda x, dim: diffcomb.soft_quantile(x, 0.3, dim=dim), "reduce"),
    "isotonic_regression": (lambda x, dim: diffcomb.isotonic_regression(x, x.exp(), dim=dim), "same"),
    "sparse_soft_topk": (lambda x, dim: diffcomb.sparse_soft_topk(x, 2, dim=dim, p=1.5), "same"),
    "soft_ndcg": (lambda x, dim: diffcomb.soft_ndcg(x, _labels(x, dim) * 2, k=3, dim=dim), "reduce"),
    "soft_average_precision": (lambda x, dim: diffcomb.soft_average_precision(x, _labels(x, dim), dim=dim), "reduce"),
    "soft_recall_at_k": (lambda x, dim: diffcomb.soft_recall_at_k(x, _labels(x, dim), 2, dim=dim), "reduce"),
    "soft_auc": (lambda x, dim: diffcomb.soft_auc(x, _labels(x, dim), dim=dim), "reduce"),
    "fenchel_young_loss": (lambda x, dim: diffcomb.fenchel_young_loss(
        x, _ranks(x.detach().flip(dim), dim), reduction="none", dim=dim), "reduce"),
    "soft_spearman": (lambda x, dim: diffcomb.soft_spearman(x, _ranks(x.detach() ** 2, dim), dim=dim), "reduce"),
    "spearman_loss": (lambda x, dim: diffcomb.spearman_loss(x, x.detach() ** 2, dim=dim, reduction="none"),
                      "reduce"),
    "soft_lts": (lambda x, dim: diffcomb.soft_lts(x, 2, dim=dim, reduction="none"), "reduce"),
}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dim", [0, 1, -3])
@pytest.mark.parametrize("device", DEVICES)
def test_dim_equals_movedim(name, dim, device, gen):
    fn, kind = OPS[name]
    x = randn(gen, 5, 6, 4, dtype=torch.float64, device=device, requires_grad=True)
    out = fn(x, dim)
    moved = x.detach().movedim(dim, -1).requires_grad_()
    expected = fn(moved, -1)
    if kind == "same":
        expected_here = expected.movedim(-1, dim)
    else:
        expected_here = expected
    assert out.shape == expected_here.shape
    torch.testing.assert_close(out, expected_here, rtol=1e-12, atol=1e-12)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device)
    (grad,) = torch.autograd.grad(out, x, g)
    (grad_moved,) = torch.autograd.grad(expected, moved, g.movedim(dim, -1) if kind == "same" else g)
    torch.testing.assert_close(grad, grad_moved.movedim(-1, dim), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim", [0, 1])
def test_topk_routing_dim_equals_movedim(dim, gen):
    logits = randn(gen, 6, 5, 8, dtype=torch.float64)
    a = diffcomb.topk_routing(logits, 2, regularization_strength=0.5, normalize=True, dim=dim)
    b = diffcomb.topk_routing(logits.movedim(dim, -1), 2, regularization_strength=0.5, normalize=True)
    for field in ("combine_weights", "mask", "gates"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field).movedim(-1, dim), rtol=1e-14, atol=1e-15)
    for field in ("load", "importance", "balance_loss", "experts_per_token"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-14, atol=1e-15)
    assert a.load.shape == (logits.shape[dim],)
    with pytest.raises(IndexError, match="topk_routing: dim=3 is out of range"):
        diffcomb.topk_routing(logits, 2, dim=3)


# ------------------------------------------------------------------------------------------------
# Modules: forward equals the functional op (values and gradients), no parameters, repr.

MODULES = [
    (diffcomb.SoftTopK(3, dim=0, regularization_strength=0.4),
     lambda x: diffcomb.soft_topk(x, 3, dim=0, regularization_strength=0.4)),
    (diffcomb.SoftTopK(1), lambda x: diffcomb.soft_topk(x, 1)),
    (diffcomb.SoftQuantile(0.25, dim=1, regularization_strength=0.3, regularization="kl"),
     lambda x: diffcomb.soft_quantile(x, 0.25, dim=1, regularization_strength=0.3, regularization="kl")),
    (diffcomb.SoftQuantile([0.1, 0.5, 1.0]), lambda x: diffcomb.soft_quantile(x, [0.1, 0.5, 1.0])),
    (diffcomb.SoftQuantile(torch.tensor([0.2, 0.9])), lambda x: diffcomb.soft_quantile(x, torch.tensor([0.2, 0.9]))),
    (diffcomb.SoftQuantile(torch.tensor(0.6)), lambda x: diffcomb.soft_quantile(x, torch.tensor(0.6))),
    (diffcomb.IsotonicRegression(), lambda x: diffcomb.isotonic_regression(x)),
    (diffcomb.IsotonicRegression(dim=0, increasing=False),
     lambda x: diffcomb.isotonic_regression(x, dim=0, increasing=False)),
]


@pytest.mark.parametrize("index", range(len(MODULES)))
@pytest.mark.parametrize("device", DEVICES)
def test_modules_equal_functions(index, device, gen):
    module, function = MODULES[index]
    x = randn(gen, 4, 6, 3, dtype=torch.float64, device=device, requires_grad=True)
    out = module(x)
    expected = function(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    assert list(module.parameters()) == [] and list(module.buffers()) == []


@pytest.mark.parametrize("device", DEVICES)
def test_isotonic_regression_module_sample_weight(device, gen):
    y = randn(gen, 3, 7, dtype=torch.float64, device=device, requires_grad=True)
    w = (torch.rand(3, 7, generator=gen, dtype=torch.float64) + 0.1).to(device).requires_grad_()
    out = diffcomb.IsotonicRegression(increasing=False)(y, w)
    expected = diffcomb.isotonic_regression(y, w, increasing=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    grads = torch.autograd.grad(out.sum(), (y, w))
    want = torch.autograd.grad(expected.sum(), (y, w))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The fit is non-increasing along the last axis.
    assert bool((out.detach()[:, 1:] <= out.detach()[:, :-1] + 1e-12).all())


@pytest.mark.parametrize("device", DEVICES)
def test_soft_spearman_module(device, gen):
    pred = randn(gen, 5, 8, dtype=torch.float64, device=device, requires_grad=True)
    target = randn(gen, 5, 8, dtype=torch.float64, device=device)
    m = diffcomb.SoftSpearman(dim=1, regularization_strength=0.2, regularization="kl")
    out = m(pred, target)
    expected = diffcomb.soft_spearman(pred, target, dim=1, regularization_strength=0.2, regularization="kl")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert out.shape == (5,)
    # One minus the correlation is the Spearman loss, unreduced.
    loss = diffcomb.SpearmanLoss(dim=1, regularization_strength=0.2, regularization="kl", reduction="none")
    torch.testing.assert_close(1.0 - out, loss(pred, target), rtol=0, atol=1e-15)
    (g1,) = torch.autograd.grad(out.sum(), pred)
    (g2,) = torch.autograd.grad(expected.sum(), pred)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_soft_quantile_module_follows_its_input_device(gen):
    m = diffcomb.SoftQuantile(torch.tensor([0.5, 0.75], dtype=torch.float64))
    assert m.q == (0.5, 0.75)
    x = randn(gen, 2, 5, dtype=torch.float32)
    # q was read once, at construction: the module has no tensor state and runs on any device and dtype.
    torch.testing.assert_close(m.to(torch.float64)(x), diffcomb.soft_quantile(x, [0.5, 0.75]), rtol=0, atol=0)


@pytest.mark.parametrize("module,pieces", [
    (diffcomb.SoftTopK(2, dim=1, regularization_strength=0.5), ["k=2", "dim=1", "regularization_strength=0.5"]),
    (diffcomb.SoftQuantile([0.1, 0.9], regularization="kl"), ["q=(0.1, 0.9)", "dim=-1", "regularization='kl'"]),
    (diffcomb.SoftQuantile(0.5), ["q=0.5"]),
    (diffcomb.IsotonicRegression(dim=0, increasing=False), ["dim=0", "increasing=False"]),
    (diffcomb.SoftSpearman(regularization_strength=2.0), ["dim=-1", "regularization_strength=2.0",
                                                          "regularization='l2'"]),
])
def test_module_repr(module, pieces):
    text = repr(module)
    assert text.startswith(type(module).__name__)
    for piece in pieces:
        assert piece in text, text


@pytest.mark.parametrize("make,error,match", [
    (lambda: diffcomb.SoftTopK(-1), ValueError, r"SoftTopK: k must be an int >= 0, got -1"),
    (lambda: diffcomb.SoftTopK(2.0), TypeError, r"SoftTopK: k must be an int, got float"),
    (lambda: diffcomb.SoftTopK(2, dim=0.5), TypeError, r"SoftTopK: dim must be an int"),
    (lambda: diffcomb.SoftTopK(2, regularization_strength=0.0), ValueError,
     r"SoftTopK: regularization_strength must be positive and finite"),
    (lambda: diffcomb.SoftQuantile(1.5), ValueError, r"SoftQuantile: q must be in \[0, 1\], got 1.5"),
    (lambda: diffcomb.SoftQuantile("median"), TypeError, r"SoftQuantile: q must be a float"),
    (lambda: diffcomb.SoftQuantile(torch.ones(2, 2) / 2), ValueError, r"SoftQuantile: q must be a float or a 1-D"),
    (lambda: diffcomb.SoftQuantile(0.5, regularization="l1"), ValueError, r"SoftQuantile: regularization must be"),
    (lambda: diffcomb.IsotonicRegression(increasing="yes"), TypeError, r"IsotonicRegression: increasing must be a bool"),
    (lambda: diffcomb.IsotonicRegression(dim=None), TypeError, r"IsotonicRegression: dim must be an int"),
    (lambda: diffcomb.SoftSpearman(regularization_strength=-1.0), ValueError,
     r"SoftSpearman: regularization_strength must be positive"),
    (lambda: diffcomb.SoftSpearman(regularization="entropy"), ValueError, r"SoftSpearman: regularization must be"),
])
def test_module_bad_hyper_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_soft_topk_module_k_checked_against_the_input():
    with pytest.raises(ValueError, match=r"soft_topk: k must be an int in \[0, 3\], got 4"):
        diffcomb.SoftTopK(4)(torch.randn(2, 3))


def test_modules_exported():
    for name in ("SoftTopK", "SoftQuantile", "IsotonicRegression", "SoftSpearman"):
        assert getattr(diffcomb, name) is getattr(diffcomb.nn, name)
        assert name in diffcomb.__all__ and name in diffcomb.nn.__all__


# ------------------------------------------------------------------------------------------------
# The raw sparse_topk op checks its own arguments (a direct torch.ops.diffcomb.sparse_topk call).


def test_sparse_topk_op_checks_its_arguments():
    op = torch.ops.diffcomb.sparse_topk
    x = torch.randn(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"torch\.ops\.diffcomb\.sparse_topk: k must be in \[0, 5\], got 6"):
        op(x, 6, 1.0, 0, 1.0)
    with pytest.raises(ValueError, match=r"torch\.ops\.diffcomb\.sparse_topk: method must be"):
        op(x, 2, 1.0, 7, 1.0)
    with pytest.raises(ValueError, match=r"torch\.ops\.diffcomb\.sparse_topk: exponent must be >= 1"):
        op(x, 2, 1.0, 2, 0.5)
    with pytest.raises(ValueError, match=r"torch\.ops\.diffcomb\.sparse_topk: scale must be a finite"):
        op(x, 2, float("inf"), 0, 1.0)
    with pytest.raises(RuntimeError, match=r"torch\.ops\.diffcomb\.sparse_topk: x must have 2 dimension"):
        op(x[0], 2, 1.0, 0, 1.0)
    with pytest.raises(RuntimeError, match=r"torch\.ops\.diffcomb\.sparse_topk: x must be contiguous"):
        op(x.t(), 2, 1.0, 0, 1.0)
    with pytest.raises(RuntimeError, match=r"torch\.ops\.diffcomb\.sparse_topk: x must have dtype"):
        op(x.to(torch.float16), 2, 1.0, 0, 1.0)
    # A valid call is the functional op's mask.
    out = op(x, 2, 2.0, 2, 2.0)[0]
    torch.testing.assert_close(out, diffcomb.sparse_soft_topk(x, 2, regularization_strength=0.5, p=1.5),
                               rtol=0, atol=0)
