"""Benchmark workloads, declared as data.

A workload names one op call on one input shape: its fields are the parameters, and the
methods every suite shares come from ``BaseWorkload`` (name, output shape, the settings
line of ``--list``, the seeded inputs, the check of a contender against the reference, the
JSON record). Suites are tuples of workloads; the contenders that can run a workload are
chosen in ``diffcomb.bench.peers``; ``diffcomb.bench.runner`` checks and times them all the
same way. Suite ``sort`` uses ``Workload`` (one ``(batch, n)`` input), ``softdtw``
``SoftDTWWorkload`` (two series ``x (batch, n, d)`` and ``y (batch, m, d)``; the gradient is
taken with respect to ``x``), ``sortnet`` ``SortNetWorkload`` (``x (batch, n)``, output the
relaxed permutation matrix ``(batch, n, n)``), ``sinkhorn`` ``SinkhornWorkload``, ``perturb``
``PerturbWorkload``, ``ranking`` ``RankLossWorkload`` and ``topk`` ``TopKWorkload`` (``x
(batch, n)``, the sparse soft top-k mask).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Mapping, Union

import torch

__all__ = [
    "BaseWorkload",
    "Workload",
    "SoftDTWWorkload",
    "AnyWorkload",
    "Inputs",
    "Check",
    "Unsupported",
    "TOLERANCE",
    "SortNetWorkload",
    "SinkhornWorkload",
    "PerturbWorkload",
    "RankLossWorkload",
    "TopKWorkload",
    "DTYPES",
    "make_inputs",
]

DTYPES: Mapping[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

# Values (and gradients) agree when max|a - b| <= TOLERANCE * max(1, max|ref|).
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


class Unsupported(Exception):
    """The contender cannot run this workload (device, op, option, size)."""


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


@dataclass
class Check:
    """What the check of one contender found: the differences to the reference's values and
    input gradients, whether they are within tolerance, and a workload's own verdict (``note``,
    e.g. the validity of random samples, which no reference can be compared with)."""

    max_abs_diff: float | None = None
    agree: bool | None = None
    grad_max_abs_diff: float | None = None
    grad_agree: bool | None = None
    note: str | None = None


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _scale(t: torch.Tensor) -> float:
    return max(1.0, float(t.double().abs().max())) if t.numel() else 1.0


def _draw(gen: torch.Generator, shape: tuple[int, ...], uniform: bool = False) -> torch.Tensor:
    """Seeded draws in float64 (converted later, so every device and dtype sees the same numbers)."""
    return (torch.rand if uniform else torch.randn)(shape, generator=gen, dtype=torch.float64)


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class BaseWorkload(ABC):
    """What every workload shares; a subclass declares its fields, ``name``, ``SETTINGS``, and,
    where they differ from a ``(batch, n)`` output of a ``randn (batch, n)`` input compared with
    the reference's values and gradients, ``out_shape``, ``_draw_inputs`` and ``check``."""

    SETTINGS: ClassVar[tuple[str, ...]] = ()  # the fields shown after the dtype in ``--list``

    @property
    @abstractmethod
    def name(self) -> str:
        """The workload's name as the tables and ``-w`` show it (op/settings/shape)."""

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.n)

    @property
    def backward(self) -> bool:
        """Whether the op has a backward (forward+backward is timed and checked)."""
        return True

    def _settings_fields(self) -> tuple[str, ...]:
        return self.SETTINGS

    @property
    def settings(self) -> str:
        return " ".join([f"dtype={self.dtype}"] + [f"{f}={_fmt(getattr(self, f))}" for f in self._settings_fields()])

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}

    def _draw_inputs(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, tuple]:
        """(x, g, others) in float64: by default ``x`` then ``g``, both ``randn (batch, n)``."""
        shape = (self.batch, self.n)
        return _draw(gen, shape), _draw(gen, shape), ()

    def inputs(self, device: str, seed: int) -> Inputs:
        """Seeded inputs, drawn on the CPU in float64, then moved and converted."""
        x, g, others = self._draw_inputs(torch.Generator().manual_seed(seed))
        dt = DTYPES[self.dtype]
        return Inputs(x=x.to(device=device, dtype=dt), g=None if g is None else g.to(device=device, dtype=dt),
                      others=tuple(o.to(device=device, dtype=dt) for o in others))

    def check(self, out: torch.Tensor, grad: torch.Tensor | None,
              ref: tuple[torch.Tensor, torch.Tensor | None] | None, inputs: Inputs) -> Check:
        """Compare one contender's output and input gradient with the reference's ``ref`` (None:
        this contender is the reference) within ``TOLERANCE[dtype] * max(1, max|reference|)``."""
        if ref is None:
            return Check()
        tol = TOLERANCE[self.dtype]
        ref_out, ref_grad = ref
        res = Check(max_abs_diff=_max_abs_diff(out, ref_out))
        res.agree = res.max_abs_diff <= tol * _scale(ref_out)
        if grad is not None and ref_grad is not None:
            res.grad_max_abs_diff = _max_abs_diff(grad, ref_grad)
            res.grad_agree = res.grad_max_abs_diff <= tol * _scale(ref_grad)
        return res


