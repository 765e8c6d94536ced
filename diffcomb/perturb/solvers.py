"""MAP solvers of the perturb family (SPEC.md 6.1): batched native kernels, plain functions on
tensors (not differentiable themselves; wrap them in perturbed, imle or blackbox). Each is one
custom op on a contiguous canonical batch, ``(B, n)`` rows or ``(B, n, m)`` matrices; the public
function moves the axis (``dim=``), flattens the batch and converts the dtype."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .. import _native
from .._autodiff import eager_call, lean_ready
from .._checks import (as_float, check_dim, check_flag, check_int, check_op, check_op_tensor, check_tensor,
                       compute_dtype, message)
from ._common import FLOATS, MAX_INT32

__all__ = ["argmax_onehot", "grid_shortest_path", "linear_assignment", "sort_permutation", "topk_mask"]


def _rows(x: Tensor, event_dims: int) -> Tensor:
    """x (..., *S) as a contiguous (B, *S) tensor of a native dtype, detached."""
    event = x.shape[x.dim() - event_dims:]
    batch = math.prod(x.shape[: x.dim() - event_dims])
    return x.detach().reshape(batch, *event).to(compute_dtype(x.dtype)).contiguous()


def _check_solver_args(op: str, x: Tensor, *args) -> None:
    """The solver ops' input: contiguous (B, n) rows, or (B, n, m) grids and cost matrices, of
    float32/float64 with int32-sized axes; topk_mask's k in [0, n]."""
    matrix = op in ("grid_shortest_path", "linear_assignment")
    name = {"grid_shortest_path": "w", "linear_assignment": "cost"}.get(op, "x")
    check_op_tensor(op, name, x, FLOATS, 3 if matrix else 2)
    if op == "grid_shortest_path":
        check_op(x.shape[1] * x.shape[2] < MAX_INT32 // 2,
                 lambda: f"torch.ops.diffcomb.{op}: grid {x.shape[1]}x{x.shape[2]} is too large (int32 vertex indices)")
    else:
        check_op(max(x.shape[1:]) < MAX_INT32,
                 lambda: f"torch.ops.diffcomb.{op}: {name} of shape {tuple(x.shape)} is too large (int32 indices)")
    if op == "topk_mask":
        (k,) = args
        n = x.shape[1]
        check_op(0 <= k <= n, lambda: f"torch.ops.diffcomb.{op}: k must be in [0, n] = [0, {n}], got {k}", ValueError)


# The ops: out = the solver's answer for the batch x. launch picks the CPU or CUDA entry point
# (csrc/perturb/api.h), which take the same arguments: x, out, x's sizes, the op's scalars, the
# dtype code; `fn` names the public function in the error raised without a CUDA build.


def _launch(fn: str, entry: str, x: Tensor, *scalars: object, workspace: Optional[str] = None) -> Tensor:
    out = torch.empty_like(x)
    _native.launch(fn, entry, x, _native.address(x), _native.address(out), *x.shape, *scalars, _native.dtype_code(x),
                   workspace=None if workspace is None else (workspace, tuple(x.shape)))
    return out


@torch.library.custom_op("diffcomb::argmax_onehot", mutates_args=())
def _argmax_op(x: Tensor) -> Tensor:
    _check_solver_args("argmax_onehot", x)
    return _launch("argmax_onehot", "perturb_argmax", x)


@torch.library.custom_op("diffcomb::topk_mask", mutates_args=())
def _topk_op(x: Tensor, k: int) -> Tensor:
    _check_solver_args("topk_mask", x, k)
    return _launch("topk_mask", "perturb_topk", x, k)


@torch.library.custom_op("diffcomb::sort_ranks", mutates_args=())
def _ranks_op(x: Tensor) -> Tensor:
    _check_solver_args("sort_ranks", x)
    return _launch("sort_permutation", "perturb_ranks", x)


@torch.library.custom_op("diffcomb::grid_shortest_path", mutates_args=())
def _grid_op(w: Tensor) -> Tensor:
    _check_solver_args("grid_shortest_path", w)
    return _launch("grid_shortest_path", "perturb_grid_path", w, workspace="perturb_grid_work_bytes")


