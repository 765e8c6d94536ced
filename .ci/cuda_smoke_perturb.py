"""Runs every CUDA kernel path of the perturb family once, small, and checks it against the
CPU: noise (Gumbel float32/float64, normal, Sum-of-Gamma), argmax, top-k, ranks, grid shortest
path (NaN grid, 1-row and 1-column grids; float64 and float32), linear assignment (square, wide,
tall, NaN; float64 and float32), the solvers along a non-last dim=, and the estimators on CUDA
(I-MLE module, decorated I-MLE, perturbed argmax, blackbox shortest path: forward+backward).
Meant for compute-sanitizer (.ci/gpu); exits non-zero on a mismatch, and without a GPU (saying
that nothing was run)."""

import sys

import torch

import diffcomb
from diffcomb import _native

if not (torch.cuda.is_available() and _native.cuda_available()):
    sys.exit("cuda smoke (perturb): CUDA is unavailable (torch.cuda.is_available() = "
             f"{torch.cuda.is_available()}, diffcomb._C_cuda built = {_native.cuda_available()}); nothing was run")

torch.manual_seed(0)
failures = []


def same(name, a, b, tol=0.0):
    b = b.cpu()
    if tol:
        ok = torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=True)
    else:
        ok = torch.equal(a.nan_to_num(-7), b.nan_to_num(-7))
    if not ok:
        failures.append(f"{name}: CPU and CUDA differ (shape {tuple(a.shape)})")


for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
    for fn in (diffcomb.sample_gumbel, diffcomb.sample_normal):
        same(f"{fn.__name__}/{dtype}", fn((3, 1001), generator=torch.Generator().manual_seed(1), dtype=dtype),
             fn((3, 1001), generator=torch.Generator().manual_seed(1), dtype=dtype, device="cuda"), tol)
    same(f"sum_of_gamma/{dtype}",
         diffcomb.sample_sum_of_gamma((257,), k=5, generator=torch.Generator().manual_seed(2), dtype=dtype),
         diffcomb.sample_sum_of_gamma((257,), k=5, generator=torch.Generator().manual_seed(2), dtype=dtype,
                                      device="cuda"), tol)

for n in (1, 5, 300, 3000):
    x = torch.randn(7, n, dtype=torch.float64)
    x[1, n // 2] = float("nan")
    same(f"argmax/{n}", diffcomb.argmax_onehot(x), diffcomb.argmax_onehot(x.cuda()))
    same(f"topk/{n}", diffcomb.topk_mask(x, max(1, n // 3)), diffcomb.topk_mask(x.cuda(), max(1, n // 3)))
    same(f"ranks/{n}", diffcomb.sort_permutation(x), diffcomb.sort_permutation(x.cuda()))

x = torch.randn(6, 40, 3, dtype=torch.float64)  # the items on a middle axis
for dim in (0, 1):
    same(f"topk/dim={dim}", diffcomb.topk_mask(x, 2, dim=dim), diffcomb.topk_mask(x.cuda(), 2, dim=dim))
    same(f"argmax/dim={dim}", diffcomb.argmax_onehot(x, dim=dim), diffcomb.argmax_onehot(x.cuda(), dim=dim))
    same(f"ranks/dim={dim}", diffcomb.sort_permutation(x, True, dim=dim),
         diffcomb.sort_permutation(x.cuda(), True, dim=dim))

for dtype in (torch.float64, torch.float32):
    for h, w in ((1, 1), (1, 9), (9, 1), (12, 12), (30, 30), (40, 17)):
        g = (torch.rand(5, h, w, dtype=torch.float64) * 9 + 0.1).to(dtype)
        g[2, 0, 0] = float("nan")
        same(f"grid/{h}x{w}/{dtype}", diffcomb.grid_shortest_path(g), diffcomb.grid_shortest_path(g.cuda()))

for dtype in (torch.float64, torch.float32):
    for n, m in ((1, 1), (5, 5), (30, 70), (70, 30), (100, 100), (300, 300)):
        c = torch.randn(4, n, m, dtype=torch.float64).to(dtype)
        c[1, 0, 0] = float("inf")
        for maximize in (False, True):
            same(f"assignment/{n}x{m}/{maximize}/{dtype}", diffcomb.linear_assignment(c, maximize),
                 diffcomb.linear_assignment(c.cuda(), maximize))

theta = torch.randn(16, 500, device="cuda", requires_grad=True)
z = diffcomb.IMLETopK(10, num_samples=4)(theta)
(z * torch.randn_like(z)).sum().backward()
torch.cuda.synchronize()
if not bool((z.sum(-1) == 10).all()) or not bool(torch.isfinite(theta.grad).all()):
    failures.append("imle topk on cuda: invalid samples or gradient")


@diffcomb.imle(num_samples=3, noise="sum_of_gamma", k=4)
def top4(scores):
    return diffcomb.topk_mask(scores, 4)


# The estimators on both devices: with the seed drawn from one CPU generator, CPU and CUDA draw the
# same noise (up to the last bit of the device's log), so values and gradients agree.
for name, est, shape in (("decorated imle top-4", top4, (8, 50)),
                         ("perturbed argmax", diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=16), (8, 50)),
                         ("blackbox grid path", diffcomb.blackbox(diffcomb.grid_shortest_path, minimize=True),
                          (4, 12, 12))):
    theta = torch.rand(*shape, dtype=torch.float64) + 0.1
    g = torch.randn(*shape, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        t = theta.to(device).requires_grad_(True)
        kwargs = {} if name.startswith("blackbox") else {"generator": torch.Generator().manual_seed(4)}
        y = est(t, **kwargs)
        (y * g.to(device)).sum().backward()
        results.append((y.detach(), t.grad))
    same(f"{name}/value", results[0][0], results[1][0], tol=1e-9)
    same(f"{name}/grad", results[0][1], results[1][1], tol=1e-9)

print("\n".join(failures) if failures else "cuda smoke (perturb): all paths agree with the CPU")
sys.exit(1 if failures else 0)
