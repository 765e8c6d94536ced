"""Contenders: diffcomb, the peer libraries, and the hard-sort floor.

Each contender is a frozen record: the module to import, the distribution
name for its version, the devices it runs on, and a ``build`` function that
turns (module, workload) into a callable ``fn(x, *others) -> Tensor`` (sort:
``fn(x)``; soft-DTW: ``fn(x, y)``, see ``workloads.Inputs``).
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

from .workloads import DTYPES, AnyWorkload

__all__ = ["Contender", "Loaded", "CONTENDERS", "SUITE_CONTENDERS", "load", "Unsupported"]

OpFn = Callable[..., torch.Tensor]  # fn(x, *others)


class Unsupported(Exception):
    """The contender cannot run this workload (device, op, option)."""


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
    return mod.SoftDTW(gamma=w.gamma, use_cuda=False)


def _sortnet_matrix(fn, options: dict, x: torch.Tensor) -> torch.Tensor:
    return fn(x, **options).matrix


# --- diffsort: DiffSortNet(sorting_network_type, size, device, steepness,
# art_lambda, distribution) -> (sorted, P), P[b, i, k] as diffcomb's (values =
# P^T x). Each layer is a dense product with (n, n/2) split/combine matrices:
# depth * B * n^3 multiply-adds per forward, and autograd keeps about 1.2
# (B, n, n) tensors per layer (measured with benchmarks.memory: 65 MiB per row
# for odd-even n = 256, 241 MiB per row for bitonic n = 1024). Workloads beyond
# DIFFSORT_MAX_MULADDS (minutes per call on 2 cores; bitonic 128x256, 7.7e10,
# takes about 30 s) or half the available memory are reported unsupported;
# their peak memory is still measured at small batches (benchmarks.memory).
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
        # Both soft-DTW peers compute on the host with numba; pysdtw's CUDA
        # path (numba.cuda, use_cuda=True) is not wired here.
        Contender("tslearn", "tslearn.metrics", "tslearn", ("cpu",), _build_tslearn),
        Contender("pysdtw", "pysdtw", "pysdtw", ("cpu",), _build_pysdtw),
        Contender("diffsort", "diffsort", "diffsort", ("cpu", "cuda"), build_diffsort),
    )
}

SUITE_CONTENDERS: Mapping[str, tuple[str, ...]] = {
    "sort": ("diffcomb", "torchsort", "fast-soft-sort", "torch.sort"),
    "softdtw": ("diffcomb", "tslearn", "pysdtw"),
    "sortnet": ("diffcomb", "diffsort"),
}
