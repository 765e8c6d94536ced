"""The CPU's kernel-domain (scaling) Sinkhorn iterations (csrc/sinkhorn/cpu_scaling.h) against the
log-domain driver (forward.h) on the same problems.

The plain forward entry point (``sinkhorn_forward``) serves small problems (n m < 2^14) whose
cost range (max C - min C) / eps is at most 100 in the kernel domain; the extended entry point
(``sinkhorn_forward_ext``) always iterates in the log domain, so with plain options (balanced, no
epsilon scaling, no warm start) it is the reference here: the same updates, checks and recorded
iterates, computed in the other domain. Results must agree to the rounding of the dtype, n_iter
exactly in float64 (in float32 a check whose error lies within rounding of tol may stop one check
apart: verified to be that, below)."""

from __future__ import annotations

import math

import pytest
import torch

import diffcomb
from diffcomb import _native
from tests.conftest import assert_close

F64 = torch.float64
RANGE = 100.0  # cpu_scaling.h, kScalingRange


def _forward(C, a, b, eps, max_iter, tol, check_every, *, log_domain, hist=True):
    """Both raw CPU entry points on contiguous (B, n, m) problems: a dict of their outputs."""
    batch, n, m = C.shape
    out = dict(P=torch.full_like(C, -7.0), f=C.new_full((batch, n), -7.0), g=C.new_full((batch, m), -7.0),
               cost=C.new_full((batch,), -7.0), n_iter=torch.full((batch,), -7, dtype=torch.int64),
               err=torch.full((batch,), -7.0, dtype=F64),
               fh=C.new_zeros((batch, max_iter if hist else 0, n)),
               gh=C.new_zeros((batch, max_iter + 1 if hist else 0, m)))
    addr = _native.address
    args = [addr(t) for t in (C, a, b, out["P"], out["f"], out["g"], out["cost"], out["n_iter"], out["err"],
                              out["fh"], out["gh"])]
    module, code, threads = _native.cpu(), _native.dtype_code(C), torch.get_num_threads()
    if log_domain:
        params = torch.tensor([eps, eps, math.inf, math.inf, 0.0], dtype=F64).expand(batch, 5).contiguous()
        module.sinkhorn_forward_ext(*args, 0, 0, addr(params), 1.0, batch, n, m, max_iter, tol, check_every, code,
                                    threads)
    else:
        module.sinkhorn_forward(*args, batch, n, m, eps, max_iter, tol, check_every, code, threads)
    return out


