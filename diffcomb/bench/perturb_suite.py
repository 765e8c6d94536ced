"""Suite ``perturb``: MAP solvers and the I-MLE top-k estimator against their peers.

Workloads (``workloads.PERTURB_SUITE``):

- ``imle_topk``: I-MLE top-k, scores ``(256, 1000)``, k = 10, 10 samples, Sum-of-Gamma or
  Gumbel noise. Every contender returns the ``(samples, batch, n)`` sampled masks; forward and
  forward+backward (``(out * g).sum().backward()``) are timed. Contenders: diffcomb
  (``diffcomb.imle`` around ``diffcomb.topk_mask``), torch-imle (its ``imle`` wrapper and
  ``SumOfGammaNoiseDistribution``, Sum-of-Gamma only), and a plain-torch baseline written
  here (the noise drawn by torch, ``torch.topk``, the same I-MLE backward).
- ``grid_shortest_path``: vertex costs ``(64, n, n)``, forward only, against scipy's Dijkstra
  called per instance (``scipy.sparse.csgraph.dijkstra`` on a prebuilt CSR structure whose
  edge weights are refilled per instance, plus the predecessor walk) and a plain Python
  Dijkstra (heapq) per instance.
- ``linear_assignment``: costs ``(64, 100, 100)``, forward only, against
  ``scipy.optimize.linear_sum_assignment`` per instance.

Checks before timing: top-k samples are 0/1 with k ones per row and the gradient has the
input's shape and is finite; shortest paths and assignments must have the same total cost as
diffcomb's (random continuous costs: the optimum is unique).
"""

from __future__ import annotations

import functools
import heapq
import math
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Sequence

import numpy as np
import torch

from .progress import Progress
from .timing import Budget, Timing, measure
from .workloads import PerturbWorkload

__all__ = ["PerturbResult", "run", "format_table", "to_json_results", "BUILDERS", "Unsupported"]


class Unsupported(Exception):
    """The contender cannot run this workload."""


# ---------------------------------------------------------------------------
# Contenders: build(module, workload) -> (fn(x) -> out, differentiable)


