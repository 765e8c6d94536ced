"""diffcomb and geomloss contenders of benchmarks/ot/run.py, one case per process (so that the peak
memory that /usr/bin/time reports is the case's own): ``python torch_contenders.py NAME CASE ...``
prints one JSON line {"forward_s", "forward_backward_s", "value", "n_iter"}.

NAME: ``diffcomb`` (this checkout), ``diffcomb-main`` (a build of another checkout whose root is in
$DIFFCOMB_BASELINE, imported first: the "before" of a change), ``geomloss-online`` (KeOps, the cost
never stored), ``geomloss-tensorized`` (the dense cost in torch). CASE: as in ottjax_contender.py
(same inputs: numpy's default generator, float32).
"""

import json
import math
import os
import sys
import time

import numpy as np
import torch


def _load(name):
    if name == "diffcomb-main":
        sys.path.insert(0, os.environ["DIFFCOMB_BASELINE"])
    import diffcomb

    return diffcomb


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def dense(name, batch, n, iters, eps, seed=0):
    dc = _load(name)
    C = torch.from_numpy(np.random.default_rng(seed).random((batch, n, n), dtype=np.float32))
    dc.sinkhorn(C[:1, :50, :50], epsilon=eps, max_iter=iters, tol=0.0)  # first call
    tf, v = _timed(lambda: dc.sinkhorn(C, epsilon=eps, max_iter=iters, tol=0.0).cost.sum())
    Cg = C.clone().requires_grad_()

    def fwd_bwd():
        value = dc.sinkhorn(Cg, epsilon=eps, max_iter=iters, tol=0.0).cost.sum()
        value.backward()
        return value

    tb, _ = _timed(fwd_bwd)
    return {"forward_s": tf, "forward_backward_s": tb, "value": float(v), "n_iter": iters}


def _clouds(n, seed=0):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(rng.random((n, 3), dtype=np.float32)),
            torch.from_numpy(rng.random((n, 3), dtype=np.float32)))


def _geomloss(backend, eps, iters, x, y):
    """geomloss's debiased Sinkhorn divergence at the same epsilon (blur^2 = eps) and as many
    iterations: geomloss anneals from the diameter down to blur with factor `scaling`, one iteration
    per value, then runs one more; scaling is chosen so that its schedule has `iters` values."""
    from geomloss import SamplesLoss
    from geomloss._legacy.sinkhorn_divergence import epsilon_schedule, max_diameter

    diameter = float(max_diameter(x, y))
    blur = math.sqrt(eps)
    scaling = math.exp(math.log(blur / diameter) / (iters - 2))
    n_iter = len(epsilon_schedule(2, diameter, blur, scaling))
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, backend=backend, debias=True,
                       diameter=diameter)
    return (lambda p, q: loss(p, q) * 2.0), n_iter  # geomloss's p=2 cost is |x - y|^2 / 2


def cloud(name, n, iters, eps, forward=True):
    """forward=False: only forward+backward is timed (the 10^5-point case, minutes per run)."""
    x, y = _clouds(n)
    if name.startswith("geomloss"):
        div, n_iter = _geomloss(name.split("-")[1], eps, iters, x, y)
    else:
        dc = _load(name)
        n_iter = iters

        def div(p, q):
            return dc.sinkhorn_divergence(p, q, eps, max_iter=iters, tol=0.0)

    warm = x[:200].clone().requires_grad_()
    div(warm, y[:200]).backward()  # first calls: KeOps compiles its formulas, libraries load
    tf, v = _timed(lambda: div(x, y)) if forward else (None, None)
    xg = x.clone().requires_grad_()

    def fwd_bwd():
        value = div(xg, y)
        value.backward()
        return value

    tb, vb = _timed(fwd_bwd)
    return {"forward_s": tf, "forward_backward_s": tb, "value": float(vb), "n_iter": n_iter}


if __name__ == "__main__":
    name, case, *args = sys.argv[1:]
    if case == "dense":
        out = dense(name, int(args[0]), int(args[1]), int(args[2]), float(args[3]))
    else:
        out = cloud(name, int(args[0]), int(args[1]), float(args[2]), forward=len(args) < 4 or args[3] != "fb")
    print(json.dumps(out))
