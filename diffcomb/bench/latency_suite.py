"""Suite ``latency``: small calls, where the fixed cost of a call (argument checks, the dispatcher,
autograd, allocations, waking threads) dominates the arithmetic.

Workloads (``suites.LATENCY_SUITE``): soft rank and soft sort of ``(1, 8)``, ``(1, 100)`` and
``(32, 32)`` (a Spearman loss over a small batch), Sinkhorn between 16 slots (``(4, 16, 16)``
costs, 20 iterations), soft-DTW of short series (``(4, 16, 16, 2)``), a sorting network over 8
values (``(32, 8)``) and I-MLE top-2 of 16 experts (``(16, 16)`` scores, 4 samples). Contenders:
diffcomb, the peers of each family (torchsort, fast-soft-sort, POT, tslearn, pysdtw, diffsort,
the plain-torch I-MLE) and two plain torch ops on the same tensor as floors: ``torch.softmax``
along the last dimension (forward and forward+backward with the same upstream gradient: what the
cheapest differentiable op costs) and ``torch.sort``. Times are medians of many calls, in
microseconds; a contender that cannot run a workload is left out of its rows.
"""

from __future__ import annotations

from types import ModuleType

import torch

from .workloads import AnyWorkload, SinkhornWorkload, Unsupported, Workload

__all__ = ["build_softmax"]


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def build_softmax(mod: ModuleType, w: AnyWorkload):
    """torch.softmax over the last dimension of the workload's input, where the output has the
    input's shape (the sort workloads and the Sinkhorn plan)."""
    if isinstance(w, Workload) or (isinstance(w, SinkhornWorkload) and w.op == "sinkhorn"):
        return _softmax
    raise Unsupported("a floor of the workloads whose output has the input's shape")
