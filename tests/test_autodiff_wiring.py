"""diffcomb._autodiff: one wiring gives every autodiff mode (checked on a toy op with known derivatives).

The toy op y = p * w * x**2 (x rows, w shared) with an int32 side output, wired like the native ops.
The families' own op x mode matrix is tests/test_autodiff_modes.py.
"""

import warnings

import pytest
import torch
import torch.func as F
from torch.autograd import forward_ad

from diffcomb._autodiff import ROW, SHARED, define, not_differentiable, save


def _impl(x: torch.Tensor, w: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    return x * x * w * p, (x > 0).to(torch.int32)


def _fake(x, w, p):
    return torch.empty_like(x), torch.empty_like(x, dtype=torch.int32)


def _setup(ctx, inputs, output):
    x, w, p = inputs
    ctx.mark_non_differentiable(output[1])
    save(ctx, x, w)
    ctx.p = p


def _backward(ctx, g, _):
    x, w = ctx.saved_tensors
    return 2 * x * w * ctx.p * g, (x * x * ctx.p * g).sum(0), None


def _jvp(ctx, tx, tw, _):
    x, w = ctx.saved_tensors
    t = torch.zeros_like(x)
    if tx is not None:
        t = t + 2 * x * w * ctx.p * tx
    if tw is not None:
        t = t + x * x * ctx.p * tw
    return t, None


TOY = define("_test_toy_square", _impl, _fake, kinds=(ROW, SHARED, None), setup=_setup, backward=_backward,
             jvp=_jvp)


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


NO_JVP = define("_test_toy_no_jvp", _double, lambda x: torch.empty_like(x), kinds=(ROW,),
                setup=lambda ctx, inputs, output: None,
                backward=lambda ctx, g: 2 * g,
                jvp=not_differentiable("_test_toy_no_jvp", "forward-mode derivative", "for the test"))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(3, 4, generator=g, dtype=torch.float64),
            torch.rand(4, generator=g, dtype=torch.float64) + 0.5)


def _value(x, w):
    return TOY(x, w, 2.0)[0]


def test_grad_jvp_jacobians(data):
    x, w = data
    exact = 4 * x * w
    torch.testing.assert_close(F.grad(lambda x: _value(x, w).sum())(x), exact)
    torch.testing.assert_close(F.jvp(lambda x: _value(x, w), (x,), (torch.ones_like(x),))[1], exact)
    jr = F.jacrev(lambda x: _value(x, w))(x)
    jf = F.jacfwd(lambda x: _value(x, w))(x)
    torch.testing.assert_close(jr, jf)
    torch.testing.assert_close(jr.reshape(12, 12).diagonal(), exact.reshape(12))
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x, torch.ones_like(x))
        torch.testing.assert_close(forward_ad.unpack_dual(_value(dual, w)).tangent, exact)


def test_vmap_folds_rows_and_loops_shared(data):
    x, w = data
    stack = torch.randn(5, 3, 4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no per-sample fallback warning
        torch.testing.assert_close(F.vmap(lambda x: _value(x, w))(stack), stack * stack * w * 2.0)
        moved = stack.movedim(0, 2)
        torch.testing.assert_close(F.vmap(lambda x: _value(x, w), in_dims=2)(moved), stack * stack * w * 2.0)
        ws = torch.rand(5, 4, dtype=torch.float64)
        torch.testing.assert_close(F.vmap(lambda w: _value(x, w))(ws), torch.stack([x * x * v * 2.0 for v in ws]))


def test_second_order_and_checks(data):
    x, w = data
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    assert torch.autograd.gradcheck(_value, (x, w))
    assert torch.autograd.gradgradcheck(_value, (x, w))
    hess = F.hessian(lambda x: _value(x, w.detach()).sum())(x.detach())
    torch.testing.assert_close(hess.reshape(12, 12), torch.diag((4 * w.detach()).expand(3, 4).reshape(12)))
    torch.library.opcheck(torch.ops.diffcomb._test_toy_square, (x, w, 2.0))


def test_compile_uses_the_custom_op(data):
    x, w = data
    x = x.clone().requires_grad_()
    compiled = torch.compile(lambda x: _value(x, w).sum(), fullgraph=True, backend="aot_eager")
    compiled(x).backward()
    torch.testing.assert_close(x.grad, 4 * x.detach() * w)


def test_undefined_mode_raises(data):
    x, _ = data
    with pytest.raises(RuntimeError, match="diffcomb._test_toy_no_jvp: the forward-mode derivative is not defined"):
        F.jvp(NO_JVP, (x,), (torch.ones_like(x),))


def test_forward_over_forward_raises_instead_of_zeros(data):
    x, w = data
    with pytest.raises(RuntimeError, match="forward mode over forward mode"):
        F.jacfwd(F.jacfwd(lambda x: _value(x, w).sum()))(x)
    hess = F.jacrev(F.jacfwd(lambda x: _value(x, w).sum()))(x)  # reverse over forward holds
    torch.testing.assert_close(hess.reshape(12, 12), torch.diag((4 * w).expand(3, 4).reshape(12)))


def test_untracked_and_tracked_calls_agree(data):
    x, w = data
    plain = TOY(x, w, 2.0)[0]
    assert not plain.requires_grad
    leaf = x.clone().requires_grad_()
    tracked = TOY(leaf, w, 2.0)[0]
    assert tracked.requires_grad
    torch.testing.assert_close(plain, tracked.detach())
    with torch.no_grad():
        torch.testing.assert_close(TOY(leaf, w, 2.0)[0], plain)
