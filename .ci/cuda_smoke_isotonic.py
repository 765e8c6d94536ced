"""Runs every CUDA kernel path of diffcomb once, small, and checks it against
the CPU: row-per-thread rows (n <= 32) and block-per-row rows, NaN rows,
n = 0, KL and L2, rank/sort/top-k/isotonic, forward and backward, large
blocks in the backward. Meant for compute-sanitizer (.ci/gpu); exits non-zero
on a mismatch."""

import sys

import torch

import diffcomb

torch.manual_seed(0)
failures = []


def check(name, fn, x):
    xc = x.detach().clone().requires_grad_()
    xg = x.detach().cuda().requires_grad_()
    yc, yg = fn(xc), fn(xg)
    g = torch.randn_like(yc)
    yc.backward(g)
    yg.backward(g.cuda())
    torch.cuda.synchronize()
    for what, a, b in (("value", yc, yg), ("grad", xc.grad, xg.grad)):
        if not torch.allclose(a.detach(), b.detach().cpu(), rtol=1e-4, atol=1e-4, equal_nan=True):
            failures.append(f"{name} {what} shape={tuple(x.shape)}: max diff "
                            f"{(a.detach() - b.detach().cpu()).abs().nan_to_num().max().item():.3g}")


for n in (0, 1, 5, 32, 33, 300, 5000):
    for rows in (1, 7):
        x = torch.randn(rows, n, dtype=torch.float64) * 3
        if n and rows > 1:
            x[1, n // 2] = float("nan")
        for reg in ("l2", "kl"):
            for desc in (False, True):
                check(f"soft_rank/{reg}/desc={desc}", lambda t: diffcomb.soft_rank(t, descending=desc, regularization=reg), x)
                check(f"soft_sort/{reg}/desc={desc}", lambda t: diffcomb.soft_sort(t, descending=desc, regularization=reg), x)
        if n:
            check("soft_topk", lambda t: diffcomb.soft_topk(t, max(1, n // 3)), x)
        check("isotonic", lambda t: diffcomb.isotonic_regression(t), x)
        check("isotonic/decreasing", lambda t: diffcomb.isotonic_regression(t, increasing=False), x)

# Large blocks in the backward (cooperative reduction): strong regularization pools long runs.
x = torch.randn(3, 20000, dtype=torch.float32)
check("soft_rank/large-blocks", lambda t: diffcomb.soft_rank(t, regularization_strength=1e4), x)
check("soft_sort/large-blocks", lambda t: diffcomb.soft_sort(t, regularization_strength=1e4), x)

# Soft-DTW: cost matrices (band, lengths, NaN pair, infeasible band) and series (three costs,
# gradients for both series), diagonals longer than the block.
def check_many(name, fn, *inputs):
    cpu = [t.detach().clone().requires_grad_() for t in inputs]
    gpu = [t.detach().cuda().requires_grad_() for t in inputs]
    yc, yg = fn(*cpu), fn(*gpu)
    yc.sum().backward()
    yg.sum().backward()
    torch.cuda.synchronize()
    pairs = [("value", yc, yg)] + [(f"grad{i}", a.grad, b.grad) for i, (a, b) in enumerate(zip(cpu, gpu))]
    for what, a, b in pairs:
        if not torch.allclose(a.detach(), b.detach().cpu(), rtol=1e-4, atol=1e-4, equal_nan=True):
            failures.append(f"{name} {what}: max diff {(a.detach() - b.detach().cpu()).abs().nan_to_num().max().item():.3g}")


for m, n in ((1, 5), (6, 1), (40, 33), (300, 280)):
    C = torch.rand(3, m, n, dtype=torch.float64)
    C[1, 0, 0] = float("nan")
    check_many(f"soft_dtw_from_cost {m}x{n}", lambda c: diffcomb.soft_dtw_from_cost(c, 0.3), C)
    check_many(f"soft_dtw_from_cost {m}x{n} band", lambda c: diffcomb.soft_dtw_from_cost(
        c, 0.3, bandwidth=abs(m - n) + 2), C)
    check_many(f"soft_dtw_from_cost {m}x{n} infeasible band", lambda c: diffcomb.soft_dtw_from_cost(
        c, 0.3, bandwidth=0) if m != n else diffcomb.soft_dtw_from_cost(c, 0.3), C)
    x, y = torch.randn(3, m, 2, dtype=torch.float64), torch.randn(3, n, 2, dtype=torch.float64)
    lx = torch.tensor([m, max(1, m // 2), m])
    for cost in ("sqeuclidean", "half_sqeuclidean", "log_augmented"):
        check_many(f"soft_dtw {cost} {m}x{n}", lambda a, b: diffcomb.soft_dtw(
            a, b, 0.3, cost=cost, x_lengths=lx.to(a.device)), x, y)


# Sorting networks: values (block per row), P forward and backward (thread per row of P,
# the backward's batch chunks), values-only mode, NaN rows, n = 0 and 1.
for n in (0, 1, 5, 33, 300):
    for rows in (1, 7):
        x = torch.randn(rows, n, dtype=torch.float64) * 3
        if n and rows > 1:
            x[1, n // 2] = float("nan")
        for net in ("odd_even", "bitonic"):
            check(f"sorting_network/{net}/P", lambda t: diffcomb.sorting_network(t, network=net).matrix, x)
            check(f"sorting_network/{net}/values",
                  lambda t: diffcomb.sorting_network(t, network=net, sigmoid="logistic_phi",
                                                     return_matrix=False).values, x)

print("\n".join(failures) if failures else "cuda smoke: all paths agree with the CPU")
sys.exit(1 if failures else 0)
