"""Suite ``perturb``: the contenders of the MAP solvers and of the I-MLE top-k estimator.

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

The suite runs in the shared runner (diffcomb/bench/runner.py). Its check
(``workloads.PerturbWorkload.check``): top-k samples are 0/1 with k ones per row and the
gradient has the input's shape and is finite; shortest paths and assignments must have the
same total cost as diffcomb's (random continuous costs: the optimum is unique). Every builder
here is ``build(module, workload) -> fn(x)``, as in ``diffcomb.bench.peers``.
"""

from __future__ import annotations

import functools
import heapq
import math
from types import ModuleType

import numpy as np
import torch

from .workloads import PerturbWorkload, Unsupported

__all__ = ["build_diffcomb", "build_diffcomb_one_thread", "build_torch_imle", "build_plain_torch", "build_scipy",
           "build_python_dijkstra"]


def _topk_mask_torch(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros_like(x).scatter_(-1, torch.topk(x, k, dim=-1).indices, 1.0)


def build_diffcomb(mod: ModuleType, w: PerturbWorkload):
    if w.op == "imle_topk":
        return mod.imle(functools.partial(mod.topk_mask, k=w.k), num_samples=w.samples, noise=w.noise, k=w.k,
                        return_samples=True)
    if w.op == "grid_shortest_path":
        return mod.grid_shortest_path
    return mod.linear_assignment


def build_diffcomb_one_thread(mod: ModuleType, w: PerturbWorkload):
    """diffcomb's solvers on one thread (torch.set_num_threads(1) around the call, restored after):
    on a loaded machine a 2-thread OpenMP region can wait a whole scheduler slice for its second
    thread, so this line separates the kernel's speed from that wait."""
    if w.op == "imle_topk":
        raise Unsupported("solvers only (the backward would run outside the one-thread scope)")
    solver = build_diffcomb(mod, w)

    def fn(x: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return solver(x)
        finally:
            torch.set_num_threads(threads)

    return fn


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

    return fn


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

    return fn


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

        return assign
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

    return paths


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

    return paths

