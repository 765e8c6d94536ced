"""Every public differentiable op under every autodiff mode: the op x mode x dtype matrix.

The cases live in tests/autodiff_cases/<family>.py. For each case and mode:
- grad / vjp / jacrev: torch.func against torch.autograd.grad with the same cotangent;
- jacfwd / jvp / forward_ad: forward mode against the reverse-mode Jacobian (and, in float64,
  against central finite differences);
- vmap: torch.vmap of the op equals the loop over the samples, with no fallback warning;
- gradgrad: double backward: gradgradcheck in float64; in float32 the Hessian-vector product by
  double backward equals jacfwd of the gradient.
Modes a case lists as undefined must raise its documented error.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import pytest
import torch
import torch.func as F
from torch.autograd import forward_ad

from diffcomb._autodiff import lean_path
from tests import autodiff_cases
from tests.autodiff_cases import MODES, Case
from tests.conftest import DEVICES, TOLERANCES


def _all_cases() -> list[Case]:
    cases = []
    for info in pkgutil.iter_modules(autodiff_cases.__path__):
        module = importlib.import_module(f"tests.autodiff_cases.{info.name}")
        cases.extend(module.CASES)
    return cases


CASES = _all_cases()


def _seeded(name: str, device: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(name)) % 2**31)


def _outputs(out) -> tuple[torch.Tensor, ...]:
    outs = out if isinstance(out, tuple) else (out,)
    return tuple(o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point())


def _scalar(case: Case, cotangents):
    """The function <cotangents, case(*x)>, a scalar."""

    def f(*x):
        return sum((o * c).sum() for o, c in zip(_outputs(case.fn(*x)), cotangents))

    return f


def _close(actual, expected, dtype, case: Case, what: str) -> None:
    rtol, atol = TOLERANCES[dtype]
    atol = case.atol.get(dtype, atol)
    for a, e in zip(actual, expected):
        scale = max(float(e.abs().max()) if e.numel() else 1.0, 1.0)
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol * scale, msg=lambda m: f"{case.name} {what}: {m}")


def _reference(case: Case, x, cotangents):
    """torch.autograd's gradient of <cotangents, f(x)>."""
    leaves = [t.detach().requires_grad_() for t in x]
    value = _scalar(case, cotangents)(*leaves)
    return torch.autograd.grad(value, leaves, allow_unused=True, materialize_grads=True)


def _jacobian_vector(case: Case, x, v):
    """J v through reverse mode (one vjp per output element is too many: use the double-vjp trick)."""
    leaves = [t.detach().requires_grad_() for t in x]
    outs = _outputs(case.fn(*leaves))
    us = [torch.zeros_like(o, requires_grad=True) for o in outs]
    grads = torch.autograd.grad(outs, leaves, us, create_graph=True, allow_unused=True, materialize_grads=True)
    return torch.autograd.grad(grads, us, v, allow_unused=True, materialize_grads=True)


def _finite_difference(case: Case, x, v, h=1e-6):
    plus = _outputs(case.fn(*[t + h * d for t, d in zip(x, v)]))
    minus = _outputs(case.fn(*[t - h * d for t, d in zip(x, v)]))
    return tuple((p - m) / (2 * h) for p, m in zip(plus, minus))


def _check(case: Case, mode: str, dtype: torch.dtype, device: str) -> None:
    gen = _seeded(case.name, device)
    x = tuple(t.to(dtype) for t in case.inputs(dtype, torch.device(device), gen))
    outs = _outputs(case.fn(*x))
    cot = tuple(torch.randn(o.shape, generator=gen, dtype=dtype, device=device) for o in outs)
    v = tuple(torch.randn(t.shape, generator=gen, dtype=dtype, device=device) for t in x)
    argnums = tuple(range(len(x)))
    if mode == "grad":
        _close(F.grad(_scalar(case, cot), argnums=argnums)(*x), _reference(case, x, cot), dtype, case, mode)
    elif mode == "vjp":
        _, pullback = F.vjp(lambda *a: _outputs(case.fn(*a)), *x)
        _close(pullback(cot), _reference(case, x, cot), dtype, case, mode)
    elif mode in ("jacrev", "jacfwd"):
        if mode == "jacrev":
            jac = F.jacrev(_scalar(case, cot), argnums=argnums)(*x)
        else:  # jacfwd runs the function under vmap: a stochastic case needs its randomness flag
            jac = F.jacfwd(_scalar(case, cot), argnums=argnums, randomness=case.randomness)(*x)
        _close(jac, _reference(case, x, cot), dtype, case, mode)
    elif mode in ("jvp", "forward_ad"):
        if mode == "jvp":
            tangent = F.jvp(lambda *a: _outputs(case.fn(*a)), x, v)[1]
        else:
            with forward_ad.dual_level():
                duals = [forward_ad.make_dual(t, d) for t, d in zip(x, v)]
                tangent = tuple(forward_ad.unpack_dual(o).tangent for o in _outputs(case.fn(*duals)))
        _close(tangent, _jacobian_vector(case, x, v), dtype, case, mode)
        if dtype == torch.float64 and case.finite_differences:
            _close(tangent, _finite_difference(case, x, v), dtype, case, f"{mode} vs finite differences")
    elif mode == "vmap":
        stacked = tuple(torch.stack([t + 0.1 * i * torch.randn(t.shape, generator=gen, dtype=dtype, device=device)
                                     for i in range(case.vmap_size)]) for t in x)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*performance drop.*")
            batched = _outputs(F.vmap(case.fn, randomness=case.randomness)(*stacked))
        looped = [_outputs(case.fn(*[s[i] for s in stacked])) for i in range(case.vmap_size)]
        _close(batched, tuple(torch.stack(o) for o in zip(*looped)), dtype, case, mode)
    elif mode == "gradgrad":
        if dtype == torch.float64:
            leaves = tuple(t.detach().requires_grad_() for t in x)
            assert torch.autograd.gradgradcheck(lambda *a: _outputs(case.fn(*a)), leaves)
        else:
            f = _scalar(case, cot)
            leaves = [t.detach().requires_grad_() for t in x]
            grads = torch.autograd.grad(f(*leaves), leaves, create_graph=True)
            # A gradient that does not depend on the inputs (a piecewise linear op, or an estimator with
            # fixed samples) has a zero derivative; autograd.grad refuses outputs that need no grad.
            live = [(g, d) for g, d in zip(grads, v) if g.requires_grad]
            hvp = tuple(torch.zeros_like(t) for t in x)
            if live:
                hvp = torch.autograd.grad([g for g, _ in live], leaves, [d for _, d in live], allow_unused=True,
                                          materialize_grads=True)
            expected = F.jvp(lambda *a: F.grad(f, argnums=argnums)(*a), x, v)[1]
            _close(hvp, expected, dtype, case, mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_mode(case: Case, mode: str, dtype: torch.dtype, device: str) -> None:
    if mode in case.undefined:
        with pytest.raises(RuntimeError, match=case.undefined[mode]):
            _check(case, mode, dtype, device)
    else:
        _check(case, mode, dtype, device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_gradgrad_on_the_checked_path(case: Case, dtype: torch.dtype) -> None:
    """Plain autograd calls take the lean eager path where it applies (diffcomb._autodiff); the
    gradgrad mode above runs on it, this one on the checked NativeOp path (the torch.func modes use
    the NativeOp path anyway)."""
    with lean_path(False):
        test_mode(case, "gradgrad", dtype, "cpu")
