"""The lean eager path (diffcomb._autodiff, "The lean eager path") against the checked NativeOp path.

Every call is made twice, inside ``lean_path(True)`` and ``lean_path(False)``, and the results are
compared bit for bit: values, first derivatives (plain backward: the native VJP on the saved state),
double derivatives (create_graph=True: the NativeOp route), calls without a gradient, forward-mode
tangents of a backward, gradcheck / gradgradcheck in float64, and the errors of bad arguments (which
the lean predicates hand to the checked path). The grad_fn names show which path a call took.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.autograd import forward_ad

import diffcomb
from diffcomb._autodiff import lean_path
from tests.conftest import CUDA_SKIP_REASON, HAS_CUDA

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
SHAPES = [(7,), (3, 8), (2, 3, 33)]


def _isotonic_calls():
    return [
        ("soft_rank-l2", lambda x: diffcomb.soft_rank(x, regularization_strength=0.7)),
        ("soft_rank-l2-desc", lambda x: diffcomb.soft_rank(x, descending=True, regularization_strength=2)),
        ("soft_rank-kl", lambda x: diffcomb.soft_rank(x, dim=x.dim() - 1, regularization="kl")),
        ("soft_sort-l2", lambda x: diffcomb.soft_sort(x, regularization_strength=0.3)),
        ("soft_sort-kl-desc", lambda x: diffcomb.soft_sort(x, descending=True, regularization="kl")),
        ("soft_topk", lambda x: diffcomb.soft_topk(x, 3, regularization_strength=0.5)),
        ("isotonic-inc", lambda x: diffcomb.isotonic_regression(x)),
        ("isotonic-dec", lambda x: diffcomb.isotonic_regression(x, increasing=False)),
    ]


CALLS = _isotonic_calls()


def _run(fn, x: torch.Tensor, g: torch.Tensor, v: torch.Tensor):
    """(value, plain gradient, double-backward HVP, no-grad value, grad_fn name) of fn at x."""
    leaf = x.clone().requires_grad_()
    out = fn(leaf)
    name = type(out.grad_fn).__name__
    (grad,) = torch.autograd.grad(out, leaf, g)
    (graph_grad,) = torch.autograd.grad(fn(leaf), leaf, g, create_graph=True)
    hvp = torch.zeros_like(x)
    if graph_grad.requires_grad:
        (hvp,) = torch.autograd.grad(graph_grad, leaf, v, allow_unused=True, materialize_grads=True)
    with torch.no_grad():
        plain = fn(x)
    return (out.detach(), grad, graph_grad.detach(), hvp, plain), name


def _both(fn, x, g, v):
    with lean_path(True):
        lean, lean_name = _run(fn, x, g, v)
    with lean_path(False):
        checked, checked_name = _run(fn, x, g, v)
    for a, b in zip(lean, checked):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    return lean_name, checked_name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name,fn", CALLS, ids=[c[0] for c in CALLS])
def test_isotonic_family_bit_for_bit(name, fn, shape, dtype):
    gen = torch.Generator().manual_seed(len(name) * 31 + len(shape))
    x = torch.randn(shape, generator=gen, dtype=dtype)
    x.view(-1)[1] = x.view(-1)[0]  # a tie
    g, v = torch.randn(shape, generator=gen, dtype=dtype), torch.randn(shape, generator=gen, dtype=dtype)
    lean_name, checked_name = _both(fn, x, g, v)
    assert lean_name.startswith("_Projection") or lean_name.startswith("_Fit") or lean_name == "ExpBackward0"
    assert lean_name != checked_name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.1, 1])
@pytest.mark.parametrize("cost", ["sqeuclidean", "half_sqeuclidean", "log_augmented"])
def test_soft_dtw_bit_for_bit(cost, gamma, dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 6, 2, generator=gen, dtype=dtype)
    y = torch.randn(3, 5, 2, generator=gen, dtype=dtype)
    g = torch.randn(3, generator=gen, dtype=dtype)
    results = []
    for lean in (True, False):
        with lean_path(lean):
            xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
            out = diffcomb.soft_dtw(xs, ys, gamma, cost=cost)
            grads = torch.autograd.grad(out, (xs, ys), g)
            graph = torch.autograd.grad(diffcomb.soft_dtw(xs, ys, gamma, cost=cost), (xs, ys), g, create_graph=True)
            hvp = (torch.autograd.grad(graph[0].sum(), (xs, ys)) if gamma > 0 else ())
            only_x = torch.autograd.grad(diffcomb.soft_dtw(xs, y, gamma, cost=cost).sum(), xs)
            # One graph, three backward passes (the lean one hands its gradients to the first).
            kept = diffcomb.soft_dtw(xs, ys, gamma, cost=cost)
            again = [torch.autograd.grad(kept, (xs, ys), g, retain_graph=True) for _ in range(2)]
            again.append(torch.autograd.grad(kept, (xs, ys), 2 * g))
            for first, second in zip(again[0], again[1]):
                assert torch.equal(first, second)
            with torch.no_grad():
                plain = diffcomb.soft_dtw(x, y, gamma, cost=cost)
            results.append((out.detach(), *grads, *(t.detach() for t in graph), *hvp, *only_x, *again[0], *again[2],
                            plain))
            assert (type(out.grad_fn).__name__ == "_SeriesBackward") == lean
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_forward_mode_over_the_lean_backward():
    """A backward run with a dual upstream gradient (forward over reverse) leaves the native VJP
    for the NativeOp route, so the tangent is propagated as on the checked path."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    g, t = torch.randn(4, 9, generator=gen, dtype=torch.float64), torch.randn(4, 9, generator=gen, dtype=torch.float64)
    tangents = []
    for lean in (True, False):
        with lean_path(lean):
            leaf = x.clone().requires_grad_()
            out = diffcomb.soft_rank(leaf, regularization_strength=0.5)
            with forward_ad.dual_level():
                (grad,) = torch.autograd.grad(out, leaf, forward_ad.make_dual(g, t))
                tangents.append(forward_ad.unpack_dual(grad).tangent)
    assert tangents[0] is not None and torch.equal(tangents[0], tangents[1])


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_gradcheck_on_the_lean_path(regularization):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    with lean_path(True):
        for fn in (diffcomb.soft_rank, diffcomb.soft_sort):
            f = lambda a: fn(a, regularization_strength=0.8, regularization=regularization)  # noqa: E731
            assert type(f(x).grad_fn).__name__ in ("_ProjectionBackward", "ExpBackward0")
            assert torch.autograd.gradcheck(f, (x,))
            assert torch.autograd.gradgradcheck(f, (x,))
        s = torch.randn(2, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
        t = torch.randn(2, 4, 2, generator=gen, dtype=torch.float64)
        assert type(diffcomb.soft_dtw(s, t, 0.5).grad_fn).__name__ == "_SeriesBackward"
        assert torch.autograd.gradcheck(lambda a: diffcomb.soft_dtw(a, t, 0.5), (s,))
        assert torch.autograd.gradgradcheck(lambda a: diffcomb.soft_dtw(a, t, 0.5), (s,))


def _not_lean_inputs():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, generator=gen)
    w = torch.rand(4, 6, generator=gen) + 0.5
    a, b = torch.randn(2, 5, 2, generator=gen), torch.randn(2, 4, 2, generator=gen)
    return [
        ("dim 0", lambda: diffcomb.soft_rank(x, dim=0)),
        ("non-contiguous", lambda: diffcomb.soft_sort(x.t())),
        ("float16", lambda: diffcomb.soft_rank(x.half())),
        ("int", lambda: diffcomb.soft_sort(torch.arange(6))),
        ("topk k = n", lambda: diffcomb.soft_topk(x, 6)),
        ("isotonic weights", lambda: diffcomb.isotonic_regression(x, w)),
        ("dtw 2-D", lambda: diffcomb.soft_dtw(a[0], b[0])),
        ("dtw band", lambda: diffcomb.soft_dtw(a, b, bandwidth=2)),
        ("dtw broadcast", lambda: diffcomb.soft_dtw(a, b[:1])),
    ]


