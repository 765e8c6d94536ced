"""Contenders: diffcomb, the peer libraries, and the hard-sort floor.

Each contender is a frozen record: the module to import, the distribution
name for its version, the devices it runs on, and a ``build`` function that
turns (module, workload) into a callable ``fn(x, *others) -> Tensor`` (sort:
``fn(x)``; soft-DTW: ``fn(x, y)``, see ``workloads.Inputs``), or a
``ManualBackward`` where the contender computes its input gradient itself.
``SUITE_CONTENDERS`` lists who runs in each suite by default;
``ON_REQUEST_CONTENDERS`` those that run only when ``-c`` names them.
Nothing is imported at module load: ``load`` imports on demand and reports
"not installed" instead of raising.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Mapping

import torch

# The contenders of suites perturb (outputs are random samples or solver answers, checked by
# validity and optimal cost: workloads.PerturbWorkload.check), ranking (the O(n^2) pairwise
# formulations) and topk (plain-PyTorch top-k) live in their own modules.
from . import latency_suite as _latency_suite
from . import perturb_suite as _perturb_suite
from . import ranking_suite as _ranking_suite
from . import topk_peers as _topk_peers
from .workloads import (DTYPES, AnyWorkload, PerturbWorkload, RankLossWorkload, SinkhornWorkload, TopKWorkload,
                        Unsupported, Workload)

__all__ = ["Contender", "Loaded", "ManualBackward", "CONTENDERS", "SUITE_CONTENDERS", "ON_REQUEST_CONTENDERS",
           "UNLIMITED_BUILDERS", "load", "Unsupported"]

OpFn = Callable[..., torch.Tensor]  # fn(x, *others)


@dataclass(frozen=True)
class ManualBackward:
    """A contender that computes its input gradient itself: ``forward(x, *others)`` is the op,
    ``forward_backward(x, g, *others) -> (out, dL/dx)`` the forward and the gradient of
    ``(out * g).sum()`` at once (e.g. one problem's forward and backward at a time, where the
    batch's autograd graph would not fit). The runner checks and times forward+backward with it."""

    forward: OpFn
    forward_backward: Callable[..., tuple[torch.Tensor, torch.Tensor]]

    def __call__(self, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return self.forward(x, *others)


@dataclass(frozen=True)
class Contender:
    name: str
    module: str  # what to import
    distribution: str | None  # pip distribution name, for the version
    devices: tuple[str, ...]
    build: Callable[[ModuleType, AnyWorkload], OpFn]
    is_baseline: bool = False  # the library under test: ratios and checks are taken against it
    is_floor: bool = False  # a hard op: no value check


@dataclass(frozen=True)
class Loaded:
    contender: Contender
    module: ModuleType | None
    version: str | None
    status: str  # "ok" | "not installed" | "import error: ..."


def _version(module: ModuleType, distribution: str | None) -> str | None:
    if distribution is not None:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    return getattr(module, "__version__", None)


def load(contender: Contender) -> Loaded:
    """Import a contender's module; never raises."""
    try:
        mod = importlib.import_module(contender.module)
    except ModuleNotFoundError as e:
        top = contender.module.split(".")[0]
        if e.name is not None and (e.name == top or contender.module.startswith(e.name + ".")):
            return Loaded(contender, None, None, "not installed")
        return Loaded(contender, None, None, f"import error: {e}")
    except Exception as e:  # a broken install (undefined symbol, ...)
        return Loaded(contender, None, None, f"import error: {type(e).__name__}: {e}")
    return Loaded(contender, mod, _version(mod, contender.distribution), "ok")


def _op(module: ModuleType, w: AnyWorkload, qualname: str):
    fn = getattr(module, w.op, None)
    if fn is None:
        raise Unsupported(f"{qualname} has no {w.op}")
    return fn


# --- diffcomb: (x, dim=-1, descending=False, regularization_strength, regularization);
# soft_dtw(x, y, gamma, cost="sqeuclidean") -> (B,)
def _build_diffcomb(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if isinstance(w, SinkhornWorkload):
        return _build_diffcomb_sinkhorn(mod, w, "unroll")
    if isinstance(w, RankLossWorkload):
        return _ranking_suite.build_diffcomb(mod, w)
    if isinstance(w, PerturbWorkload):
        return _perturb_suite.build_diffcomb(mod, w)
    fn = _op(mod, w, "diffcomb")
    if w.op == "sorting_network":
        return functools.partial(_sortnet_matrix, fn, dict(network=w.network, sigmoid=w.sigmoid,
                                                           steepness=w.steepness))
    if w.op == "soft_dtw":
        return functools.partial(fn, gamma=w.gamma, cost="sqeuclidean")
    return functools.partial(
        fn, dim=-1, descending=False,
        regularization_strength=w.strength, regularization=w.regularization,
    )


# --- torchsort: 2-D input, ascending only
def _build_torchsort(mod: ModuleType, w: AnyWorkload) -> OpFn:
    fn = _op(mod, w, "torchsort")
    return functools.partial(fn, regularization=w.regularization, regularization_strength=w.strength)


# --- fast-soft-sort: numpy + numba behind a torch.autograd.Function, CPU only,
# one Python call per row. Its soft_sort returns float64 for float32 input.
def _build_fast_soft_sort(mod: ModuleType, w: AnyWorkload) -> OpFn:
    fn = _op(mod, w, "fast_soft_sort.pytorch_ops")
    return functools.partial(
        fn, direction="ASCENDING", regularization_strength=w.strength,
        regularization=w.regularization,
    )


# --- the floor: a hard sort of the same tensor (values, differentiable)
def _torch_sort_values(x: torch.Tensor) -> torch.Tensor:
    return torch.sort(x, dim=-1).values


def _build_torch_sort(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, Workload):
        raise Unsupported("the sort workloads' floor")
    return _torch_sort_values


# --- tslearn: SoftDTWLossPyTorch(gamma, normalize, dist_func, global_constraint,
# sakoe_chiba_radius, itakura_max_slope), called as loss(x, y) -> (B,). Its
# default dist_func is the squared Euclidean cost, formed by broadcasting
# x - y to a (B, N, M, D) tensor. normalize=False: plain soft-DTW, not the
# divergence. Numba DP in the input's dtype, round-tripped through float32.
def _build_tslearn(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if w.op != "soft_dtw":
        raise Unsupported(f"tslearn has no {w.op}")
    return mod.SoftDTWLossPyTorch(gamma=w.gamma, normalize=False)


# --- pysdtw: SoftDTW(gamma, dist_func, use_cuda, bandwidth), called as
# sdtw(x, y) -> (B,). Default dist_func: squared Euclidean by the quadratic
# expansion (as diffcomb), clamped at 0. Numba DP in float64, but R and the
# gradient are round-tripped through float32 (torch.Tensor(ndarray)).
def _build_pysdtw(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if w.op != "soft_dtw":
        raise Unsupported(f"pysdtw has no {w.op}")
    on_cpu = mod.SoftDTW(gamma=w.gamma, use_cuda=False)
    on_cuda = []

    def fn(x, y):  # its numba.cuda path for CUDA tensors
        if not x.is_cuda:
            return on_cpu(x, y)
        if not on_cuda:
            on_cuda.append(mod.SoftDTW(gamma=w.gamma, use_cuda=True))
        return on_cuda[0](x, y)

    return fn


def _sortnet_matrix(fn, options: dict, x: torch.Tensor) -> torch.Tensor:
    return fn(x, **options).matrix


# --- diffsort: DiffSortNet(sorting_network_type, size, device, steepness,
# art_lambda, distribution) -> (sorted, P), P[b, i, k] as diffcomb's (values =
# P^T x). Each layer is a dense product with (n, n/2) split/combine matrices:
# depth * B * n^3 multiply-adds per forward, and autograd keeps about 1.2
# (B, n, n) tensors per layer (measured with diffcomb.bench.memory: 65 MiB per row
# for odd-even n = 256, 241 MiB per row for bitonic n = 1024). Workloads beyond
# DIFFSORT_MAX_MULADDS (minutes per call on 2 cores; bitonic 128x256, 7.7e10,
# takes about 30 s) or half the available memory are reported unsupported;
# their peak memory is still measured at small batches (diffcomb.bench.memory).
DIFFSORT_ENTRIES_PER_LAYER = 1.25
DIFFSORT_MAX_MULADDS = 2e11


def _diffsort_depth(w: AnyWorkload) -> int:
    k = max(w.n - 1, 0).bit_length()
    return w.n if w.network == "odd_even" else k * (k + 1) // 2


def diffsort_estimated_bytes(w: AnyWorkload) -> int:
    itemsize = torch.empty((), dtype=DTYPES[w.dtype]).element_size()
    return int(DIFFSORT_ENTRIES_PER_LAYER * _diffsort_depth(w) * w.batch * w.n * w.n * itemsize)


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_diffsort(mod: ModuleType, w: AnyWorkload, max_muladds: float | None = DIFFSORT_MAX_MULADDS) -> OpFn:
    """diffsort's P as fn(x); max_muladds=None lifts the work limit (memory probes at small batches)."""
    if w.op != "sorting_network":
        raise Unsupported(f"diffsort has no {w.op}")
    if w.network == "bitonic" and w.n & (w.n - 1):
        raise Unsupported("diffsort's bitonic network needs n a power of two")
    muladds = _diffsort_depth(w) * w.batch * w.n**3
    if max_muladds is not None and muladds > max_muladds:
        raise Unsupported(f"dense per-layer products: {muladds:.1e} multiply-adds per forward (limit "
                          f"{DIFFSORT_MAX_MULADDS:.0e}: minutes per call)")
    need, avail = diffsort_estimated_bytes(w), available_bytes()
    if avail is not None and need > avail // 2:
        raise Unsupported(f"needs about {need / 2**30:.1f} GiB (autograd keeps ~1.2 (B, n, n) tensors per layer), "
                          f"{avail / 2**30:.0f} GiB available")
    return _diffsort_fn(mod, w)


def _diffsort_fn(mod: ModuleType, w: AnyWorkload) -> OpFn:
    sorters: dict = {}  # one per device: diffsort keeps its layer matrices on the device given at construction

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.device not in sorters:
            sorters[x.device] = mod.DiffSortNet(w.network, w.n, steepness=w.steepness, distribution=w.sigmoid,
                                                device=str(x.device))
        return sorters[x.device](x)[1]

    return fn


# --- Sinkhorn suite (workloads.SinkhornWorkload). Every contender of the plan workloads runs
# exactly w.n_iter log-domain iterations from zero potentials (no early stop), so the plans
# agree; "diffcomb" differentiates by unrolling (the same derivative as the peers' autograd),
# "diffcomb-implicit" by implicit differentiation (its default; inexact before convergence, so
# its grad diff is expected).
def _build_diffcomb_sinkhorn(mod: ModuleType, w: SinkhornWorkload, backward: str) -> OpFn:
    if w.op == "sinkhorn":
        def plan(cost: torch.Tensor) -> torch.Tensor:
            return mod.sinkhorn(cost, epsilon=w.epsilon, max_iter=w.n_iter, tol=0.0, backward=backward).plan
        return plan
    if backward != "unroll":
        raise Unsupported(f"diffcomb-implicit runs only the plan workloads, not {w.op}")
    if w.op == "sinkhorn_divergence":
        return functools.partial(mod.sinkhorn_divergence, epsilon=w.epsilon)
    return functools.partial(mod.sinkhorn_rank, epsilon=w.epsilon)


def _build_diffcomb_implicit(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, SinkhornWorkload):
        raise Unsupported("suite sinkhorn only")
    return _build_diffcomb_sinkhorn(mod, w, "implicit")


# --- POT: ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", numItermax, stopThr) per problem
# (its log-domain solver takes one cost matrix; a Python loop over the batch). stopThr=0 and
# numItermax=n_iter: exactly n_iter iterations. Torch backend: autograd through the loop.
# Its autograd graph keeps about two (n, m) tensors per iteration and problem: at batch 32,
# n = m = 1000, 100 iterations that is about 25 GB (float32), more than the development
# machines have. Such workloads run as "POT-torch-ckpt" instead: each problem under
# torch.utils.checkpoint, so one problem's graph lives at a time, at the price of one more
# forward per problem in the backward (its fwd+bwd time includes a second forward).
_POT_GRAPH_LIMIT = 4 << 30  # bytes


def _pot_graph_bytes(w: SinkhornWorkload) -> int:
    return 2 * w.batch * w.n_iter * w.n * w.m * (4 if w.dtype == "float32" else 8)


def _pot_plan(mod: ModuleType, w: SinkhornWorkload, cost: torch.Tensor) -> torch.Tensor:
    a = torch.full((w.n,), 1.0 / w.n, dtype=cost.dtype, device=cost.device)
    b = torch.full((w.m,), 1.0 / w.m, dtype=cost.dtype, device=cost.device)
    return mod.sinkhorn(a, b, cost, w.epsilon, method="sinkhorn_log", numItermax=w.n_iter, stopThr=0.0,
                        warn=False)


def _build_pot_torch(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, SinkhornWorkload) or w.op != "sinkhorn":
        raise Unsupported("POT runs the sinkhorn plan workloads")
    if _pot_graph_bytes(w) > _POT_GRAPH_LIMIT:
        raise Unsupported(f"autograd graph ~{_pot_graph_bytes(w) / 2**30:.0f} GB: see POT-torch-ckpt")
    return lambda cost: torch.stack([_pot_plan(mod, w, c) for c in cost])


def _build_pot_torch_ckpt(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, SinkhornWorkload) or w.op != "sinkhorn":
        raise Unsupported("POT runs the sinkhorn plan workloads")
    if _pot_graph_bytes(w) <= _POT_GRAPH_LIMIT:
        raise Unsupported("fits in memory: see POT-torch")
    from torch.utils.checkpoint import checkpoint

    def plan(cost: torch.Tensor) -> torch.Tensor:
        return torch.stack([checkpoint(functools.partial(_pot_plan, mod, w), c, use_reentrant=False)
                            for c in cost])
    return plan


def _build_pot_torch_loop(mod: ModuleType, w: AnyWorkload) -> ManualBackward:
    """POT one problem at a time, each problem's forward then its backward (the upstream
    gradient is known in advance here), so one problem's autograd graph lives at a time and no
    forward is repeated: what the batch costs POT when memory allows. On request only (-c)."""
    if not isinstance(w, SinkhornWorkload) or w.op != "sinkhorn":
        raise Unsupported("POT runs the sinkhorn plan workloads")

    def forward(cost: torch.Tensor) -> torch.Tensor:
        return torch.stack([_pot_plan(mod, w, c) for c in cost])

    def forward_backward(cost: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plans, grads = [], []
        for c, gk in zip(cost, g):
            c = c.detach().requires_grad_(True)
            plan = _pot_plan(mod, w, c)
            (plan * gk).sum().backward()
            plans.append(plan.detach())
            grads.append(c.grad)
        return torch.stack(plans), torch.stack(grads)

    return ManualBackward(forward, forward_backward)


class _NumpyPlan(torch.autograd.Function):
    """POT's numpy backend has no gradient: the forward runs it; the backward returns zeros
    (so its fwd+bwd column is its forward time, and its grad diff is meaningless)."""

    @staticmethod
    def forward(ctx, cost, fn):
        return torch.from_numpy(fn(cost.detach().cpu().numpy())).to(cost.device)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad), None


def _build_pot_numpy(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, SinkhornWorkload) or w.op != "sinkhorn":
        raise Unsupported("POT runs the sinkhorn plan workloads")
    import numpy as np

    def run(cost):
        a = np.full(w.n, 1.0 / w.n, dtype=cost.dtype)
        b = np.full(w.m, 1.0 / w.m, dtype=cost.dtype)
        return np.stack([mod.sinkhorn(a, b, c, w.epsilon, method="sinkhorn_log", numItermax=w.n_iter,
                                      stopThr=0.0, warn=False) for c in cost])

    return lambda cost: _NumpyPlan.apply(cost, run)


# --- geomloss: SamplesLoss("sinkhorn", p=2, blur, debias=True, scaling) on point clouds; its
# p = 2 cost is |x - y|^2 / 2 with epsilon = blur^2, so blur = sqrt(epsilon / 2) and twice its
# value is the divergence for the cost |x - y|^2 at epsilon. Its own epsilon-annealing schedule
# (scaling 0.95, many iterations): values agree to the solvers' accuracy, not to the last digit.
def _build_geomloss(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, SinkhornWorkload) or w.op != "sinkhorn_divergence":
        raise Unsupported("geomloss runs the sinkhorn_divergence workloads")
    loss = mod.SamplesLoss("sinkhorn", p=2, blur=(w.epsilon / 2) ** 0.5, debias=True, scaling=0.95,
                           backend="tensorized")
    return lambda x, y: 2.0 * loss(x, y)


# --- OT ranks against the permutahedron soft ranks of the same input (different operators:
# the value check compares different quantities). torchsort / diffcomb.soft_rank: L2,
# regularization_strength 1.
def _build_torchsort_rank(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, SinkhornWorkload) or w.op != "sinkhorn_rank":
        raise Unsupported("only the sinkhorn_rank workloads")
    return functools.partial(mod.soft_rank, regularization="l2", regularization_strength=1.0)


def _build_diffcomb_soft_rank(mod: ModuleType, w: AnyWorkload) -> OpFn:
    if not isinstance(w, SinkhornWorkload) or w.op != "sinkhorn_rank":
        raise Unsupported("only the sinkhorn_rank workloads")
    return functools.partial(mod.soft_rank, regularization="l2", regularization_strength=1.0)


# --- suite topk (workloads.TopKWorkload): diffcomb.sparse_soft_topk against diffcomb.soft_topk
# (the p = 2 operator: on p != 2 workloads its diff is the distance between two operators),
# plain-PyTorch threshold bisection (the best alternative written in torch), the O(n^2) one-hot
# permutation port and torch.topk (the floor): diffcomb/bench/topk_peers.py.


def _topk_only(w: AnyWorkload, who: str) -> TopKWorkload:
    if not isinstance(w, TopKWorkload):
        raise Unsupported(f"{who} runs the topk suite only")
    return w


def _build_diffcomb_sparse_topk(mod: ModuleType, w: AnyWorkload) -> OpFn:
    w = _topk_only(w, "diffcomb.sparse_soft_topk")
    return functools.partial(mod.sparse_soft_topk, k=w.k, regularization_strength=w.strength, p=w.p)


def _build_diffcomb_soft_topk(mod: ModuleType, w: AnyWorkload) -> OpFn:
    w = _topk_only(w, "diffcomb.soft_topk")
    return functools.partial(mod.soft_topk, k=w.k, regularization_strength=w.strength)


def _build_threshold_topk(mod: ModuleType, w: AnyWorkload) -> OpFn:
    w = _topk_only(w, "torch bisection")
    return functools.partial(_topk_peers.threshold_topk, k=w.k, eps=w.strength, p=w.p)


def _build_onehot_topk(mod: ModuleType, w: AnyWorkload) -> OpFn:
    w = _topk_only(w, "one-hot O(n^2)")
    need = 3 * w.batch * w.n * w.n * torch.empty((), dtype=DTYPES[w.dtype]).element_size()
    if need > _topk_peers.ONEHOT_MAX_BYTES:
        raise Unsupported(f"needs ~{need / 2**30:.0f} GiB")
    return functools.partial(_topk_peers.onehot_topk, k=w.k, eps=w.strength, p=w.p)


def _build_hard_topk(mod: ModuleType, w: AnyWorkload) -> OpFn:
    w = _topk_only(w, "torch.topk")
    return functools.partial(_topk_peers.hard_topk, k=w.k)


# Builders without their work/memory limits, for the peak-memory probes at small batches
# (diffcomb/bench/memory.py).
UNLIMITED_BUILDERS: Mapping[str, Callable[[ModuleType, AnyWorkload], OpFn]] = {
    "diffsort": lambda mod, w: build_diffsort(mod, w, max_muladds=None),
    "pairwise (torch)": lambda mod, w: _ranking_suite.build_pairwise(mod, w, limit=False),
}

CONTENDERS: Mapping[str, Contender] = {
    c.name: c
    for c in (
        Contender("diffcomb", "diffcomb", "diffcomb", ("cpu", "cuda"), _build_diffcomb,
                  is_baseline=True),
        Contender("torchsort", "torchsort", "torchsort", ("cpu", "cuda"), _build_torchsort),
        Contender("fast-soft-sort", "fast_soft_sort.pytorch_ops", "fast_soft_sort", ("cpu",),
                  _build_fast_soft_sort),
        Contender("torch.sort", "torch", "torch", ("cpu", "cuda"), _build_torch_sort,
                  is_floor=True),
        # tslearn computes on the host with numba; pysdtw also has a numba.cuda path.
        Contender("tslearn", "tslearn.metrics", "tslearn", ("cpu",), _build_tslearn),
        Contender("pysdtw", "pysdtw", "pysdtw", ("cpu", "cuda"), _build_pysdtw),
        Contender("diffsort", "diffsort", "diffsort", ("cpu", "cuda"), build_diffsort),
        Contender("diffcomb-implicit", "diffcomb", "diffcomb", ("cpu", "cuda"), _build_diffcomb_implicit),
        Contender("POT-torch", "ot", "pot", ("cpu", "cuda"), _build_pot_torch),
        Contender("POT-torch-ckpt", "ot", "pot", ("cpu", "cuda"), _build_pot_torch_ckpt),
        Contender("POT-torch-loop", "ot", "pot", ("cpu", "cuda"), _build_pot_torch_loop),
        Contender("POT-numpy", "ot", "pot", ("cpu",), _build_pot_numpy),
        Contender("geomloss", "geomloss", "geomloss", ("cpu", "cuda"), _build_geomloss),
        Contender("torchsort.soft_rank", "torchsort", "torchsort", ("cpu", "cuda"), _build_torchsort_rank),
        Contender("diffcomb.soft_rank", "diffcomb", "diffcomb", ("cpu", "cuda"), _build_diffcomb_soft_rank),
        Contender("diffcomb (1 thread)", "diffcomb", "diffcomb", ("cpu",), _perturb_suite.build_diffcomb_one_thread),
        # torch-imle is not on the package registry: put a checkout on PYTHONPATH (module imle).
        Contender("torch-imle", "imle.wrapper", "torch-imle", ("cpu", "cuda"), _perturb_suite.build_torch_imle),
        Contender("torch (noise + topk)", "torch", "torch", ("cpu",), _perturb_suite.build_plain_torch),
        Contender("scipy", "scipy.sparse.csgraph", "scipy", ("cpu",), _perturb_suite.build_scipy),
        Contender("python dijkstra", "heapq", None, ("cpu",), _perturb_suite.build_python_dijkstra),
        Contender("pairwise (torch)", "torch", "torch", ("cpu", "cuda"), _ranking_suite.build_pairwise),
        Contender("diffcomb.sparse_soft_topk", "diffcomb", "diffcomb", ("cpu", "cuda"), _build_diffcomb_sparse_topk,
                  is_baseline=True),
        Contender("diffcomb.soft_topk (p=2)", "diffcomb", "diffcomb", ("cpu", "cuda"), _build_diffcomb_soft_topk),
        Contender("torch bisection", "torch", "torch", ("cpu", "cuda"), _build_threshold_topk),
        Contender("one-hot O(n^2)", "torch", "torch", ("cpu", "cuda"), _build_onehot_topk),
        Contender("torch.topk", "torch", "torch", ("cpu", "cuda"), _build_hard_topk, is_floor=True),
        Contender("torch.softmax", "torch", "torch", ("cpu", "cuda"), _latency_suite.build_softmax, is_floor=True),
    )
}

SUITE_CONTENDERS: Mapping[str, tuple[str, ...]] = {
    "sort": ("diffcomb", "torchsort", "fast-soft-sort", "torch.sort"),
    "softdtw": ("diffcomb", "tslearn", "pysdtw"),
    "sortnet": ("diffcomb", "diffsort"),
    "sinkhorn": ("diffcomb", "diffcomb-implicit", "POT-torch", "POT-torch-ckpt", "POT-numpy", "geomloss",
                 "torchsort.soft_rank", "diffcomb.soft_rank"),
    "perturb": ("diffcomb", "diffcomb (1 thread)", "torch-imle", "torch (noise + topk)", "scipy", "python dijkstra"),
    "ranking": ("diffcomb", "pairwise (torch)"),
    "topk": ("diffcomb.sparse_soft_topk", "diffcomb.soft_topk (p=2)", "torch bisection", "one-hot O(n^2)",
             "torch.topk"),
    "latency": ("diffcomb", "diffcomb-implicit", "torchsort", "fast-soft-sort", "POT-torch", "tslearn", "pysdtw",
                "diffsort", "torch (noise + topk)", "torch.softmax", "torch.sort"),
}

# Contenders of a suite that run only when ``-c`` names them (slow peers measured on request).
ON_REQUEST_CONTENDERS: Mapping[str, tuple[str, ...]] = {
    "sinkhorn": ("POT-torch-loop",),
}
