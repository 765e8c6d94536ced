"""One long row on the CPU (csrc/isotonic/cpu.cpp's long-row path, csrc/common/radix_sort.h's
11-bit radix, csrc/common/workspace.h): the fused argsort + chunked PAV (isotonic_sort_project)
and the long-row argsort give exactly the results of the separate steps (the serial chunked PAV of
solve_row_chunked with the long-row chunk) and numpy's stable argsort, on any number of threads,
for sizes around the thresholds, ties, signed zeros, NaN and inf rows (SPEC section 0), float32
and float64, both regularizations, both directions, rank and sort modes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import diffcomb
from diffcomb import _isotonic_lean as lean
from diffcomb import _isotonic_ops as ops
from diffcomb import _native

LONG_ROW, LONG_ROW_CHUNK = 1 << 16, 1 << 14
SIZES = (LONG_ROW - 1, LONG_ROW, LONG_ROW + 1, LONG_ROW + 2 * LONG_ROW_CHUNK + 5, 3 * LONG_ROW + 12345)
DTYPES = (torch.float32, torch.float64)


def with_threads(threads, f):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return f()
    finally:
        torch.set_num_threads(saved)


def make_rows(n, dtype, gen):
    """Gaussian; many exact ties (with signed zeros); a wide range (exponents far apart: many small
    buckets of the top digit); one top digit for every value (one bucket); one value."""
    x = torch.randn(5, n, generator=gen, dtype=torch.float64)
    x[1] = torch.round(x[1] * 4)
    x[1, ::7] = -0.0
    x[2] = x[2] * torch.exp(8 * torch.randn(n, generator=gen, dtype=torch.float64))
    x[3] = 1.0 + 0.2 * torch.rand(n, generator=gen, dtype=torch.float64)  # top 11 bits: one bucket
    x[4] = 2.5
    return x.to(dtype)


def sort_project(x, c, scale, out_scale, rank, kl):
    """The fused native call (what the lean path runs on the CPU)."""
    rows, n = x.shape
    out = torch.empty_like(x)
    perm = torch.empty((rows, n), dtype=torch.int32)
    starts = torch.empty((rows, n + 1), dtype=torch.int32)
    weights = torch.empty_like(x)
    _native.cpu().isotonic_sort_project(x.data_ptr(), c.data_ptr(), out.data_ptr(), perm.data_ptr(), starts.data_ptr(),
                                        weights.data_ptr(), rows, n, scale, out_scale, rank, kl,
                                        _native.dtype_code(x), torch.get_num_threads())
    return out, perm, starts, weights


def separate(x, c, scale, out_scale, rank, kl):
    """The same from the separate steps: argsort, then the serial PAV of the length's algorithm."""
    n = x.shape[-1]
    a, perm = ops.argsort_descending(x, scale)
    out, starts, weights = ops.project(a, c, perm, out_scale, rank, kl, chunk=LONG_ROW_CHUNK if n >= LONG_ROW else n)
    return out, perm, starts, weights, a


def numpy_order(x, scale):
    """numpy's stable argsort of scale * x, descending (ties in input order; -0 == +0)."""
    v = (x * scale).numpy()
    return np.stack([np.argsort(-row, kind="stable") for row in v])


def shared(kind, n, dtype, eps):
    rho = torch.arange(n, 0, -1, dtype=dtype)
    if kind == "rank":
        return rho
    return rho / eps


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_long_row_argsort_is_numpys_stable_order(n, dtype, gen):
    x = make_rows(n, dtype, gen)
    for scale in (1.0, -1.0, 0.5):
        want = numpy_order(x, scale)
        expected = torch.gather(x * scale, 1, torch.from_numpy(want)) + 0.0  # -0 sorts and returns as +0
        for threads in (1, 2, 3):
            values, perm = with_threads(threads, lambda: ops.argsort_descending(x, scale))
            assert np.array_equal(perm.numpy(), want), (scale, threads)
            assert torch.equal(values, expected), (scale, threads)
        for r in range(x.shape[0]):  # one row: sorted by a team of every thread
            for threads in (2, 3):
                values, perm = with_threads(threads, lambda: ops.argsort_descending(x[r:r + 1], scale))
                assert np.array_equal(perm[0].numpy(), want[r]) and torch.equal(values[0], expected[r]), (r, threads)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reg", ("l2", "kl"))