@pytest.mark.parametrize("name,call", _not_lean_inputs(), ids=[c[0] for c in _not_lean_inputs()])
def test_other_calls_agree(name, call):
    with lean_path(True):
        a = call()
    with lean_path(False):
        b = call()
    assert torch.equal(a, b)


BAD = [
    (lambda: diffcomb.soft_rank(torch.randn(3), regularization_strength=0.0), ValueError, "regularization_strength"),
    (lambda: diffcomb.soft_rank(torch.randn(3), regularization_strength=float("inf")), ValueError,
     "regularization_strength"),
    (lambda: diffcomb.soft_rank(torch.randn(3), regularization_strength=True), TypeError, "regularization_strength"),
    (lambda: diffcomb.soft_rank(torch.randn(3), descending=1), TypeError, "descending"),
    (lambda: diffcomb.soft_rank(torch.randn(3), regularization="L2"), ValueError, "regularization"),
    (lambda: diffcomb.soft_sort(torch.randn(3), dim=1), IndexError, "dim=1"),
    (lambda: diffcomb.soft_sort(torch.tensor(1.0)), ValueError, "at least 1 dimension"),
    (lambda: diffcomb.soft_sort(torch.randn(3), dim=True), TypeError, "dim"),
    (lambda: diffcomb.soft_topk(torch.randn(3), 4), ValueError, "k must be"),
    (lambda: diffcomb.soft_topk(torch.randn(3), 1.0), TypeError, "k must be"),
    (lambda: diffcomb.isotonic_regression(torch.randn(3), increasing="yes"), TypeError, "increasing"),
    (lambda: diffcomb.soft_dtw(torch.randn(2, 3, 2), torch.randn(2, 3, 2), -1.0), ValueError, "gamma"),
    (lambda: diffcomb.soft_dtw(torch.randn(2, 3, 2), torch.randn(2, 3, 2), cost="l1"), ValueError, "cost"),
    (lambda: diffcomb.soft_dtw(torch.randn(2, 3, 2), torch.randn(2, 3, 3)), ValueError, "feature size"),
    (lambda: diffcomb.soft_dtw(torch.randn(2, 3, 2), torch.randn(2, 3, 2).double()), TypeError, "dtype"),
]


