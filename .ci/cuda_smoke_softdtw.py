"""Runs every CUDA kernel path of the soft-DTW family once, small, and checks it against the CPU:
the value alone and with the expected alignment (cost matrices), series values and gradients
(every cost, gradients in x and y or in x alone), the second order (sharp soft-DTW, Hessian-vector
products by double backward), soft and hard (gamma = 0), float32 and float64 (and float16 through
float32), bands (feasible and infeasible), unequal lengths, per-pair lengths, several tile
diagonals (sides above the 256-cell tile), a NaN pair, overflowing costs and an empty batch.
Meant for compute-sanitizer (add it to the `for smoke in ...` list of .ci/gpu); exits 1 on a
mismatch, and 77 (skipped) with a message when CUDA is unavailable."""

import sys

import torch

import diffcomb
import diffcomb._native as native

if not (torch.cuda.is_available() and native.cuda_available()):
    why = "torch sees no CUDA device" if not torch.cuda.is_available() else "diffcomb was built without CUDA"
    print(f"cuda smoke (soft-DTW): skipped, {why}", file=sys.stderr)
    sys.exit(77)

torch.manual_seed(0)
failures = []
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2}


def same(name, a, b, dtype):
    a, b = a.detach().double(), b.detach().cpu().double()
    tol = TOL[dtype]
    finite = a[torch.isfinite(a)]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    if a.shape != b.shape or not torch.allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True):
        diff = (a - b).abs().nan_to_num().max().item() if a.shape == b.shape else "shape"
        failures.append(f"{name}: CPU and CUDA differ (shape {tuple(a.shape)}, max diff {diff})")


def check(name, fn, inputs, dtype, grad=True, order2=False):
    """fn(*inputs) on the CPU and on CUDA: values, and with grad the gradients of <out, W> (with
    order2 also the double backward: a Hessian-vector product)."""
    results = []
    for device in ("cpu", "cuda"):
        xs = [t.detach().to(device).requires_grad_(grad and t.is_floating_point()) for t in inputs]
        out = fn(*xs)
        got = [out]
        if grad:
            w = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape).to(out)
            leaves = [t for t in xs if t.requires_grad]
            gs = torch.autograd.grad((out * w).sum(), leaves, create_graph=order2, allow_unused=True)
            got += [g if g is not None else torch.zeros_like(t) for g, t in zip(gs, leaves)]
            if order2:
                v = [torch.cos(torch.arange(g.numel(), dtype=torch.float64)).reshape(g.shape).to(g) for g in gs]
                hv = torch.autograd.grad(sum((g * d).sum() for g, d in zip(gs, v)), leaves, allow_unused=True)
                got += [h if h is not None else torch.zeros_like(t) for h, t in zip(hv, leaves)]
        results.append(got)
    torch.cuda.synchronize()
    for k, (a, b) in enumerate(zip(*results)):
        same(f"{name} [{'value' if k == 0 else f'derivative {k}'}]", a, b, dtype)


def nan_pair(C):
    C = C.clone()
    C[min(1, C.shape[0] - 1), 0, -1] = float("nan")
    return C


