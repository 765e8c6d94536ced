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

from .workloads import AnyWorkload

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


# --- suite perturb: builders live in benchmarks/perturb_suite.py (its own runner: outputs
# are random samples or solver answers, checked by validity and optimal cost).
from . import perturb_suite as _perturb_suite  # noqa: E402

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
        Contender("diffcomb (1 thread)", "diffcomb", "diffcomb", ("cpu",), _perturb_suite.build_diffcomb_one_thread),
        # torch-imle is not on the package registry: put a checkout on PYTHONPATH (module imle).
        Contender("torch-imle", "imle.wrapper", "torch-imle", ("cpu", "cuda"), _perturb_suite.build_torch_imle),
        Contender("torch (noise + topk)", "torch", "torch", ("cpu",), _perturb_suite.build_plain_torch),
        Contender("scipy", "scipy.sparse.csgraph", "scipy", ("cpu",), _perturb_suite.build_scipy),
        Contender("python dijkstra", "heapq", None, ("cpu",), _perturb_suite.build_python_dijkstra),
    )
}

SUITE_CONTENDERS: Mapping[str, tuple[str, ...]] = {
    "sort": ("diffcomb", "torchsort", "fast-soft-sort", "torch.sort"),
    "softdtw": ("diffcomb", "tslearn", "pysdtw"),
    "perturb": ("diffcomb", "diffcomb (1 thread)", "torch-imle", "torch (noise + topk)", "scipy", "python dijkstra"),
}
