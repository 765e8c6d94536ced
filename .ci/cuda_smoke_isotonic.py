"""Runs every CUDA kernel path of the permutahedron family once, small, and checks it against the
CPU: row-per-thread rows (n <= 32) and block-per-row rows, NaN rows, n = 0, KL and L2,
rank/sort/top-k/isotonic (unweighted and weighted), the sparse soft top-k's three block solves
(p = 2, p = 4/3 and the threshold solve of any other p), forward and backward, large blocks in the
backward, forward mode and double backward, float64 and float32. Meant for compute-sanitizer
(.ci/gpu); exits non-zero on a mismatch, and without a GPU (saying that nothing was run). The other
families' kernels have their own .ci/cuda_smoke_<family>.py."""

import sys

import torch

import diffcomb
from diffcomb import _native

if not (torch.cuda.is_available() and _native.cuda_available()):
    sys.exit("cuda smoke (isotonic): CUDA is unavailable (torch.cuda.is_available() = "
             f"{torch.cuda.is_available()}, diffcomb._C_cuda built = {_native.cuda_available()}); nothing was run")

torch.manual_seed(0)
failures = []


def check(name, fn, x, *extra):
    xc = x.detach().clone().requires_grad_()
    xg = x.detach().cuda().requires_grad_()
    yc, yg = fn(xc, *extra), fn(xg, *(t.cuda() for t in extra))
    g = torch.randn_like(yc)
    yc.backward(g)
    yg.backward(g.cuda())
    torch.cuda.synchronize()
    tol = 1e-4 if x.dtype == torch.float64 else 2e-3
    for what, a, b in (("value", yc, yg), ("grad", xc.grad, xg.grad)):
        if not torch.allclose(a.detach(), b.detach().cpu(), rtol=tol, atol=tol, equal_nan=True):
            failures.append(f"{name} {what} shape={tuple(x.shape)} {x.dtype}: max diff "
                            f"{(a.detach() - b.detach().cpu()).abs().nan_to_num().max().item():.3g}")


for n in (0, 1, 5, 32, 33, 300, 5000):
    for rows in (1, 7):
        for dtype in ((torch.float64, torch.float32) if n in (5, 300) else (torch.float64,)):
            x = (torch.randn(rows, n, dtype=torch.float64) * 3).to(dtype)
            if n and rows > 1:
                x[1, n // 2] = float("nan")
            for reg in ("l2", "kl"):
                for desc in (False, True):
                    check(f"soft_rank/{reg}/desc={desc}",
                          lambda t: diffcomb.soft_rank(t, descending=desc, regularization=reg), x)
                    check(f"soft_sort/{reg}/desc={desc}",
                          lambda t: diffcomb.soft_sort(t, descending=desc, regularization=reg), x)
            if n:
                check("soft_topk", lambda t: diffcomb.soft_topk(t, max(1, n // 3)), x)
            check("isotonic", lambda t: diffcomb.isotonic_regression(t), x)
            check("isotonic/decreasing", lambda t: diffcomb.isotonic_regression(t, increasing=False), x)
            weight = torch.rand(rows, n, dtype=dtype) + 0.1
            check("isotonic/weighted", lambda t, w: diffcomb.isotonic_regression(t, w), x, weight)
            # Sparse top-k: p = 2 (mean blocks), 4/3 (cubic blocks), 1.5 (threshold kernel); k = 0, a
            # middle k and k = n (every entry exactly 0 or 1).
            for p in (2.0, 4.0 / 3.0, 1.5):
                for k in sorted({0, n // 3, n}):
                    check(f"sparse_soft_topk/p={p:.3g}/k={k}",
                          lambda t: diffcomb.sparse_soft_topk(t, k, regularization_strength=0.7, p=p), x)

# Large blocks in the backward (cooperative reduction): strong regularization pools long runs.
x = torch.randn(3, 20000, dtype=torch.float32)
check("soft_rank/large-blocks", lambda t: diffcomb.soft_rank(t, regularization_strength=1e4), x)
check("soft_sort/large-blocks", lambda t: diffcomb.soft_sort(t, regularization_strength=1e4), x)
for p in (2.0, 4.0 / 3.0, 1.5):  # one mixed block of about n entries: the rank-mode VJP reduces it cooperatively
    check(f"sparse_soft_topk/large-blocks/p={p:.3g}",
          lambda t: diffcomb.sparse_soft_topk(t, 5000, regularization_strength=1e4, p=p), x.double())


def check_higher(name, fn, x):
    """Forward mode (jvp) and a Hessian-vector product by double backward, CUDA against the CPU: the
    block VJP's own derivatives (plain-mode block sums, its transpose, the differentiable KL / p < 2
    block weights)."""
    v, u = torch.randn_like(x), torch.randn_like(x)
    results = []
    for device in ("cpu", "cuda"):
        xd, vd, ud = x.to(device).requires_grad_(), v.to(device), u.to(device)
        tangent = torch.func.jvp(fn, (xd.detach(),), (vd,))[1]
        (grad,) = torch.autograd.grad((fn(xd).sin() * ud).sum(), xd, create_graph=True)
        (hvp,) = torch.autograd.grad(grad, xd, vd)
        results.append((tangent.detach().cpu(), hvp.cpu()))
    torch.cuda.synchronize()
    for what, a, b in zip(("jvp", "hvp"), *results):
        if not torch.allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True):
            failures.append(f"{name} {what} shape={tuple(x.shape)}: max diff {(a - b).abs().nan_to_num().max().item():.3g}")


for n in (5, 300):
    x = torch.randn(7, n, dtype=torch.float64) * 3
    for reg in ("l2", "kl"):
        check_higher(f"soft_rank/{reg}/higher", lambda t: diffcomb.soft_rank(t, regularization=reg), x)
        check_higher(f"soft_sort/{reg}/higher", lambda t: diffcomb.soft_sort(t, regularization=reg), x)
    weight = torch.rand(7, n, dtype=torch.float64) + 0.1
    check_higher("isotonic/weighted/higher", lambda t: diffcomb.isotonic_regression(t, weight.to(t.device) * t.exp()), x)
    for p in (2.0, 4.0 / 3.0, 1.5):
        check_higher(f"sparse_soft_topk/p={p:.3g}/higher",
                     lambda t: diffcomb.sparse_soft_topk(t, n // 3, regularization_strength=0.7, p=p), x)

print("\n".join(failures) if failures else "cuda smoke (isotonic): all paths agree with the CPU")
sys.exit(1 if failures else 0)