def _problems(gen, batch, n, m, dtype, *, spread=1.0, mass=1.0, zeros=False):
    """Random costs in [0, spread) (each problem's range pinned to exactly spread) and random
    positive weights of total mass `mass` (with a zero weight on each side when asked)."""
    C = torch.rand(batch, n, m, generator=gen, dtype=F64) * spread
    if n * m > 1:
        C[:, 0, 0], C.view(batch, -1)[:, -1] = 0.0, spread
    a = torch.rand(batch, n, generator=gen, dtype=F64) ** 3 + 1e-3
    b = torch.rand(batch, m, generator=gen, dtype=F64) ** 3 + 1e-3
    if zeros and n > 1 and m > 1:
        a[:, n // 2], b[:, m // 3] = 0.0, 0.0
    a, b = a / a.sum(-1, keepdim=True) * mass, b / b.sum(-1, keepdim=True) * mass
    return C.to(dtype), a.to(dtype), b.to(dtype)


def _reference(C, a, b, eps, max_iter, tol, check_every, hist=True):
    """The log domain in float64 on the same values (the kernel domain computes in float64 for
    float32 problems too, so it is compared with this, to the rounding of its float32 outputs)."""
    return _forward(C.double(), a.double(), b.double(), eps, max_iter, tol, check_every, log_domain=True, hist=hist)


def _tolerances(dtype):
    return (1e-11, 1e-13) if dtype == F64 else (2e-6, 2e-7)


def _assert_same(k, ref, dtype, rows=None):
    """Every output but err (compared by the callers) to the dtype's rounding; atol relative to the
    largest value compared (assert_close)."""
    rtol, atol = _tolerances(dtype)
    pick = (lambda t: t) if rows is None else (lambda t: t[rows])
    for key in ("P", "f", "g", "cost", "fh", "gh"):
        assert_close(pick(k[key]), pick(ref[key]), dtype, rtol=rtol, atol=atol, msg=key)
    assert torch.equal(pick(k["n_iter"]), pick(ref["n_iter"]))


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(12, 16, 16), (6, 5, 9), (4, 1, 7), (4, 7, 1), (3, 1, 1), (2, 33, 3)], ids=str)
@pytest.mark.parametrize("s", [0.5, 10.0, 60.0, 99.5])
def test_kernel_domain_matches_log_domain_fixed_iterations(gen, dtype, shape, s):
    """tol = 0: exactly max_iter iterations; every output and every recorded iterate agree."""
    eps = 1.0 / s
    C, a, b = _problems(gen, *shape, dtype, zeros=True)
    for max_iter in (1, 2, 25):
        k = _forward(C, a, b, eps, max_iter, 0.0, 10, log_domain=False)
        limit = 1 if 1 in shape[1:] else max_iter  # n = 1 or m = 1: one iteration is exact
        assert k["n_iter"].tolist() == [limit] * shape[0]
        assert bool(k["err"].isnan().all())
        _assert_same(k, _reference(C, a, b, eps, max_iter, 0.0, 10), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("check_every", [1, 3, 10])
@pytest.mark.parametrize("s", [2.0, 20.0, 90.0])
def test_kernel_domain_matches_log_domain_with_tolerance(gen, dtype, check_every, s):
    """tol > 0: the same checks at the same iterations, the same n_iter, the same errors."""
    eps, tol = 1.0 / s, (1e-4 if dtype == torch.float32 else 1e-7)
    C, a, b = _problems(gen, 40, 9, 11, dtype, zeros=True)
    k = _forward(C, a, b, eps, 3000, tol, check_every, log_domain=False)
    ref = _reference(C, a, b, eps, 3000, tol, check_every)
    assert bool((k["err"] <= tol).sum() >= 30)  # most converge, some stop at max_iter: both compared
    assert_close(k["err"], ref["err"], F64, rtol=1e-9, atol=1e-13)  # sums of |q_new / q_old - 1| terms
    _assert_same(k, ref, dtype)


def test_float32_kernel_domain_is_at_least_as_accurate(gen):
    """float32 problems: the kernel domain (float64 inside) is within its outputs' rounding of the
    float64 solution; the float32 log domain rounds every exponent and, on a slowly converging
    problem, drifts further (measured: 100x)."""
    C, a, b = _problems(gen, 20, 9, 11, torch.float32, zeros=True)
    eps = 1.0 / 90.0
    k = _forward(C, a, b, eps, 700, 0.0, 1, log_domain=False)
    log32 = _forward(C, a, b, eps, 700, 0.0, 1, log_domain=True)
    ref = _reference(C, a, b, eps, 700, 0.0, 1)
    for key in ("P", "f", "g", "cost"):
        mine, theirs = (float((x[key].double() - ref[key]).abs().max()) for x in (k, log32))
        assert mine <= theirs + 1e-7, key
        assert mine <= 1e-7 * max(1.0, float(ref[key].abs().max())), key


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("mass", [1e-20, 1e-3, 1e4, 1e20])
def test_kernel_domain_at_the_range_bound_and_extreme_masses(gen, dtype, mass):
    """Just below and above the bound on (max C - min C) / eps, with masses far from 1 (above the
    bound the plain entry point iterates in the log domain itself: the same bits as the reference)."""
    C, a, b = _problems(gen, 6, 12, 10, dtype, mass=mass, zeros=True)
    for s in (RANGE * (1 - 1e-6), RANGE * (1 + 1e-6)):
        eps = 1.0 / s
        k = _forward(C, a, b, eps, 60, 1e-9 * mass, 7, log_domain=False)
        if s < RANGE:
            _assert_same(k, _reference(C, a, b, eps, 60, 1e-9 * mass, 7), dtype)
        else:
            ref = _forward(C, a, b, eps, 60, 1e-9 * mass, 7, log_domain=True)
            for key in k:
                assert torch.equal(k[key], ref[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_out_of_range_iterates_fall_back_to_the_log_domain(dtype):
    """Weights whose scalings leave [2^-600, 2^600] (float64 masses of 1e-300, where q = K b starts
    below the range; float32 masses of 1e30 and 1e-30, whose u = a / q grows past it within a few
    iterations) and a problem without mass on one side (r = K^T u = 0, the log domain's +inf) are
    solved in the log domain from the start: the same bits as the reference, the recorded iterates
    the kernel domain had written reset (rows past n_iter stay 0)."""
    gen = torch.Generator().manual_seed(5)
    C, a, b = _problems(gen, 3, 6, 5, dtype, spread=1.0)
    if dtype == F64:
        a, b = a * 1e-300, b * 1e-300
    else:
        a, b = a * 1e30, b * 1e-30
    a[2] = 0.0
    for tol in (0.0, 1e-3):
        k = _forward(C, a, b, 0.05, 30, tol, 10, log_domain=False)
        ref = _forward(C, a, b, 0.05, 30, tol, 10, log_domain=True)
        for key in k:
            assert torch.equal(k[key].nan_to_num(-1.0), ref[key].nan_to_num(-1.0)), key


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_nan_and_inf_costs_and_weights(dtype):
    """Non-finite inputs give the log domain's NaN problem (SPEC 0); the other problems of the batch
    are served as usual."""
    gen = torch.Generator().manual_seed(6)
    C, a, b = _problems(gen, 4, 5, 6, dtype)
    C[0, 1, 2] = math.nan
    C[1, 0, 0] = math.inf
    a[2, 3] = math.nan
    k = _forward(C, a, b, 0.1, 40, 1e-5, 10, log_domain=False)
    for i in range(3):
        assert bool(k["P"][i].isnan().all()) and bool(k["f"][i].isnan().all()) and bool(k["cost"][i].isnan())
        assert int(k["n_iter"][i]) == 0 and bool(k["err"][i].isnan())
    _assert_same(k, _reference(C, a, b, 0.1, 40, 1e-5, 10), dtype, rows=slice(3, 4))


def test_spec_values_through_the_kernel_domain():
    """SPEC 7.4: a = b = [0.5, 0.5], C = [[0, 1], [1, 0]] (s = 1 / eps is 1 and 10: both served)."""
    C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    out = diffcomb.sinkhorn(C, epsilon=1.0, tol=1e-12)
    assert_close(out.plan, [[0.365529, 0.134471], [0.134471, 0.365529]], atol=1e-6)
    assert_close(out.cost, 0.379885, atol=1e-6)
    out = diffcomb.sinkhorn(C, epsilon=0.1, tol=1e-12)
    p11 = 1.0 / (2.0 * (1.0 + math.exp(-10.0)))
    assert_close(out.plan[0, 0], p11, rtol=1e-12, atol=1e-15)
    assert_close(out.cost, 0.069310, atol=1e-6)


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
@pytest.mark.parametrize("max_iter, tol", [(40, 0.0), (3000, 1e-10)])
def test_gradients_match_the_log_domain(backward, max_iter, tol):
    """The public function's gradients through both domains (a zero warm start g = 0 takes the
    extended, log-domain entry point and starts from the same state): the unrolled backward replays
    the recorded iterates, the implicit one the plan."""
    gen = torch.Generator().manual_seed(7)
    C, a, b = _problems(gen, 3, 7, 6, F64, zeros=True)
    G = torch.randn(3, 7, 6, generator=gen, dtype=F64)
    grads = []
    for init in (None, (None, torch.zeros(3, 6, dtype=F64))):
        Cg, ag, bg = (t.clone().requires_grad_() for t in (C, a, b))
        out = diffcomb.sinkhorn(Cg, ag, bg, 0.05, max_iter=max_iter, tol=tol, backward=backward, init=init)
        loss = (out.plan * G).sum() + out.cost.sum()
        grads.append((out, torch.autograd.grad(loss, (Cg, ag, bg))))
    (ok, gk), (ol, gl) = grads
    assert ok.n_iter.tolist() == ol.n_iter.tolist()
    assert_close(ok.plan, ol.plan, rtol=1e-11, atol=1e-13)
    for x, y in zip(gk, gl):
        assert_close(x, y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_untracked_calls_take_the_implementation_directly(backward):
    """solve() without anything to differentiate calls the op's implementation (no iterates
    recorded); lean_path(False) takes the NativeOp: the same bits, the same warning, and the
    differentiable calls unchanged."""
    from diffcomb._autodiff import lean_path

    gen = torch.Generator().manual_seed(8)
    C, a, b = _problems(gen, 3, 6, 7, torch.float32, zeros=True)
    results = []
    for lean in (True, False):
        with lean_path(lean):
            with pytest.warns(UserWarning, match="did not converge in 3 of 3") as record:
                out = diffcomb.sinkhorn(C, a, b, 0.05, max_iter=4, tol=1e-9, backward=backward)
            rank = diffcomb.sinkhorn_rank(C[:, 0], 0.1, backward=backward)
            Cg = C.clone().requires_grad_()
            tracked = diffcomb.sinkhorn(Cg, a, b, 0.05, max_iter=30, tol=0.0, backward=backward)
            (grad,) = torch.autograd.grad((tracked.plan * C).sum(), Cg)
            results.append((*out, rank, tracked.plan.detach(), grad, str(record[0].message)))
    for x, y in zip(*results):
        assert x == y if isinstance(x, str) else torch.equal(x, y)
