"""Suite ``ranking``: diffcomb's ranking-metric losses against the O(n^2) pairwise formulations.

Workloads (``workloads.RANKING_SUITE``): batch 256, n in {100, 1000, 10000}, one query per row;
``ndcg_loss`` (NDCG@10 against graded relevance in {0..4}), ``average_precision_loss``,
``recall_at_k_loss`` (k = 10) and ``auc_loss`` against binary labels (10% positives). Every
contender returns the per-query loss ``(batch,)``; fwd+bwd is ``out.sum().backward()`` with
respect to the scores.

Contenders:

- ``diffcomb``: :func:`diffcomb.ndcg_loss` and friends (soft ranks / soft top-k by projection
  onto the permutahedron: O(n log n) time and O(n) memory per query).
- ``pairwise (torch)``: the common PyTorch formulations, written here from the papers, that
  compare every pair of items through a sigmoid and so hold (batch, n, n) tensors:
  ApproxNDCG's ranks pi_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / T) (Qin, Liu, Li 2010) in
  DCG = sum_i G_i / log2(1 + pi_i), with the cutoff @k as sigmoid((k + 1/2 - pi_i) / T);
  Smooth-AP (Brown et al. 2020): AP = mean_{i in P} (1 + sum_{j in P, j != i} sigmoid) /
  pi_i; recall@k = mean_{i in P} sigmoid((k + 1/2 - pi_i) / T); AUC = the mean over (positive,
  negative) pairs of sigmoid((s_i - s_j) / T). T = the workload's strength.

These are different surrogates of the same metrics: the value check compares different
quantities (its '!' marks are expected); the point is the time and the memory. A pairwise call
whose (batch, n, n) tensors would not fit (``PAIRWISE_LIVE_TENSORS`` of them at once, more than
``PAIRWISE_MAX_BYTES`` or half the available memory) is reported unsupported; its peak memory is
still measured at batches 1 and 2 and extrapolated linearly to the batch (diffcomb/bench/memory.py).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from .workloads import DTYPES, RankLossWorkload, Unsupported

__all__ = ["build_diffcomb", "build_pairwise", "pairwise_estimated_bytes", "SMALL_BATCHES"]

PAIRWISE_LIVE_TENSORS = 4  # (batch, n, n) tensors alive at the peak of forward+backward (measured: ~3-4)
PAIRWISE_MAX_BYTES = 8 << 30
SMALL_BATCHES = (1, 2)  # memory probes of unsupported pairwise workloads


def build_diffcomb(mod: ModuleType, w: RankLossWorkload):
    kw = dict(regularization_strength=w.strength, reduction="none")
    if w.op == "ndcg_loss":
        return functools.partial(mod.ndcg_loss, k=w.k, **kw)
    if w.op == "recall_at_k_loss":
        return functools.partial(mod.recall_at_k_loss, k=w.k, **kw)
    return functools.partial(getattr(mod, w.op), **kw)


# ---------------------------------------------------------------------------
# The pairwise formulations: (batch, n, n) sigmoid matrices.


def _pairwise_sigmoid(s: torch.Tensor, t: float) -> torch.Tensor:
    """P[b, i, j] = sigmoid((s_j - s_i) / t): the soft indicator that j is ranked above i."""
    return torch.sigmoid((s.unsqueeze(-2) - s.unsqueeze(-1)) / t)


def _approx_ranks(p: torch.Tensor) -> torch.Tensor:
    """pi_i = 1 + sum_{j != i} P_ij (the diagonal holds sigmoid(0) = 1/2)."""
    return 0.5 + p.sum(-1)


def pairwise_ndcg_loss(s: torch.Tensor, rel: torch.Tensor, k: int, t: float) -> torch.Tensor:
    pi = _approx_ranks(_pairwise_sigmoid(s, t))
    gains = torch.exp2(rel) - 1.0
    dcg = (gains / torch.log2(1.0 + pi) * torch.sigmoid((k + 0.5 - pi) / t)).sum(-1)
    cut = min(k, s.shape[-1])
    ideal = gains.sort(-1, descending=True).values[..., :cut]
    idcg = (ideal / torch.log2(torch.arange(2, cut + 2, dtype=s.dtype, device=s.device))).sum(-1)
    return 1.0 - dcg / idcg


def pairwise_average_precision_loss(s: torch.Tensor, labels: torch.Tensor, t: float) -> torch.Tensor:
    pos = (labels > 0).to(s.dtype)
    p = _pairwise_sigmoid(s, t)
    pi_all = _approx_ranks(p)
    pi_pos = 1.0 + (p * pos.unsqueeze(-2)).sum(-1) - 0.5 * pos  # positives above i, i excluded
    ap = (pos * pi_pos / pi_all).sum(-1) / pos.sum(-1)
    return 1.0 - ap


def pairwise_recall_at_k_loss(s: torch.Tensor, labels: torch.Tensor, k: int, t: float) -> torch.Tensor:
    pos = (labels > 0).to(s.dtype)
    pi = _approx_ranks(_pairwise_sigmoid(s, t))
    return 1.0 - (pos * torch.sigmoid((k + 0.5 - pi) / t)).sum(-1) / pos.sum(-1)


def pairwise_auc_loss(s: torch.Tensor, labels: torch.Tensor, t: float) -> torch.Tensor:
    pos = (labels > 0).to(s.dtype)
    neg = 1.0 - pos
    wins = torch.sigmoid((s.unsqueeze(-1) - s.unsqueeze(-2)) / t)  # [b, i, j]: i scored above j
    pairs = pos.unsqueeze(-1) * neg.unsqueeze(-2)
    return 1.0 - (wins * pairs).sum((-2, -1)) / (pos.sum(-1) * neg.sum(-1))


def pairwise_estimated_bytes(w: RankLossWorkload) -> int:
    itemsize = torch.empty((), dtype=DTYPES[w.dtype]).element_size()
    return PAIRWISE_LIVE_TENSORS * w.batch * w.n * w.n * itemsize


def build_pairwise(mod: ModuleType, w: RankLossWorkload, limit: bool = True):
    """The pairwise formulation of ``w.op`` as fn(scores, target); ``limit=False`` lifts the
    memory limit (the memory probes at small batches)."""
    if not isinstance(w, RankLossWorkload):
        raise Unsupported("suite ranking only")
    from .peers import available_bytes  # here: peers imports this module

    need, avail = pairwise_estimated_bytes(w), available_bytes()
    cap = PAIRWISE_MAX_BYTES if avail is None else min(PAIRWISE_MAX_BYTES, avail // 2)
    if limit and need > cap:
        raise Unsupported(f"(batch, n, n) sigmoid matrices: about {need / 2**30:.0f} GiB "
                          f"(limit {cap / 2**30:.0f} GiB)")
    t = w.strength
    if w.op == "ndcg_loss":
        return lambda s, rel: pairwise_ndcg_loss(s, rel, w.k, t)
    if w.op == "average_precision_loss":
        return lambda s, lab: pairwise_average_precision_loss(s, lab, t)
    if w.op == "recall_at_k_loss":
        return lambda s, lab: pairwise_recall_at_k_loss(s, lab, w.k, t)
    if w.op == "auc_loss":
        return lambda s, lab: pairwise_auc_loss(s, lab, t)
    raise Unsupported(f"no pairwise formulation of {w.op}")


def per_row_bytes(peak_bytes: int, batch: int) -> float:
    return peak_bytes / max(batch, 1)


def summary_lines(memory_rows: list) -> list[str]:
    """Peak memory per query (row) for each workload and contender."""
    lines = ["", "Peak memory per query (fwd+bwd peak / batch):", ""]
    for r in memory_rows:
        res = r["result"]
        if res.get("peak_bytes") is None:
            continue
        batch = res.get("batch") or 1
        lines.append(f"- {r['workload']} {r['contender']}: {per_row_bytes(res['peak_bytes'], batch) / 2**10:,.0f} KiB"
                     f" per query")
    return lines if len(lines) > 3 else []