@torch.library.custom_op("diffcomb::linear_assignment", mutates_args=())
def _assignment_op(cost: Tensor, maximize: bool) -> Tensor:
    _check_solver_args("linear_assignment", cost)
    return _launch("linear_assignment", "perturb_assignment", cost, maximize, workspace="perturb_assignment_work_bytes")


def _fake_solver(op: str) -> Callable[..., Tensor]:
    def fake(x: Tensor, *args) -> Tensor:
        _check_solver_args(op, x, *args)
        return torch.empty_like(x)

    return fake


for _op, _name in ((_argmax_op, "argmax_onehot"), (_topk_op, "topk_mask"), (_ranks_op, "sort_ranks"),
                   (_grid_op, "grid_shortest_path"), (_assignment_op, "linear_assignment")):
    _op.register_fake(_fake_solver(_name))


def _lean_rows(theta: object, dim: object) -> bool:
    """The lean eager path of a row solver serves the call (diffcomb._autodiff, "The lean eager
    path"): a plain contiguous float32/float64 tensor with at least one dimension, a non-empty last
    axis along which to solve (dim -1 or its index), no gradient recorded through it (the solvers are
    not differentiable: the custom op records the error), on the CPU or a CUDA device diffcomb
    serves. Every other call takes the checked path, which raises the errors."""
    return (type(theta) is Tensor and type(dim) is int and theta.dtype in FLOATS and lean_ready(theta)
            and 0 < theta.dim() and (dim == -1 or dim == theta.dim() - 1) and 0 < theta.shape[-1] < MAX_INT32
            and theta.is_contiguous() and not (theta.requires_grad and torch.is_grad_enabled())
            and (theta.is_cpu or (theta.is_cuda and _native.cuda_available())))