@pytest.mark.parametrize("call,error,match", BAD)
def test_errors_are_those_of_the_checked_path(call, error, match):
    messages = []
    for lean in (True, False):
        with lean_path(lean), pytest.raises(error, match=match) as info:
            call()
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_shared_vectors_are_not_aliased_with_results():
    """The cached shared vectors are inputs only: results are fresh tensors, and writing to one does
    not change the next call."""
    x = torch.randn(2, 5)
    with lean_path(True):
        first = diffcomb.soft_sort(x, regularization_strength=0.5)
        first.add_(100.0)
        second = diffcomb.soft_sort(x, regularization_strength=0.5)
    with lean_path(False):
        expected = diffcomb.soft_sort(x, regularization_strength=0.5)
    assert torch.equal(second, expected)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
@pytest.mark.parametrize("name,fn", CALLS, ids=[c[0] for c in CALLS])
def test_cuda_lean_path_matches_the_cpu(name, fn):
    """CUDA's lean path (torch.sort, then isotonic_project; the native VJP on the saved buffer) against
    the CPU's fused one, and against CUDA's checked path."""
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(5, 40, generator=gen, dtype=torch.float64)
    g, v = torch.randn(5, 40, generator=gen, dtype=torch.float64), torch.randn(5, 40, generator=gen, dtype=torch.float64)
    with lean_path(True):
        cpu, _ = _run(fn, x, g, v)
        cuda, name_cuda = _run(fn, x.cuda(), g.cuda(), v.cuda())
    assert name_cuda.startswith(("_Projection", "_Fit", "ExpBackward0"))
    for a, b in zip(cuda, cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9)
    _both(fn, x.cuda(), g.cuda(), v.cuda())


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)
def test_cuda_lean_soft_dtw_matches_the_cpu():
    gen = torch.Generator().manual_seed(19)
    x = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        with lean_path(True):
            xs, ys = x.to(device).requires_grad_(), y.to(device).requires_grad_()
            out = diffcomb.soft_dtw(xs, ys, 0.3)
            assert type(out.grad_fn).__name__ == "_SeriesBackward"
            results.append((out.detach().cpu(), *(t.cpu() for t in torch.autograd.grad(out.sum(), (xs, ys)))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("with_matrix", [True, False], ids=["P", "values"])
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("shape", [(5,), (3, 8), (2, 3, 6)], ids=str)
@pytest.mark.parametrize("network,padding", [("odd_even", "prune"), ("bitonic", "prune"), ("bitonic", "inf")])
def test_sorting_network_bit_for_bit(network, padding, shape, descending, with_matrix):
    gen = torch.Generator().manual_seed(23)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    gv = torch.randn(shape, generator=gen, dtype=torch.float64)
    options = dict(network=network, bitonic_padding=padding, descending=descending, return_matrix=with_matrix,
                   steepness=2.0, sigmoid="logistic")
    results = []
    for lean in (True, False):
        with lean_path(lean), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pruned bitonic network's warning for n = 6
            leaf = x.clone().requires_grad_()

            def loss():
                r = diffcomb.sorting_network(leaf, **options)
                return (r.values * gv).sum() + ((r.matrix * r.matrix).sum() if with_matrix else 0), r

            value, r = loss()
            (grad,) = torch.autograd.grad(value, leaf)
            (graph_grad,) = torch.autograd.grad(loss()[0], leaf, create_graph=True)
            (hvp,) = torch.autograd.grad(graph_grad.sum(), leaf)
            with torch.no_grad():
                plain = diffcomb.sorting_network(x, **options)
            results.append((r.values.detach(), grad, graph_grad.detach(), hvp, plain.values,
                            *((r.matrix.detach(), plain.matrix) if with_matrix else ())))
            if with_matrix:
                assert r.matrix.stride() == plain.matrix.stride()
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_perturb_solvers_and_noise_bit_for_bit():
    """The solvers and the noise sampler call their op's implementation directly on the lean path."""
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(29), dtype=torch.float64)
    weights = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    results = []
    for lean in (True, False):
        with lean_path(lean):
            torch.manual_seed(0)
            leaf = x.clone().requires_grad_()
            estimator = diffcomb.imle(lambda t: diffcomb.topk_mask(t, k=2), num_samples=3, noise="gumbel", k=2)
            out = estimator(leaf)
            (grad,) = torch.autograd.grad((out * x).sum(), leaf)
            results.append((out.detach(), grad, diffcomb.topk_mask(x, k=3), diffcomb.argmax_onehot(x, dim=0),
                            diffcomb.grid_shortest_path(weights), diffcomb.linear_assignment(x[:, :6]),
                            diffcomb.sample_gumbel((3, 4), generator=torch.Generator().manual_seed(1)),
                            diffcomb.sample_sum_of_gamma((5,), 2.0, generator=torch.Generator().manual_seed(2))))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_solvers_and_untracked_estimators_bit_for_bit(dtype):
    """topk_mask and argmax_onehot along the last axis call their native entry point directly on the
    lean path, and an estimator called with nothing to differentiate runs its forward without the
    autograd.Function: the same values as the checked path, for every shape, k and sense."""
    gen = torch.Generator().manual_seed(41)
    xs = [torch.randn(shape, generator=gen, dtype=dtype) for shape in ((9,), (4, 7), (2, 3, 5))]
    xs.append(torch.tensor([[1.0, 3.0, 3.0, -1.0], [0.0, 0.0, 0.0, 0.0]], dtype=dtype))  # ties
    results = []
    for lean in (True, False):
        with lean_path(lean):
            out = []
            for x in xs:
                n = x.shape[-1]
                for k in (0, 1, n - 1, n):
                    out += [diffcomb.topk_mask(x, k), diffcomb.topk_mask(x, k, dim=x.dim() - 1)]
                out += [diffcomb.argmax_onehot(x), diffcomb.topk_mask(x.mT if x.dim() > 1 else x, 1)]
                for minimize in (False, True):
                    for return_samples in (False, True):
                        torch.manual_seed(3)
                        estimator = diffcomb.imle(lambda t: diffcomb.topk_mask(t, k=1), num_samples=2,
                                                  noise="sum_of_gamma", k=1, minimize=minimize,
                                                  return_samples=return_samples)
                        untracked = estimator(x)
                        torch.manual_seed(3)
                        tracked = estimator(x.clone().requires_grad_())
                        assert torch.equal(untracked, tracked.detach()) and tracked.requires_grad
                        out.append(untracked)
            out.append(diffcomb.sample_gumbel((3, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float16))
            results.append(out)
    for a, b in zip(*results):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("call,error,match", [
    (lambda x: diffcomb.topk_mask(x, 5), ValueError, "k"),
    (lambda x: diffcomb.topk_mask(x, -1), ValueError, "k"),
    (lambda x: diffcomb.topk_mask(x, True), TypeError, "k"),
    (lambda x: diffcomb.topk_mask(x, 2.0), TypeError, "k"),
    (lambda x: diffcomb.topk_mask(x, 1, dim=2), IndexError, "dim"),
    (lambda x: diffcomb.topk_mask(x[0, 0], 1), ValueError, "theta"),
    (lambda x: diffcomb.argmax_onehot(x[:, :0]), ValueError, "theta"),
    (lambda x: diffcomb.argmax_onehot(x, dim=-3), IndexError, "dim"),
])
def test_row_solver_errors_are_those_of_the_checked_path(call, error, match):
    x = torch.randn(3, 4)
    messages = []
    for lean in (True, False):
        with lean_path(lean), pytest.raises(error, match=match) as caught:
            call(x)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


# ---------------------------------------------------------------------------
# Sinkhorn: the lean path of diffcomb.sinkhorn (uniform weights, no option).

_SINKHORN_CALLS = [
    ("default", dict(epsilon=0.1)),
    ("fixed", dict(epsilon=0.1, max_iter=20, tol=0)),
    ("unroll", dict(epsilon=0.3, max_iter=15, tol=0, backward="unroll")),
    ("int-eps", dict(epsilon=1, tol=1e-5, max_iter=500, check_every=3)),
    ("not-converged", dict(epsilon=0.01, max_iter=5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 16, 16), (1, 5), (3, 1), (2, 3, 4, 6), (7, 7)], ids=str)
@pytest.mark.parametrize("name,kwargs", _SINKHORN_CALLS, ids=[c[0] for c in _SINKHORN_CALLS])
def test_sinkhorn_bit_for_bit(name, kwargs, shape, dtype):
    gen = torch.Generator().manual_seed(3)
    C = torch.rand(shape, generator=gen, dtype=dtype)
    G = torch.randn(shape, generator=gen, dtype=dtype)
    results = []
    for lean in (True, False):
        with lean_path(lean), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            leaf = C.clone().requires_grad_()
            out = diffcomb.sinkhorn(leaf, **kwargs)
            ((out.plan * G).sum() + out.cost.sum()).backward()
            untracked = diffcomb.sinkhorn(C, **kwargs)
        results.append((out, leaf.grad, untracked, [str(w.message) for w in caught]))
    (lean_out, lean_grad, lean_plain, lean_warn), (out, grad, plain, warned) = results
    for x, y in zip((*lean_out, lean_grad, *lean_plain), (*out, grad, *plain)):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y)
    assert lean_warn == warned
    if shape == (4, 16, 16):  # n, m > 1: only the truncated run stops above tol
        assert bool(warned) == (name == "not-converged")


@pytest.mark.parametrize("call,error,match", [
    (lambda C: diffcomb.sinkhorn(C, epsilon=0.0), ValueError, "epsilon"),
    (lambda C: diffcomb.sinkhorn(C, epsilon=0.1, max_iter=0), ValueError, "max_iter"),
    (lambda C: diffcomb.sinkhorn(C, epsilon=0.1, tol=-1.0), ValueError, "tol"),
    (lambda C: diffcomb.sinkhorn(C, epsilon=0.1, backward="adjoint"), ValueError, "backward"),
    (lambda C: diffcomb.sinkhorn(C, epsilon=float("nan")), ValueError, "epsilon"),
    (lambda C: diffcomb.sinkhorn(C[0, 0], epsilon=0.1), ValueError, "cost"),
])
def test_sinkhorn_errors_are_those_of_the_checked_path(call, error, match):
    C = torch.rand(2, 3, 4)
    for lean in (True, False):
        with lean_path(lean), pytest.raises(error, match=match):
            call(C)


def _meta_cases():
    x, C = torch.randn(4, 6), torch.rand(2, 5, 6)
    s, w = torch.randn(2, 5, 3), torch.rand(3, 4, 4) + 0.1
    return [
        ("soft_rank", diffcomb.soft_rank, (x,)),
        ("soft_sort", diffcomb.soft_sort, (x,)),
        ("soft_topk", lambda t: diffcomb.soft_topk(t, k=2), (x,)),
        ("sparse_soft_topk", lambda t: diffcomb.sparse_soft_topk(t, k=2), (x,)),
        ("isotonic_regression", diffcomb.isotonic_regression, (x,)),
        ("spearman_loss", diffcomb.spearman_loss, (x, x)),
        ("ndcg_loss", diffcomb.ndcg_loss, (x, x.abs())),
        ("soft_dtw", diffcomb.soft_dtw, (s, s)),
        ("soft_dtw-band", lambda a, b: diffcomb.soft_dtw(a, b, bandwidth=2), (s, s)),
        ("soft_dtw_from_cost", diffcomb.soft_dtw_from_cost, (C,)),
        ("sinkhorn", lambda c: diffcomb.sinkhorn(c).plan, (C,)),
        ("sinkhorn-cloud", lambda a, b: diffcomb.sinkhorn(x=a, y=b, epsilon=0.5).cost, (s, s)),
        ("sorting_network", lambda t: diffcomb.sorting_network(t)[0], (x,)),
        ("topk_mask", lambda t: diffcomb.topk_mask(t, 2), (x,)),
        ("argmax_onehot", diffcomb.argmax_onehot, (x,)),
        ("grid_shortest_path", diffcomb.grid_shortest_path, (w,)),
        ("linear_assignment", diffcomb.linear_assignment, (w,)),
    ]


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "checked"])
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_meta_tensors_propagate_shapes(lean, grad):
    """Meta tensors (shape propagation, as torch ops do) take the ops' fake implementations on both
    paths: the result's shape, dtype and device, no native call (it would get null addresses)."""
    for name, fn, args in _meta_cases():
        ref = fn(*args)
        meta = [a.to("meta").requires_grad_(grad and i == 0) for i, a in enumerate(args)]
        with lean_path(lean):
            out = fn(*meta)
        assert (out.device.type, out.shape, out.dtype) == ("meta", ref.shape, ref.dtype), name
