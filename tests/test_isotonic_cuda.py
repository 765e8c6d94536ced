"""CPU vs CUDA agreement for the isotonic family (STYLE.md rule 15), and CUDA-only behaviour:
streams, device index, device checks. Every test here is marked `cuda` and skipped without a GPU
and a diffcomb built with CUDA (except the one that checks the error of a CPU-only build).

Shapes cover both CUDA strategies: many short rows (one thread / warp per row) and a few long rows
(the chunked PAV of SPEC 1.3, whose CPU twin is tested in test_isotonic.py).
"""

from __future__ import annotations

import pytest
import torch

import diffcomb
from diffcomb import _native
from tests.conftest import CUDA_SKIP_REASON, DTYPES, HAS_CUDA, assert_close, randn

pytestmark = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)

OPS = {
    "rank-l2-asc": lambda x, d: diffcomb.soft_rank(x, dim=d, regularization_strength=0.5),
    "rank-l2-desc": lambda x, d: diffcomb.soft_rank(x, dim=d, descending=True, regularization_strength=3.0),
    "rank-kl-asc": lambda x, d: diffcomb.soft_rank(x, dim=d, regularization="kl"),
    "rank-kl-desc": lambda x, d: diffcomb.soft_rank(x, dim=d, descending=True, regularization="kl",
                                                     regularization_strength=0.25),
    "sort-l2-asc": lambda x, d: diffcomb.soft_sort(x, dim=d, regularization_strength=0.5),
    "sort-l2-desc": lambda x, d: diffcomb.soft_sort(x, dim=d, descending=True),
    "sort-kl-asc": lambda x, d: diffcomb.soft_sort(x, dim=d, regularization="kl", regularization_strength=2.0),
    "sort-kl-desc": lambda x, d: diffcomb.soft_sort(x, dim=d, descending=True, regularization="kl"),
    "topk": lambda x, d: diffcomb.soft_topk(x, max(1, x.shape[d] // 3), dim=d, regularization_strength=2.0),
    "isotonic": lambda x, d: diffcomb.isotonic_regression(x, dim=d),
    "isotonic-weighted-dec": lambda x, d: diffcomb.isotonic_regression(x, x.detach().abs() + 0.5, dim=d,
                                                                       increasing=False),
    "quantile": lambda x, d: diffcomb.soft_quantile(x, [0.1, 0.5, 0.93], dim=d),
}

SHAPES = [
    pytest.param((1,), -1, id="n1"),
    pytest.param((3, 2), -1, id="3x2"),
    pytest.param((9, 32), -1, id="n32-rowwise"),  # the longest rows of the row-per-thread kernel
    pytest.param((9, 33), -1, id="n33-chunked"),  # the shortest rows of the chunked kernel
    pytest.param((4096, 7), -1, id="many-short"),
    pytest.param((64, 1500), -1, id="medium"),
    pytest.param((2, 100_000), -1, id="long"),
    pytest.param((3, 40_000, 2), 1, id="long-dim1"),
    pytest.param((0, 9), -1, id="empty-batch"),
]

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-9)}


def both_devices(fn, x_cpu, dim, g_cpu):
    results = []
    for device in ("cpu", "cuda"):
        x = x_cpu.to(device).requires_grad_()
        out = fn(x, dim)
        (grad,) = torch.autograd.grad(out, x, g_cpu.to(device)) if out.numel() else (torch.zeros_like(x),)
        results.append((out.detach().cpu(), grad.cpu()))
    return results


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", SHAPES)
@pytest.mark.parametrize("name", list(OPS))
def test_cpu_cuda_agree(dtype, shape, dim, name, gen):
    fn = OPS[name]
    n = shape[dim]
    # float values exactly representable in float32 after the /eps of every op (powers of two)
    x = (randn(gen, *shape, scale=max(2.0, n / 40)).float().double()).to(dtype)
    with torch.no_grad():
        probe = fn(x, dim)
    g = randn(gen, *probe.shape, dtype=dtype)
    (out_cpu, grad_cpu), (out_cuda, grad_cuda) = both_devices(fn, x, dim, g)
    assert_close(out_cuda, out_cpu, dtype, **TOL[dtype], msg="forward")
    assert_close(grad_cuda, grad_cpu, dtype, **TOL[dtype], msg="backward")


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["rank-l2-asc", "rank-kl-asc", "sort-l2-asc", "sort-kl-asc", "sort-kl-desc",
                                  "isotonic"])
