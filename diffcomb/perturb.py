"""Perturb-and-MAP: noise samplers, batched MAP solvers and gradient estimators.

Three layers (SPEC.md section 6):

- Noise samplers (:func:`sample_gumbel`, :func:`sample_normal`,
  :func:`sample_sum_of_gamma`): native on CPU and CUDA, counter-based
  (Philox), so a sample is a pure function of a seed that is drawn from the
  caller's ``torch.Generator``; the same seed gives the same numbers on both
  devices.
- MAP solvers (:func:`argmax_onehot`, :func:`topk_mask`,
  :func:`sort_permutation`, :func:`grid_shortest_path`,
  :func:`linear_assignment`): batched native kernels, plain functions on
  tensors (not differentiable themselves).
- Gradient estimators around any solver, native or a user callable that maps a
  batch of scores ``(B', *S)`` to a batch of solutions ``(B', *S)``:
  :func:`perturbed` (and :func:`perturbed_fenchel_young_loss`), :func:`imle`
  and :func:`blackbox`. All noisy copies of a batch are solved in ONE solver
  call on a ``(samples * B, *S)`` batch (sample-major).

Solvers are written in maximize form, ``y*(theta) = argmax_y <y, theta>``;
the estimators take ``minimize=True`` for a solver of costs (shortest path,
min-cost assignment), which they then call as ``solver(-theta)`` internally.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from . import _native
from ._checks import as_float, check_flag, check_op, check_op_tensor, check_same_device

__all__ = [
    "BlackboxSolver",
    "IMLESolver",
    "PerturbedSolver",
    "argmax_onehot",
    "blackbox",
    "grid_shortest_path",
    "imle",
    "linear_assignment",
    "perturbed",
    "perturbed_fenchel_young_loss",
    "sample_gumbel",
    "sample_normal",
    "sample_sum_of_gamma",
    "sort_permutation",
    "topk_mask",
]

Solver = Callable[[Tensor], Tensor]

_NOISE_CODES = {"gumbel": 0, "normal": 1, "sum_of_gamma": 2}  # csrc/perturb/perturb.h, NoiseCode
_MAX_SEED = 2**62
_MAX_INT32 = 2**31 - 1


# ---------------------------------------------------------------------------
# Validation, at the public boundary only.


def _check_tensor(fn: str, name: str, x: object, min_dim: int = 1) -> Tensor:
    """A real tensor; integer and bool tensors must already be converted (as_float)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"diffcomb.{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"diffcomb.{fn}: {name} must be a real tensor (float16, bfloat16, float32, float64, or an "
            f"integer or bool dtype computed in the default float dtype), got dtype {x.dtype}"
        )
    if x.dim() < min_dim:
        raise ValueError(
            f"diffcomb.{fn}: {name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}"
        )
    if x.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"diffcomb.{fn}: {name} is on device {x.device}; diffcomb supports cpu and cuda")
    if x.device.type == "cuda":
        _native.cuda(fn)
    return x


