"""The permutahedron family in the op x mode x dtype matrix (tests/test_autodiff_modes.py).

One case per public differentiable op and configuration that changes the derivative: both
regularizations (l2: a piecewise constant Jacobian, so a zero Hessian; kl: smooth, the block softmax
weights depend on x), both directions, the sparse top-k's block solves (p = 2, 4/3 and the general
threshold solve), weighted isotonic regression (gradients to the weights), the losses, ranking metrics
and the Fenchel-Young loss, and the modules on them. Inputs are random (no ties, no block changes
within the finite-difference step) with strengths that make multi-element blocks. Targets and labels
that are not differentiated are fixed patterns built inside the function (so that they follow the
input's dtype and device, and vmap maps over the scores only).
"""

from __future__ import annotations

import torch

import diffcomb
from diffcomb import losses, nn

from . import Case

__all__ = ["CASES"]


def _randn(*shape):
    def inputs(dtype, device, gen):
        return (torch.randn(*shape, generator=gen, dtype=dtype, device=device),)

    return inputs


def _two(shape_a, shape_b):
    def inputs(dtype, device, gen):
        return (torch.randn(*shape_a, generator=gen, dtype=dtype, device=device),
                torch.randn(*shape_b, generator=gen, dtype=dtype, device=device))

    return inputs


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """A fixed ranking target of x's shape (1-based ascending ranks of a fixed permutation)."""
    n = x.shape[-1]
    order = torch.tensor([(3 * i + 1) % n for i in range(n)], device=x.device)
    return (order.argsort().to(x.dtype) + 1).expand(x.shape)


def _labels(x: torch.Tensor) -> torch.Tensor:
    """Fixed binary labels of x's shape, with positives and negatives in every row."""
    n = x.shape[-1]
    return (torch.arange(n, device=x.device) % 3 == 0).to(x.dtype).expand(x.shape)


X = _randn(3, 6)
CASES: list[Case] = []

for reg in ("l2", "kl"):
    for desc in (False, True):
        tag = f"{reg}-{'desc' if desc else 'asc'}"
        CASES.append(Case(f"soft_rank-{tag}", lambda x, r=reg, d=desc: diffcomb.soft_rank(
            x, descending=d, regularization_strength=0.6, regularization=r), X))
        CASES.append(Case(f"soft_sort-{tag}", lambda x, r=reg, d=desc: diffcomb.soft_sort(
            x, descending=d, regularization_strength=1.3, regularization=r), X))
    CASES += [
        Case(f"soft_quantile-{reg}", lambda x, r=reg: diffcomb.soft_quantile(
            x, [0.2, 0.5, 0.9], regularization_strength=1.3, regularization=r), X),
        Case(f"soft_spearman-{reg}", lambda x, r=reg: losses.soft_spearman(
            x, _ranks(x), regularization_strength=0.6, regularization=r), X),
        Case(f"spearman_loss-{reg}", lambda x, r=reg: losses.spearman_loss(
            x, _ranks(x), regularization_strength=0.6, regularization=r), X),
        Case(f"soft_ndcg-{reg}", lambda x, rel, r=reg: diffcomb.soft_ndcg(
            x, rel.exp(), k=4, regularization_strength=0.6, regularization=r), _two((3, 6), (3, 6))),
        Case(f"soft_average_precision-{reg}", lambda x, r=reg: diffcomb.soft_average_precision(
            x, _labels(x), regularization_strength=0.6, regularization=r), X),
        Case(f"soft_auc-{reg}", lambda x, r=reg: diffcomb.soft_auc(
            x, _labels(x), regularization_strength=0.6, regularization=r), X),
        Case(f"fenchel_young_loss-permutahedron-{reg}", lambda x, r=reg: diffcomb.fenchel_young_loss(
            x, _ranks(x), regularization=r, regularization_strength=0.6, reduction="none"), X,
             atol={torch.float64: 1e-8}),
    ]

