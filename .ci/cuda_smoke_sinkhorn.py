"""Runs every CUDA kernel path of the Sinkhorn family once, small, and checks it against the CPU:
the forward (converging, fixed iteration count, iterates recorded for the unrolled backward,
non-finite problems, n = 1 and m = 1), the implicit backward (plan and cost gradients, the
envelope-only path, zero weights), the implicit system alone (forward mode), the unrolled backward, in float32 and float64, square and
rectangular (n != m) problems, batch 1 and batch > 1, and the ops built on them (OT rank, sort,
quantile, Gumbel-Sinkhorn, the divergence). Meant for compute-sanitizer (.ci/gpu); exits non-zero
on a mismatch. Without a GPU it computes the CPU half, then says that it compared nothing."""

import math
import sys
import warnings

import torch

import diffcomb
from diffcomb import _native

warnings.simplefilter("ignore", UserWarning)  # slow problems warn alike on both devices
torch.manual_seed(0)

# (name, function of the inputs returning a tuple of tensors, inputs, rtol) for every path.
CASES = []


def problem(batch, n, m, dtype, zero_weight=False):
    C = torch.rand(batch, n, m, dtype=torch.float64)
    a = torch.rand(batch, n, dtype=torch.float64) + 0.2
    b = torch.rand(batch, m, dtype=torch.float64) + 0.2
    if zero_weight and n > 1:
        a[:, 0] = 0.0
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    return [t.to(dtype) for t in (C, a, b)]


def with_gradients(fn, upstream):
    """fn's outputs, then the gradients of sum(w * out) for fixed weights w (seeded per output)."""
    def run(*inputs):
        inputs = [t.detach().requires_grad_() for t in inputs]
        outs = fn(*inputs)
        loss = sum((o * w.to(o.device, o.dtype)).sum() for o, w in zip(outs, upstream(outs)) if o.is_floating_point())
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        return tuple(outs) + tuple(g for g in grads if g is not None)
    return run


def seeded(outs):
    g = torch.Generator().manual_seed(5)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]


