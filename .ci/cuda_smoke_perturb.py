"""Runs every CUDA kernel path of the perturb family once, small, and checks it against the
CPU: noise (Gumbel float32/float64, normal, Sum-of-Gamma), argmax, top-k, ranks, grid shortest
path (NaN grid, 1-row and 1-column grids), linear assignment (square, wide, tall, NaN), and an
I-MLE forward+backward. Meant for compute-sanitizer (add it beside .ci/cuda_smoke.py in
.ci/gpu); exits non-zero on a mismatch."""

import sys

import torch

import diffcomb

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

for h, w in ((1, 1), (1, 9), (9, 1), (12, 12), (30, 30), (40, 17)):
    g = torch.rand(5, h, w, dtype=torch.float64) * 9 + 0.1
    g[2, 0, 0] = float("nan")
    same(f"grid/{h}x{w}", diffcomb.grid_shortest_path(g), diffcomb.grid_shortest_path(g.cuda()))

for n, m in ((1, 1), (5, 5), (30, 70), (70, 30), (100, 100), (300, 300)):
    c = torch.randn(4, n, m, dtype=torch.float64)
    c[1, 0, 0] = float("inf")
    for maximize in (False, True):
        same(f"assignment/{n}x{m}/{maximize}", diffcomb.linear_assignment(c, maximize),
             diffcomb.linear_assignment(c.cuda(), maximize))

theta = torch.randn(16, 500, device="cuda", requires_grad=True)
z = diffcomb.IMLETopK(10, num_samples=4)(theta)
(z * torch.randn_like(z)).sum().backward()
torch.cuda.synchronize()
if not bool((z.sum(-1) == 10).all()) or not bool(torch.isfinite(theta.grad).all()):
    failures.append("imle topk on cuda: invalid samples or gradient")

print("\n".join(failures) if failures else "cuda smoke (perturb): all paths agree with the CPU")
sys.exit(1 if failures else 0)