def _check_int(fn: str, name: str, value: object, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"diffcomb.{fn}: {name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"diffcomb.{fn}: {name} must be {bound}, got {value}")
    return value


def _check_positive(fn: str, name: str, value: object, allow_zero: bool = False) -> float:
    if isinstance(value, (Tensor, bool)) or not isinstance(value, (int, float)):
        raise TypeError(f"diffcomb.{fn}: {name} must be a Python float, got {type(value).__name__}")
    # Comparisons only (no math.isfinite), so a symbolic float under torch.compile passes.
    ok = (0.0 <= value < math.inf) if allow_zero else (0.0 < value < math.inf)
    if not ok:
        what = "non-negative" if allow_zero else "positive"
        raise ValueError(f"diffcomb.{fn}: {name} must be {what} and finite, got {value}")
    return float(value)


def _check_noise(fn: str, noise: str, allowed: Sequence[str]) -> str:
    if noise not in allowed:
        raise ValueError(f"diffcomb.{fn}: noise must be one of {', '.join(map(repr, allowed))}, got {noise!r}")
    return noise


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _rows(x: Tensor, event_dims: int) -> Tensor:
    """x (..., *S) as a contiguous (B, *S) tensor of a native dtype, detached."""
    event = x.shape[x.dim() - event_dims:]
    batch = math.prod(x.shape[: x.dim() - event_dims])
    return x.detach().reshape(batch, *event).to(_compute_dtype(x.dtype)).contiguous()


# ---------------------------------------------------------------------------
# Seeds and noise.


def _draw_seed(generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """A one-element int64 seed on `device`, drawn from `generator` (or the device's default generator)."""
    if generator is None:
        return torch.randint(0, _MAX_SEED, (1,), dtype=torch.int64, device=device)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"diffcomb: generator must be a torch.Generator or None, got {type(generator).__name__}")
    seed = torch.randint(0, _MAX_SEED, (1,), dtype=torch.int64, device=generator.device, generator=generator)
    return seed.to(device)


# Checks of the custom ops' own arguments, run by their implementations and fake implementations,
# so that a direct torch.ops.diffcomb.* call with bad arguments raises instead of handing native
# code addresses it would read or write out of bounds, or parameters outside the sampler's domain.
# Shapes, dtypes, strides, devices and the Python scalars only: no tensor values are read.

_FLOATS = (torch.float32, torch.float64)


def _check_noise_args(seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int,
                      dtype: torch.dtype) -> None:
    where = "torch.ops.diffcomb.perturb_noise"
    check_op_tensor("perturb_noise", "seed", seed, (torch.int64,), (1,))
    check_op(all(d >= 0 for d in shape), lambda: f"{where}: shape must have non-negative sizes, got {list(shape)}",
             ValueError)
    check_op(kind in _NOISE_CODES.values(), lambda: f"{where}: kind must be one of {_NOISE_CODES}, got {kind}",
             ValueError)
    check_op(dtype in _FLOATS, lambda: f"{where}: dtype must be torch.float32 or torch.float64, got {dtype}",
             ValueError)
    if kind == _NOISE_CODES["sum_of_gamma"]:
        check_op(0.0 < k < math.inf, lambda: f"{where}: k must be positive and finite, got {k}", ValueError)
        check_op(-math.inf < tau < math.inf, lambda: f"{where}: tau must be finite, got {tau}", ValueError)
        check_op(1 <= s <= _MAX_INT32, lambda: f"{where}: s must be in [1, {_MAX_INT32}], got {s}", ValueError)


@torch.library.custom_op("diffcomb::perturb_noise", mutates_args=())
def _noise_op(seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int,
              dtype: torch.dtype) -> Tensor:
    """Noise of `shape` from the counter-based stream of `seed` (a one-element int64 tensor)."""
    _check_noise_args(seed, shape, kind, k, tau, s, dtype)
    out = torch.empty(tuple(shape), dtype=dtype, device=seed.device)
    args = (_native.address(seed), _native.address(out), out.numel(), kind, k, tau, s, _native.dtype_code(out))
    if out.numel() == 0:
        return out
    if seed.is_cuda:
        device, stream = _native.stream_of(seed)
        _native.cuda("sample_noise").perturb_noise(*args, device, stream)
    else:
        _native.cpu().perturb_noise(*args, _native.threads())
    return out


@_noise_op.register_fake
def _(seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int, dtype: torch.dtype) -> Tensor:
    _check_noise_args(seed, shape, kind, k, tau, s, dtype)
    return seed.new_empty(tuple(shape), dtype=dtype)


def _sample(fn: str, kind: str, shape: Sequence[int], generator: Optional[torch.Generator],
            dtype: Optional[torch.dtype], device: Union[str, torch.device, None], k: float = 1.0,
            tau: float = 1.0, s: int = 1) -> Tensor:
    if isinstance(shape, int):
        shape = (shape,)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"diffcomb.{fn}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"diffcomb.{fn}: shape must be a sequence of non-negative ints, got {shape!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise TypeError(f"diffcomb.{fn}: dtype must be a floating-point dtype, got {dtype}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        _native.cuda(fn)
    seed = _draw_seed(generator, device)
    out = _noise_op(seed, list(shape), _NOISE_CODES[kind], float(k), float(tau), int(s), _compute_dtype(dtype))
    return out.to(dtype)


def sample_gumbel(shape: Sequence[int], generator: Optional[torch.Generator] = None,
                  dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None) -> Tensor:
    r"""Standard Gumbel noise :math:`G = -\log(-\log U)`, :math:`U \sim \mathcal U(0, 1)`.

    Args:
        shape (sequence of int): the output shape.
        generator (torch.Generator, optional): the seed is drawn from it (default: the device's
            default generator, so ``torch.manual_seed`` makes the draw reproducible).
        dtype (torch.dtype, optional): default ``torch.get_default_dtype()``.
        device (optional): default the generator's device, else CPU.

    Returns:
        Tensor[shape]: mean :math:`\gamma_E \approx 0.5772`, variance :math:`\pi^2 / 6`.

    Note:
        Counter-based (Philox-4x32-10): each value depends only on the seed and its flat
        index, so CPU and CUDA draw the same values for the same seed. O(numel).

    Example:
        >>> g = diffcomb.sample_gumbel((2, 3), generator=torch.Generator().manual_seed(0))
        >>> g.shape
        torch.Size([2, 3])
    """
    return _sample("sample_gumbel", "gumbel", shape, generator, dtype, device)


def sample_normal(shape: Sequence[int], generator: Optional[torch.Generator] = None,
                  dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None) -> Tensor:
    r"""Standard normal noise :math:`\mathcal N(0, 1)` (Box-Muller on a counter-based stream).

    Args:
        shape (sequence of int): the output shape.
        generator (torch.Generator, optional): where the seed is drawn from.
        dtype (torch.dtype, optional): default ``torch.get_default_dtype()``.
        device (optional): default the generator's device, else CPU.

    Returns:
        Tensor[shape]

    Example:
        >>> diffcomb.sample_normal((4,), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4])
    """
    return _sample("sample_normal", "normal", shape, generator, dtype, device)


def sample_sum_of_gamma(shape: Sequence[int], k: float, tau: float = 1.0, s: int = 10,
                        generator: Optional[torch.Generator] = None, dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None) -> Tensor:
    r"""Sum-of-Gamma noise for k-subsets (I-MLE), one value per element.

    .. math::
        \mathrm{SoG}(k, \tau, s) = \frac{\tau}{k} \Big( \sum_{i=1}^{s} G_i - \log s \Big), \qquad
        G_i \sim \mathrm{Gamma}(\text{shape } 1/k, \text{scale } k / i)

    Args:
        shape (sequence of int): the output shape.
        k (float): the subset size, ``k > 0``.
        tau (float): temperature. Default 1.
        s (int): number of Gamma terms, ``s >= 1``. Default 10.
        generator, dtype, device: as in :func:`sample_gumbel`.

    Returns:
        Tensor[shape]: mean :math:`\tau (H_s - \log s) / k`, variance
        :math:`\tau^2 \sum_{i \le s} i^{-2} / k`.

    Note:
        The sum of ``k`` independent ``SoG(k, 1, s)`` values tends to a standard Gumbel as
        :math:`s \to \infty`. Gamma variates: Marsaglia-Tsang with the small-shape boost,
        computed in float64. O(s numel).

    Example:
        >>> diffcomb.sample_sum_of_gamma((3, 5), k=2, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 5])

    References:
        M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through Discrete
        Exponential Family Distributions. NeurIPS 2021. arXiv:2106.01798
    """
    k = _check_positive("sample_sum_of_gamma", "k", k)
    tau = _check_positive("sample_sum_of_gamma", "tau", tau)
    s = _check_int("sample_sum_of_gamma", "s", s, 1, _MAX_INT32)
    return _sample("sample_sum_of_gamma", "sum_of_gamma", shape, generator, dtype, device, k, tau, s)


# ---------------------------------------------------------------------------
# MAP solvers: one custom op each, on contiguous canonical shapes.


def _cpu_or_cuda(x: Tensor, fn: str, name: str, *args) -> None:
    if x.is_cuda:
        device, stream = _native.stream_of(x)
        getattr(_native.cuda(fn), name)(*args, _native.dtype_code(x), device, stream)
    else:
        getattr(_native.cpu(), name)(*args, _native.dtype_code(x), _native.threads())


def _check_solver_args(op: str, x: Tensor, *args) -> None:
    """The solver ops' input: contiguous (B, n) rows, or (B, n, m) grids and cost matrices, of
    float32/float64 with int32-sized axes; topk_mask's k in [0, n]."""
    matrix = op in ("grid_shortest_path", "linear_assignment")
    name = {"grid_shortest_path": "w", "linear_assignment": "cost"}.get(op, "x")
    check_op_tensor(op, name, x, _FLOATS, 3 if matrix else 2)
    if op == "grid_shortest_path":
        check_op(x.shape[1] * x.shape[2] < _MAX_INT32 // 2,
                 lambda: f"torch.ops.diffcomb.{op}: grid {x.shape[1]}x{x.shape[2]} is too large (int32 vertex indices)")
    else:
        check_op(max(x.shape[1:]) < _MAX_INT32,
                 lambda: f"torch.ops.diffcomb.{op}: {name} of shape {tuple(x.shape)} is too large (int32 indices)")
    if op == "topk_mask":
        (k,) = args
        n = x.shape[1]
        check_op(0 <= k <= n, lambda: f"torch.ops.diffcomb.{op}: k must be in [0, n] = [0, {n}], got {k}", ValueError)


@torch.library.custom_op("diffcomb::argmax_onehot", mutates_args=())
def _argmax_op(x: Tensor) -> Tensor:
    _check_solver_args("argmax_onehot", x)
    out = torch.empty_like(x)
    rows, n = x.shape
    _cpu_or_cuda(x, "argmax_onehot", "perturb_argmax", _native.address(x), _native.address(out), rows, n)
    return out


@torch.library.custom_op("diffcomb::topk_mask", mutates_args=())
def _topk_op(x: Tensor, k: int) -> Tensor:
    _check_solver_args("topk_mask", x, k)
    out = torch.empty_like(x)
    rows, n = x.shape
    _cpu_or_cuda(x, "topk_mask", "perturb_topk", _native.address(x), _native.address(out), rows, n, k)
    return out


@torch.library.custom_op("diffcomb::sort_ranks", mutates_args=())
def _ranks_op(x: Tensor) -> Tensor:
    _check_solver_args("sort_ranks", x)
    out = torch.empty_like(x)
    rows, n = x.shape
    _cpu_or_cuda(x, "sort_permutation", "perturb_ranks", _native.address(x), _native.address(out), rows, n)
    return out


@torch.library.custom_op("diffcomb::grid_shortest_path", mutates_args=())
def _grid_op(w: Tensor) -> Tensor:
    _check_solver_args("grid_shortest_path", w)
    out = torch.empty_like(w)
    rows, h, wd = w.shape
    if w.is_cuda:
        nbytes = _native.cuda("grid_shortest_path").perturb_grid_work_bytes(rows, h, wd)
        work = torch.empty(nbytes, dtype=torch.uint8, device=w.device)
        device, stream = _native.stream_of(w)
        _native.cuda("grid_shortest_path").perturb_grid_path(
            _native.address(w), _native.address(out), _native.address(work), rows, h, wd, _native.dtype_code(w),
            device, stream)
    else:
        _native.cpu().perturb_grid_path(_native.address(w), _native.address(out), rows, h, wd,
                                        _native.dtype_code(w), _native.threads())
    return out


@torch.library.custom_op("diffcomb::linear_assignment", mutates_args=())
def _assignment_op(cost: Tensor, maximize: bool) -> Tensor:
    _check_solver_args("linear_assignment", cost)
    out = torch.empty_like(cost)
    rows, n, m = cost.shape
    if cost.is_cuda:
        nbytes = _native.cuda("linear_assignment").perturb_assignment_work_bytes(rows, n, m)
        work = torch.empty(nbytes, dtype=torch.uint8, device=cost.device)
        device, stream = _native.stream_of(cost)
        _native.cuda("linear_assignment").perturb_assignment(
            _native.address(cost), _native.address(out), _native.address(work), rows, n, m, maximize,
            _native.dtype_code(cost), device, stream)
    else:
        _native.cpu().perturb_assignment(_native.address(cost), _native.address(out), rows, n, m, maximize,
                                         _native.dtype_code(cost), _native.threads())
    return out


def _fake_solver(op: str) -> Callable[..., Tensor]:
    def fake(x: Tensor, *args) -> Tensor:
        _check_solver_args(op, x, *args)
        return torch.empty_like(x)

    return fake


for _op, _name in ((_argmax_op, "argmax_onehot"), (_topk_op, "topk_mask"), (_ranks_op, "sort_ranks"),
                   (_grid_op, "grid_shortest_path"), (_assignment_op, "linear_assignment")):
    _op.register_fake(_fake_solver(_name))


def _solve(x: Tensor, event_dims: int, op: Callable[..., Tensor], *args) -> Tensor:
    rows = _rows(x, event_dims)
    return op(rows, *args).reshape(x.shape).to(x.dtype)


def argmax_onehot(theta: Tensor) -> Tensor:
    r"""One-hot indicator of the argmax along the last dimension.

    .. math::
        y^*(\theta) = e_{i^*}, \qquad i^* = \min \arg\max_i \theta_i

    Args:
        theta (Tensor[..., n]): scores, ``n >= 1``; integer and bool tensors are computed in the
            default float dtype (``torch.get_default_dtype()``, also the result's dtype; float32 is
            exact for integers up to 2**24 in magnitude).

    Returns:
        Tensor[..., n]: 0/1, same dtype; the first maximal index wins ties.

    Note:
        Not differentiable (wrap it in :func:`perturbed`, :func:`imle` or :func:`blackbox`).
        A slice with NaN or +/-inf gives NaN. O(n).

    Example:
        >>> diffcomb.argmax_onehot(torch.tensor([0.5, 2.0, 2.0]))
        tensor([0., 1., 0.])
    """
    theta = _check_tensor("argmax_onehot", "theta", as_float(theta))
    if theta.shape[-1] == 0:
        raise ValueError("diffcomb.argmax_onehot: theta must have at least one element in its last dimension")
    return _solve(theta, 1, _argmax_op)


def topk_mask(theta: Tensor, k: int) -> Tensor:
    r"""0/1 mask of the ``k`` largest entries along the last dimension.

    .. math::
        y^*(\theta) = \arg\max_{y \in \{0,1\}^n,\ \sum_i y_i = k} \langle y, \theta \rangle

    Args:
        theta (Tensor[..., n]): scores; integer and bool tensors are computed in the default float
            dtype (``torch.get_default_dtype()``, also the result's dtype; float32 is exact for
            integers up to 2**24 in magnitude).
        k (int): ``0 <= k <= n``.

    Returns:
        Tensor[..., n]: 0/1 with ``k`` ones; on ties the lower index is taken first.

    Note:
        Not differentiable by itself. O(n) per slice (selection). NaN/inf slices give NaN.

    Example:
        >>> diffcomb.topk_mask(torch.tensor([0.9, 0.1, 0.5, -0.3]), 2)
        tensor([1., 0., 1., 0.])
    """
    theta = _check_tensor("topk_mask", "theta", as_float(theta))
    n = theta.shape[-1]
    _check_int("topk_mask", "k", k, 0, n)
    return _solve(theta, 1, _topk_op, k)


def sort_permutation(theta: Tensor, matrix: bool = False) -> Tensor:
    r"""The permutation vertex maximizing :math:`\langle y, \theta \rangle`: ascending ranks.

    .. math::
        r^*(\theta) = \arg\max_{y \in \mathcal P(1, \dots, n)} \langle y, \theta \rangle

    i.e. the 1-based ascending ranks (the smallest entry gets 1; stable on ties).

    Args:
        theta (Tensor[..., n]): scores; integer and bool tensors are computed in the default float
            dtype (``torch.get_default_dtype()``, also the result's dtype; float32 is exact for
            integers up to 2**24 in magnitude).
        matrix (bool): return the permutation matrix ``P[..., i, j] = 1`` iff
            ``rank_i = j + 1`` instead of the ranks. Default False.

    Returns:
        Tensor[..., n] ranks, or Tensor[..., n, n] with ``matrix=True``.

    Note:
        Not differentiable by itself. O(n log n). NaN/inf slices give NaN.

    Example:
        >>> diffcomb.sort_permutation(torch.tensor([3.0, 1.0, 2.0]))
        tensor([3., 1., 2.])
    """
    theta = _check_tensor("sort_permutation", "theta", as_float(theta))
    matrix = check_flag("sort_permutation", "matrix", matrix)
    ranks = _solve(theta, 1, _ranks_op)
    if not matrix:
        return ranks
    n = theta.shape[-1]
    positions = torch.arange(1, n + 1, device=theta.device, dtype=ranks.dtype)
    matrix_ = (ranks.unsqueeze(-1) == positions).to(ranks.dtype)
    # A NaN slice (non-finite input) gives a NaN matrix, as for the ranks.
    return torch.where(torch.isnan(ranks).unsqueeze(-1), ranks.unsqueeze(-1), matrix_)


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
    weights = _check_tensor("grid_shortest_path", "weights", as_float(weights), min_dim=2)
    h, wd = weights.shape[-2:]
    if h * wd >= _MAX_INT32 // 2:
        raise ValueError(f"diffcomb.grid_shortest_path: grid {h}x{wd} is too large (int32 vertex indices)")
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
    cost = _check_tensor("linear_assignment", "cost", as_float(cost), min_dim=2)
    maximize = check_flag("linear_assignment", "maximize", maximize)
    return _solve(cost, 2, _assignment_op, maximize)


argmax_onehot.event_dims = 1  # type: ignore[attr-defined]
topk_mask.event_dims = 1  # type: ignore[attr-defined]
sort_permutation.event_dims = 1  # type: ignore[attr-defined]
grid_shortest_path.event_dims = 2  # type: ignore[attr-defined]
linear_assignment.event_dims = 2  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Gradient estimators.


def _check_perturbation(fn: str, solver: Solver, event_dims: Optional[int], num_samples: int, sigma: float,
                        noise: str) -> tuple[int, int, float]:
    """The checks shared by the perturbed optimizer and its Fenchel-Young loss: (event_dims,
    num_samples, sigma)."""
    event_dims = _event_dims(fn, solver, event_dims)
    num_samples = _check_int(fn, "num_samples", num_samples, 1)
    sigma = _check_positive(fn, "sigma", sigma)
    _check_noise(fn, noise, ("gumbel", "normal"))
    return event_dims, num_samples, sigma


def _event_dims(fn: str, solver: Solver, event_dims: Optional[int]) -> int:
    if not callable(solver):
        raise TypeError(f"diffcomb.{fn}: solver must be callable, got {type(solver).__name__}")
    if event_dims is None:
        event_dims = getattr(solver, "event_dims", getattr(getattr(solver, "func", None), "event_dims", 1))
    return _check_int(fn, "event_dims", event_dims, 0)


def _call_solver(fn: str, solver: Solver, scores: Tensor, minimize: bool) -> Tensor:
    """solver on a (B', *S) batch in maximize form; checks its answer."""
    y = solver(-scores if minimize else scores)
    if not isinstance(y, Tensor) or y.shape != scores.shape:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(
            f"diffcomb.{fn}: the solver must map a batch of scores of shape {tuple(scores.shape)} to solutions "
            f"of the same shape, got {got}"
        )
    if y.device != scores.device:
        raise RuntimeError(f"diffcomb.{fn}: the solver must return its solutions on the scores' device "
                           f"{scores.device}, got {y.device}")
    return y.detach().to(scores.dtype)


def _flatten_event(x: Tensor, event_dims: int) -> Tensor:
    """(..., *S) -> (..., prod(S)) for inner products over the solution."""
    return x.flatten(x.dim() - event_dims) if event_dims else x.unsqueeze(-1)  # flatten: also for 0 rows


def _grad_nu(z: Tensor, noise: str) -> Tensor:
    """Gradient of the noise's negative log-density, SPEC.md 6.2."""
    return z if noise == "normal" else 1.0 - torch.exp(-z)


def _prepare_theta(fn: str, theta: Tensor, event_dims: int) -> tuple[Tensor, torch.Size, torch.dtype]:
    """(rows (B, *S) of a native dtype, theta's shape, the result's dtype); integer and bool
    scores are taken in the default float dtype."""
    theta = _check_tensor(fn, "theta", as_float(theta), min_dim=event_dims)
    shape = theta.shape
    event = shape[len(shape) - event_dims:]
    rows = theta.reshape(math.prod(shape[: len(shape) - event_dims]), *event)
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()
    return rows, shape, theta.dtype


class _PerturbedFn(torch.autograd.Function):
    """y_hat = mean_m y*(theta + sigma Z_m); VJP (1/(sigma M)) sum_m <g, y_m - b> grad nu(Z_m)."""

    @staticmethod
    def forward(ctx, theta: Tensor, z: Tensor, solver: Solver, sigma: float, noise: str, minimize: bool,
                baseline: bool, event_dims: int, fn: str) -> Tensor:
        m = z.shape[0]
        scores = (theta.unsqueeze(0) + sigma * z).flatten(0, 1)  # (M * B, *S), also for an empty S
        y = _call_solver(fn, solver, scores, minimize).reshape(m, *theta.shape)
        y_hat = y.mean(0)
        ctx.save_for_backward(z, y, y_hat)
        ctx.sigma, ctx.noise, ctx.baseline, ctx.event_dims = sigma, noise, baseline, event_dims
        return y_hat

    @staticmethod
    def backward(ctx, g: Tensor):
        z, y, y_hat = ctx.saved_tensors
        if ctx.baseline:
            y = y - y_hat
        d = ctx.event_dims
        dots = (_flatten_event(y, d) * _flatten_event(g, d).unsqueeze(0)).sum(-1)  # (M, B)
        weights = dots.reshape(*dots.shape, *([1] * d))
        dtheta = (weights * _grad_nu(z, ctx.noise)).mean(0) / ctx.sigma
        return dtheta, None, None, None, None, None, None, None, None


class PerturbedSolver:
    """The callable returned by :func:`perturbed`."""

    def __init__(self, solver: Solver, num_samples: int, sigma: float, noise: str, baseline: bool,
                 minimize: bool, event_dims: int, generator: Optional[torch.Generator]) -> None:
        self.solver, self.num_samples, self.sigma, self.noise = solver, num_samples, sigma, noise
        self.baseline, self.minimize, self.event_dims, self.generator = baseline, minimize, event_dims, generator

    def __repr__(self) -> str:
        return (f"PerturbedSolver(solver={getattr(self.solver, '__name__', self.solver)!r}, "
                f"num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}, "
                f"minimize={self.minimize})")

    def __call__(self, theta: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        fn = "perturbed"
        rows, shape, dtype = _prepare_theta(fn, theta, self.event_dims)
        sign = -1.0 if self.minimize else 1.0
        z = _sample(fn, self.noise, (self.num_samples, *rows.shape), generator or self.generator, rows.dtype,
                    rows.device)
        out = _PerturbedFn.apply(sign * rows, z, self.solver, self.sigma, self.noise, self.minimize,
                                 self.baseline, self.event_dims, fn)
        return out.reshape(shape).to(dtype)


def perturbed(solver: Solver, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel",
              baseline: bool = True, minimize: bool = False, event_dims: Optional[int] = None,
              generator: Optional[torch.Generator] = None) -> PerturbedSolver:
    r"""Perturbed optimizer: the expected solution under noise, differentiable.

    .. math::
        y_\sigma(\theta) = \mathbb E_Z\big[ y^*(\theta + \sigma Z) \big], \qquad
        J y_\sigma(\theta) = \tfrac{1}{\sigma} \mathbb E\big[ y^*(\theta + \sigma Z)\, \nabla\nu(Z)^\top \big]

    estimated with ``num_samples`` Monte-Carlo samples, all solved in one solver call.

    Args:
        solver (callable): maps scores ``(B', *S)`` to solutions ``(B', *S)`` (maximize form, or
            costs with ``minimize=True``); any leading batch size ``B'``.
        num_samples (int): Monte-Carlo samples M >= 1. Default 100.
        sigma (float): noise scale > 0. Default 1.
        noise (str): ``"gumbel"`` or ``"normal"``. Default ``"gumbel"``.
        baseline (bool): subtract the mean solution in the Jacobian estimator (variance
            reduction; the estimate's expectation changes by O(1/M)). Default True.
        minimize (bool): the solver minimizes costs; the callable then takes costs ``w`` and
            returns :math:`\mathbb E[y^*_{\min}(w + \sigma Z)]` with Z mirrored. Default False.
        event_dims (int, optional): trailing dimensions of one solution (default: the solver's
            ``event_dims`` attribute, 1 for a plain callable).
        generator (torch.Generator, optional): the noise's default generator.

    Returns:
        PerturbedSolver: ``f(theta, generator=None) -> Tensor`` of theta's shape (an integer or
        bool theta is computed in the default float dtype, also the result's dtype).

    Note:
        Memory O(M numel) (noise and solutions are saved for the backward). The gradient is
        unbiased for the smoothed map; sigma -> 0 tends to the hard solver.

    Example:
        >>> f = diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=20000, sigma=0.5,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> f(torch.tensor([1.0, 0.5, -0.2])).sub(torch.tensor([0.6856, 0.2522, 0.0622])).abs().max() < 0.02
        tensor(True)

    References:
        Q. Berthet et al. Learning with Differentiable Perturbed Optimizers. NeurIPS 2020.
        arXiv:2002.08676
    """
    fn = "perturbed"
    event_dims, num_samples, sigma = _check_perturbation(fn, solver, event_dims, num_samples, sigma, noise)
    baseline, minimize = check_flag(fn, "baseline", baseline), check_flag(fn, "minimize", minimize)
    return PerturbedSolver(solver, num_samples, sigma, noise, baseline, minimize, event_dims, generator)


class _FenchelYoungFn(torch.autograd.Function):
    """Value F_hat - <theta, y> per instance; gradient y_hat - y."""

    @staticmethod
    def forward(ctx, theta: Tensor, y_true: Tensor, z: Tensor, solver: Solver, sigma: float, minimize: bool,
                event_dims: int) -> Tensor:
        m = z.shape[0]
        scores = theta.unsqueeze(0) + sigma * z
        y = _call_solver("perturbed_fenchel_young_loss", solver, scores.flatten(0, 1),
                         minimize).reshape(m, *theta.shape)
        f_hat = (_flatten_event(y, event_dims) * _flatten_event(scores, event_dims)).sum(-1).mean(0)
        value = f_hat - (_flatten_event(theta, event_dims) * _flatten_event(y_true, event_dims)).sum(-1)
        ctx.save_for_backward(y.mean(0), y_true, theta)
        ctx.event_dims = event_dims
        return value

    @staticmethod
    def backward(ctx, g: Tensor):
        y_hat, y_true, theta = ctx.saved_tensors
        gs = g.reshape(*g.shape, *([1] * ctx.event_dims))
        dtheta = gs * (y_hat - y_true) if ctx.needs_input_grad[0] else None
        dy = -gs * theta if ctx.needs_input_grad[1] else None
        return dtheta, dy, None, None, None, None, None


def _reduce(fn: str, value: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    if reduction == "none":
        return value
    raise ValueError(f"diffcomb.{fn}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def perturbed_fenchel_young_loss(theta: Tensor, target: Tensor, solver: Solver, num_samples: int = 100,
                                 sigma: float = 1.0, noise: str = "gumbel", minimize: bool = False,
                                 event_dims: Optional[int] = None, reduction: str = "mean",
                                 generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Perturbed Fenchel-Young loss, up to a constant in ``theta``.

    .. math::
        L_\sigma(\theta; y) = F_\sigma(\theta) - \langle \theta, y \rangle, \quad
        F_\sigma(\theta) = \mathbb E\big[\max_{y'} \langle y', \theta + \sigma Z \rangle\big], \quad
        \nabla_\theta L_\sigma = y_\sigma(\theta) - y

    Args:
        theta (Tensor[..., *S]): scores (costs with ``minimize=True``; then the loss is that of
            the scores ``-theta``, and the gradient's sign follows); integer and bool tensors are
            computed in the default float dtype (``torch.get_default_dtype()``).
        target (Tensor[..., *S]): the true solution ``y``, on theta's device (e.g. an integer
            one-hot tensor; converted like theta).
        solver, num_samples, sigma, noise, minimize, event_dims, generator: as in :func:`perturbed`.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"`` over the instances. Default ``"mean"``.

    Returns:
        Tensor: the loss, one value per instance for ``"none"`` (theta's shape without ``*S``).

    Note:
        The value omits :math:`\sigma \Omega(y)`, which does not depend on theta: it may be
        negative. The gradient needs no Jacobian estimator (low variance, O(numel)).

    Example:
        >>> theta = torch.tensor([1.0, 0.5, -0.2], requires_grad=True)
        >>> loss = diffcomb.perturbed_fenchel_young_loss(theta, torch.tensor([1.0, 0, 0]),
        ...     diffcomb.argmax_onehot, num_samples=10, generator=torch.Generator().manual_seed(0))
        >>> loss.backward(); theta.grad.sum().abs() < 1e-6
        tensor(True)

    References:
        Q. Berthet et al. Learning with Differentiable Perturbed Optimizers. NeurIPS 2020.
        arXiv:2002.08676
    """
    fn = "perturbed_fenchel_young_loss"
    check_same_device(fn, theta=theta, target=target)
    event_dims, num_samples, sigma = _check_perturbation(fn, solver, event_dims, num_samples, sigma, noise)
    minimize = check_flag(fn, "minimize", minimize)
    rows, shape, dtype = _prepare_theta(fn, theta, event_dims)
    target = _check_tensor(fn, "target", as_float(target), min_dim=event_dims)
    if target.shape != shape:
        raise ValueError(f"diffcomb.{fn}: target must have theta's shape {tuple(shape)}, got "
                         f"{tuple(target.shape)}")
    y_rows = target.reshape(rows.shape).to(rows.dtype)
    sign = -1.0 if minimize else 1.0
    z = _sample(fn, noise, (num_samples, *rows.shape), generator, rows.dtype, rows.device)
    value = _FenchelYoungFn.apply(sign * rows, y_rows, z, solver, sigma, minimize, event_dims)
    value = value.reshape(shape[: len(shape) - event_dims]).to(dtype)
    return _reduce(fn, value, reduction)


class _IMLEFn(torch.autograd.Function):
    """z_s = y*(theta + tau_in eps_s); dtheta = mean_s (z_s - y*(alpha theta - lambda g_s + tau_tgt eps_s))."""

    @staticmethod
    def forward(ctx, theta: Tensor, eps: Tensor, solver: Solver, lambda_: float, alpha: float, tau: float,
                tau_target: float, minimize: bool, return_samples: bool, divide_by_lambda: bool) -> Tensor:
        s = eps.shape[0]
        scores = torch.add(theta.unsqueeze(0), eps, alpha=tau).flatten(0, 1)
        z = _call_solver("imle", solver, scores, minimize).reshape(s, *theta.shape)
        ctx.save_for_backward(theta, eps, z)
        ctx.solver, ctx.lambda_, ctx.alpha, ctx.tau_target = solver, lambda_, alpha, tau_target
        ctx.minimize, ctx.return_samples, ctx.divide_by_lambda = minimize, return_samples, divide_by_lambda
        return z if return_samples else z.mean(0)

    @staticmethod
    def backward(ctx, g: Tensor):
        theta, eps, z = ctx.saved_tensors
        g_s = g if ctx.return_samples else g.unsqueeze(0)
        # target = alpha theta - lambda g_s + tau' eps, in two fused passes over (S, B, *S).
        target = torch.add(eps, g_s, alpha=-ctx.lambda_) if ctx.tau_target == 1.0 else \
            torch.add(ctx.tau_target * eps, g_s, alpha=-ctx.lambda_)
        target.add_(theta.unsqueeze(0) if ctx.alpha == 1.0 else ctx.alpha * theta.unsqueeze(0))
        z_target = _call_solver("imle", ctx.solver, target.flatten(0, 1),
                                ctx.minimize).reshape(z.shape)
        dtheta = (z - z_target).mean(0)
        if ctx.divide_by_lambda:
            dtheta = dtheta / ctx.lambda_
        return dtheta, None, None, None, None, None, None, None, None, None


class IMLESolver:
    """The callable returned by :func:`imle`."""

    def __init__(self, solver: Solver, num_samples: int, noise: str, lambda_: float, k: Optional[float],
                 tau: float, tau_target: float, s: int, alpha: float, return_samples: bool,
                 divide_by_lambda: bool, minimize: bool, event_dims: int,
                 generator: Optional[torch.Generator]) -> None:
        self.solver, self.num_samples, self.noise, self.lambda_, self.k = solver, num_samples, noise, lambda_, k
        self.tau, self.tau_target, self.s, self.alpha = tau, tau_target, s, alpha
        self.return_samples, self.divide_by_lambda, self.minimize = return_samples, divide_by_lambda, minimize
        self.event_dims, self.generator = event_dims, generator

    def __repr__(self) -> str:
        return (f"IMLESolver(solver={getattr(self.solver, '__name__', self.solver)!r}, "
                f"num_samples={self.num_samples}, noise={self.noise!r}, lambda_={self.lambda_}, k={self.k}, "
                f"tau={self.tau}, minimize={self.minimize})")

    def __call__(self, theta: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        fn = "imle"
        rows, shape, dtype = _prepare_theta(fn, theta, self.event_dims)
        sample_shape = (self.num_samples, *rows.shape)
        gen = generator or self.generator
        if self.noise == "none":
            eps = rows.new_zeros(sample_shape)
        elif self.noise == "sum_of_gamma":
            eps = _sample(fn, "sum_of_gamma", sample_shape, gen, rows.dtype, rows.device, float(self.k), 1.0,
                          self.s)
        else:
            eps = _sample(fn, self.noise, sample_shape, gen, rows.dtype, rows.device)
        sign = -1.0 if self.minimize else 1.0
        out = _IMLEFn.apply(sign * rows, eps, self.solver, self.lambda_, self.alpha, self.tau, self.tau_target,
                            self.minimize, self.return_samples, self.divide_by_lambda)
        if self.return_samples:
            return out.reshape(self.num_samples, *shape).to(dtype)
        return out.reshape(shape).to(dtype)


def imle(solver: Solver, num_samples: int = 1, noise: str = "sum_of_gamma", target: str = "perturbation",
         lambda_: float = 1.0, k: Optional[float] = None, tau: float = 1.0, tau_target: Optional[float] = None,
         s: int = 10, alpha: float = 1.0, return_samples: bool = False, divide_by_lambda: bool = False,
         minimize: bool = False, event_dims: Optional[int] = None,
         generator: Optional[torch.Generator] = None) -> IMLESolver:
    r"""Implicit maximum-likelihood estimation (I-MLE) around a MAP solver.

    Forward: perturb-and-MAP samples :math:`z_s = y^*(\theta + \tau \epsilon_s)`. Backward
    (perturbation-based implicit differentiation, same noise :math:`\epsilon_s`):

    .. math::
        \theta'_s = \alpha \theta - \lambda \frac{\partial L}{\partial z_s}, \qquad
        \nabla_\theta L \approx \frac1S \sum_s \big( z_s - y^*(\theta'_s + \tau' \epsilon_s) \big)

    Args:
        solver (callable): scores ``(B', *S)`` -> solutions ``(B', *S)`` (maximize form, or costs
            with ``minimize=True``).
        num_samples (int): S >= 1 noise samples, solved in one call. Default 1.
        noise (str): ``"sum_of_gamma"`` (k-subsets; needs ``k``), ``"gumbel"`` (one-hot: exact
            perturb-and-MAP) or ``"none"``. Default ``"sum_of_gamma"``.
        target (str): the target distribution; ``"perturbation"`` (the only one implemented).
        lambda_ (float): target step size > 0. Default 1.
        k (float, optional): subset size for ``"sum_of_gamma"``.
        tau (float): noise temperature of the forward. Default 1.
        tau_target (float, optional): noise temperature of the target solve. Default ``tau``.
        s (int): Gamma terms of the Sum-of-Gamma noise. Default 10.
        alpha (float): scale of theta in the target. Default 1.
        return_samples (bool): return the S samples ``(S, ..., *S)`` instead of their mean. With
            the mean, every sample's target uses the upstream gradient of the mean. Default False.
        divide_by_lambda (bool): divide the estimate by lambda (then ``noise="none"``, S = 1 is the
            blackbox estimator). Default False.
        minimize (bool): the solver minimizes costs; the callable then takes costs. Default False.
        event_dims (int, optional): trailing dimensions of one solution.
        generator (torch.Generator, optional): the noise's default generator.

    Returns:
        IMLESolver: ``f(theta, generator=None) -> Tensor`` (an integer or bool theta is computed
        in the default float dtype, also the result's dtype).

    Note:
        2 S solver calls per forward+backward, memory O(S numel).

    Example:
        >>> f = diffcomb.imle(lambda t: diffcomb.topk_mask(t, 2), noise="none")
        >>> theta = torch.tensor([0.9, 0.1, 0.5, -0.3], requires_grad=True)
        >>> z = f(theta); (z * torch.tensor([0.0, -1, 0.5, 0])).sum().backward(); theta.grad
        tensor([ 0., -1.,  1.,  0.])

    References:
        M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through Discrete
        Exponential Family Distributions. NeurIPS 2021. arXiv:2106.01798
    """
    fn = "imle"
    event_dims = _event_dims(fn, solver, event_dims)
    num_samples = _check_int(fn, "num_samples", num_samples, 1)
    _check_noise(fn, noise, ("sum_of_gamma", "gumbel", "none"))
    if target != "perturbation":
        raise ValueError(f"diffcomb.{fn}: target must be 'perturbation', got {target!r}")
    lambda_ = _check_positive(fn, "lambda_", lambda_)
    tau = _check_positive(fn, "tau", tau, allow_zero=True)
    tau_target = tau if tau_target is None else _check_positive(fn, "tau_target", tau_target, allow_zero=True)
    s = _check_int(fn, "s", s, 1, _MAX_INT32)
    if isinstance(alpha, (Tensor, bool)) or not isinstance(alpha, (int, float)) or not -math.inf < alpha < math.inf:
        raise ValueError(f"diffcomb.{fn}: alpha must be a finite float, got {alpha!r}")
    if noise == "sum_of_gamma":
        if k is None:
            raise ValueError(f"diffcomb.{fn}: noise='sum_of_gamma' needs k (the subset size)")
        k = _check_positive(fn, "k", k)
    return IMLESolver(solver, num_samples, noise, lambda_, k, tau, tau_target, s, float(alpha),
                      check_flag(fn, "return_samples", return_samples),
                      check_flag(fn, "divide_by_lambda", divide_by_lambda), check_flag(fn, "minimize", minimize),
                      event_dims, generator)


class _BlackboxFn(torch.autograd.Function):
    """y = y*(theta); dtheta = (y - y*(theta - lambda g)) / lambda, or g (straight-through)."""

    @staticmethod
    def forward(ctx, theta: Tensor, solver: Solver, lambda_: float, straight_through: bool,
                minimize: bool) -> Tensor:
        y = _call_solver("blackbox", solver, theta, minimize)
        ctx.save_for_backward(theta, y)
        ctx.solver, ctx.lambda_, ctx.straight_through, ctx.minimize = solver, lambda_, straight_through, minimize
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        if ctx.straight_through:
            return g, None, None, None, None
        theta, y = ctx.saved_tensors
        y_lambda = _call_solver("blackbox", ctx.solver, theta - ctx.lambda_ * g, ctx.minimize)
        return (y - y_lambda) / ctx.lambda_, None, None, None, None


class BlackboxSolver:
    """The callable returned by :func:`blackbox`."""

    def __init__(self, solver: Solver, lambda_: float, straight_through: bool, minimize: bool,
                 event_dims: int) -> None:
        self.solver, self.lambda_, self.straight_through = solver, lambda_, straight_through
        self.minimize, self.event_dims = minimize, event_dims

    def __repr__(self) -> str:
        return (f"BlackboxSolver(solver={getattr(self.solver, '__name__', self.solver)!r}, lambda_={self.lambda_}, "
                f"straight_through={self.straight_through}, minimize={self.minimize})")

    def __call__(self, theta: Tensor) -> Tensor:
        rows, shape, dtype = _prepare_theta("blackbox", theta, self.event_dims)
        sign = -1.0 if self.minimize else 1.0
        out = _BlackboxFn.apply(sign * rows, self.solver, self.lambda_, self.straight_through, self.minimize)
        return out.reshape(shape).to(dtype)


def blackbox(solver: Solver, lambda_: float = 10.0, straight_through: bool = False, minimize: bool = False,
             event_dims: Optional[int] = None) -> BlackboxSolver:
    r"""Differentiation of a blackbox solver by interpolation (or straight-through).

    Forward: the solver's answer :math:`y = y^*(\theta)`. Backward with upstream :math:`g`:

    .. math::
        \nabla_\theta = \frac{y^*(\theta) - y^*(\theta - \lambda g)}{\lambda}

    (for a cost solver, ``minimize=True``: :math:`\nabla_w = -(y(w) - y(w + \lambda g)) / \lambda`,
    the paper's form). ``straight_through=True`` returns :math:`g` unchanged instead.

    Args:
        solver (callable): scores ``(B', *S)`` -> solutions ``(B', *S)``.
        lambda_ (float): interpolation strength > 0. Default 10.
        straight_through (bool): identity backward. Default False.
        minimize (bool): the solver minimizes costs; the callable then takes costs. Default False.
        event_dims (int, optional): trailing dimensions of one solution.

    Returns:
        BlackboxSolver: ``f(theta) -> Tensor`` (an integer or bool theta is computed in the
        default float dtype, also the result's dtype).

    Note:
        One extra solver call per backward. Small lambda gives zero gradients almost everywhere;
        larger lambda gives coarser but informative ones.

    Example:
        >>> f = diffcomb.blackbox(lambda t: diffcomb.topk_mask(t, 2), lambda_=1.0)
        >>> theta = torch.tensor([0.9, 0.1, 0.5, -0.3], requires_grad=True)
        >>> (f(theta) * torch.tensor([0.0, -1, 0.5, 0])).sum().backward(); theta.grad
        tensor([ 0., -1.,  1.,  0.])

    References:
        M. Vlastelica Pogancic, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
        Blackbox Combinatorial Solvers. ICLR 2020. arXiv:1912.02175
    """
    fn = "blackbox"
    event_dims = _event_dims(fn, solver, event_dims)
    lambda_ = _check_positive(fn, "lambda_", lambda_)
    return BlackboxSolver(solver, lambda_, check_flag(fn, "straight_through", straight_through),
                          check_flag(fn, "minimize", minimize), event_dims)
