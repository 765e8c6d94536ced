"""ott-jax contender, run by benchmarks/ot/run.py in its own environment (ott-jax needs jax, which
is kept out of diffcomb's): ``/work/venvs/ottjax/bin/python ottjax_contender.py CASE ...`` prints one
JSON line {"forward_s", "forward_backward_s", "value", "n_iter"}.

Cases (same inputs as run.py, from numpy's default generator with the given seed):
- ``dense B N ITERS EPS``: B problems of uniform costs (N, N) in [0, 1), ``vmap`` of
  ``sinkhorn.Sinkhorn`` (lse mode, exactly ITERS iterations), the value ``reg_ot_cost``; the
  backward is jax.grad of its sum in the cost (implicit differentiation, ott-jax's default).
- ``cloud N ITERS EPS``: two clouds of N points in [0, 1)^3, ``sinkhorn_divergence`` of online
  ``PointCloud``s (``batch_size``: the cost is never stored), exactly ITERS iterations per solve;
  the backward is jax.grad in x.
Each is jitted and run once before it is timed (compilation is not timed).
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import geometry, pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from ott.tools import sinkhorn_divergence as sd


def _timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def dense(batch, n, iters, eps, seed=0):
    C = jnp.asarray(np.random.default_rng(seed).random((batch, n, n), dtype=np.float32))
    solver = sinkhorn.Sinkhorn(min_iterations=iters, max_iterations=iters, inner_iterations=10, threshold=0.0)

    def one(c):
        return solver(linear_problem.LinearProblem(geometry.Geometry(cost_matrix=c, epsilon=eps))).reg_ot_cost

    value = jax.jit(lambda c: jax.vmap(one)(c).sum())
    grad = jax.jit(jax.value_and_grad(lambda c: jax.vmap(one)(c).sum()))
    tf, v = _timed(value, C)
    tb, _ = _timed(grad, C)
    return {"forward_s": tf, "forward_backward_s": tb, "value": float(v), "n_iter": iters}


def cloud(n, iters, eps, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.random((n, 3), dtype=np.float32))
    y = jnp.asarray(rng.random((n, 3), dtype=np.float32))
    kw = {"min_iterations": iters, "max_iterations": iters, "inner_iterations": 10, "threshold": 0.0}

    def div(x, y):
        return sd.sinkhorn_divergence(pointcloud.PointCloud, x, y, epsilon=eps, batch_size=min(n, 2048),
                                      solve_kwargs=kw)[0]

    tf, v = _timed(jax.jit(div), x, y)
    tb, _ = _timed(jax.jit(jax.value_and_grad(div)), x, y)
    return {"forward_s": tf, "forward_backward_s": tb, "value": float(v), "n_iter": iters}


if __name__ == "__main__":
    case, *args = sys.argv[1:]
    if case == "dense":
        out = dense(int(args[0]), int(args[1]), int(args[2]), float(args[3]))
    else:
        out = cloud(int(args[0]), int(args[1]), float(args[2]))
    print(json.dumps(out))