@dataclass(frozen=True)
class Workload(BaseWorkload):
    """One benchmarked call: ``op`` on a ``(batch, n)`` input, last axis."""

    op: str  # "soft_rank" | "soft_sort"
    batch: int
    n: int
    regularization: str = "l2"  # "l2" | "kl"
    strength: float = 1.0  # regularization_strength (epsilon)
    dtype: str = "float32"

    SETTINGS = ("strength",)

    @property
    def name(self) -> str:
        return f"{self.op}/{self.regularization}/{self.batch}x{self.n}"


@dataclass(frozen=True)
class SoftDTWWorkload(BaseWorkload):
    """Soft-DTW between ``x (batch, n, d)`` and ``y (batch, m, d)``, squared
    Euclidean cost, one value per pair: output ``(batch,)``; no ``g``, the loss is the sum of
    the batch's values."""

    batch: int
    n: int
    m: int
    d: int
    gamma: float = 0.1
    dtype: str = "float32"
    op: str = "soft_dtw"

    SETTINGS = ("gamma",)

    @property
    def name(self) -> str:
        return f"{self.op}/{self.batch}x{self.n}x{self.m}x{self.d}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch,)

    def _draw_inputs(self, gen: torch.Generator):
        x = _draw(gen, (self.batch, self.n, self.d))
        return x, None, (_draw(gen, (self.batch, self.m, self.d)),)


@dataclass(frozen=True)
class SortNetWorkload(BaseWorkload):
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

    SETTINGS = ("sigmoid", "steepness")

    @property
    def name(self) -> str:
        return f"{self.op}/{self.network}/{self.batch}x{self.n}"

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.batch, self.n, self.n)

    def _draw_inputs(self, gen: torch.Generator):
        return _draw(gen, (self.batch, self.n)), _draw(gen, (self.batch, self.n, self.n)), ()


@dataclass(frozen=True)
class SinkhornWorkload(BaseWorkload):
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

    SETTINGS = ("epsilon", "n_iter")

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

    def _draw_inputs(self, gen: torch.Generator):
        if self.op == "sinkhorn_rank":
            return super()._draw_inputs(gen)
        p = _draw(gen, (self.batch, self.n, 2), uniform=True)
        q = _draw(gen, (self.batch, self.m, 2), uniform=True)
        if self.op == "sinkhorn_divergence":
            return p, None, (q,)
        cost = 0.5 * (p.unsqueeze(-2) - q.unsqueeze(-3)).square().sum(-1)
        return cost, _draw(gen, (self.batch, self.n, self.m)), ()


