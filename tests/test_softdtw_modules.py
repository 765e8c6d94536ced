"""The soft-DTW modules: the (B, N, D) layout they require, and each against its functional op."""

import pytest
import torch

import diffcomb
from tests.conftest import assert_close
from tests.reference import softdtw as ref

MODULES = [diffcomb.SoftDTW, diffcomb.SoftDTWDivergence, diffcomb.SharpSoftDTW, diffcomb.SharpSoftDTWDivergence,
           diffcomb.SoftDTWAlignment]


def _pair(seed, lead=(4,), n=6, m=5, d=2):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(*lead, m, d, generator=gen, dtype=torch.float64)
    return x, y


# ------------------------------------------------------------------------------------------------
# Layout.


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_modules_refuse_two_dimensional_series(module):
    # SoftDTW(0.1) on two (4, 30) tensors used to treat them as one series of 4 steps with 30
    # features; a batch of 4 univariate series of length 30 was meant just as often.
    x, y = torch.randn(4, 30), torch.randn(4, 30)
    name = module.__name__
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: x must be a batch of series of shape \(B, N, D\)") as err:
        module(0.1)(x, y)
    text = str(err.value)
    assert "got shape (4, 30)" in text
    assert "x.unsqueeze(-1) (shape (4, 30, 1))" in text  # a batch of univariate series
    assert "x.unsqueeze(0) (shape (1, 4, 30))" in text  # one multivariate series
    assert "x.transpose(-1, -2)" in text  # channel-first (B, C, T)
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: y must be a batch of series .* got shape \(4, 30\)"):
        module(0.1)(x.unsqueeze(-1), y)
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: x must be a batch of series .* got shape \(30,\)"):
        module(0.1)(x[0], y[0])


def test_the_layouts_the_error_suggests():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    loss = diffcomb.SoftDTW(0.3, reduction="none")
    # A batch of univariate series: each row alone.
    univariate = loss(x.unsqueeze(-1), y.unsqueeze(-1))
    assert univariate.shape == (4,)
    for b in range(4):
        assert_close(univariate[b], ref.soft_dtw(x[b].numpy()[:, None], y[b].numpy()[:, None], 0.3))
    # One multivariate series of 4 steps with 9 features.
    z = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    single = loss(x.unsqueeze(0), z.unsqueeze(0))
    assert single.shape == (1,)
    assert_close(single[0], diffcomb.soft_dtw(x, z, 0.3))  # the functional op: a 2-D x is one series
    assert_close(single[0], ref.soft_dtw(x.numpy(), z.numpy(), 0.3))
    # Channel-first (B, C, T): transpose to (B, T, C).
    xc = torch.randn(3, 2, 8, generator=gen, dtype=torch.float64)
    yc = torch.randn(3, 2, 6, generator=gen, dtype=torch.float64)
    channel_first = loss(xc.transpose(-1, -2), yc.transpose(-1, -2))
    for b in range(3):
        assert_close(channel_first[b], ref.soft_dtw(xc[b].T.numpy(), yc[b].T.numpy(), 0.3))


def test_functional_soft_dtw_keeps_two_dimensional_series_as_one_pair():
    # SPEC 0 / the functional API: (..., N, D), so a 2-D x is one series of N steps of D features.
    x, y = torch.randn(4, 30, dtype=torch.float64), torch.randn(5, 30, dtype=torch.float64)
    value = diffcomb.soft_dtw(x, y, 0.1)
    assert value.shape == ()
    assert_close(value, ref.soft_dtw(x.numpy(), y.numpy(), 0.1))


def test_modules_take_further_batch_dimensions():
    x, y = _pair(6, lead=(2, 3))
    assert_close(diffcomb.SoftDTW(0.4, reduction="none")(x, y), diffcomb.soft_dtw(x, y, 0.4))
    assert diffcomb.SoftDTWAlignment(0.4)(x, y).shape == (2, 3, 6, 5)


# ------------------------------------------------------------------------------------------------
# Each module against its functional op.


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("cost, bandwidth", [("sqeuclidean", None), ("log_augmented", 2), ("half_sqeuclidean", 4)])
def test_sharp_divergence_module_matches_the_function(reduction, cost, bandwidth):
    x, y = _pair(7)
    x.requires_grad_()
    lx, ly = torch.tensor([6, 3, 5, 6]), torch.tensor([5, 5, 2, 4])
    module = diffcomb.SharpSoftDTWDivergence(0.6, bandwidth=bandwidth, cost=cost, reduction=reduction)
    out = module(x, y, lx, ly)
    values = diffcomb.sharp_soft_dtw_divergence(x, y, 0.6, cost=cost, bandwidth=bandwidth, x_lengths=lx,
                                                y_lengths=ly)
    expected = {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]
    assert_close(out, expected)
    assert_close(diffcomb.SharpSoftDTW(0.6, True, bandwidth, cost, reduction)(x, y, lx, ly), expected)
    (g_module,) = torch.autograd.grad(out.sum(), x)
    (g_function,) = torch.autograd.grad(expected.sum(), x)
    assert_close(g_module, g_function)
    # 0 for identical series.
    assert_close(diffcomb.SharpSoftDTWDivergence(0.6, reduction="none")(x, x), torch.zeros(4, dtype=torch.float64),
                 atol=1e-12, rtol=0)


