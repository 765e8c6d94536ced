"""CPU vs CUDA agreement for soft-DTW (the anti-diagonal engine on both devices), and the CUDA
limits: what runs on the CPU only raises a clear error. Every test here is marked `cuda` and
skipped without a GPU and a diffcomb built with CUDA."""

from __future__ import annotations

import math
import sys

import pytest
import torch

import diffcomb
from tests.conftest import CUDA_SKIP_REASON, HAS_CUDA, assert_close

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)]

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}
# (batch, N, M, bandwidth): N != M, N = 1, diagonals longer than the 256-thread block, bands.
SHAPES = [(3, 1, 7, None), (3, 7, 1, None), (2, 2, 2, 0), (4, 33, 40, None), (4, 33, 40, 9), (2, 300, 301, 1),
          (2, 700, 650, None), (2, 700, 650, 60), (1, 2048, 1500, None), (0, 5, 4, None)]


def _grad(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    grads = torch.autograd.grad(out.sum(), inputs) if out.numel() else [torch.zeros_like(t) for t in inputs]
    return out.detach().cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gamma", [0.05, 1.0])
def test_from_cost_matches_cpu(dtype, shape, gamma):
    batch, m, n, bandwidth = shape
    gen = torch.Generator().manual_seed(m * n + batch)
    C = (torch.rand(batch, m, n, generator=gen, dtype=torch.float64) * 2).to(dtype)
    fn = lambda c: diffcomb.soft_dtw_from_cost(c, gamma, bandwidth=bandwidth)  # noqa: E731
    value_cpu, (grad_cpu,) = _grad(fn, C)
    value_gpu, (grad_gpu,) = _grad(fn, C.cuda())
    assert_close(value_gpu, value_cpu, **TOL[dtype])
    assert_close(grad_gpu, grad_cpu, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost", ["sqeuclidean", "half_sqeuclidean", "log_augmented"])
@pytest.mark.parametrize("bandwidth", [None, 5])
def test_series_and_divergence_match_cpu(dtype, cost, bandwidth):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(5, 40, 3, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(5, 37, 3, generator=gen, dtype=torch.float64).to(dtype)
    lx, ly = torch.tensor([40, 33, 40, 12, 40]), torch.tensor([37, 37, 30, 10, 37])
    for fn in (lambda a, b: diffcomb.soft_dtw(a, b, 0.2, cost=cost, bandwidth=bandwidth),
               lambda a, b: diffcomb.soft_dtw(a, b, 0.2, cost=cost, bandwidth=bandwidth,
                                              x_lengths=lx.to(a.device), y_lengths=ly.to(a.device)),
               lambda a, b: diffcomb.soft_dtw_divergence(a, b, 0.2, cost=cost, bandwidth=bandwidth)):
        value_cpu, grads_cpu = _grad(fn, x, y)
        value_gpu, grads_gpu = _grad(fn, x.cuda(), y.cuda())
        finite = torch.isfinite(value_cpu)
        assert torch.equal(finite, torch.isfinite(value_gpu))
        assert_close(value_gpu[finite], value_cpu[finite], **TOL[dtype])
        for g_gpu, g_cpu in zip(grads_gpu, grads_cpu):
            assert_close(g_gpu, g_cpu, **TOL[dtype])


def test_nan_infeasible_half_and_modules():
    gen = torch.Generator().manual_seed(12)
    C = torch.rand(3, 6, 9, generator=gen)
    C[1, 2, 3] = float("nan")
    value, (grad,) = _grad(lambda c: diffcomb.soft_dtw_from_cost(c, 0.5), C.cuda())
    assert torch.isnan(value[1]) and torch.isnan(grad[1]).all() and torch.isfinite(grad[[0, 2]]).all()
    value, (grad,) = _grad(lambda c: diffcomb.soft_dtw_from_cost(c, 0.5, bandwidth=2), C.cuda())
    assert torch.isinf(value).all() and torch.equal(grad, torch.zeros_like(grad))
    half = diffcomb.soft_dtw_from_cost(C[[0, 2]].cuda().half(), 0.5)
    assert half.dtype == torch.float16
    assert_close(half.float().cpu(), diffcomb.soft_dtw_from_cost(C[[0, 2]].half().float(), 0.5), rtol=1e-2,
                 atol=1e-2)
    x = torch.randn(4, 20, 2, generator=gen).cuda().requires_grad_()
    y = torch.randn(4, 25, 2, generator=gen).cuda()
    for module in (diffcomb.SoftDTW(0.1), diffcomb.SoftDTW(0.1, normalize=True), diffcomb.SoftDTWDivergence(0.1)):
        loss = module(x, y).mean()
        loss.backward()
        assert loss.device.type == "cuda" and torch.isfinite(x.grad).all()
        x.grad = None


def test_long_pairs_run():
    # The size: no sequence-length limit on the GPU.
    gen = torch.Generator(device="cuda").manual_seed(13)
    x = torch.randn(4, 4096, 1, generator=gen, device="cuda", requires_grad=True)
    y = torch.randn(4, 4096, 1, generator=gen, device="cuda")
    value = diffcomb.soft_dtw(x, y, 0.1)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(x.grad).all()
    cpu = diffcomb.soft_dtw(x[:1].detach().cpu().double(), y[:1].cpu().double(), 0.1)
    assert_close(value[:1].double().cpu(), cpu, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bandwidth", [None, 4])
def test_second_order_and_hard_dtw_match_cpu(dtype, bandwidth):
    # The hard DTW (gamma = 0), the sharp variants (second-order pass), the expected alignment and
    # its backward (Hessian-vector product), the mean cost and double backward, on both devices.
    gen = torch.Generator().manual_seed(14)
    C = (torch.rand(3, 30, 27, generator=gen, dtype=torch.float64) * 2).to(dtype)
    G = torch.randn(3, 30, 27, generator=gen, dtype=torch.float64).to(dtype)
    x = torch.randn(3, 12, 2, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(3, 10, 2, generator=gen, dtype=torch.float64).to(dtype)
    kw = dict(bandwidth=bandwidth)
    cost_fns = [lambda c: diffcomb.soft_dtw_from_cost(c, 0.0, **kw),
                lambda c: diffcomb.sharp_soft_dtw_from_cost(c, 0.3, **kw),
                lambda c: (diffcomb.soft_dtw_alignment(c, 0.3, **kw) * G.to(c.device)).sum((-2, -1)),
                lambda c: diffcomb.mean_cost_from_cost(c, **kw)]
    for fn in cost_fns:
        value_cpu, grads_cpu = _grad(fn, C)
        value_gpu, grads_gpu = _grad(fn, C.cuda())
        assert_close(value_gpu, value_cpu, **TOL[dtype])
        assert_close(grads_gpu[0], grads_cpu[0], **TOL[dtype])
    for fn in (lambda a, b: diffcomb.sharp_soft_dtw_divergence(a, b, 0.3, **kw),
               lambda a, b: diffcomb.soft_dtw(a, b, 0.0, **kw),
               lambda a, b: diffcomb.mean_cost_divergence(a, b, **kw)):
        value_cpu, grads_cpu = _grad(fn, x, y)
        value_gpu, grads_gpu = _grad(fn, x.cuda(), y.cuda())
        assert_close(value_gpu, value_cpu, **TOL[dtype])
        for g_gpu, g_cpu in zip(grads_gpu, grads_cpu):
            assert_close(g_gpu, g_cpu, **TOL[dtype])
    if dtype == torch.float64:
        c = C[:, :6, :5].cuda().requires_grad_()
        torch.autograd.gradgradcheck(lambda t: diffcomb.soft_dtw_from_cost(t, 0.7, **kw), (c,))
        torch.autograd.gradcheck(lambda t: diffcomb.sharp_soft_dtw_from_cost(t, 0.7, **kw), (c,))


# ------------------------------------------------------------------------------------------------
# Issue 12, item 4 on the GPU: the same header math, the CUDA status and work-size paths.


def test_huge_costs_keep_a_probability_flow_on_cuda():
    # Tied huge costs (near branch) and many ties at 1e14 (far branch): E in [0, 1] with the
    # whole flow at (1, 1); at moderate scale (1e5) CUDA and CPU run the same formulas.
    C = torch.full((2, 21, 3), 1e15, dtype=torch.float64, device="cuda")
    E = diffcomb.soft_dtw_alignment(C, 1.0).cpu()
    assert float(E.min()) >= 0.0 and float(E.max()) <= 1.0 + 1e-12
    assert_close(E.sum(-1), torch.ones(2, 21, dtype=torch.float64), rtol=0, atol=1e-12)
    assert_close(diffcomb.sharp_soft_dtw_from_cost(C, 1.0).cpu(), torch.full((2,), 21e15, dtype=torch.float64),
                 rtol=1e-12)
    gen = torch.Generator().manual_seed(15)
    for scale in (1e5, 1e14):
        C = torch.randint(0, 3, (3, 300, 280), generator=gen).to(torch.float64) * scale
        E = diffcomb.soft_dtw_alignment(C.cuda(), 1.0, bandwidth=40).cpu()
        assert float(E.min()) >= 0.0 and float(E.max()) <= 1.0 + 1e-12
        assert_close(E[:, 0, 0], torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
        if scale == 1e5:
            assert_close(E, diffcomb.soft_dtw_alignment(C, 1.0, bandwidth=40), rtol=0, atol=1e-10)


def test_huge_bandwidth_and_overflow_on_cuda():
    # bandwidth = sys.maxsize sizes the work array and the tiles as no band; finite costs whose
    # sums overflow give +inf and NaN derivatives (status 4), other pairs unaffected.
    gen = torch.Generator().manual_seed(16)
    C = torch.rand(2, 300, 270, generator=gen, dtype=torch.float64).cuda()
    for fn in (diffcomb.soft_dtw_from_cost, diffcomb.sharp_soft_dtw_from_cost):
        wide, (g_wide,) = _grad(lambda c: fn(c, 0.5, bandwidth=sys.maxsize), C)
        free, (g_free,) = _grad(lambda c: fn(c, 0.5), C)
        assert_close(wide, free, rtol=1e-14, atol=0)
        assert_close(g_wide, g_free, rtol=1e-14, atol=1e-14)
    C = torch.full((2, 3, 3), 1e308, dtype=torch.float64)
    C[1] = torch.rand(3, 3, generator=gen, dtype=torch.float64)
    value, (grad,) = _grad(lambda c: diffcomb.soft_dtw_from_cost(c, 1.0), C.cuda())
    assert value[0].item() == math.inf and torch.isnan(grad[0]).all() and torch.isfinite(grad[1]).all()
    sharp, (sgrad,) = _grad(lambda c: diffcomb.sharp_soft_dtw_from_cost(c, 1.0), C.cuda())
    assert math.isnan(sharp[0].item()) and torch.isnan(sgrad[0]).all() and torch.isfinite(sgrad[1]).all()
    x = torch.full((1, 50, 1), 1e153, dtype=torch.float64)
    value, (gx, _) = _grad(lambda a, b: diffcomb.soft_dtw(a, b, 1.0), x.cuda(), -x.cuda())
    assert value.item() == math.inf and torch.isnan(gx).all()


def test_devices_and_barycenter_on_cuda():
    x = torch.randn(2, 6, 2, device="cuda")
    y = torch.randn(2, 5, 2, device="cuda")
    with pytest.raises(RuntimeError, match=r"diffcomb\.soft_dtw: all tensor arguments must be on the same device"):
        diffcomb.soft_dtw(x, y.cpu())
    with pytest.raises(RuntimeError, match=r"diffcomb\.soft_dtw_divergence: all tensor arguments"):
        diffcomb.soft_dtw_divergence(x, y, x_lengths=torch.tensor([6, 3]))
    with pytest.raises(RuntimeError, match="lengths_x is on cpu"):
        torch.ops.diffcomb.soft_dtw_cost(torch.rand(2, 6, 5, device="cuda"), torch.tensor([6, 3]), None, 0.5, -1,
                                         False)
    # The default weights used to be made on the CPU.
    Y = torch.randn(3, 8, 2, device="cuda", dtype=torch.float64)
    X = diffcomb.soft_dtw_barycenter(Y, 0.5, max_iter=20)
    assert X.device.type == "cuda"
    assert_close(X.cpu(), diffcomb.soft_dtw_barycenter(Y.cpu(), 0.5, max_iter=20), rtol=1e-6, atol=1e-6)
    # Broadcast lengths in a divergence's self terms.
    lx = torch.tensor([[6, 3], [2, 6]], device="cuda")
    value = diffcomb.soft_dtw_divergence(x[:, None], y[None], 0.5, x_lengths=lx)
    expected = diffcomb.soft_dtw_divergence(x[:, None].cpu(), y[None].cpu(), 0.5, x_lengths=lx.cpu())
    assert_close(value.cpu(), expected, rtol=1e-4, atol=1e-4)