def _lean_launch(fn: str, entry: str, x: Tensor, *scalars: object) -> Tensor:
    """A row solver's native entry point on x (..., n) directly, out of x's shape (the lean path)."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    _native.launch(fn, entry, x, x.data_ptr(), out.data_ptr(), x.numel() // n, n, *scalars, _native.DTYPE_CODES[x.dtype])
    return out


def _solve(x: Tensor, event_dims: int, op: Callable[..., Tensor], *args) -> Tensor:
    rows = _rows(x, event_dims)
    return eager_call(op, rows, *args).reshape(x.shape).to(x.dtype)


def _solve_along(x: Tensor, dim: int, op: Callable[..., Tensor], *args) -> Tensor:
    """op on the slices of x along axis ``dim`` (non-negative): the axis moves last and back."""
    if dim == x.dim() - 1:
        return _solve(x, 1, op, *args)
    return _solve(x.movedim(dim, -1), 1, op, *args).movedim(-1, dim)


def argmax_onehot(theta: Tensor, dim: int = -1) -> Tensor:
    r"""One-hot indicator of the argmax along dimension ``dim``.

    .. math::
        y^*(\theta) = e_{i^*}, \qquad i^* = \min \arg\max_i \theta_i

    Args:
        theta (Tensor[..., n, ...]): scores, ``n >= 1`` items along ``dim``; integer and bool
            tensors are computed in the default float dtype (``torch.get_default_dtype()``, also the
            result's dtype; float32 is exact for integers up to 2**24 in magnitude).
        dim (int): the axis of the items. Default -1.

    Returns:
        Tensor: theta's shape, 0/1, same dtype; the first maximal index wins ties.

    Note:
        Not differentiable (wrap it in :func:`perturbed`, :func:`imle` or :func:`blackbox`).
        A slice with NaN or +/-inf gives NaN. O(n).

    Example:
        >>> diffcomb.argmax_onehot(torch.tensor([0.5, 2.0, 2.0]))
        tensor([0., 1., 0.])
        >>> diffcomb.argmax_onehot(torch.tensor([[0.5, 2.0], [1.0, -1.0]]), dim=0)
        tensor([[0., 1.],
                [1., 0.]])
    """
    fn = "argmax_onehot"
    if _lean_rows(theta, dim):
        return _lean_launch(fn, "perturb_argmax", theta)
    theta = check_tensor(fn, "theta", as_float(theta))
    axis = check_dim(fn, theta, dim)
    if theta.shape[axis] == 0:
        raise ValueError(message(fn, f"theta must have at least one element along dim={dim}, got shape "
                                     f"{tuple(theta.shape)}"))
    return _solve_along(theta, axis, _argmax_op)


def topk_mask(theta: Tensor, k: int, dim: int = -1) -> Tensor:
    r"""0/1 mask of the ``k`` largest entries along dimension ``dim``.

    .. math::
        y^*(\theta) = \arg\max_{y \in \{0,1\}^n,\ \sum_i y_i = k} \langle y, \theta \rangle

    Args:
        theta (Tensor[..., n, ...]): scores, ``n`` items along ``dim``; integer and bool tensors are
            computed in the default float dtype (``torch.get_default_dtype()``, also the result's
            dtype; float32 is exact for integers up to 2**24 in magnitude).
        k (int): ``0 <= k <= n``.
        dim (int): the axis of the items. Default -1.

    Returns:
        Tensor: theta's shape, 0/1 with ``k`` ones along ``dim``; on ties the lower index is taken
        first.

    Note:
        Not differentiable by itself. O(n) per slice (selection). NaN/inf slices give NaN.

    Example:
        >>> diffcomb.topk_mask(torch.tensor([0.9, 0.1, 0.5, -0.3]), 2)
        tensor([1., 0., 1., 0.])
    """
    fn = "topk_mask"
    if type(k) is int and _lean_rows(theta, dim) and 0 <= k <= theta.shape[-1]:
        return _lean_launch(fn, "perturb_topk", theta, k)
    theta = check_tensor(fn, "theta", as_float(theta))
    dim = check_dim(fn, theta, dim)
    check_int(fn, "k", k, 0, theta.shape[dim])
    return _solve_along(theta, dim, _topk_op, k)


def sort_permutation(theta: Tensor, matrix: bool = False, dim: int = -1) -> Tensor:
    r"""The permutation vertex maximizing :math:`\langle y, \theta \rangle`: ascending ranks.

    .. math::
        r^*(\theta) = \arg\max_{y \in \mathcal P(1, \dots, n)} \langle y, \theta \rangle

    i.e. the 1-based ascending ranks (the smallest entry gets 1; stable on ties).

    Args:
        theta (Tensor[..., n, ...]): scores, ``n`` items along ``dim``; integer and bool tensors are
            computed in the default float dtype (``torch.get_default_dtype()``, also the result's
            dtype; float32 is exact for integers up to 2**24 in magnitude).
        matrix (bool): return the permutation matrix ``P[..., i, j] = 1`` iff
            ``rank_i = j + 1`` instead of the ranks. Default False.
        dim (int): the axis of the items. Default -1.

    Returns:
        Tensor: the ranks, theta's shape; with ``matrix=True`` the matrices, theta's shape with a
        position axis of size n inserted right after ``dim`` (``(..., n, n)`` for ``dim=-1``).

    Note:
        Not differentiable by itself. O(n log n). NaN/inf slices give NaN.

    Example:
        >>> diffcomb.sort_permutation(torch.tensor([3.0, 1.0, 2.0]))
        tensor([3., 1., 2.])
    """
    fn = "sort_permutation"
    theta = check_tensor(fn, "theta", as_float(theta))
    matrix = check_flag(fn, "matrix", matrix)
    dim = check_dim(fn, theta, dim)
    last = dim == theta.dim() - 1
    ranks = _solve(theta if last else theta.movedim(dim, -1), 1, _ranks_op)  # (..., n): the items last
    if not matrix:
        return ranks if last else ranks.movedim(-1, dim)
    positions = torch.arange(1, ranks.shape[-1] + 1, device=theta.device, dtype=ranks.dtype)
    matrix_ = (ranks.unsqueeze(-1) == positions).to(ranks.dtype)
    # A NaN slice (non-finite input) gives a NaN matrix, as for the ranks.
    out = torch.where(torch.isnan(ranks).unsqueeze(-1), ranks.unsqueeze(-1), matrix_)
    return out if last else out.movedim((-2, -1), (dim, dim + 1))


def grid_shortest_path(weights: Tensor) -> Tensor:
    r"""0/1 mask of the cheapest top-left to bottom-right path on a vertex-weighted grid.

    King moves (8-neighbourhood); the cost of a path is the sum of the weights of all the
    vertices it visits, both endpoints included, as in the Warcraft shortest-path benchmark:

    .. math::
        y^*(W) = \arg\min_{p \in \mathcal P_{(0,0) \to (H-1, W-1)}} \sum_{v \in p} \max(W_v, 0)

    Args:
        weights (Tensor[..., H, W]): vertex costs (negative values are clamped at 0); integer and
            bool tensors are computed in the default float dtype (``torch.get_default_dtype()``,
            also the result's dtype).

    Returns:
        Tensor[..., H, W]: the path indicator, same dtype.

    Note:
        CPU: 8 grids at a time (one SIMD lane each) by Gauss-Seidel min-plus sweeps in
        row-major order and its reverse until the distances up to the target's stop changing
        (exactly Dijkstra's distances); a grid still changing after 64 sweeps (a maze) is
        finished by Dijkstra, O(HW log HW). CUDA: min-plus relaxation sweeps to the fixed
        point. Ties between paths of equal cost: the fewest vertices,
        then a fixed neighbour order in the backtrack (SPEC.md 6.1), so CPU and CUDA agree.
        Not differentiable by itself (use ``minimize=True`` in the estimators). A grid with
        NaN or +/-inf gives NaN.

    Example:
        >>> diffcomb.grid_shortest_path(torch.tensor([[1.0, 5, 1], [1, 9, 1], [5, 1, 1]]))
        tensor([[1., 0., 0.],
                [1., 0., 0.],
                [0., 1., 1.]])

    References:
        M. Vlastelica Pogancic et al. Differentiation of Blackbox Combinatorial Solvers.
        ICLR 2020. arXiv:1912.02175
    """
    fn = "grid_shortest_path"
    weights = check_tensor(fn, "weights", as_float(weights), min_dim=2)
    h, wd = weights.shape[-2:]
    if h * wd >= MAX_INT32 // 2:
        raise ValueError(message(fn, f"grid {h}x{wd} is too large (int32 vertex indices)"))
    return _solve(weights, 2, _grid_op)


def linear_assignment(cost: Tensor, maximize: bool = False) -> Tensor:
    r"""0/1 (partial) permutation matrix of the optimal linear assignment.

    .. math::
        Y^* = \arg\min_{Y \in \Pi_{n,m}} \langle Y, C \rangle_F \quad (\arg\max \text{ with } \texttt{maximize=True})

    over 0/1 matrices with at most one 1 per row and column and :math:`\min(n, m)` ones.

    Args:
        cost (Tensor[..., n, m]): costs (or scores with ``maximize=True``); integer and bool tensors
            are computed in the default float dtype (``torch.get_default_dtype()``, also the
            result's dtype; float32 is exact for integers up to 2**24 in magnitude).
        maximize (bool): maximize instead of minimize. Default False.

    Returns:
        Tensor[..., n, m]: the assignment matrix, same dtype.

    Note:
        Exact on both devices: shortest augmenting paths with potentials
        (Jonker-Volgenant form of the Hungarian method) in float64, O(n^2 m). CPU: one grid
        per thread; CUDA: one thread block per matrix, the column scans split over the
        block. Ties between optimal assignments resolve deterministically (unspecified which).
        Not differentiable by itself. NaN/inf in a matrix give NaN.

    Example:
        >>> diffcomb.linear_assignment(torch.tensor([[4.0, 1, 3], [2, 0, 5], [3, 2, 2]]), maximize=True)
        tensor([[1., 0., 0.],
                [0., 0., 1.],
                [0., 1., 0.]])
    """
    cost = check_tensor("linear_assignment", "cost", as_float(cost), min_dim=2)
    maximize = check_flag("linear_assignment", "maximize", maximize)
    return _solve(cost, 2, _assignment_op, maximize)


argmax_onehot.event_dims = 1  # type: ignore[attr-defined]
topk_mask.event_dims = 1  # type: ignore[attr-defined]
sort_permutation.event_dims = 1  # type: ignore[attr-defined]
grid_shortest_path.event_dims = 2  # type: ignore[attr-defined]
linear_assignment.event_dims = 2  # type: ignore[attr-defined]