CASES += [
    Case("soft_topk", lambda x: diffcomb.soft_topk(x, 2, regularization_strength=0.8), X),
    Case("isotonic_regression-increasing", lambda y: diffcomb.isotonic_regression(y), X),
    Case("isotonic_regression-decreasing", lambda y: diffcomb.isotonic_regression(y, increasing=False), X),
    Case("isotonic_regression-weighted", lambda y, w: diffcomb.isotonic_regression(y, w.exp()),
         _two((3, 6), (3, 6))),
    Case("soft_lts", lambda x: losses.soft_lts(x.square(), 2, regularization_strength=0.5, reduction="none"), X),
    Case("sparse_soft_topk-p2", lambda x: diffcomb.sparse_soft_topk(x, 2, regularization_strength=1.5, p=2.0), X),
    Case("sparse_soft_topk-p4/3", lambda x: diffcomb.sparse_soft_topk(x, 2, regularization_strength=1.5), X),
    Case("sparse_soft_topk-p1.5", lambda x: diffcomb.sparse_soft_topk(x, 2, regularization_strength=1.5, p=1.5), X),
    Case("sparse_soft_topk-magnitude", lambda x: diffcomb.sparse_soft_topk(
        x, 2, regularization_strength=1.5, p=1.5, magnitude=True), X),
    Case("topk_routing", lambda x: tuple(diffcomb.topk_routing(x, 2, regularization_strength=1.5))[:3]
         + (diffcomb.topk_routing(x, 2, regularization_strength=1.5).balance_loss,), X),
    Case("ndcg_loss", lambda x: diffcomb.ndcg_loss(x, _ranks(x), regularization_strength=0.6), X),
    Case("average_precision_loss", lambda x: diffcomb.average_precision_loss(
        x, _labels(x), regularization_strength=0.6), X),
    Case("soft_recall_at_k", lambda x: diffcomb.soft_recall_at_k(x, _labels(x), 2, regularization_strength=0.8), X),
    Case("recall_at_k_loss", lambda x: diffcomb.recall_at_k_loss(x, _labels(x), 2, regularization_strength=0.8), X),
    Case("auc_loss", lambda x: diffcomb.auc_loss(x, _labels(x), regularization_strength=0.6), X),
]

# The modules: one configuration each (their forward is one call of the functions above).
_MODULES = {
    "SoftRank": lambda: nn.SoftRank(regularization_strength=0.6, regularization="kl"),
    "SoftSort": lambda: nn.SoftSort(descending=True, regularization_strength=1.3),
    "SoftTopK": lambda: nn.SoftTopK(2, regularization_strength=0.8),
    "SoftQuantile": lambda: nn.SoftQuantile(0.3, regularization_strength=1.3, regularization="kl"),
    "IsotonicRegression": lambda: nn.IsotonicRegression(increasing=False),
    "SoftLTSLoss": lambda: nn.SoftLTSLoss(2, regularization_strength=0.5),
    "SparseSoftTopK": lambda: nn.SparseSoftTopK(2, regularization_strength=1.5),
}
for name, make in _MODULES.items():
    CASES.append(Case(f"nn.{name}", lambda x, m=make: m()(x), X))

_TARGET_MODULES = {
    "SoftSpearman": (lambda: nn.SoftSpearman(regularization_strength=0.6), _ranks),
    "SpearmanLoss": (lambda: nn.SpearmanLoss(regularization_strength=0.6, regularization="kl"), _ranks),
    "NDCGLoss": (lambda: nn.NDCGLoss(k=3, regularization_strength=0.6), _ranks),
    "AveragePrecisionLoss": (lambda: nn.AveragePrecisionLoss(regularization_strength=0.6), _labels),
    "RecallAtKLoss": (lambda: nn.RecallAtKLoss(2, regularization_strength=0.8), _labels),
    "AUCLoss": (lambda: nn.AUCLoss(regularization_strength=0.6, regularization="kl"), _labels),
    "FenchelYoungLoss": (lambda: nn.FenchelYoungLoss(regularization="kl", regularization_strength=0.6), _ranks),
}
for name, (make, target) in _TARGET_MODULES.items():
    CASES.append(Case(f"nn.{name}", lambda x, m=make, t=target: m()(x, t(x)), X))


_ROUTERS: dict = {}


def _router(x):
    """nn.TopKRouter with fixed weights (built once per dtype and device, outside any transform)."""
    key = (x.dtype, x.device)
    if key not in _ROUTERS:
        router = nn.TopKRouter(6, 4, 2, regularization_strength=1.5, bias=True)
        with torch.no_grad():
            router.proj.weight.copy_(torch.linspace(-1.0, 1.0, 24).reshape(4, 6).sin())
            router.proj.bias.copy_(torch.linspace(-0.2, 0.3, 4))
        _ROUTERS[key] = router.to(dtype=x.dtype, device=x.device).requires_grad_(False)
    return _ROUTERS[key](x).combine_weights


CASES.append(Case("nn.TopKRouter", _router, X))