def _topk_mask_torch(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros_like(x).scatter_(-1, torch.topk(x, k, dim=-1).indices, 1.0)


def build_diffcomb(mod: ModuleType, w: PerturbWorkload):
    if w.op == "imle_topk":
        est = mod.imle(functools.partial(mod.topk_mask, k=w.k), num_samples=w.samples, noise=w.noise, k=w.k,
                       return_samples=True)
        return est, True
    if w.op == "grid_shortest_path":
        return mod.grid_shortest_path, False
    return mod.linear_assignment, False


def build_diffcomb_one_thread(mod: ModuleType, w: PerturbWorkload):
    """diffcomb's solvers on one thread (torch.set_num_threads(1) around the call, restored after):
    on a loaded machine a 2-thread OpenMP region can wait a whole scheduler slice for its second
    thread, so this line separates the kernel's speed from that wait."""
    if w.op == "imle_topk":
        raise Unsupported("solvers only (the backward would run outside the one-thread scope)")
    solver, _ = build_diffcomb(mod, w)

    def fn(x: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return solver(x)
        finally:
            torch.set_num_threads(threads)

    return fn, False


def build_torch_imle(mod: ModuleType, w: PerturbWorkload):
    if w.op != "imle_topk":
        raise Unsupported(f"torch-imle has no {w.op}")
    if w.noise != "sum_of_gamma":
        raise Unsupported("torch-imle has Sum-of-Gamma noise only")
    import imle.noise
    import imle.target

    noise = imle.noise.SumOfGammaNoiseDistribution(k=w.k, nb_iterations=10)
    target = imle.target.TargetDistribution(alpha=1.0, beta=1.0)
    wrapped = mod.imle(lambda t: _topk_mask_torch(t, w.k), target_distribution=target, noise_distribution=noise,
                       nb_samples=w.samples)

    def fn(x: torch.Tensor) -> torch.Tensor:
        out = wrapped(x)  # (batch * samples, n), batch-major
        return out.view(x.shape[0], w.samples, -1).transpose(0, 1)

    return fn, True


def _torch_noise(shape: tuple[int, ...], w: PerturbWorkload, dtype: torch.dtype) -> torch.Tensor:
    if w.noise == "gumbel":
        return -torch.empty(shape, dtype=dtype).exponential_().log()
    # Sum-of-Gamma, all s terms in one vectorized torch Gamma call.
    s = 10
    conc = torch.full((s, *shape), 1.0 / w.k, dtype=dtype)
    scale = (w.k / torch.arange(1, s + 1, dtype=dtype)).view(s, *([1] * len(shape)))
    return ((torch._standard_gamma(conc) * scale).sum(0) - math.log(s)) / w.k


class _PlainIMLE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, noise, k):
        z = _topk_mask_torch(theta.unsqueeze(0) + noise, k)
        ctx.save_for_backward(theta, noise, z)
        ctx.k = k
        return z

    @staticmethod
    def backward(ctx, g):
        theta, noise, z = ctx.saved_tensors
        z_target = _topk_mask_torch(theta.unsqueeze(0) - g + noise, ctx.k)
        return (z - z_target).mean(0), None, None


def build_plain_torch(mod: ModuleType, w: PerturbWorkload):
    if w.op != "imle_topk":
        raise Unsupported(f"no plain-torch {w.op}")

    def fn(x: torch.Tensor) -> torch.Tensor:
        noise = _torch_noise((w.samples, *x.shape), w, x.dtype)
        return _PlainIMLE.apply(x, noise, w.k)

    return fn, True


@functools.lru_cache(maxsize=8)
def _grid_structure(h: int, wd: int):
    """CSR structure of the king-move grid graph: indptr, indices (edge u -> v)."""
    rows, cols = [], []
    for i in range(h):
        for j in range(wd):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if (di or dj) and 0 <= a < h and 0 <= b < wd:
                        rows.append(i * wd + j)
                        cols.append(a * wd + b)
    rows, cols = np.asarray(rows), np.asarray(cols)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    indptr = np.searchsorted(rows, np.arange(h * wd + 1))
    return indptr, cols


def build_scipy(mod: ModuleType, w: PerturbWorkload):
    if w.op == "linear_assignment":
        from scipy.optimize import linear_sum_assignment

        def assign(x: torch.Tensor) -> torch.Tensor:
            c = x.detach().double().numpy()
            out = np.zeros_like(c)
            for b in range(c.shape[0]):
                r, col = linear_sum_assignment(c[b])
                out[b, r, col] = 1.0
            return torch.from_numpy(out).to(x.dtype)

        return assign, False
    if w.op != "grid_shortest_path":
        raise Unsupported(f"scipy has no {w.op}")
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    def paths(x: torch.Tensor) -> torch.Tensor:
        wts = x.detach().double().numpy()
        bsz, h, wd = wts.shape
        indptr, indices = _grid_structure(h, wd)
        out = np.zeros_like(wts)
        for b in range(bsz):
            flat = wts[b].ravel()
            graph = csr_matrix((flat[indices], indices, indptr), shape=(h * wd, h * wd))
            _, pred = dijkstra(graph, directed=True, indices=0, return_predecessors=True)
            v = h * wd - 1
            mask = out[b].ravel()
            while v >= 0:
                mask[v] = 1.0
                v = pred[v]
        return torch.from_numpy(out).to(x.dtype)

    return paths, False


def build_python_dijkstra(mod: ModuleType, w: PerturbWorkload):
    if w.op != "grid_shortest_path":
        raise Unsupported(f"no Python {w.op}")

    def paths(x: torch.Tensor) -> torch.Tensor:
        wts = x.detach().double().numpy()
        bsz, h, wd = wts.shape
        out = np.zeros_like(wts)
        for b in range(bsz):
            wb = wts[b]
            dist = {(0, 0): wb[0, 0]}
            pred = {}
            heap = [(wb[0, 0], 0, 0)]
            done = set()
            while heap:
                d, i, j = heapq.heappop(heap)
                if (i, j) in done:
                    continue
                done.add((i, j))
                if (i, j) == (h - 1, wd - 1):
                    break
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        a, c = i + di, j + dj
                        if (di or dj) and 0 <= a < h and 0 <= c < wd and (a, c) not in done:
                            nd = d + wb[a, c]
                            if nd < dist.get((a, c), math.inf):
                                dist[(a, c)] = nd
                                pred[(a, c)] = (i, j)
                                heapq.heappush(heap, (nd, a, c))
            v = (h - 1, wd - 1)
            while True:
                out[b][v] = 1.0
                if v == (0, 0):
                    break
                v = pred[v]
        return torch.from_numpy(out).to(x.dtype)

    return paths, False


BUILDERS: dict[str, Callable] = {
    "diffcomb": build_diffcomb,
    "diffcomb (1 thread)": build_diffcomb_one_thread,
    "torch-imle": build_torch_imle,
    "torch (noise + topk)": build_plain_torch,
    "scipy": build_scipy,
    "python dijkstra": build_python_dijkstra,
}


# ---------------------------------------------------------------------------
# Running.


@dataclass
class ContenderRun:
    name: str
    status: str
    version: str | None = None
    check: str | None = None
    fwd: Timing | None = None
    fwd_bwd: Timing | None = None
    ratio_fwd: float | None = None
    ratio_fwd_bwd: float | None = None

    def as_dict(self) -> dict:
        return {
            "name": self.name, "status": self.status, "version": self.version, "check": self.check,
            "fwd": None if self.fwd is None else self.fwd.as_dict(),
            "fwd_bwd": None if self.fwd_bwd is None else self.fwd_bwd.as_dict(),
            "ratio_fwd": self.ratio_fwd, "ratio_fwd_bwd": self.ratio_fwd_bwd,
        }


@dataclass
class PerturbResult:
    workload: PerturbWorkload
    contenders: list[ContenderRun] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"workload": self.workload.as_dict(), "contenders": [c.as_dict() for c in self.contenders]}


