"""Noise samplers of the perturb family (SPEC.md 6.2): native on CPU and CUDA, counter-based
(Philox), so a sample is a pure function of a seed drawn from the caller's ``torch.Generator``;
the same seed gives the same numbers on both devices (to the rounding of their logarithms). One custom
op, ``diffcomb::perturb_noise``."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .. import _native
from .._autodiff import eager_call, lean_ready
from .._checks import check_float, check_int, check_op, check_op_tensor, compute_dtype, message
from ._common import FLOATS, MAX_INT32

__all__ = ["sample_gumbel", "sample_normal", "sample_sum_of_gamma"]

NOISE_CODES = {"gumbel": 0, "normal": 1, "sum_of_gamma": 2}  # csrc/perturb/perturb.h, NoiseCode
_MAX_SEED = 2**62


def _draw_seed(generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """A one-element int64 seed on `device`, drawn from `generator` (or the device's default generator)."""
    if generator is None:
        return torch.randint(0, _MAX_SEED, (1,), dtype=torch.int64, device=device)
    seed = torch.randint(0, _MAX_SEED, (1,), dtype=torch.int64, device=generator.device, generator=generator)
    return seed.to(device)


# Checks of the custom ops' own arguments, run by their implementations and fake implementations,
# so that a direct torch.ops.diffcomb.* call with bad arguments raises instead of handing native
# code addresses it would read or write out of bounds, or parameters outside the sampler's domain.
# Shapes, dtypes, strides, devices and the Python scalars only: no tensor values are read.


def _check_noise_args(seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int,
                      dtype: torch.dtype) -> None:
    where = "torch.ops.diffcomb.perturb_noise"
    check_op_tensor("perturb_noise", "seed", seed, (torch.int64,), (1,))
    check_op(all(d >= 0 for d in shape), lambda: f"{where}: shape must have non-negative sizes, got {list(shape)}",
             ValueError)
    check_op(kind in NOISE_CODES.values(), lambda: f"{where}: kind must be one of {NOISE_CODES}, got {kind}",
             ValueError)
    check_op(dtype in FLOATS, lambda: f"{where}: dtype must be torch.float32 or torch.float64, got {dtype}",
             ValueError)
    if kind == NOISE_CODES["sum_of_gamma"]:
        check_op(0.0 < k < math.inf, lambda: f"{where}: k must be positive and finite, got {k}", ValueError)
        check_op(-math.inf < tau < math.inf, lambda: f"{where}: tau must be finite, got {tau}", ValueError)
        check_op(1 <= s <= MAX_INT32, lambda: f"{where}: s must be in [1, {MAX_INT32}], got {s}", ValueError)


@torch.library.custom_op("diffcomb::perturb_noise", mutates_args=())
def _noise_op(seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int,
              dtype: torch.dtype) -> Tensor:
    """Noise of `shape` from the counter-based stream of `seed` (a one-element int64 tensor)."""
    _check_noise_args(seed, shape, kind, k, tau, s, dtype)
    return _noise(seed, shape, kind, k, tau, s, dtype)


def _noise(seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int, dtype: torch.dtype) -> Tensor:
    """perturb_noise's implementation on valid arguments (sample_noise's lean path calls it directly)."""
    out = torch.empty(tuple(shape), dtype=dtype, device=seed.device)
    if out.numel() > 0:
        _native.launch("sample_noise", "perturb_noise", seed, _native.address(seed), _native.address(out), out.numel(),
                       kind, k, tau, s, _native.dtype_code(out))
    return out


@_noise_op.register_fake
def _(seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int, dtype: torch.dtype) -> Tensor:
    _check_noise_args(seed, shape, kind, k, tau, s, dtype)
    return seed.new_empty(tuple(shape), dtype=dtype)


@_noise_op.register_vmap
def _(info, in_dims, seed: Tensor, shape: Sequence[int], kind: int, k: float, tau: float, s: int,
      dtype: torch.dtype):
    """Under torch.vmap(randomness="different") the seed drawn for the noise is batched: one stream per
    vmapped sample (independent noise), stacked. With randomness="same" the seed is not batched and
    every sample sees the same noise; with "error" torch raises at the draw of the seed."""
    if in_dims[0] is None:
        return _noise_op(seed, shape, kind, k, tau, s, dtype), None
    seeds = seed.movedim(in_dims[0], 0)
    return torch.stack([_noise_op(one, shape, kind, k, tau, s, dtype) for one in seeds]), 0


def sample_noise(fn: str, kind: str, shape: Sequence[int], generator: Optional[torch.Generator],
                 dtype: Optional[torch.dtype], device: Union[str, torch.device, None], k: float = 1.0,
                 tau: float = 1.0, s: int = 1) -> Tensor:
    """Noise of ``kind`` (a key of NOISE_CODES) for public function ``fn``; k, tau and s are the
    Sum-of-Gamma parameters, checked by the caller."""
    if isinstance(shape, int):
        shape = (shape,)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(message(fn, f"generator must be a torch.Generator or None, got {type(generator).__name__}"))
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(message(fn, f"shape must be a sequence of non-negative ints, got {shape!r}"))
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise TypeError(message(fn, f"dtype must be a floating-point dtype, got {dtype}"))
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        _native.cuda(fn)
    seed = _draw_seed(generator, device)
    args = (list(shape), NOISE_CODES[kind], float(k), float(tau), int(s), compute_dtype(dtype))
    # The arguments are valid here: the lean path runs the implementation without the op's checks.
    out = _noise(seed, *args) if lean_ready(seed) else eager_call(_noise_op, seed, *args)
    return out if out.dtype == dtype else out.to(dtype)


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
        index, so CPU and CUDA draw the same values for the same seed (to the last bits of the
        logarithms' rounding). O(numel).

    Example:
        >>> g = diffcomb.sample_gumbel((2, 3), generator=torch.Generator().manual_seed(0))
        >>> g.shape
        torch.Size([2, 3])
    """
    return sample_noise("sample_gumbel", "gumbel", shape, generator, dtype, device)


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
    return sample_noise("sample_normal", "normal", shape, generator, dtype, device)


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
    fn = "sample_sum_of_gamma"
    k = check_float(fn, "k", k)
    tau = check_float(fn, "tau", tau)
    s = check_int(fn, "s", s, 1, MAX_INT32)
    return sample_noise(fn, "sum_of_gamma", shape, generator, dtype, device, k, tau, s)
