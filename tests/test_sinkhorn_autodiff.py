"""The Sinkhorn family's derivatives beyond the first-order backward (the op x mode matrix is
tests/test_autodiff_modes.py with tests/autodiff_cases/sinkhorn.py): the implicit system's solve
against a dense pseudo-inverse, forward mode against finite differences with zero weights, the
straight-through Gumbel-Sinkhorn under torch.func, opcheck and torch.compile of the new op, and the
CUDA paths against the CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.func as F

import diffcomb
from diffcomb._sinkhorn_ops import balanced_damping, solve_system
from tests.conftest import CUDA_SKIP_REASON, HAS_CUDA, assert_close

F64 = torch.float64


def _plan(gen, batch=2, n=4, m=5, dtype=F64, device="cpu"):
    C = torch.rand(batch, n, m, generator=gen, dtype=F64)
    a = torch.randn(batch, n, generator=gen, dtype=F64).softmax(-1)
    b = torch.randn(batch, m, generator=gen, dtype=F64).softmax(-1)
    P = diffcomb.sinkhorn(C, a, b, 0.4, tol=1e-6).plan  # its own marginals differ from a, b by tol
    return P.to(dtype=dtype, device=device)


def _dense(P: torch.Tensor, lam=(1.0, 1.0)) -> torch.Tensor:
    """H = [[diag(P 1) / lam_a, P], [P^T, diag(P^T 1) / lam_b]] (B, n + m, n + m)."""
    top = torch.cat((torch.diag_embed(P.sum(-1) / lam[0]), P), -1)
    bottom = torch.cat((P.transpose(-1, -2), torch.diag_embed(P.sum(-2) / lam[1])), -1)
    return torch.cat((top, bottom), -2)


SOLVE = solve_system


def test_solve_is_the_pseudo_inverse(gen):
    P = _plan(gen)
    w = torch.randn(2, 9, generator=gen, dtype=F64)
    expected = torch.linalg.pinv(_dense(P)) @ w.unsqueeze(-1)
    assert_close(SOLVE(P, w), expected.squeeze(-1), rtol=1e-8, atol=1e-9)


def test_solve_derivatives(gen):
    P = _plan(gen).requires_grad_()
    w = torch.randn(2, 9, generator=gen, dtype=F64, requires_grad=True)
    # H^+ as a function of P and w: the dense pseudo-inverse is the reference of every derivative
    assert torch.autograd.gradcheck(SOLVE, (P, w))
    assert torch.autograd.gradgradcheck(SOLVE, (P, w))
    tP, tw = torch.randn_like(P), torch.randn_like(w)
    dense = lambda P, w: (torch.linalg.pinv(_dense(P)) @ w.unsqueeze(-1)).squeeze(-1)
    assert_close(F.jvp(SOLVE, (P.detach(), w.detach()), (tP, tw))[1],
                 F.jvp(dense, (P.detach(), w.detach()), (tP, tw))[1], rtol=1e-6, atol=1e-8)
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn_implicit_solve, (P, w, balanced_damping(P)))


@pytest.mark.parametrize("lam", [(0.7, 0.4), (1.0, 0.6), (0.5, 1.0)])
def test_damped_solve_and_its_derivatives(gen, lam):
    # unbalanced transport: H's diagonal divided by the damping; H is definite, so x = H^-1 w
    P = _plan(gen).requires_grad_()
    w = torch.randn(2, 9, generator=gen, dtype=F64, requires_grad=True)
    damping = torch.tensor(lam, dtype=F64).expand(2, 2).contiguous()
    dense = lambda P, w: torch.linalg.solve(_dense(P, lam), w.unsqueeze(-1)).squeeze(-1)
    assert_close(SOLVE(P, w, damping), dense(P, w), rtol=1e-8, atol=1e-9)
    solve = lambda P, w: SOLVE(P, w, damping)
    assert torch.autograd.gradcheck(solve, (P, w))
    assert torch.autograd.gradgradcheck(solve, (P, w))
    tP, tw = torch.randn_like(P), torch.randn_like(w)
    assert_close(F.jvp(solve, (P.detach(), w.detach()), (tP, tw))[1],
                 F.jvp(dense, (P.detach(), w.detach()), (tP, tw))[1], rtol=1e-6, atol=1e-8)
    torch.library.opcheck(torch.ops.diffcomb.sinkhorn_implicit_solve, (P, w, damping))


def test_forward_mode_with_a_zero_weight_matches_finite_differences(gen):
    # a zero weight held at 0 (the tangent keeps it there): the plan's directional derivative is exact
    C = torch.rand(2, 4, 5, generator=gen, dtype=F64)
    a = torch.tensor([0.0, 0.2, 0.3, 0.5], dtype=F64).expand(2, 4)
    b = torch.randn(2, 5, generator=gen, dtype=F64).softmax(-1)
    tC = torch.randn_like(C)

    def plan(C):
        return diffcomb.sinkhorn(C, a, b, 0.5, tol=1e-13).plan

    tangent = F.jvp(plan, (C,), (tC,))[1]
    fd = (plan(C + 1e-6 * tC) - plan(C - 1e-6 * tC)) / 2e-6
    assert_close(tangent, fd, rtol=1e-6, atol=1e-8)
    assert (tangent[:, 0] == 0).all()


@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_hessian_of_the_cost_is_the_plan_jacobian(gen, backward):
    # d^2 OT / dC^2 = dP / dC (SPEC 4.2): the Hessian by torch.func against the plan's Jacobian
    C = torch.rand(3, 4, generator=gen, dtype=F64)
    kw = dict(tol=1e-13) if backward == "implicit" else dict(max_iter=400, tol=0.0, backward="unroll")
    hess = F.hessian(lambda C: diffcomb.sinkhorn(C, epsilon=0.5, **kw).cost)(C)
    jac = F.jacfwd(lambda C: diffcomb.sinkhorn(C, epsilon=0.5, **kw).plan)(C)
    assert_close(hess, jac, rtol=1e-7, atol=1e-9)


def test_straight_through_gumbel_sinkhorn_under_torch_func(gen):
    # hard=True: the assignment forward, the soft sample's derivatives in every mode
    X = torch.randn(2, 4, 4, generator=gen, dtype=F64)
    V = torch.randn_like(X)
    soft = lambda X: diffcomb.gumbel_sinkhorn(X, 0.7, 15, noise=False)
    hard = lambda X: diffcomb.gumbel_sinkhorn(X, 0.7, 15, noise=False, hard=True)
    out, tangent = F.jvp(hard, (X,), (V,))
    assert ((out == 0) | (out == 1)).all() and (out.sum(-1) == 1).all()
    assert_close(tangent, F.jvp(soft, (X,), (V,))[1])
    assert_close(F.grad(lambda X: (hard(X) * V).sum())(X), F.grad(lambda X: (soft(X) * V).sum())(X))
    stacked = torch.stack([X, X + 0.3 * V])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")
        batched = F.vmap(hard)(stacked)
    assert_close(batched, torch.stack([hard(X), hard(X + 0.3 * V)]))


def test_compile_forward_mode_and_double_backward(gen):
    C = torch.rand(2, 3, 4, generator=gen, dtype=F64, requires_grad=True)

    def hvp_value(C):
        (g,) = torch.autograd.grad(diffcomb.sinkhorn(C, epsilon=0.5, tol=1e-12).plan.square().sum(), C,
                                   create_graph=True)
        return (g * g).sum()

    compiled = torch.compile(lambda C: diffcomb.sinkhorn(C, epsilon=0.5, tol=1e-12).plan.square().sum(),
                             fullgraph=True, backend="aot_eager")
    (g_compiled,) = torch.autograd.grad(compiled(C), C)
    (g_eager,) = torch.autograd.grad(diffcomb.sinkhorn(C, epsilon=0.5, tol=1e-12).plan.square().sum(), C)
    assert_close(g_compiled, g_eager)
    (h,) = torch.autograd.grad(hvp_value(C), C)
    expected = F.jvp(F.grad(lambda C: diffcomb.sinkhorn(C, epsilon=0.5, tol=1e-12).plan.square().sum()),
                     (C.detach(),), (2 * g_eager,))[1]
    assert_close(h, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cuda_solve_and_forward_mode_match_cpu(gen, dtype):
    P = _plan(gen, 3, 7, 4, dtype)
    w = torch.randn(3, 11, generator=gen, dtype=F64).to(dtype)
    rtol = 1e-8 if dtype == F64 else 1e-3
    assert_close(SOLVE(P.cuda(), w.cuda()).cpu(), SOLVE(P, w), rtol=rtol, atol=rtol)
    C = torch.rand(3, 7, 4, generator=gen, dtype=dtype)
    tC = torch.randn_like(C)
    plan = lambda C: diffcomb.sinkhorn(C, epsilon=0.4).plan
    assert_close(F.jvp(plan, (C.cuda(),), (tC.cuda(),))[1].cpu(), F.jvp(plan, (C,), (tC,))[1], rtol=rtol, atol=rtol)
