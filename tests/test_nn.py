"""Tests of diffcomb.nn: the modules are thin (STYLE.md rule 11): hyper-parameters checked in
__init__, shown in repr, forward equal to the functional call, gradients flow, no parameters."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import diffcomb
from tests.conftest import DEVICES, randn

SORT_RANK = [
    (diffcomb.SoftSort, diffcomb.soft_sort),
    (diffcomb.SoftRank, diffcomb.soft_rank),
]


@pytest.mark.parametrize("module,function", SORT_RANK)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(dim=0, descending=True, regularization_strength=0.3, regularization="kl"),
    dict(dim=1, regularization_strength=2.5),
])
def test_sort_rank_modules_equal_functions(module, function, device, kwargs, gen):
    x = randn(gen, 4, 6, 3, device=device, requires_grad=True)
    m = module(**kwargs)
    out = m(x)
    expected = function(x, **kwargs)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    assert list(m.parameters()) == [] and list(m.buffers()) == []


@pytest.mark.parametrize("module", [diffcomb.SoftSort, diffcomb.SoftRank])
def test_sort_rank_module_repr(module):
    text = repr(module(dim=1, descending=True, regularization_strength=0.25, regularization="kl"))
    assert text.startswith(module.__name__)
    for piece in ["dim=1", "descending=True", "regularization_strength=0.25", "regularization='kl'"]:
        assert piece in text, text


@pytest.mark.parametrize("module", [diffcomb.SoftSort, diffcomb.SoftRank])
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(regularization_strength=0.0), ValueError, "regularization_strength"),
    (dict(regularization_strength=-2.0), ValueError, "regularization_strength"),
    (dict(regularization_strength=float("nan")), ValueError, "regularization_strength"),
    (dict(regularization_strength=float("inf")), ValueError, "regularization_strength"),
    (dict(regularization_strength="1"), TypeError, "regularization_strength"),
    (dict(regularization="l1"), ValueError, "regularization"),
    (dict(dim=1.5), TypeError, "dim"),
    (dict(descending="no"), TypeError, "descending must be a bool"),  # used to mean descending=True
    (dict(descending=0), TypeError, "descending must be a bool"),
    (dict(descending=None), TypeError, "descending must be a bool"),
])
def test_sort_rank_module_bad_hyper_parameters(module, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        module(**kwargs)
    assert module.__name__ in str(info.value)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(dim=0, regularization_strength=0.4, regularization="kl", reduction="none"),
    dict(reduction="sum", regularization_strength=3.0),
])
def test_spearman_module_equals_function(device, kwargs, gen):
    pred = randn(gen, 5, 7, device=device, requires_grad=True)
    target = randn(gen, 5, 7, device=device)
    m = diffcomb.SpearmanLoss(**kwargs)
    out = m(pred, target)
    expected = diffcomb.spearman_loss(pred, target, **kwargs)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(out.sum(), pred)
    (g2,) = torch.autograd.grad(expected.sum(), pred)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_spearman_module_repr():
    text = repr(diffcomb.SpearmanLoss(dim=0, regularization_strength=0.5, regularization="kl", reduction="sum"))
    assert text.startswith("SpearmanLoss")
    for piece in ["dim=0", "regularization_strength=0.5", "regularization='kl'", "reduction='sum'"]:
        assert piece in text, text


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(regularization_strength=0.0), ValueError, "regularization_strength"),
    (dict(regularization_strength=float("nan")), ValueError, "regularization_strength"),
    (dict(regularization="kl2"), ValueError, "regularization"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(dim=1.0), TypeError, "dim must be an int"),  # used to pass __init__ and fail in forward
    (dict(dim=True), TypeError, "dim must be an int"),
])
def test_spearman_module_bad_hyper_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        diffcomb.SpearmanLoss(**kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs", [
    dict(k=0),
    dict(k=2, dim=0, regularization_strength=0.3, reduction="none"),
    dict(k=3, reduction="sum"),
])
def test_lts_module_equals_function(device, kwargs, gen):
    losses = randn(gen, 6, 7, device=device).abs().requires_grad_()
    m = diffcomb.SoftLTSLoss(**kwargs)
    out = m(losses)
    expected = diffcomb.soft_lts(losses, **kwargs)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(out.sum(), losses)
    (g2,) = torch.autograd.grad(expected.sum(), losses)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_lts_module_repr():
    text = repr(diffcomb.SoftLTSLoss(3, dim=0, regularization_strength=0.5, reduction="none"))
    assert text.startswith("SoftLTSLoss")
    for piece in ["k=3", "dim=0", "regularization_strength=0.5", "reduction='none'"]:
        assert piece in text, text


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(k=-1), ValueError, "SoftLTSLoss: k must be an int >= 0, got -1"),
    (dict(k=1.0), TypeError, "SoftLTSLoss: k must be an int, got float"),
    (dict(k=True), TypeError, "SoftLTSLoss: k must be an int, got bool"),
    (dict(k=1, regularization_strength=0.0), ValueError, "regularization_strength"),
    (dict(k=1, regularization_strength=float("inf")), ValueError, "regularization_strength"),
    (dict(k=1, reduction="median"), ValueError, "reduction"),
    (dict(k=1, dim="0"), TypeError, "dim must be an int"),
])
def test_lts_module_bad_hyper_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        diffcomb.SoftLTSLoss(**kwargs)


def test_lts_module_k_too_large_for_input_fails_at_forward():
    m = diffcomb.SoftLTSLoss(5)
    with pytest.raises(ValueError, match="k"):
        m(torch.rand(3, 5))


def test_modules_copy_pickle_and_compose(gen):
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), diffcomb.SoftRank(regularization_strength=0.5),
                              diffcomb.SoftSort(descending=True))
    x = randn(gen, 3, 4, dtype=torch.float32)
    out = net(x)
    assert out.shape == (3, 6)
    out.sum().backward()
    assert net[0].weight.grad is not None
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        torch.testing.assert_close(clone(x), out)
        assert repr(clone) == repr(net)


def test_spearman_module_constant_prediction_is_finite():
    # SpearmanLoss on a zero-initialized output: loss 1, finite gradient (diffcomb.soft_spearman's floor)
    layer = torch.nn.Linear(3, 1)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0))
    loss = diffcomb.SpearmanLoss()(layer(x).squeeze(-1), torch.arange(12.0).reshape(2, 6))
    loss.backward()
    assert loss.item() == 1.0
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
