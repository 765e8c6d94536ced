"""Tests of diffcomb.ranking: soft NDCG@k, average precision, recall@k and AUC, and their losses.

Against the float64 numpy references in tests/reference/ranking.py: the hard metrics (exact, in the
small-strength limit, ties included), the soft metrics at moderate strengths; the hard references
against scikit-learn's metrics on untied scores; gradcheck in float64 (scores and relevance),
torch.compile(fullgraph=True), dim / reduction / modules, NaN rows, empty and undefined queries,
half precision, errors, and the docstring examples.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

import diffcomb
import diffcomb.ranking
from tests.conftest import DEVICES, DTYPES, HALF_DTYPES, REGULARIZATIONS, assert_close, rows_of, separated
from tests.reference import ranking as ref

SHAPES = [
    pytest.param((1, 9), -1, id="1x9"),
    pytest.param((3, 12), -1, id="3x12"),
    pytest.param((2, 3, 7), -1, id="2x3x7"),
    pytest.param((2, 8, 3), 1, id="2x8x3-dim1"),
    pytest.param((10, 4), 0, id="10x4-dim0"),
]
REDUCTIONS = ["mean", "sum", "none"]
METRICS = ["ndcg", "ndcg@k", "ap", "recall@k", "auc"]
K = 3
# recall@k has no regularization argument: its mask is always the l2 soft top-k.
METRIC_REGS = [pytest.param(m, r, id=f"{m}-{r}") for m in METRICS for r in REGULARIZATIONS
               if not (m == "recall@k" and r == "kl")]


def sample(gen, shape, dim, min_gap=0.05):
    """Separated float64 scores with items along dim, and graded relevance in {0..3} and binary
    labels with at least one positive and one negative item (and some relevance) per query."""
    moved = list(shape)
    n = moved.pop(dim)
    s = separated(gen, *moved, n, min_gap=min_gap)
    while True:
        rel = torch.randint(0, 4, (*moved, n), generator=gen).double()
        lab = (rel >= 2).double()
        if bool((lab.sum(-1) > 0).all() and (lab.sum(-1) < n).all()):
            break
    return s.movedim(-1, dim), rel.movedim(-1, dim), lab.movedim(-1, dim)


def call(metric, scores, rel, lab, eps, reg="l2", dim=-1):
    if metric == "ndcg":
        return diffcomb.soft_ndcg(scores, rel, dim=dim, regularization_strength=eps, regularization=reg)
    if metric == "ndcg@k":
        return diffcomb.soft_ndcg(scores, rel, K, dim=dim, regularization_strength=eps, regularization=reg)
    if metric == "ap":
        return diffcomb.soft_average_precision(scores, lab, dim=dim, regularization_strength=eps, regularization=reg)
    if metric == "recall@k":
        return diffcomb.soft_recall_at_k(scores, lab, K, dim=dim, regularization_strength=eps)
    return diffcomb.soft_auc(scores, lab, dim=dim, regularization_strength=eps, regularization=reg)


def call_loss(metric, scores, rel, lab, eps, reduction, dim=-1):
    kw = dict(dim=dim, regularization_strength=eps, reduction=reduction)
    if metric == "ndcg":
        return diffcomb.ndcg_loss(scores, rel, **kw)
    if metric == "ndcg@k":
        return diffcomb.ndcg_loss(scores, rel, K, **kw)
    if metric == "ap":
        return diffcomb.average_precision_loss(scores, lab, **kw)
    if metric == "recall@k":
        return diffcomb.recall_at_k_loss(scores, lab, K, **kw)
    return diffcomb.auc_loss(scores, lab, **kw)


def module(metric, eps, reduction, dim=-1):
    kw = dict(dim=dim, regularization_strength=eps, reduction=reduction)
    return {"ndcg": lambda: diffcomb.NDCGLoss(**kw), "ndcg@k": lambda: diffcomb.NDCGLoss(K, **kw),
            "ap": lambda: diffcomb.AveragePrecisionLoss(**kw), "recall@k": lambda: diffcomb.RecallAtKLoss(K, **kw),
            "auc": lambda: diffcomb.AUCLoss(**kw)}[metric]()


def hard_rows(metric, s, rel, lab):
    if metric == "ndcg":
        return [ref.hard_ndcg(a, b) for a, b in zip(s, rel)]
    if metric == "ndcg@k":
        return [ref.hard_ndcg(a, b, K) for a, b in zip(s, rel)]
    if metric == "ap":
        return [ref.hard_average_precision(a, b) for a, b in zip(s, lab)]
    if metric == "recall@k":
        return [ref.hard_recall_at_k(a, b, K) for a, b in zip(s, lab)]
    return [ref.hard_auc(a, b) for a, b in zip(s, lab)]


def soft_rows(metric, s, rel, lab, eps, reg):
    if metric == "ndcg":
        return [ref.soft_ndcg(a, b, eps, regularization=reg) for a, b in zip(s, rel)]
    if metric == "ndcg@k":
        return [ref.soft_ndcg(a, b, eps, K, regularization=reg) for a, b in zip(s, rel)]
    if metric == "ap":
        return [ref.soft_average_precision(a, b, eps, reg) for a, b in zip(s, lab)]
    if metric == "recall@k":
        return [ref.soft_recall_at_k(a, b, K, eps) for a, b in zip(s, lab)]
    return [ref.soft_auc(a, b, eps, reg) for a, b in zip(s, lab)]


def expected(metric, scores, rel, lab, dim, eps=None, reg="l2"):
    """The reference per query, as a float64 tensor of the batch shape."""
    s, r, l = rows_of(scores, dim), rows_of(rel, dim), rows_of(lab, dim)
    vals = hard_rows(metric, s, r, l) if eps is None else soft_rows(metric, s, r, l, eps, reg)
    return torch.tensor(vals, dtype=torch.float64).reshape(scores.movedim(dim, -1).shape[:-1])


# ------------------------------------------------------------------------------------------------
# The hard metric in the small-strength limit, and the soft metric against its reference.


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", SHAPES)
@pytest.mark.parametrize("metric", METRICS)
def test_hard_limit(metric, shape, dim, dtype, device, gen):
    # l2 soft ranks and the soft top-k mask are exact once eps is below the smallest gap (0.05).
    s, rel, lab = sample(gen, shape, dim)
    want = expected(metric, s, rel, lab, dim)
    out = call(metric, s.to(device, dtype), rel.to(device, dtype), lab.to(device, dtype), 1e-3, dim=dim)
    assert out.dtype == dtype and out.shape == want.shape
    assert_close(out, want)


@pytest.mark.parametrize("metric", ["ndcg", "ndcg@k", "ap", "auc"])
def test_hard_limit_kl(metric, gen):
    # KL soft ranks are exact for eps <= min gap / log(n) (SPEC 1.7).
    s, rel, lab = sample(gen, (4, 10), -1, min_gap=0.1)
    want = expected(metric, s, rel, lab, -1)
    assert_close(call(metric, s, rel, lab, 0.01, "kl"), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_hard_limit_with_ties(metric, gen):
    # Integer scores with many ties: tied scores share their average rank, and at the cutoff the
    # remaining top-k slots (SPEC 1.6: tied values land in one PAV block).
    for _ in range(5):
        s = torch.randint(0, 4, (6, 8), generator=gen).double()
        rel = torch.randint(0, 3, (6, 8), generator=gen).double()
        lab = (rel > 0).double()
        lab[:, 0], lab[:, 1] = 1.0, 0.0
        rel[:, 0] = 2.0
        want = expected(metric, s, rel, lab, -1)
        assert_close(call(metric, s, rel, lab, 1e-3), want, rtol=1e-12, atol=1e-12)


def test_tie_values_pinned():
    # scores [2, 1, 1, 0]: descending average ranks [1, 2.5, 2.5, 4].
    s = torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    lab = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    # AUC: positive 1 ties negative 1 (1/2) and loses to 2; positive 0 loses to both: 0.5 / 4.
    assert_close(diffcomb.soft_auc(s, lab, regularization_strength=1e-3), 0.125, rtol=1e-12)
    # AP: positive ranks among positives [1, 2] over ranks among all [2.5, 4].
    assert_close(diffcomb.soft_average_precision(s, lab, regularization_strength=1e-3), (1 / 2.5 + 2 / 4) / 2,
                 rtol=1e-12)
    # recall@2: the tied pair shares the one slot left: the positive gets 1/2.
    assert_close(diffcomb.soft_recall_at_k(s, lab, 2, regularization_strength=1e-3), 0.25, rtol=1e-12)
    rel = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    # NDCG@2: gain 1 at rank 2.5 with half a slot; ideal 1 at position 1.
    assert_close(diffcomb.soft_ndcg(s, rel, 2, regularization_strength=1e-3), 0.5 / math.log2(3.5), rtol=1e-12)


@pytest.mark.parametrize("eps", [0.3, 1.0, 5.0])
@pytest.mark.parametrize("metric,reg", METRIC_REGS)
def test_soft_against_reference(metric, reg, eps, gen):
    s, rel, lab = sample(gen, (3, 11), -1)
    want = expected(metric, s, rel, lab, -1, eps, reg)
    assert_close(call(metric, s, rel, lab, eps, reg), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gain", ["exponential", "linear"])
def test_ndcg_gains_and_cutoffs(gain, gen):
    s, rel, _ = sample(gen, (4, 9), -1)
    for k in (1, 4, 9, 20):
        want = torch.tensor([ref.soft_ndcg(a, b, 0.7, k, gain=gain) for a, b in zip(s.numpy(), rel.numpy())],
                            dtype=torch.float64)
        assert_close(diffcomb.soft_ndcg(s, rel, k, regularization_strength=0.7, gain=gain), want, rtol=1e-10)
        hard = torch.tensor([ref.hard_ndcg(a, b, k, gain) for a, b in zip(s.numpy(), rel.numpy())],
                            dtype=torch.float64)
        assert_close(diffcomb.soft_ndcg(s, rel, k, regularization_strength=1e-3, gain=gain), hard, rtol=1e-12)


def test_hard_references_against_sklearn(gen):
    # An independent check of the hard formulas (untied scores): scikit-learn's metrics.
    from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

    for _ in range(10):
        s, rel, lab = sample(gen, (1, 15), -1)
        s, rel, lab = s[0].numpy(), rel[0].numpy(), lab[0].numpy()
        for k in (None, 5):
            assert math.isclose(ref.hard_ndcg(s, rel, k, gain="linear"), ndcg_score([rel], [s], k=k), rel_tol=1e-12)
        assert math.isclose(ref.hard_average_precision(s, lab), average_precision_score(lab, s), rel_tol=1e-12)
        assert math.isclose(ref.hard_auc(s, lab), roc_auc_score(lab, s), rel_tol=1e-12)
        top = np.argsort(-s)[:K]
        assert math.isclose(ref.hard_recall_at_k(s, lab, K), lab[top].sum() / lab.sum(), rel_tol=1e-12)


# ------------------------------------------------------------------------------------------------
# Properties


@pytest.mark.parametrize("metric", METRICS)
def test_range_and_permutation_equivariance(metric, gen):
    s, rel, lab = sample(gen, (5, 10), -1)
    out = call(metric, s, rel, lab, 0.8)
    assert bool(((out >= 0) & (out <= 1 + 1e-12)).all())
    p = torch.randperm(10, generator=gen)
    assert_close(call(metric, s[:, p], rel[:, p], lab[:, p], 0.8), out, rtol=1e-12, atol=1e-14)


def test_auc_tends_to_half_for_large_strength(gen):
    s, _, lab = sample(gen, (3, 10), -1)
    assert_close(diffcomb.soft_auc(s, lab, regularization_strength=1e6), torch.full((3,), 0.5), rtol=0, atol=1e-5)


def test_ap_positive_ranks_trick_matches_ranking_positives_alone(gen):
    # The soft AP ranks the positives among themselves by moving the negatives below them; with a
    # large strength (blocks span many items) it must still equal ranking the positives alone.
    s, _, lab = sample(gen, (4, 30), -1, min_gap=0.0)
    for reg in REGULARIZATIONS:
        for eps in (3.0, 50.0):
            want = expected("ap", s, s, lab, -1, eps, reg)
            assert_close(diffcomb.soft_average_precision(s, lab, regularization_strength=eps, regularization=reg),
                         want, rtol=1e-10)


def test_ap_large_scores_float32(gen):
    # Scores far from 0 in float32: the negatives' common score keeps its margin after rounding.
    s, _, lab = sample(gen, (2, 40), -1, min_gap=0.0)
    shifted = (s * 10 + 3e5).float()
    want = expected("ap", shifted.double(), s, lab, -1, 2.0, "l2")
    assert_close(diffcomb.soft_average_precision(shifted, lab, regularization_strength=2.0), want, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("metric,reg", METRIC_REGS)
def test_gradcheck(metric, reg, gen):
    s, rel, lab = sample(gen, (2, 9, 3), 1)
    x = s.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: call(metric, t, rel, lab, 0.7, reg, dim=1), (x,))


def test_gradcheck_relevance(gen):
    # Untied relevance: the ideal DCG sorts the gains, which has kinks at ties.
    s, rel, _ = sample(gen, (3, 8), -1)
    y = (rel + 0.3 + 0.5 * torch.rand(rel.shape, generator=gen, dtype=torch.float64)).requires_grad_()
    for k in (None, 3):
        for gain in ("exponential", "linear"):
            assert torch.autograd.gradcheck(
                lambda t: diffcomb.soft_ndcg(s, t, k, regularization_strength=0.5, gain=gain), (y,))


@pytest.mark.parametrize("metric", METRICS)
def test_gradient_against_finite_differences_of_reference(metric, gen):
    # The gradient of the implementation against central differences of the numpy reference.
    s, rel, lab = sample(gen, (1, 8), -1)
    x = s.clone().requires_grad_()
    (grad,) = torch.autograd.grad(call(metric, x, rel, lab, 0.9).sum(), x)
    row, r, l = s[0].numpy(), rel[0].numpy(), lab[0].numpy()

    def f(v):
        return soft_rows(metric, [v], [r], [l], 0.9, "l2")[0]

    h = 1e-6
    fd = np.array([(f(row + h * e) - f(row - h * e)) / (2 * h) for e in np.eye(len(row))])
    assert_close(grad[0], fd, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True) (aot_eager: traces the custom ops, their fake kernels and autograd)


@pytest.mark.parametrize("metric", METRICS)
def test_compile_fullgraph(metric, gen):
    torch._dynamo.reset()
    s, rel, lab = sample(gen, (3, 7), -1)

    def fn(x):
        return call_loss(metric, x, rel, lab, 0.6, "none")

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    xe, xc = s.clone().requires_grad_(), s.clone().requires_grad_()
    out_e, out_c = fn(xe), compiled(xc)
    assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
    g = torch.randn(out_e.shape, generator=gen, dtype=torch.float64)
    (ge,) = torch.autograd.grad(out_e, xe, g)
    (gc,) = torch.autograd.grad(out_c, xc, g)
    assert_close(gc, ge, rtol=1e-12, atol=1e-12)


def test_compile_dynamic_shapes(gen):
    torch._dynamo.reset()

    def fn(x, y):
        return diffcomb.ndcg_loss(x, y, 3) + diffcomb.auc_loss(x, y) + diffcomb.average_precision_loss(x, y)

    compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for shape in [(3, 8), (2, 11), (4, 5)]:
        s, rel, _ = sample(gen, shape, -1)
        xe, xc = s.clone().requires_grad_(), s.clone().requires_grad_()
        out_e, out_c = fn(xe, rel), compiled(xc, rel)
        assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
        assert_close(torch.autograd.grad(out_c, xc)[0], torch.autograd.grad(out_e, xe)[0], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Losses, reductions, modules


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_losses_reductions_and_modules(metric, reduction, gen):
    s, rel, lab = sample(gen, (2, 3, 8), -1)
    per_query = 1.0 - call(metric, s, rel, lab, 0.5)
    want = {"mean": per_query.mean(), "sum": per_query.sum(), "none": per_query}[reduction]
    assert_close(call_loss(metric, s, rel, lab, 0.5, reduction), want, rtol=1e-14, atol=1e-15)
    m = module(metric, 0.5, reduction)
    target = rel if metric.startswith("ndcg") else lab
    assert_close(m(s, target), want, rtol=1e-14, atol=1e-15)
    assert "reduction=" in repr(m) and "regularization_strength=0.5" in repr(m)


def test_dim_matches_moved_input(gen):
    s, rel, lab = sample(gen, (3, 6, 2), 1)
    for metric in METRICS:
        moved = call(metric, s.movedim(1, -1), rel.movedim(1, -1), lab.movedim(1, -1), 0.4)
        assert_close(call(metric, s, rel, lab, 0.4, dim=1), moved, rtol=1e-14, atol=1e-15)
        assert_close(call(metric, s, rel, lab, 0.4, dim=-2), moved, rtol=1e-14, atol=1e-15)


def test_labels_of_any_dtype(gen):
    s, _, lab = sample(gen, (3, 9), -1)
    want = diffcomb.soft_auc(s, lab, regularization_strength=0.5)
    for labels in (lab.bool(), lab.long(), lab.float(), lab * 3.5):
        assert_close(diffcomb.soft_auc(s, labels, regularization_strength=0.5), want, rtol=1e-14)
        assert_close(diffcomb.soft_average_precision(s, labels, regularization_strength=0.5),
                     diffcomb.soft_average_precision(s, lab, regularization_strength=0.5), rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# Edge cases: NaN rows, undefined queries, empty inputs, n = 1, half precision


@pytest.mark.parametrize("metric", METRICS)
def test_nan_row_is_isolated(metric, gen):
    s, rel, lab = sample(gen, (3, 8), -1)
    clean = call(metric, s, rel, lab, 0.5)
    for bad in (math.nan, math.inf):
        x = s.clone()
        x[1, 4] = bad
        x.requires_grad_()
        out = call(metric, x, rel, lab, 0.5)
        assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()
        assert_close(out[[0, 2]], clean[[0, 2]], rtol=1e-14)
        (g,) = torch.autograd.grad(out[[0, 2]].sum(), x)  # the NaN row's gradient is NaN (SPEC 0)
        assert torch.isfinite(g[[0, 2]]).all()


def test_undefined_queries_are_nan(gen):
    s = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    none = torch.zeros(3, 6)
    everything = torch.ones(3, 6)
    assert torch.isnan(diffcomb.soft_ndcg(s, none)).all()
    assert torch.isnan(diffcomb.soft_ndcg(s, none, 2)).all()
    assert torch.isnan(diffcomb.soft_average_precision(s, none)).all()
    assert torch.isnan(diffcomb.soft_recall_at_k(s, none, 2)).all()
    assert torch.isnan(diffcomb.soft_auc(s, none)).all()
    assert torch.isnan(diffcomb.soft_auc(s, everything)).all()
    # Defined when all items are positive: AP = recall = 1.
    assert_close(diffcomb.soft_average_precision(s, everything), torch.ones(3), rtol=1e-12)
    assert_close(diffcomb.soft_recall_at_k(s, everything, 6), torch.ones(3), rtol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_empty_inputs(metric):
    for shape in [(3, 0), (0, 5), (2, 0, 4)]:
        s = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        rel = torch.ones(shape, dtype=torch.float64)
        out = call(metric, s, rel, rel, 1.0)
        assert out.shape == shape[:-1]
        assert bool(torch.isnan(out).all()) if shape[-1] == 0 else out.numel() == 0
        (g,) = torch.autograd.grad(out.sum(), s, allow_unused=True)
        assert g is None or g.shape == s.shape
        loss = call_loss(metric, s, rel, rel, 1.0, "none")
        assert loss.shape == shape[:-1]


def test_single_item():
    s = torch.tensor([[0.3]], dtype=torch.float64)
    one = torch.ones(1, 1)
    assert_close(diffcomb.soft_ndcg(s, one * 2), [1.0])
    assert_close(diffcomb.soft_average_precision(s, one), [1.0])
    assert_close(diffcomb.soft_recall_at_k(s, one, 1), [1.0])
    assert torch.isnan(diffcomb.soft_auc(s, one)).all()


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_half_precision(metric, dtype, gen):
    s, rel, lab = sample(gen, (3, 10), -1, min_gap=0.1)
    x = s.to(dtype)
    out = call(metric, x, rel, lab, 0.5)
    assert out.dtype == dtype
    want = call(metric, x.float(), rel, lab, 0.5)
    assert_close(out.float(), want, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------------
# Errors: named function and argument, nothing read from the values


def test_errors():
    s = torch.randn(2, 5)
    y = torch.ones(2, 5)
    with pytest.raises(ValueError, match=r"soft_ndcg: relevance must have the shape of scores"):
        diffcomb.soft_ndcg(s, torch.ones(2, 4))
    with pytest.raises(TypeError, match=r"soft_auc: labels must be a torch.Tensor"):
        diffcomb.soft_auc(s, [1, 0, 1, 0, 1])
    with pytest.raises(TypeError, match=r"soft_average_precision: scores must be a real tensor"):
        diffcomb.soft_average_precision(torch.ones(2, 5, dtype=torch.complex64), y)
    with pytest.raises(ValueError, match=r"soft_ndcg: k must be an int >= 1, got 0"):
        diffcomb.soft_ndcg(s, y, 0)
    with pytest.raises(TypeError, match=r"soft_ndcg: k must be None or an int, got float"):
        diffcomb.soft_ndcg(s, y, 2.0)
    with pytest.raises(TypeError, match=r"soft_recall_at_k: k must be an int, got NoneType"):
        diffcomb.soft_recall_at_k(s, y, None)
    with pytest.raises(ValueError, match=r"soft_ndcg: gain must be"):
        diffcomb.soft_ndcg(s, y, gain="cubic")
    with pytest.raises(ValueError, match=r"ndcg_loss: reduction must be"):
        diffcomb.ndcg_loss(s, y, reduction="avg")
    with pytest.raises(ValueError, match=r"soft_auc: regularization must be"):
        diffcomb.soft_auc(s, y, regularization="l1")
    with pytest.raises(ValueError, match=r"auc_loss: regularization_strength must be positive"):
        diffcomb.auc_loss(s, y, regularization_strength=0.0)
    with pytest.raises(IndexError, match=r"recall_at_k_loss|soft_recall_at_k"):
        diffcomb.recall_at_k_loss(s, y, 2, dim=2)
    with pytest.raises(RuntimeError, match=r"soft_auc: all tensor arguments must be on the same device"):
        diffcomb.soft_auc(s, y.to("meta"))
    with pytest.raises(ValueError, match=r"NDCGLoss: k must be"):
        diffcomb.NDCGLoss(k=-1)
    with pytest.raises(ValueError, match=r"RecallAtKLoss: k must be"):
        diffcomb.RecallAtKLoss(k=0)
    with pytest.raises(ValueError, match=r"AUCLoss: reduction must be"):
        diffcomb.AUCLoss(reduction="max")
    with pytest.raises(TypeError, match=r"AveragePrecisionLoss: dim must be an int"):
        diffcomb.AveragePrecisionLoss(dim=1.0)


def test_docstring_examples():
    result = doctest.testmod(diffcomb.ranking, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


def test_benchmark_pairwise_formulations_reach_the_hard_metrics(gen):
    # The O(n^2) contenders of the `ranking` benchmark suite are fair formulations of the same
    # metrics: at a small temperature they equal the hard metrics (untied scores).
    from diffcomb.bench import ranking_suite as rs

    s, rel, lab = sample(gen, (4, 12), -1)
    t = 1e-3
    assert_close(rs.pairwise_ndcg_loss(s, rel, K, t), 1 - expected("ndcg@k", s, rel, lab, -1), rtol=1e-9)
    assert_close(rs.pairwise_average_precision_loss(s, lab, t), 1 - expected("ap", s, rel, lab, -1), rtol=1e-9)
    assert_close(rs.pairwise_recall_at_k_loss(s, lab, K, t), 1 - expected("recall@k", s, rel, lab, -1), rtol=1e-9)
    assert_close(rs.pairwise_auc_loss(s, lab, t), 1 - expected("auc", s, rel, lab, -1), rtol=1e-9)


def test_example_runs():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "examples" / "learning_to_rank_ndcg.py"), "--steps", "3",
                          "--batch", "4", "--test-queries", "20", "--lrs", "0.01"], capture_output=True, text=True,
                         cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "soft NDCG@k" in out.stdout and "pairwise RankNet" in out.stdout and "untrained" in out.stdout