@pytest.mark.parametrize("n", [5, 33, 64, 1000, 100_000])
def test_cpu_cuda_agree_on_exact_ties(dtype, name, n, gen):
    # Equally spaced values with unit gaps and eps = 1 (the defaults): the soft sort's isotonic input
    # is constant, every neighbour an exact tie (SPEC 1.3 merges ties). Also integer data with
    # repeated values. Block structure, hence the VJP, must not depend on the device's strategy.
    fn = OPS[name]
    ramp = torch.arange(n, dtype=torch.float64).repeat(2, 1)
    ramp[1] = ramp[1].flip(0)
    ties = torch.randint(-5, 6, (2, n), generator=gen).double()
    for x in (ramp, ties):
        x = x.to(dtype)
        g = randn(gen, *x.shape, dtype=dtype)
        (out_cpu, grad_cpu), (out_cuda, grad_cuda) = both_devices(fn, x, -1, g)
        assert_close(out_cuda, out_cpu, dtype, **TOL[dtype], msg="forward")
        assert_close(grad_cuda, grad_cpu, dtype, **TOL[dtype], msg="backward")


@needs_cuda
@pytest.mark.parametrize("name", list(OPS))
def test_non_finite_rows_on_cuda(name, gen):
    x = randn(gen, 5, 3000, device="cuda")
    x[1, 17] = float("nan")
    x[3, 2999] = float("inf")
    x.requires_grad_()
    out = OPS[name](x, -1)
    out_rows = out.movedim(0, -1) if name == "quantile" else out
    assert torch.isnan(out_rows[1]).all() and torch.isnan(out_rows[3]).all()
    assert torch.isfinite(out_rows[[0, 2, 4]]).all()
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert torch.isnan(grad[1]).all() and torch.isnan(grad[3]).all()
    assert torch.isfinite(grad[[0, 2, 4]]).all()


@needs_cuda
@pytest.mark.parametrize("name", list(OPS))
def test_runs_on_the_current_stream(name, gen):
    x = randn(gen, 8, 20_000, device="cuda", dtype=torch.float32)
    expected = OPS[name](x, -1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        xs = x.clone().requires_grad_()
        out = OPS[name](xs, -1)
        (grad,) = torch.autograd.grad(out, xs, torch.ones_like(out))
    side.synchronize()
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=0)
    xe = x.clone().requires_grad_()
    (grad_expected,) = torch.autograd.grad(OPS[name](xe, -1), xe, torch.ones_like(expected))
    torch.testing.assert_close(grad, grad_expected, rtol=0, atol=0)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_second_device(gen):
    x = randn(gen, 4, 5000, device="cuda:1", requires_grad=True)
    out = diffcomb.soft_rank(x, regularization="kl")
    assert out.device == x.device
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert grad.device == x.device
    x0 = x.detach().to("cuda:0").requires_grad_()
    torch.testing.assert_close(out.cpu(), diffcomb.soft_rank(x0, regularization="kl").cpu())


@needs_cuda
def test_device_mismatch_is_an_error():
    y = torch.randn(3, 5, device="cuda")
    with pytest.raises(RuntimeError, match="sample_weight"):
        diffcomb.isotonic_regression(y, torch.ones(3, 5))


@needs_cuda
def test_deterministic_on_cuda(gen):
    x = randn(gen, 4, 200_000, device="cuda", scale=1e3)
    for fn in OPS.values():
        results = []
        for _ in range(2):
            xi = x.clone().requires_grad_()
            out = fn(xi, -1)
            (grad,) = torch.autograd.grad(out, xi, torch.ones_like(out))
            results.append((out.detach(), grad))
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.skipif(not torch.cuda.is_available() or _native.cuda_available(),
                    reason="only for a GPU machine with a CPU-only diffcomb build")
def test_cuda_tensor_with_cpu_only_build_names_the_rebuild():
    with pytest.raises(RuntimeError, match="built without CUDA"):
        diffcomb.soft_rank(torch.randn(2, 3, device="cuda"))

