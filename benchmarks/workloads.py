"""Benchmark workloads, declared as data.

A workload names one op call on one input shape. Suites are tuples of
workloads; the contenders that can run a workload are chosen in
``benchmarks.peers`` from ``Workload.op``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

__all__ = [
    "Workload",
    "Inputs",
    "SORT_SHAPES",
    "SORT_SUITE",
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

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


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

SUITES: Mapping[str, tuple[Workload, ...]] = {"sort": SORT_SUITE}


def select(
    workloads: Sequence[Workload],
    patterns: Sequence[str] = (),
    dtype: str | None = None,
    strength: float | None = None,
) -> list[Workload]:
    """Workloads whose name matches any pattern, with dtype/strength overrides.

    Names read ``op/regularization/batchxn``. A pattern with a glob character
    (``*?[``) is matched with fnmatch against the whole name; otherwise it
    matches whole ``/``-separated segments in order: ``kl``, ``128x1000``,
    ``soft_rank/l2`` (but ``128x100`` does not match ``128x1000``).
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
        if strength is not None:
            w = dataclasses.replace(w, strength=strength)
        out.append(w)
    return out


@dataclass(frozen=True)
class Inputs:
    """The input ``x`` and the fixed upstream gradient ``g`` of a workload."""

    x: torch.Tensor
    g: torch.Tensor


def make_inputs(workload: Workload, device: str, seed: int) -> Inputs:
    """Seeded ``torch.randn`` input and upstream gradient.

    Drawn on the CPU in float64 and then converted, so every device and dtype
    sees the same numbers.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (workload.batch, workload.n)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    dt = DTYPES[workload.dtype]
    return Inputs(x=x.to(device=device, dtype=dt), g=g.to(device=device, dtype=dt))