def _inputs(w: PerturbWorkload, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    dt = {"float32": torch.float32, "float64": torch.float64}[w.dtype]
    if w.op == "imle_topk":
        x = torch.randn((w.batch, w.n), generator=gen, dtype=torch.float64)
        g = torch.randn((w.samples, w.batch, w.n), generator=gen, dtype=torch.float64)
        return x.to(device=device, dtype=dt), g.to(device=device, dtype=dt)
    # Continuous positive costs: the optimum is unique.
    x = torch.rand((w.batch, w.n, w.n), generator=gen, dtype=torch.float64) * 9 + 0.1
    return x.to(device=device, dtype=dt), None


def _check(w: PerturbWorkload, out: torch.Tensor, ref: torch.Tensor | None, x: torch.Tensor,
           grad: torch.Tensor | None) -> str:
    if w.op == "imle_topk":
        ok = (out.shape == (w.samples, w.batch, w.n) and bool(((out == 0) | (out == 1)).all())
              and bool((out.sum(-1) == w.k).all()))
        if grad is not None:
            ok = ok and grad.shape == x.shape and bool(torch.isfinite(grad).all())
        return "valid k-subsets" if ok else "INVALID"
    cost = (out.double() * x.double()).sum((-2, -1))
    if ref is None:
        return "reference"
    ref_cost = (ref.double() * x.double()).sum((-2, -1))
    diff = float((cost - ref_cost).abs().max())
    return f"same cost (max diff {diff:.1e})" if diff <= 1e-5 * float(ref_cost.abs().max()) else f"COST DIFF {diff:.3g}"


def run(workloads: Sequence[PerturbWorkload], loaded, device: str, seed: int, budget: Budget,
        progress: Progress) -> list[PerturbResult]:
    results = []
    sync = (lambda: torch.cuda.synchronize(torch.device(device))) if device.startswith("cuda") else (lambda: None)
    for w in workloads:
        x, g = _inputs(w, seed, device)
        res = PerturbResult(w)
        ref_out = None
        for ld in loaded:
            name = ld.contender.name
            run_ = ContenderRun(name, ld.status, ld.version)
            res.contenders.append(run_)
            progress.step(f"{w.name} {name}", units=2)
            if ld.status != "ok":
                continue
            if torch.device(device).type not in ld.contender.devices:
                run_.status = f"unsupported: {'/'.join(ld.contender.devices)} only"
                continue
            try:
                fn, differentiable = BUILDERS[name](ld.module, w)
            except Unsupported as e:
                run_.status = f"unsupported: {e}"
                continue
            try:
                if differentiable:
                    xg = x.detach().clone().requires_grad_(True)
                    out = fn(xg)
                    (out * g).sum().backward()
                    run_.check = _check(w, out.detach(), ref_out, x, xg.grad)
                else:
                    out = fn(x)
                    run_.check = _check(w, out, ref_out, x, None)
                    if name == "diffcomb":
                        ref_out = out
                sync()
                x_fwd = x.detach()
                run_.fwd = measure(lambda: fn(x_fwd), budget, sync)
                if differentiable:
                    xb = x.detach().clone().requires_grad_(True)

                    def step():
                        xb.grad = None
                        (fn(xb) * g).sum().backward()

                    run_.fwd_bwd = measure(step, budget, sync)
            except Exception as e:  # report, go on
                run_.status = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        base = next((c for c in res.contenders if c.name == "diffcomb" and c.fwd is not None), None)
        if base is not None:
            for c in res.contenders:
                if c.fwd is not None:
                    c.ratio_fwd = c.fwd.median / base.fwd.median
                if c.fwd_bwd is not None and base.fwd_bwd is not None:
                    c.ratio_fwd_bwd = c.fwd_bwd.median / base.fwd_bwd.median
        results.append(res)
    return results


def _ms(t: Timing | None) -> str:
    if t is None:
        return "-"
    v = t.median * 1e3
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def format_table(results: Sequence[PerturbResult], header: Sequence[str]) -> str:
    lines = [*header, ""]
    lines.append("| workload | contender | fwd ms | ratio | fwd+bwd ms | ratio | check / status |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        for c in r.contenders:
            status = c.check if c.status == "ok" else c.status
            lines.append(f"| {r.workload.name} | {c.name} | {_ms(c.fwd)} | {_ratio(c.ratio_fwd)} | "
                         f"{_ms(c.fwd_bwd)} | {_ratio(c.ratio_fwd_bwd)} | {status} |")
    lines += [
        "",
        "Median times in milliseconds; ratio = contender time / diffcomb time in this run (> 1: diffcomb "
        "is faster). imle_topk: 10 samples of top-10 masks on (256, 1000) scores, fwd+bwd = forward, then "
        "(out * g).sum().backward() with the I-MLE estimator (lambda = 1); the plain-torch baseline draws "
        "the same noise with torch and selects with torch.topk. grid_shortest_path / linear_assignment: "
        "forward only (solvers); peers are called once per instance, their time includes building the "
        "graph and reading out the 0/1 solution.",
    ]
    return "\n".join(lines) + "\n"


def to_json_results(results: Sequence[PerturbResult]) -> list[dict]:
    return [r.as_dict() for r in results]


def now() -> float:
    return time.perf_counter()
