"""Where the time of soft_sort's forward on one long row goes, against numpy's argsort.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/longrow_profile.py [--calls 21] [--n 100000 1000000]

One process; for each row length and thread count the calls below run in turn, round after round
(numpy, soft_sort, the native pieces, ...), so every step sees the same machine; the table gives
the median and the minimum over the rounds, in ms. Steps:

- ``numpy.argsort``: numpy's default argsort of the float32 row (its AVX-512 kernel on CPUs that
  have it); ``numpy.argsort stable``: kind="stable", the order diffcomb returns.
- ``soft_sort``: ``diffcomb.soft_sort(x)`` (the public call, no gradient recorded);
  ``soft_sort, x.requires_grad``: the forward of a call that records the backward.
- ``native sort_project``: ``isotonic_sort_project`` on buffers allocated once (argsort and PAV
  fused, what the public call runs); ``native argsort``: ``isotonic_argsort_descending`` alone;
  ``native PAV``: ``isotonic_project`` alone on the sorted row.
- ``allocations``: the tensors one call allocates (output, the saved state, the shared vector).

With ``--pair BEFORE_TREE`` it instead compares two source trees (each with its native module
built) on the public call: two worker processes, one per tree, run ``soft_sort`` (and numpy's
argsort) one call at a time, in turn (before, after, numpy, ...), so both trees see the same
machine; the table gives the median and minimum of each.

Neither numpy's argsort nor diffcomb calls BLAS, so the OPENBLAS_* variables (unset above, as the
numpy comparison asks) affect no step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import diffcomb
from diffcomb import _isotonic_lean as lean
from diffcomb import _native


def steps(n: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, n, generator=gen)
    xg = x.clone().requires_grad_(True)
    xn = x.numpy()[0].copy()
    c = lean._vector("rho_over", x, 1.0)
    code = _native.DTYPE_CODES[x.dtype]
    out = torch.empty_like(x)
    sorted_ = torch.empty_like(x)
    state = lean._new_state(x, 1, n)
    base = state.data_ptr()
    starts, weights = base + 4 * n, base + 4 * lean._weights_offset(1, n)
    C = _native.cpu()

    def threads():
        return torch.get_num_threads()

    def native_sort_project():
        C.isotonic_sort_project(x.data_ptr(), c.data_ptr(), out.data_ptr(), base, starts, weights, 1, n, 1.0, 1.0,
                                False, False, code, threads())

    def native_argsort():
        C.isotonic_argsort_descending(x.data_ptr(), sorted_.data_ptr(), base, 1, n, 1.0, code, threads())

    def native_pav():
        C.isotonic_project(sorted_.data_ptr(), c.data_ptr(), base, out.data_ptr(), starts, weights, 1, n, 1.0,
                           False, False, code, threads())

    def allocations():
        return torch.empty_like(x), lean._new_state(x, 1, n), lean._vector("rho_over", x, 1.0)

    def soft_sort_grad():
        return diffcomb.soft_sort(xg)

    native_argsort()  # the sorted row for native_pav
    steps.keep = (x, xg, c, out, sorted_, state)  # the buffers behind the raw addresses
    return {
        "numpy.argsort": lambda: np.argsort(xn),
        "numpy.argsort stable": lambda: np.argsort(xn, kind="stable"),
        "soft_sort": lambda: diffcomb.soft_sort(x),
        "soft_sort, x.requires_grad": soft_sort_grad,
        "native sort_project": native_sort_project,
        "native argsort": native_argsort,
        "native PAV": native_pav,
        "allocations": allocations,
    }


def worker() -> None:
    """--worker: answers lines "n threads step" with the time of one call in ms."""
    torch.set_num_threads(1)
    made = {}
    for line in sys.stdin:
        n, t, step = json.loads(line)
        torch.set_num_threads(t)
        if (n, t) not in made:
            made[(n, t)] = steps(n)
            for f in made[(n, t)].values():  # warm-up
                f()
        f = made[(n, t)][step]
        t0 = time.perf_counter_ns()
        f()
        print(json.dumps((time.perf_counter_ns() - t0) / 1e6), flush=True)


def pair(args) -> None:
    """--pair: the public call of this tree and of another, alternating."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"before": os.path.abspath(args.pair), "after": here}
    procs = {}
    for name, tree in trees.items():
        env = dict(os.environ, PYTHONPATH=tree)
        procs[name] = subprocess.Popen([sys.executable, os.path.join(here, "benchmarks", "longrow_profile.py"),
                                        "--worker"], cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True)
    calls = [("before", "soft_sort"), ("after", "soft_sort"), ("after", "numpy.argsort"),
             ("before", "soft_sort, x.requires_grad"), ("after", "soft_sort, x.requires_grad")]
    print("| row | threads | tree | step | median ms | min ms |\n| --- | --: | --- | --- | --: | --: |")
    for n in args.n:
        for t in args.threads:
            times = {c: [] for c in calls}
            for _ in range(args.calls):
                for tree, step in calls:
                    proc = procs[tree]
                    proc.stdin.write(json.dumps((n, t, step)) + "\n")
                    proc.stdin.flush()
                    times[(tree, step)].append(json.loads(proc.stdout.readline()))
            for (tree, step), v in times.items():
                print(f"| (1, {n}) | {t} | {tree} | {step} | {statistics.median(v):.3f} | {min(v):.3f} |", flush=True)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=21)
    parser.add_argument("--n", type=int, nargs="+", default=[100000, 1000000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pair", help="another source tree (built): compare the public call, alternating")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    if args.pair:
        return pair(args)
    print("| row | threads | step | median ms | min ms |\n| --- | --: | --- | --: | --: |")
    for n in args.n:
        for t in args.threads:
            torch.set_num_threads(t)
            fns = steps(n)
            times = {k: [] for k in fns}
            for f in fns.values():  # warm-up
                f()
            for _ in range(args.calls):
                for k, f in fns.items():
                    t0 = time.perf_counter_ns()
                    f()
                    times[k].append((time.perf_counter_ns() - t0) / 1e6)
            for k, v in times.items():
                print(f"| (1, {n}) | {t} | {k} | {statistics.median(v):.3f} | {min(v):.3f} |", flush=True)


if __name__ == "__main__":
    main()