@dataclass(frozen=True)
class PerturbWorkload(BaseWorkload):
    """Suite ``perturb`` (contenders in diffcomb/bench/perturb_suite.py): one solver or estimator call.

    ``imle_topk``: I-MLE top-k on scores ``randn (batch, n)`` with ``samples`` noise samples
    (output ``(samples, batch, n)``, ``g`` of that shape), forward and forward+backward; the
    samples are random, so the check is their validity (0/1 with k ones per row, a finite
    gradient of the input's shape), not a comparison. ``grid_shortest_path``: vertex costs
    ``(batch, n, n)``, forward only. ``linear_assignment``: costs ``(batch, n, n)``, forward
    only. The solvers' costs are continuous, uniform in [0.1, 9.1] (the optimum is unique):
    their check compares the total cost of the 0/1 solutions with the reference's.
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
    def out_shape(self) -> tuple[int, ...]:
        if self.op == "imle_topk":
            return (self.samples, self.batch, self.n)
        return (self.batch, self.n, self.n)

    @property
    def backward(self) -> bool:
        return self.op == "imle_topk"

    def _settings_fields(self) -> tuple[str, ...]:
        return ("k", "samples") if self.op == "imle_topk" else ()

    def _draw_inputs(self, gen: torch.Generator):
        if self.op == "imle_topk":
            return _draw(gen, (self.batch, self.n)), _draw(gen, (self.samples, self.batch, self.n)), ()
        return _draw(gen, (self.batch, self.n, self.n), uniform=True) * 9 + 0.1, None, ()

    def check(self, out, grad, ref, inputs) -> Check:
        if self.op == "imle_topk":
            ok = bool(((out == 0) | (out == 1)).all()) and bool((out.sum(-1) == self.k).all())
            if grad is not None:
                ok = ok and grad.shape == inputs.x.shape and bool(torch.isfinite(grad).all())
            return Check(agree=ok, note="valid k-subsets" if ok else "INVALID")
        if ref is None:
            return Check()
        x = inputs.x.double()
        cost, ref_cost = (out.double() * x).sum((-2, -1)), (ref[0].double() * x).sum((-2, -1))
        diff = _max_abs_diff(cost, ref_cost)
        return Check(max_abs_diff=diff, agree=diff <= 1e-5 * float(ref_cost.abs().max()))


@dataclass(frozen=True)
class RankLossWorkload(BaseWorkload):
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

    def _settings_fields(self) -> tuple[str, ...]:
        return ("strength", "k") if self.op in ("ndcg_loss", "recall_at_k_loss") else ("strength",)

    def _draw_inputs(self, gen: torch.Generator):
        x = _draw(gen, (self.batch, self.n))
        u = _draw(gen, (self.batch, self.n), uniform=True)
        if self.op == "ndcg_loss":
            target = torch.floor(5.0 * u).clamp_max(4.0)  # graded relevance 0..4, uniform
        else:
            target = (u < self.positives).to(torch.float64)
            if self.n >= 2:
                target[:, 0], target[:, 1] = 1.0, 0.0  # at least one positive and one negative
        return x, None, (target,)


@dataclass(frozen=True)
class TopKWorkload(BaseWorkload):
    """Suite ``topk``: the sparse soft top-k mask of ``x (batch, n)`` (``randn``), last axis, with
    ``k``, the norm ``p`` and ``strength`` (epsilon); fwd+bwd is ``(mask * g).sum().backward()``."""

    batch: int
    n: int
    k: int
    p: float = 4.0 / 3.0
    strength: float = 1.0
    dtype: str = "float32"
    op: str = "sparse_soft_topk"

    SETTINGS = ("strength",)

    @property
    def name(self) -> str:
        return f"{self.op}/p{self.p:.4g}/k{self.k}/{self.batch}x{self.n}"

AnyWorkload = Union[Workload, SoftDTWWorkload, SortNetWorkload, SinkhornWorkload, PerturbWorkload, RankLossWorkload,
                    TopKWorkload]

def make_inputs(workload: AnyWorkload, device: str, seed: int) -> Inputs:
    """Seeded inputs of ``workload`` (``BaseWorkload.inputs``)."""
    return workload.inputs(device, seed)
