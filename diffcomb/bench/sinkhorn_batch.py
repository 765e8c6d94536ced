"""The Sinkhorn must-reach comparison without POT's memory limit.

``python -m diffcomb.bench.sinkhorn_batch``: batch 32, n = m = 1000, epsilon 0.1 on the unit-scale cost
of suite ``sinkhorn`` (workloads.SinkhornWorkload), exactly 100 iterations, float32, CPU.
POT's log-domain solver takes one problem at a time and its autograd graph for the whole batch
needs ~25 GB, so here POT runs each problem's forward and backward in turn (what the batch costs
it when memory allows); diffcomb runs the batch in one call. Both with the same input and upstream
gradient, samples interleaved (diffcomb, POT, diffcomb, ...) so that load from other processes
affects both; medians and the load average are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from .workloads import SinkhornWorkload, make_inputs


def _diffcomb(cost, g, backward, n_iter):
    import diffcomb

    x = cost.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    plan = diffcomb.sinkhorn(x, epsilon=0.1, max_iter=n_iter, tol=0.0, backward=backward).plan
    (plan * g).sum().backward()
    return time.perf_counter() - t0, plan.detach(), x.grad


def _pot(cost, g, n_iter):
    import ot

    n, m = cost.shape[-2:]
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype)
    plans, grads = [], []
    t0 = time.perf_counter()
    for k in range(cost.shape[0]):
        x = cost[k].detach().clone().requires_grad_(True)
        plan = ot.sinkhorn(a, b, x, 0.1, method="sinkhorn_log", numItermax=n_iter, stopThr=0.0, warn=False)
        (plan * g[k]).sum().backward()
        plans.append(plan.detach())
        grads.append(x.grad)
    return time.perf_counter() - t0, torch.stack(plans), torch.stack(grads)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-iter", type=int, default=100)
    p.add_argument("--repeat", type=int, default=2, help="POT samples (diffcomb: one more per mode)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    w = SinkhornWorkload(op="sinkhorn", batch=args.batch, n=args.n, m=args.n, n_iter=args.n_iter)
    inputs = make_inputs(w, "cpu", 0)
    cost, g = inputs.x, inputs.g
    times = {"diffcomb-unroll": [], "diffcomb-implicit": [], "POT-torch": []}
    load = [os.getloadavg()[0]]
    for mode in ("unroll", "implicit"):  # warm-up
        _diffcomb(cost, g, mode, args.n_iter)
    check = {}
    for r in range(args.repeat + 1):
        for mode in ("unroll", "implicit"):
            t, plan, grad = _diffcomb(cost, g, mode, args.n_iter)
            times[f"diffcomb-{mode}"].append(t)
            check[mode] = (plan, grad)
        if r < args.repeat:
            t, plan, grad = _pot(cost, g, args.n_iter)
            times["POT-torch"].append(t)
            check["pot"] = (plan, grad)
        load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    diff_plan = float((check["unroll"][0] - check["pot"][0]).abs().max())
    diff_grad = float((check["unroll"][1] - check["pot"][1]).abs().max())
    diff_grad_impl = float((check["implicit"][1] - check["pot"][1]).abs().max())
    lines = [f"sinkhorn fwd+bwd, batch {args.batch}, n = m = {args.n}, {args.n_iter} iterations, float32, "
             f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average "
             f"{min(load):.2f}-{max(load):.2f}"]
    for k, v in med.items():
        lines.append(f"  {k:18s} {v * 1e3:10.0f} ms  (samples {', '.join(f'{x * 1e3:.0f}' for x in times[k])})"
                     f"  POT / this = {med['POT-torch'] / v:.2f}")
    lines.append(f"  max |plan diffcomb - POT| = {diff_plan:.1e}; max |grad diffcomb-unroll - POT| = {diff_grad:.1e};"
                 f" implicit: {diff_grad_impl:.1e}")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"workload": w.as_dict(), "times_s": times, "median_s": med, "load_average": load,
                       "max_abs_diff_plan": diff_plan, "max_abs_diff_grad_unroll": diff_grad,
                       "max_abs_diff_grad_implicit": diff_grad_impl, "summary": lines}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
