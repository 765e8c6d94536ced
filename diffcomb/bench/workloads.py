"""Benchmark workloads, declared as data.

A workload names one op call on one input shape. Suites are tuples of
workloads; the contenders that can run a workload are chosen in
``diffcomb.bench.peers`` from ``Workload.op``. Suite ``sort`` uses ``Workload``
(one ``(batch, n)`` input), suite ``softdtw`` uses ``SoftDTWWorkload`` (two
series ``x (batch, n, d)`` and ``y (batch, m, d)``; the gradient is taken
with respect to ``x``), suite ``sortnet`` uses ``SortNetWorkload`` (``x (batch,
n)``, output the relaxed permutation matrix ``(batch, n, n)``), suite ``topk`` uses
``TopKWorkload`` (``x (batch, n)``, the sparse soft top-k mask).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import torch

__all__ = [
    "Workload",
    "SoftDTWWorkload",
    "AnyWorkload",
    "Inputs",
    "SORT_SHAPES",
    "SORT_SUITE",
    "SOFTDTW_SHAPES",
    "SOFTDTW_SUITE",
    "SortNetWorkload",
    "SORTNET_SHAPES",
    "SORTNET_SUITE",
    "SinkhornWorkload",
    "SINKHORN_SUITE",
    "PerturbWorkload",
    "PERTURB_SUITE",
    "RankLossWorkload",
    "RANKING_SUITE",
    "TopKWorkload",
    "TOPK_SUITE",
    "SUITES",
    "DTYPES",
    "select",
    "make_inputs",
]

DTYPES: Mapping[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Workload:
    """One benchmarked call: ``op`` on a ``(batch, n)`` input, last axis."""

    op: str  # "soft_rank" | "soft_sort"
    batch: int
    n: int
    regularization: str = "l2"  # "l2" | "kl"
    strength: float = 1.0  # regularization_strength (epsilon)
    dtype: str = "float32"

    @property
    def name(self) -> str:
        return f"{self.op}/{self.regularization}/{self.batch}x{self.n}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.n)

    @property
    def settings(self) -> str:
        return f"dtype={self.dtype} strength={self.strength:g}"

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SoftDTWWorkload:
    """Soft-DTW between ``x (batch, n, d)`` and ``y (batch, m, d)``, squared
    Euclidean cost, one value per pair: output ``(batch,)``."""

    batch: int
    n: int
    m: int
    d: int
    gamma: float = 0.1
    dtype: str = "float32"
    op: str = "soft_dtw"

    @property
    def name(self) -> str:
        return f"{self.op}/{self.batch}x{self.n}x{self.m}x{self.d}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch,)

    @property
    def settings(self) -> str:
        return f"dtype={self.dtype} gamma={self.gamma:g}"

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SortNetWorkload:
    """A differentiable sorting network on ``x (batch, n)`` returning the relaxed
    permutation matrix P ``(batch, n, n)``; fwd+bwd is ``(P * g).sum().backward()``
    with a fixed ``g (batch, n, n)``, so the whole P backward is exercised."""

    network: str  # "odd_even" | "bitonic"
    batch: int
    n: int
    sigmoid: str = "cauchy"
    steepness: float = 10.0
    dtype: str = "float32"
    op: str = "sorting_network"

    @property
    def name(self) -> str:
        return f"{self.op}/{self.network}/{self.batch}x{self.n}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.n, self.n)

    @property
    def settings(self) -> str:
        return f"dtype={self.dtype} sigmoid={self.sigmoid} steepness={self.steepness:g}"

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SinkhornWorkload:
    """Entropic OT (suite ``sinkhorn``), one of three ops:

    - ``sinkhorn``: the plan ``(batch, n, m)`` of a unit-scale cost (half the squared distances
      of uniform points in the unit square, so entries lie in [0, 1]) with uniform weights,
      exactly ``n_iter`` iterations for every contender; loss ``(plan * g).sum()``, gradient
      with respect to the cost.
    - ``sinkhorn_divergence``: debiased divergence ``(batch,)`` between uniform point clouds
      ``x (batch, n, 2)`` and ``y (batch, m, 2)``, squared Euclidean cost; gradient w.r.t. ``x``.
    - ``sinkhorn_rank``: soft ranks ``(batch, n)`` of ``randn`` values (OT ranks against the
      permutahedron soft rank of the same input).
    """

    op: str
    batch: int
    n: int
    m: int
    epsilon: float = 0.1
    n_iter: int = 100
    dtype: str = "float32"

    @property
    def name(self) -> str:
        if self.op == "sinkhorn_rank":
            return f"{self.op}/{self.batch}x{self.n}"
        return f"{self.op}/{self.batch}x{self.n}x{self.m}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.op == "sinkhorn":
            return (self.batch, self.n, self.m)
        if self.op == "sinkhorn_divergence":
            return (self.batch,)
        return (self.batch, self.n)

    @property
    def settings(self) -> str:
        return f"dtype={self.dtype} epsilon={self.epsilon:g} n_iter={self.n_iter}"

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class PerturbWorkload:
    """Suite ``perturb`` (diffcomb/bench/perturb_suite.py): one solver or estimator call.

    ``imle_topk``: I-MLE top-k on scores ``(batch, n)`` with ``samples`` noise samples (output
    ``(samples, batch, n)``), forward and forward+backward. ``grid_shortest_path``: vertex
    costs ``(batch, n, n)``, forward only. ``linear_assignment``: costs ``(batch, n, n)``,
    forward only.
    """

    op: str  # "imle_topk" | "grid_shortest_path" | "linear_assignment"
    batch: int
    n: int
    k: int = 10
    samples: int = 10
    noise: str = "sum_of_gamma"  # imle_topk: "sum_of_gamma" | "gumbel"
    dtype: str = "float32"

    @property
    def name(self) -> str:
        if self.op == "imle_topk":
            return f"{self.op}/{self.noise}/{self.batch}x{self.n}"
        return f"{self.op}/{self.batch}x{self.n}x{self.n}"

    @property
    def settings(self) -> str:
        extra = f" k={self.k} samples={self.samples}" if self.op == "imle_topk" else ""
        return f"dtype={self.dtype}{extra}"

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RankLossWorkload:
    """Suite ``ranking`` (diffcomb/bench/ranking_suite.py): a ranking-metric loss per query.

    Scores ``x (batch, n)`` (randn) against graded relevance in {0, ..., 4} (``ndcg_loss``) or
    binary labels with a ``positives`` fraction of positive items (at least one positive and one
    negative per query); output the per-query loss ``(batch,)``; fwd+bwd is ``out.sum().backward()``
    with respect to the scores. ``k``: the cutoff of ``ndcg_loss`` and ``recall_at_k_loss``;
    ``strength``: diffcomb's regularization_strength and the pairwise sigmoids' temperature.
    """

    op: str  # "ndcg_loss" | "average_precision_loss" | "recall_at_k_loss" | "auc_loss"
    batch: int
    n: int
    k: int = 10
    positives: float = 0.1
    strength: float = 1.0
    dtype: str = "float32"

    @property
    def name(self) -> str:
        return f"{self.op}/{self.batch}x{self.n}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch,)

    @property
    def settings(self) -> str:
        extra = f" k={self.k}" if self.op in ("ndcg_loss", "recall_at_k_loss") else ""
        return f"dtype={self.dtype} strength={self.strength:g}{extra}"

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class TopKWorkload:
    """Suite ``topk``: the sparse soft top-k mask of ``x (batch, n)`` (``randn``), last axis, with
    ``k``, the norm ``p`` and ``strength`` (epsilon); fwd+bwd is ``(mask * g).sum().backward()``."""

    batch: int
    n: int
    k: int
    p: float = 4.0 / 3.0
    strength: float = 1.0
    dtype: str = "float32"
    op: str = "sparse_soft_topk"

    @property
    def name(self) -> str:
        return f"{self.op}/p{self.p:.4g}/k{self.k}/{self.batch}x{self.n}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.n)

    @property
    def settings(self) -> str:
        return f"dtype={self.dtype} strength={self.strength:g}"

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


AnyWorkload = Union[Workload, SoftDTWWorkload, SortNetWorkload, SinkhornWorkload, PerturbWorkload, RankLossWorkload,
                    TopKWorkload]


# (batch, n): one short row, many short rows, many medium rows, a few long
# rows, one very long row.
SORT_SHAPES: Sequence[tuple[int, int]] = (
    (1, 100),
    (128, 100),
    (128, 1000),
    (16, 10000),
    (1, 100000),
)

SORT_SUITE: tuple[Workload, ...] = tuple(
    Workload(op=op, batch=batch, n=n, regularization=reg)
    for batch, n in SORT_SHAPES
    for op in ("soft_rank", "soft_sort")
    for reg in ("l2", "kl")
)

# (batch, n, m, d): many short univariate pairs, medium multivariate pairs,
# a few long univariate pairs (4M cells each).
SOFTDTW_SHAPES: Sequence[tuple[int, int, int, int]] = (
    (64, 128, 128, 1),
    (32, 512, 512, 8),
    (4, 2048, 2048, 1),
)

SOFTDTW_SUITE: tuple[SoftDTWWorkload, ...] = tuple(
    SoftDTWWorkload(batch=b, n=n, m=m, d=d, gamma=0.1) for b, n, m, d in SOFTDTW_SHAPES
)

# (network, batch, n): batch 128, n in {16, 256, 1024}. The odd-even network
# has depth n and n(n-1)/2 comparators, so its P costs O(n^3) per row: at
# n = 1024 one forward+backward of diffcomb takes minutes on 2 cores (and
# the dense per-layer products of diffsort would need about 2 TB), so it is
# left out; the bitonic network (depth 55 at n = 1024) covers n = 1024.
SORTNET_SHAPES: Sequence[tuple[str, int, int]] = (
    ("odd_even", 128, 16),
    ("odd_even", 128, 256),
    ("bitonic", 128, 16),
    ("bitonic", 128, 256),
    ("bitonic", 128, 1024),
)

SORTNET_SUITE: tuple[SortNetWorkload, ...] = tuple(
    SortNetWorkload(network=net, batch=b, n=n) for net, b, n in SORTNET_SHAPES
)

# batch in {1, 32}, n = m in {100, 1000}, epsilon 0.1 on a unit-scale cost, 100 iterations.
SINKHORN_SUITE: tuple[SinkhornWorkload, ...] = tuple(
    SinkhornWorkload(op=op, batch=b, n=n, m=n)
    for op in ("sinkhorn", "sinkhorn_divergence", "sinkhorn_rank")
    for b in (1, 32)
    for n in (100, 1000)
)

# Top-k I-MLE (B 256, n 1000, k 10, 10 samples) with both noises; grid shortest path 12x12
# and 30x30 (batch 64); linear assignment n = 100 (batch 64).
PERTURB_SUITE: tuple[PerturbWorkload, ...] = (
    PerturbWorkload("imle_topk", 256, 1000, noise="sum_of_gamma"),
    PerturbWorkload("imle_topk", 256, 1000, noise="gumbel"),
    PerturbWorkload("grid_shortest_path", 64, 12),
    PerturbWorkload("grid_shortest_path", 64, 30),
    PerturbWorkload("linear_assignment", 64, 100),
)

# Batch 256, n in {100, 1000, 10000}: the four ranking-metric losses (NDCG@10, AP, recall@10, AUC).
RANKING_SUITE: tuple[RankLossWorkload, ...] = tuple(
    RankLossWorkload(op=op, batch=256, n=n)
    for n in (100, 1000, 10000)
    for op in ("ndcg_loss", "average_precision_loss", "recall_at_k_loss", "auc_loss")
)

# Sparse soft top-k: (128, 1000) with k = 100 for p = 2, 4/3 (closed-form block solves) and 1.5
# (the general solve: each pooling re-solves its block), a mixture-of-experts router shape (4096
# tokens, 64 experts, k = 2) and a pruning-like shape (16 rows of 10000, k = 1000).
TOPK_SUITE: tuple[TopKWorkload, ...] = (
    TopKWorkload(128, 1000, 100, p=2.0),
    TopKWorkload(128, 1000, 100, p=4.0 / 3.0),
    TopKWorkload(128, 1000, 100, p=1.5),
    TopKWorkload(4096, 64, 2, p=4.0 / 3.0),
    TopKWorkload(16, 10000, 1000, p=4.0 / 3.0),
)

SUITES: Mapping[str, tuple[AnyWorkload, ...]] = {
    "sort": SORT_SUITE, "softdtw": SOFTDTW_SUITE, "sortnet": SORTNET_SUITE, "sinkhorn": SINKHORN_SUITE,
    "perturb": PERTURB_SUITE, "ranking": RANKING_SUITE, "topk": TOPK_SUITE,
}


def select(
    workloads: Sequence[AnyWorkload],
    patterns: Sequence[str] = (),
    dtype: str | None = None,
    strength: float | None = None,
    gamma: float | None = None,
) -> list[AnyWorkload]:
    """Workloads whose name matches any pattern, with dtype/strength/gamma overrides.

    Names read ``op/regularization/batchxn`` (sort) or ``op/batchxnxmxd``
    (softdtw). A pattern with a glob character (``*?[``) is matched with
    fnmatch against the whole name; otherwise it matches whole
    ``/``-separated segments in order: ``kl``, ``128x1000``, ``soft_rank/l2``
    (but ``128x100`` does not match ``128x1000``). ``strength`` applies to
    workloads that have one (sort), ``gamma`` to those with a ``gamma``
    (softdtw); an override a workload lacks raises ``ValueError``.
    """
    from fnmatch import fnmatchcase

    def matches(name: str) -> bool:
        if not patterns:
            return True
        parts = name.split("/")
        for p in patterns:
            if any(c in p for c in "*?["):
                if fnmatchcase(name, p):
                    return True
                continue
            want = p.strip("/").split("/")
            if any(parts[i:i + len(want)] == want for i in range(len(parts) - len(want) + 1)):
                return True
        return False

    out = []
    for w in workloads:
        if not matches(w.name):
            continue
        if dtype is not None:
            w = dataclasses.replace(w, dtype=dtype)
        for field_name, value in (("strength", strength), ("gamma", gamma)):
            if value is None:
                continue
            if not hasattr(w, field_name):
                raise ValueError(f"workload {w.name} has no {field_name} to override")
            w = dataclasses.replace(w, **{field_name: value})
        out.append(w)
    return out


@dataclass(frozen=True)
class Inputs:
    """The arguments of one call and the fixed upstream gradient ``g``.

    A contender is called as ``fn(x, *others)``; gradients are taken with
    respect to ``x`` only. The loss is ``(out * g).sum()``, or ``out.sum()``
    when ``g`` is None.
    """

    x: torch.Tensor
    g: torch.Tensor | None
    others: tuple[torch.Tensor, ...] = ()


def make_inputs(workload: AnyWorkload, device: str, seed: int) -> Inputs:
    """Seeded ``torch.randn`` inputs (and upstream gradient, for sort).

    Drawn on the CPU in float64 and then converted, so every device and dtype
    sees the same numbers. Sort: ``x`` then ``g``, both ``(batch, n)``.
    Sorting networks: ``x (batch, n)`` then ``g (batch, n, n)``.
    Soft-DTW: ``x (batch, n, d)`` then ``y (batch, m, d)``; no ``g``, the loss
    is the sum of the batch's values.
    """
    gen = torch.Generator().manual_seed(seed)
    dt = DTYPES[workload.dtype]
    if isinstance(workload, SortNetWorkload):
        x = torch.randn((workload.batch, workload.n), generator=gen, dtype=torch.float64)
        g = torch.randn((workload.batch, workload.n, workload.n), generator=gen, dtype=torch.float64)
        return Inputs(x=x.to(device=device, dtype=dt), g=g.to(device=device, dtype=dt))
    if isinstance(workload, SinkhornWorkload):
        return _sinkhorn_inputs(workload, gen, device, dt)
    if isinstance(workload, RankLossWorkload):
        return _ranking_inputs(workload, gen, device, dt)
    if isinstance(workload, SoftDTWWorkload):
        x = torch.randn((workload.batch, workload.n, workload.d), generator=gen, dtype=torch.float64)
        y = torch.randn((workload.batch, workload.m, workload.d), generator=gen, dtype=torch.float64)
        return Inputs(x=x.to(device=device, dtype=dt), g=None, others=(y.to(device=device, dtype=dt),))
    shape = (workload.batch, workload.n)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    return Inputs(x=x.to(device=device, dtype=dt), g=g.to(device=device, dtype=dt))


def _sinkhorn_inputs(w: SinkhornWorkload, gen: torch.Generator, device: str, dt: torch.dtype) -> Inputs:
    """Sinkhorn suite: see SinkhornWorkload (float64 draws, then converted)."""
    f64 = torch.float64
    if w.op == "sinkhorn":
        p = torch.rand((w.batch, w.n, 2), generator=gen, dtype=f64)
        q = torch.rand((w.batch, w.m, 2), generator=gen, dtype=f64)
        cost = 0.5 * (p.unsqueeze(-2) - q.unsqueeze(-3)).square().sum(-1)
        g = torch.randn((w.batch, w.n, w.m), generator=gen, dtype=f64)
        return Inputs(x=cost.to(device=device, dtype=dt), g=g.to(device=device, dtype=dt))
    if w.op == "sinkhorn_divergence":
        p = torch.rand((w.batch, w.n, 2), generator=gen, dtype=f64)
        q = torch.rand((w.batch, w.m, 2), generator=gen, dtype=f64)
        return Inputs(x=p.to(device=device, dtype=dt), g=None, others=(q.to(device=device, dtype=dt),))
    x = torch.randn((w.batch, w.n), generator=gen, dtype=f64)
    g = torch.randn((w.batch, w.n), generator=gen, dtype=f64)
    return Inputs(x=x.to(device=device, dtype=dt), g=g.to(device=device, dtype=dt))


def _ranking_inputs(w: RankLossWorkload, gen: torch.Generator, device: str, dt: torch.dtype) -> Inputs:
    """Suite ranking: see RankLossWorkload (float64 draws, then converted)."""
    f64 = torch.float64
    x = torch.randn((w.batch, w.n), generator=gen, dtype=f64)
    u = torch.rand((w.batch, w.n), generator=gen, dtype=f64)
    if w.op == "ndcg_loss":
        target = torch.floor(5.0 * u).clamp_max(4.0)  # graded relevance 0..4, uniform
    else:
        target = (u < w.positives).to(f64)
        if w.n >= 2:
            target[:, 0], target[:, 1] = 1.0, 0.0  # at least one positive and one negative
    return Inputs(x=x.to(device=device, dtype=dt), g=None, others=(target.to(device=device, dtype=dt),))