for dtype, rtol in ((torch.float64, 1e-8), (torch.float32, 2e-3)):
    tag = str(dtype).replace("torch.", "")
    for batch, n, m in ((1, 5, 5), (3, 7, 4), (2, 4, 9), (4, 1, 6), (2, 6, 1), (2, 40, 33)):
        shape = f"{batch}x{n}x{m}"
        inputs = problem(batch, n, m, dtype)
        for backward in ("implicit", "unroll"):
            CASES.append((f"sinkhorn/{backward}/{shape}/{tag}", with_gradients(
                lambda C, a, b, bw=backward: (lambda r: (r.plan, r.cost, r.f, r.g))(
                    diffcomb.sinkhorn(C, a, b, 0.3, tol=1e-9 if dtype == torch.float64 else 1e-5, backward=bw)),
                seeded), inputs, rtol))
            # a fixed count (tol = 0: no convergence test), iterates recorded when unrolled
            CASES.append((f"sinkhorn/fixed/{backward}/{shape}/{tag}", with_gradients(
                lambda C, a, b, bw=backward: (diffcomb.sinkhorn(C, a, b, 0.5, max_iter=7, tol=0.0, backward=bw).plan,),
                seeded), inputs, rtol))
        # the envelope-only backward (no plan gradient) and zero weights (one-sided limits)
        CASES.append((f"sinkhorn/envelope/{shape}/{tag}", with_gradients(
            lambda C, a, b: (diffcomb.sinkhorn(C, a, b, 0.3).cost,), seeded), inputs, rtol))
        CASES.append((f"sinkhorn/zero-weight/{shape}/{tag}", with_gradients(
            lambda C, a, b: (diffcomb.sinkhorn(C, a, b, 0.3, tol=1e-9 if dtype == torch.float64 else 1e-5).plan,),
            seeded), problem(batch, n, m, dtype, zero_weight=True), rtol))
    # a non-finite problem beside a finite one: NaN results and gradients for it alone
    C, a, b = problem(2, 5, 4, dtype)
    C[1, 2, 3] = math.nan
    for backward in ("implicit", "unroll"):
        CASES.append((f"sinkhorn/nan/{backward}/{tag}", with_gradients(
            lambda C, a, b, bw=backward: (diffcomb.sinkhorn(C, a, b, 0.3, backward=bw).plan,), seeded),
            [C, a, b], rtol))
    x = torch.randn(3, 12, dtype=dtype)
    CASES.append((f"sinkhorn_rank/{tag}", with_gradients(lambda x: (diffcomb.sinkhorn_rank(x, 0.1),), seeded),
                  [x], rtol))
    CASES.append((f"sinkhorn_sort/unroll/{tag}", with_gradients(
        lambda x: (diffcomb.sinkhorn_sort(x, 0.1, num_targets=5, backward="unroll"),), seeded), [x], rtol))
    CASES.append((f"sinkhorn_quantile/{tag}", with_gradients(
        lambda x: (diffcomb.sinkhorn_quantile(x, [0.3, 0.5], 0.1, width=0.2),), seeded), [x], rtol))
    X = torch.randn(2, 6, 6, dtype=dtype)
    CASES.append((f"gumbel_sinkhorn/{tag}", with_gradients(
        lambda X: (diffcomb.gumbel_sinkhorn(X, 0.5, 9, noise=False),), seeded), [X], rtol))
    # the implicit system alone (forward mode and second derivatives): the plan's directional derivative
    C, a, b = problem(3, 7, 4, dtype)
    tC = torch.randn(3, 7, 4, dtype=dtype)
    CASES.append((f"sinkhorn/jvp/{tag}", lambda C, a, b, tC: sum(torch.func.jvp(
        lambda C: (diffcomb.sinkhorn(C, a, b, 0.3, tol=1e-9 if dtype == torch.float64 else 1e-5).plan,), (C,),
        (tC,)), ()), [C, a, b, tC], rtol))
    p, q = torch.randn(2, 8, 2, dtype=dtype), torch.randn(2, 5, 2, dtype=dtype)
    CASES.append((f"sinkhorn_divergence/{tag}", with_gradients(
        lambda p, q: (diffcomb.sinkhorn_divergence(p, q, 0.5),), seeded), [p, q], rtol))
    # The extended solver (forward_ext, implicit/unrolled ext backwards): unbalanced, warm start,
    # relative epsilon with epsilon scaling; point clouds (cloud forward and gradient kernels), both
    # metrics, d = 3 and d = 11 (coordinates beyond the register chunk), a NaN point.
    C, a, b = problem(2, 6, 5, dtype)
    g0 = torch.randn(2, 5, dtype=dtype) * 0.1
    for backward in ("implicit", "unroll"):
        CASES.append((f"sinkhorn-ext/unbalanced/{backward}/{tag}", with_gradients(
            lambda C, a, b, bw=backward: (lambda r: (r.plan, r.cost))(
                diffcomb.sinkhorn(C, a, b, 0.3, reg_m=(0.5, 2.0), backward=bw)), seeded), [C, a, b], rtol))
        CASES.append((f"sinkhorn-ext/warm/{backward}/{tag}", with_gradients(
            lambda C, g0, bw=backward: (lambda r: (r.plan, r.cost))(
                diffcomb.sinkhorn(C, epsilon=0.3, init=(None, g0), tau_a=0.9, backward=bw)), seeded), [C, g0], rtol))
    CASES.append((f"sinkhorn-ext/relative-scaling/{tag}", with_gradients(
        lambda C: (lambda r: (r.plan, r.cost))(diffcomb.sinkhorn(C, epsilon=0.05, relative_epsilon="mean",
                                                                epsilon_scaling=0.7)), seeded), [C], rtol))
    for d in (3, 11):
        p, q = torch.rand(2, 9, d, dtype=dtype), torch.rand(2, 7, d, dtype=dtype)
        for metric in ("sqeuclidean", "euclidean"):
            CASES.append((f"sinkhorn-cloud/{metric}/d{d}/{tag}", with_gradients(
                lambda p, q, mt=metric: (lambda r: (r.cost, r.f, r.g))(
                    diffcomb.sinkhorn(x=p, y=q, epsilon=0.2, metric=mt, reg_m=(math.inf, 1.0))), seeded), [p, q],
                rtol))
    p, q = torch.rand(2, 9, 3, dtype=dtype), torch.rand(2, 7, 3, dtype=dtype)
    p[1, 3, 1] = math.nan
    CASES.append((f"sinkhorn-cloud/nan/{tag}", with_gradients(
        lambda p, q: (diffcomb.sinkhorn(x=p, y=q, epsilon=0.2, epsilon_scaling=0.5).cost,), seeded), [p, q], rtol))


def close(x, y, rtol):
    y = y.cpu()
    return x.shape == y.shape and bool(torch.allclose(x.double(), y.double(), rtol=rtol, atol=rtol, equal_nan=True))


reference = {name: fn(*inputs) for name, fn, inputs, _ in CASES}  # the CPU half
if not (torch.cuda.is_available() and _native.cuda_available()):
    print(f"cuda smoke (sinkhorn): computed the {len(CASES)} CPU references; compared nothing: CUDA is "
          f"unavailable (torch.cuda.is_available() = {torch.cuda.is_available()}, diffcomb._C_cuda built = "
          f"{_native.cuda_available()})")
    sys.exit(0)

failures = []
for name, fn, inputs, rtol in CASES:
    out = fn(*[t.cuda() for t in inputs])
    torch.cuda.synchronize()
    for k, (x, y) in enumerate(zip(reference[name], out)):
        if not close(x, y, rtol):
            same_shape = x.shape == y.shape
            err = (x.double() - y.cpu().double()).abs().nan_to_num(math.inf).max().item() if same_shape else None
            failures.append(f"{name}: output {k} differs between CPU and CUDA (max abs diff {err})")

print("\n".join(failures) if failures else f"cuda smoke (sinkhorn): all {len(CASES)} paths agree with the CPU")
sys.exit(1 if failures else 0)
