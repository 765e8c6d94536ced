"""The benchmark suites as data: named tuples of workloads (``diffcomb.bench.workloads``), and
``select``, the ``-w`` / ``--dtype`` / ``--strength`` / ``--gamma`` filter of the command line.
The contenders of each suite are listed in ``diffcomb.bench.peers.SUITE_CONTENDERS``."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from .workloads import (AnyWorkload, PerturbWorkload, RankLossWorkload, SinkhornWorkload, SoftDTWWorkload,
                        SortNetWorkload, TopKWorkload, Workload)

__all__ = [
    "SORT_SHAPES", "SORT_SUITE", "SOFTDTW_SHAPES", "SOFTDTW_SUITE", "SORTNET_SHAPES", "SORTNET_SUITE",
    "SINKHORN_SUITE", "PERTURB_SUITE", "RANKING_SUITE", "TOPK_SUITE", "LATENCY_SUITE", "SUITES", "select",
]

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

# Small calls (diffcomb/bench/latency_suite.py): soft rank and sort of (1, 8), (1, 100) and
# (32, 32); each other family's smallest realistic case: Sinkhorn between 16 slots (20
# iterations, about what the default tolerance takes there), soft-DTW of short 2-D series, a
# sorting network over 8 values, I-MLE top-2 of 16 experts.
LATENCY_SUITE: tuple[AnyWorkload, ...] = (
    *(Workload(op=op, batch=batch, n=n) for batch, n in ((1, 8), (1, 100), (32, 32))
      for op in ("soft_rank", "soft_sort")),
    SinkhornWorkload(op="sinkhorn", batch=4, n=16, m=16, n_iter=20),
    SoftDTWWorkload(batch=4, n=16, m=16, d=2, gamma=0.1),
    SortNetWorkload(network="odd_even", batch=32, n=8),
    PerturbWorkload("imle_topk", 16, 16, k=2, samples=4, noise="gumbel"),
)

SUITES: Mapping[str, tuple[AnyWorkload, ...]] = {
    "sort": SORT_SUITE, "softdtw": SOFTDTW_SUITE, "sortnet": SORTNET_SUITE, "sinkhorn": SINKHORN_SUITE,
    "perturb": PERTURB_SUITE, "ranking": RANKING_SUITE, "topk": TOPK_SUITE, "latency": LATENCY_SUITE,
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