@pytest.mark.parametrize("kind", ("rank", "sort"))
def test_fused_long_row_equals_the_separate_steps(n, dtype, reg, kind, gen):
    x = make_rows(n, dtype, gen)
    kl = reg == "kl"
    for descending in (True, False):
        sign = 1.0 if descending else -1.0
        if kind == "rank":
            c = torch.log(shared("rank", n, dtype, 1.0)) if kl else shared("rank", n, dtype, 1.0)
            scale, out_scale, rank = -sign / 0.5, 1.0, True
        else:
            c = shared("sort", n, dtype, 0.5)
            scale, out_scale, rank = sign, sign, False
        want = separate(x, c, scale, out_scale, rank, kl)
        assert np.array_equal(want[1].numpy(), numpy_order(x, scale))
        for threads in (1, 2, 3):
            got = with_threads(threads, lambda: sort_project(x, c, scale, out_scale, rank, kl))
            for name, u, v in zip(("out", "perm", "starts", "weights"), got, want):
                assert torch.equal(u, v), (name, descending, threads)
        for r in range(x.shape[0]):  # one row: a team of every thread
            for threads in (2, 3):
                got = with_threads(threads, lambda: sort_project(x[r:r + 1], c, scale, out_scale, rank, kl))
                for name, u, v in zip(("out", "perm", "starts", "weights"), got, want):
                    assert torch.equal(u[0], v[r]), (name, r, descending, threads)
        # the values are the projection's (a sequential PAV agrees to rounding)
        if n < 2 * LONG_ROW:
            seq = ops.project(want[4], c, want[1], out_scale, rank, kl, chunk=n)
            tol = 1e-10 if dtype == torch.float64 else 2e-4
            torch.testing.assert_close(want[0], seq[0], rtol=tol, atol=tol * float(seq[0].abs().max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_long_row_non_finite_rows(dtype, gen):
    n = LONG_ROW + 77
    x = torch.randn(4, n, generator=gen, dtype=dtype)
    x[0, 5] = float("nan")
    x[1, n - 1] = float("inf")
    x[3, 0] = -float("inf")
    c = shared("sort", n, dtype, 1.0)
    want = separate(x, c, 1.0, 1.0, False, False)
    for r in range(4):  # one row: a team of every thread
        got = with_threads(2, lambda: sort_project(x[r:r + 1], c, 1.0, 1.0, False, False))
        assert all(torch.equal(u[0].nan_to_num(7.0), v[r].nan_to_num(7.0)) for u, v in zip(got, want)), r
    for threads in (1, 2, 3):
        out, perm, starts, weights = with_threads(threads, lambda: sort_project(x, c, 1.0, 1.0, False, False))
        for r in (0, 1, 3):
            assert torch.isnan(out[r]).all() and torch.isnan(weights[r]).all() and int(starts[r, -1]) == -1
            assert torch.equal(starts[r, :-1], torch.full((n,), n, dtype=torch.int32))
        assert torch.equal(perm, want[1]) and torch.equal(out[2], want[0][2]) and torch.equal(starts, want[2])
        assert torch.isfinite(out[2]).all()


def test_public_calls_on_long_rows(gen):
    # The lean path (the fused call) and the checked NativeOp path give the same tensors, forward and
    # backward, and the values are those of the sequential projection.
    n = LONG_ROW + 999
    x = torch.randn(2, n, generator=gen, dtype=torch.float64)
    x[1] = torch.round(x[1] * 3)
    g = torch.randn(2, n, generator=gen, dtype=torch.float64)
    for fn in (diffcomb.soft_sort, diffcomb.soft_rank):
        for reg in ("l2", "kl"):
            for descending in (True, False):
                for threads in (1, 2):
                    xa = x.clone().requires_grad_(True)
                    xb = x.clone().requires_grad_(True)
                    a = with_threads(threads, lambda: fn(xa, descending=descending, regularization=reg,
                                                         regularization_strength=0.3))
                    b = with_threads(threads, lambda: fn(xb.transpose(0, 1), dim=0, descending=descending,
                                                         regularization=reg, regularization_strength=0.3))
                    assert torch.equal(a, b.transpose(0, 1)), (fn.__name__, reg, descending, threads)
                    (a * g).sum().backward()
                    (b.transpose(0, 1) * g).sum().backward()
                    assert torch.equal(xa.grad, xb.grad), (fn.__name__, reg, descending, threads)
    # soft_sort (ascending by default) of distinct values at a small strength is the sorted row
    y = torch.randperm(n, generator=gen).to(torch.float64)
    assert torch.equal(diffcomb.soft_sort(y[None], regularization_strength=1e-3)[0], torch.sort(y)[0])


def test_long_shared_vector_slot(gen):
    # One slot keeps the last long shared vector: switching length, dtype or strength rebuilds it.
    n = LONG_ROW + 3
    x = torch.randn(1, n, generator=gen)
    for eps, dtype in ((1.0, torch.float32), (0.5, torch.float32), (0.5, torch.float64), (1.0, torch.float32)):
        xx = x.to(dtype)
        got = diffcomb.soft_sort(xx, regularization_strength=eps)
        c = shared("sort", n, dtype, eps)
        want = separate(xx, c, -1.0, -1.0, False, False)[0]  # ascending: sign -1
        assert torch.equal(got, want), (eps, dtype)
        assert torch.equal(lean._vector("rho_over", xx, eps), c)
    assert torch.equal(lean._vector("rho_over", x[:, :-1].contiguous(), 1.0), shared("sort", n - 1, torch.float32, 1.0))


def test_workspace_reuse_and_concurrent_calls(gen):
    # The kept work memory: rows of growing and shrinking length give the fresh results, and calls
    # from several Python threads at once (one borrows the kept block, the others allocate) too.
    rows = [torch.randn(1, n, generator=gen) for n in (3 * LONG_ROW, LONG_ROW, 2 * LONG_ROW + 1, LONG_ROW + 5)]
    cs = [shared("sort", r.shape[-1], torch.float32, 1.0) for r in rows]
    want = [separate(r, c, 1.0, 1.0, False, False)[:4] for r, c in zip(rows, cs)]
    for r, c, w in zip(rows, cs, want):
        assert all(torch.equal(u, v) for u, v in zip(sort_project(r, c, 1.0, 1.0, False, False), w))
    results = [None] * 8
    errors = []

    def work(k):
        try:
            i = k % len(rows)
            for _ in range(3):
                got = sort_project(rows[i], cs[i], 1.0, 1.0, False, False)
                assert all(torch.equal(u, v) for u, v in zip(got, want[i]))
            results[k] = True
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results)