SHAPES = [(1, 1), (1, 7), (6, 1), (5, 5), (9, 14), (300, 40), (40, 300), (270, 300)]
for dtype in (torch.float64, torch.float32):
    for m, n in SHAPES:
        C = torch.rand(3, m, n, dtype=dtype) * 4
        lx = torch.randint(1, m + 1, (3,))
        ly = torch.randint(1, n + 1, (3,))
        feasible = max(abs(m - n), 2)
        for gamma in (0.0, 0.3):
            tag = f"{dtype}/{m}x{n}/gamma={gamma}"
            for band in (None, feasible, max(0, abs(m - n) - 1) if m != n else None):
                kw = dict(bandwidth=band)
                check(f"value {tag}/band={band}", lambda c: diffcomb.soft_dtw_from_cost(c, gamma, **kw), [C], dtype,
                      grad=False)
                check(f"value+alignment, double backward {tag}/band={band}",
                      lambda c: diffcomb.soft_dtw_from_cost(c, gamma, **kw), [C], dtype, order2=True)
                check(f"alignment (backward: hvp) {tag}/band={band}",
                      lambda c: diffcomb.soft_dtw_alignment(c, gamma, **kw), [C], dtype)
                check(f"sharp {tag}/band={band}", lambda c: diffcomb.sharp_soft_dtw_from_cost(c, gamma, **kw), [C],
                      dtype)
            check(f"value+alignment lengths {tag}",
                  lambda c: diffcomb.soft_dtw_from_cost(c, gamma, x_lengths=lx, y_lengths=ly), [C], dtype)
            check(f"sharp lengths+band {tag}",
                  lambda c: diffcomb.sharp_soft_dtw_from_cost(c, gamma, bandwidth=feasible, x_lengths=lx), [C], dtype)
            check(f"nan pair {tag}", lambda c: diffcomb.soft_dtw_from_cost(c, gamma), [nan_pair(C)], dtype)
            check(f"nan pair sharp {tag}", lambda c: diffcomb.sharp_soft_dtw_from_cost(c, gamma), [nan_pair(C)], dtype)
        d = 3
        x = torch.randn(3, m, d, dtype=dtype)
        y = torch.randn(3, n, d, dtype=dtype)
        for cost in ("sqeuclidean", "half_sqeuclidean", "log_augmented"):
            for gamma in (0.0, 0.5):
                tag = f"{dtype}/{m}x{n}/{cost}/gamma={gamma}"
                check(f"series value {tag}", lambda a, b: diffcomb.soft_dtw(a, b, gamma, cost=cost), [x, y], dtype,
                      grad=False)
                check(f"series grads {tag}", lambda a, b: diffcomb.soft_dtw(a, b, gamma, cost=cost), [x, y], dtype)
                check(f"series grad x {tag}", lambda a: diffcomb.soft_dtw(a, y.to(a.device), gamma, cost=cost), [x],
                      dtype)
                check(f"series lengths+band {tag}",
                      lambda a, b: diffcomb.soft_dtw(a, b, gamma, cost=cost, bandwidth=feasible, x_lengths=lx,
                                                     y_lengths=ly), [x, y], dtype)
                if m != n:
                    check(f"series infeasible band {tag}",
                          lambda a, b: diffcomb.soft_dtw(a, b, gamma, cost=cost, bandwidth=abs(m - n) - 1), [x, y],
                          dtype)
            xn = x.clone()
            xn[1, 0, 0] = float("nan")
            check(f"series nan pair {dtype}/{m}x{n}/{cost}", lambda a, b: diffcomb.soft_dtw(a, b, 0.5, cost=cost),
                  [xn, y], dtype)
        check(f"series double backward {dtype}/{m}x{n}", lambda a, b: diffcomb.soft_dtw(a, b, 0.5), [x, y], dtype,
              order2=True)

# Overflowing costs (R[m][n] not finite from finite costs), float16 through float32, an empty batch.
huge = torch.full((2, 5, 4), 1e308, dtype=torch.float64)
check("overflow", lambda c: diffcomb.soft_dtw_from_cost(c, 0.5), [huge], torch.float64)
check("overflow sharp", lambda c: diffcomb.sharp_soft_dtw_from_cost(c, 0.5), [huge], torch.float64)
check("float16", lambda c: diffcomb.soft_dtw_from_cost(c, 0.5), [torch.rand(2, 30, 20, dtype=torch.float16)],
      torch.float16)
check("empty batch", lambda c: diffcomb.soft_dtw_from_cost(c, 0.5), [torch.rand(0, 4, 3, dtype=torch.float64)],
      torch.float64)
check("empty batch series", lambda a, b: diffcomb.soft_dtw(a, b, 0.5),
      [torch.rand(0, 4, 2, dtype=torch.float64), torch.rand(0, 3, 2, dtype=torch.float64)], torch.float64)

print("\n".join(failures) if failures else "cuda smoke (soft-DTW): all paths agree with the CPU")
sys.exit(1 if failures else 0)
