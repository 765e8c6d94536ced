"""Runs every CUDA kernel path of the sorting networks once, small, and checks it against the CPU:
the forward with and without the matrix (values_forward_kernel, p_forward_kernel), the backward of P
(p_backward_kernel, sum_tape_kernel) with dL/dP in P's layout and in Pt's, the values-only backward
(values_backward_kernel), both networks (odd-even; bitonic pruned and padded, whose outputs leave on
renamed wires), every sigmoid, float32 and float64, n not a power of two, a NaN row, and a batch
beyond one launch's grid (65535 rows). Meant for compute-sanitizer (.ci/gpu); exits non-zero on a
mismatch, and with a message (status 1) where CUDA is unavailable."""

import sys

import torch

import diffcomb
from diffcomb import _native

if not (torch.cuda.is_available() and _native.cuda_available()):
    sys.exit("cuda smoke (sortnet): CUDA is unavailable (torch.cuda.is_available() = "
             f"{torch.cuda.is_available()}, diffcomb._C_cuda built = {_native.cuda_available()}); nothing was run")

LAYOUTS = (("odd_even", "prune"), ("bitonic", "prune"), ("bitonic", "inf"))
SIGMOIDS = diffcomb.sortnet.SIGMOIDS
failures = []


def same(name, cpu, cuda, dtype):
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    cuda = cuda.detach().cpu()
    if cpu.shape != cuda.shape or not torch.allclose(cpu.detach(), cuda, rtol=tol, atol=tol, equal_nan=True):
        diff = (cpu.detach() - cuda).abs().nan_to_num().max().item() if cpu.shape == cuda.shape else "shape"
        failures.append(f"{name}: CPU and CUDA differ (max diff {diff})")


def run(x, g, G, transposed, **kw):
    """values, matrix, dL/dx of <g, values> + <G, P>, with dL/dP stored in Pt's layout if transposed."""
    x = x.detach().clone().requires_grad_(True)
    r = diffcomb.sorting_network(x, **kw)
    loss = (r.values * g).sum()
    if r.matrix is not None:
        loss = loss + (r.matrix * (G.mT.contiguous().mT if transposed else G)).sum()
    loss.backward()
    return r.values, r.matrix, x.grad


def compare(name, batch, n, dtype, **kw):
    gen = torch.Generator().manual_seed(batch * 1000 + n)
    x = torch.randn(batch, n, generator=gen, dtype=torch.float64).to(dtype)
    if n and batch > 2:
        x[2, n // 2] = float("nan")  # a NaN row: NaN values, matrix and gradient on both devices
    g = torch.randn(batch, n, generator=gen, dtype=torch.float64).to(dtype)
    G = torch.randn(batch, n, n, generator=gen, dtype=torch.float64).to(dtype)
    v, P, dx = run(x, g, G, False, **kw)
    for transposed in (False, True):
        vd, Pd, dxd = run(x.cuda(), g.cuda(), G.cuda(), transposed, **kw)
        same(f"{name} values", v, vd, dtype)
        same(f"{name} matrix", P, Pd, dtype)
        same(f"{name} grad (dL/dP {'transposed' if transposed else 'in P layout'})", dx, dxd, dtype)
    v, _, dx = run(x, g, None, False, return_matrix=False, **kw)
    vd, Pd, dxd = run(x.cuda(), g.cuda(), None, False, return_matrix=False, **kw)
    same(f"{name} values without the matrix", v, vd, dtype)
    same(f"{name} values-only grad", dx, dxd, dtype)
    if Pd is not None:
        failures.append(f"{name}: a matrix came back with return_matrix=False")


case = 0
for network, padding in LAYOUTS:
    for dtype in (torch.float32, torch.float64):
        for n in (1, 2, 5, 11, 33):
            sigmoid = SIGMOIDS[case % len(SIGMOIDS)]  # every sigmoid on every layout and dtype
            case += 1
            kw = dict(network=network, bitonic_padding=padding, sigmoid=sigmoid, steepness=3.0)
            compare(f"{network}/{padding}/{sigmoid}/{dtype}/3x{n}", 3, n, dtype, **kw)
compare("bitonic/inf/logistic_phi/float64/2x100", 2, 100, torch.float64, network="bitonic", bitonic_padding="inf",
        sigmoid="logistic_phi", steepness=2.0)
compare("odd_even/gaussian/float32/70000x3 (two launches of the lane kernels)", 70000, 3, torch.float32,
        network="odd_even", sigmoid="gaussian", steepness=2.0)
torch.cuda.synchronize()

print("\n".join(failures) if failures else "cuda smoke (sortnet): all paths agree with the CPU")
sys.exit(1 if failures else 0)