@pytest.mark.parametrize("cost, bandwidth", [("sqeuclidean", None), ("log_augmented", 3)])
def test_alignment_module_matches_the_function(cost, bandwidth):
    x, y = _pair(8)
    x.requires_grad_()
    y.requires_grad_()
    module = diffcomb.SoftDTWAlignment(0.5, bandwidth=bandwidth, cost=cost)
    E = module(x, y)
    expected = diffcomb.soft_dtw_alignment(diffcomb.pairwise_cost(x, y, cost), 0.5, bandwidth=bandwidth)
    assert E.shape == (4, 6, 5)
    assert_close(E, expected)
    for b in range(4):
        C = ref.cost_matrix(x[b].detach().numpy(), y[b].detach().numpy(), cost)
        assert_close(E[b], ref.soft_dtw_alignment(C, 0.5, bandwidth))
    W = torch.randn(4, 6, 5, dtype=torch.float64)
    grads = torch.autograd.grad((E * W).sum(), (x, y))
    expected_grads = torch.autograd.grad((expected * W).sum(), (x, y))
    for got, want in zip(grads, expected_grads):
        assert_close(got, want)
    assert torch.autograd.gradcheck(lambda a, b: module(a, b), (x, y))


def test_alignment_module_with_lengths_is_each_pair_alone():
    x, y = _pair(9)
    lx, ly = torch.tensor([6, 2, 4, 1]), torch.tensor([5, 5, 3, 2])
    x[1, 2:] = float("nan")  # padding may hold anything
    E = diffcomb.SoftDTWAlignment(0.7, cost="half_sqeuclidean")(x, y, lx, ly)
    for b in range(4):
        alone = diffcomb.soft_dtw_alignment(diffcomb.pairwise_cost(x[b, :lx[b]], y[b, :ly[b]], "half_sqeuclidean"),
                                            0.7)
        assert_close(E[b, :lx[b], :ly[b]], alone)
        outside = torch.ones(6, 5, dtype=torch.bool)
        outside[:lx[b], :ly[b]] = False
        assert bool((E[b][outside] == 0).all())  # zero past the lengths
    assert bool(torch.isfinite(E).all())


def test_existing_modules_still_match_their_functions():
    x, y = _pair(10)
    assert_close(diffcomb.SoftDTW(0.3)(x, y), diffcomb.soft_dtw(x, y, 0.3).mean())
    assert_close(diffcomb.SoftDTWDivergence(0.3, reduction="sum")(x, y), diffcomb.soft_dtw_divergence(x, y, 0.3).sum())
    assert_close(diffcomb.SharpSoftDTW(0.3, reduction="none")(x, y), diffcomb.sharp_soft_dtw(x, y, 0.3))


def test_modules_compile_fullgraph():
    x, y = _pair(11)
    x.requires_grad_()
    for module in (diffcomb.SoftDTW(0.5), diffcomb.SharpSoftDTWDivergence(0.5), diffcomb.SoftDTWAlignment(0.5)):
        compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
        out, expected = compiled(x, y), module(x, y)
        assert_close(out, expected)
        assert_close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(expected.sum(), x)[0])


# ------------------------------------------------------------------------------------------------
# Hyper-parameters, repr, exports.


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_module_hyper_parameters_are_checked(module):
    name = module.__name__
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: gamma must be >= 0"):
        module(gamma=-1.0)
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: gamma must be 0 .hard DTW. or at least"):
        module(gamma=1e-320)
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: bandwidth must be an int >= 0"):
        module(bandwidth=-1)
    with pytest.raises(TypeError, match=rf"diffcomb\.{name}: bandwidth must be None or an int"):
        module(bandwidth=2.5)
    with pytest.raises(ValueError, match=rf"diffcomb\.{name}: cost must be one of 'sqeuclidean'"):
        module(cost="l1")
    if module is not diffcomb.SoftDTWAlignment:
        with pytest.raises(ValueError, match=rf"diffcomb\.{name}: reduction must be"):
            module(reduction="max")
    layer = module(0.25, bandwidth=3, cost="log_augmented")
    assert "gamma=0.25" in repr(layer) and "bandwidth=3" in repr(layer) and "'log_augmented'" in repr(layer)


def test_modules_are_exported():
    for module in MODULES:
        name = module.__name__
        assert getattr(diffcomb.nn, name) is module
        assert name in diffcomb.nn.__all__ and name in diffcomb.__all__
        assert issubclass(module, torch.nn.Module)
