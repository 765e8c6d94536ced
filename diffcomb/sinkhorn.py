"""Entropic optimal transport by log-domain Sinkhorn (SPEC.md section 4), and
the layers built on it: soft sort, rank and quantiles through transport to
sorted targets, the Gumbel-Sinkhorn relaxation of permutations, and the
debiased Sinkhorn divergence between point clouds.

The native kernels (csrc/sinkhorn) solve a contiguous batch of problems
``(B, n, m)`` with per-problem convergence, and compute the backward either by
implicit differentiation of the optimality conditions (conjugate gradient on
SPEC 4.3's system) or by replaying the recorded iterations in reverse
(unrolling). This module validates, broadcasts the marginals, flattens the
batch, and registers the kernels as ``torch.library`` custom ops with fake
implementations and autograd, so everything works under
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and
``torch.library.opcheck``.

References:
    M. Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013.
    arXiv:1306.0895
    M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
    NeurIPS 2019. arXiv:1905.11885
    G. Mena, D. Belanger, S. Linderman, J. Snoek. Learning Latent Permutations with
    Gumbel-Sinkhorn Networks. ICLR 2018. arXiv:1802.08665
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from . import _native
from ._checks import as_float, check_flag, check_same_device

__all__ = [
    "SinkhornResult",
    "gumbel_sinkhorn",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_quantile",
    "sinkhorn_rank",
    "sinkhorn_sort",
]

_BACKWARDS = ("implicit", "unroll")
_SQUASHES = ("sigmoid", "none")
_DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-6}  # SPEC 4.1
_CG_TOL = {torch.float32: 1e-7, torch.float64: 1e-11}
_SQUASH_STD_OFFSET = 1e-10  # SPEC 4.5
_GUMBEL_OFFSET = 1e-20  # SPEC 4.6


class SinkhornResult(NamedTuple):
    """Output of :func:`sinkhorn` (leading batch shape ``...``).

    plan (Tensor[..., n, m]): the transport plan P.
    cost (Tensor[...]): the regularized cost OT_eps = <P, C> + eps KL(P || a b^T).
    f (Tensor[..., n]), g (Tensor[..., m]): dual potentials (0 at zero weights).
    n_iter (Tensor[...], int64): iterations executed.
    converged (Tensor[...], bool): whether the row-marginal error reached ``tol``.
    """

    plan: Tensor
    cost: Tensor
    f: Tensor
    g: Tensor
    n_iter: Tensor
    converged: Tensor


# ---------------------------------------------------------------------------
# Validation, at the public boundary only.


def _check_tensor(fn: str, name: str, x: object, min_dim: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"diffcomb.{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"diffcomb.{fn}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"diffcomb.{fn}: {name} must have at least {min_dim} dimension(s), got shape "
                         f"{tuple(x.shape)}")
    if x.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"diffcomb.{fn}: {name} is on device {x.device}; diffcomb supports cpu and cuda")
    if x.device.type == "cuda":
        _native.cuda(fn)
    return x


def _check_positive(fn: str, name: str, value: float) -> float:
    if isinstance(value, (Tensor, bool)) or not isinstance(value, (int, float)):
        raise TypeError(f"diffcomb.{fn}: {name} must be a Python float, got {type(value).__name__}")
    # Comparisons only (no math.isfinite), so a symbolic float under torch.compile passes.
    if not 0.0 < value < math.inf:
        raise ValueError(f"diffcomb.{fn}: {name} must be positive and finite, got {value}")
    return float(value)


def _check_int(fn: str, name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"diffcomb.{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_tol(fn: str, tol: Optional[float], dtype: torch.dtype) -> float:
    if tol is None:
        return _DEFAULT_TOL[dtype]
    if isinstance(tol, (Tensor, bool)) or not isinstance(tol, (int, float)):
        raise TypeError(f"diffcomb.{fn}: tol must be None or a Python float, got {type(tol).__name__}")
    if not 0.0 <= tol < math.inf:
        raise ValueError(f"diffcomb.{fn}: tol must be >= 0 and finite, got {tol}")
    return float(tol)


def _check_choice(fn: str, name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"diffcomb.{fn}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _marginal(fn: str, name: str, w: Optional[Tensor], lead: torch.Size, size: int, like: Tensor) -> Tensor:
    """The weights broadcast to (*lead, size) in like's dtype (uniform 1/size when None)."""
    if w is None:
        return torch.full((*lead, size), 1.0 / size if size else 0.0, dtype=like.dtype, device=like.device)
    _check_tensor(fn, name, w, 1)
    if w.shape[-1] != size:
        raise ValueError(f"diffcomb.{fn}: {name} must have shape (..., {size}) to match the cost of shape "
                         f"(..., {like.shape[-2]}, {like.shape[-1]}), got {tuple(w.shape)}")
    try:
        return w.to(like.dtype).broadcast_to((*lead, size))
    except RuntimeError as exc:
        raise ValueError(f"diffcomb.{fn}: {name} of shape {tuple(w.shape)} does not broadcast to the batch "
                         f"shape {tuple(lead)} of the cost") from exc


def _weights_error(fn: str, a: Tensor, b: Tensor) -> Optional[str]:
    """Why the marginals a (B, n), b (B, m) are invalid (SPEC 4.4: negative weights, unequal or zero
    masses), or None. Rows with NaN/inf are not checked (they give NaN results, SPEC 0). Reads the
    values: the few statistics are computed on the device and read back at once (one
    synchronization on CUDA)."""
    if a.numel() == 0 or b.numel() == 0:
        return None
    a64, b64 = a.double(), b.double()
    sa, sb = a64.sum(-1).reshape(-1), b64.sum(-1).reshape(-1)
    finite = sa.isfinite() & sb.isfinite()
    rtol = 1e-5 if a.dtype == torch.float32 else 1e-9
    unequal = ((sa - sb).abs() > rtol * torch.maximum(sa.abs(), sb.abs()).clamp_min(1.0)) & finite
    k = unequal.to(torch.uint8).argmax()  # the first problem with unequal masses (0 when none)
    zero = torch.zeros((), dtype=torch.float64, device=a.device)
    min_a = torch.where((a64 < 0) & a64.isfinite(), a64, zero).amin()
    min_b = torch.where((b64 < 0) & b64.isfinite(), b64, zero).amin()
    stats = torch.stack([min_a, min_b, unequal.any().double(), k.double(), sa[k], sb[k],
                         ((sa <= 0) & finite).any().double()]).tolist()
    min_a, min_b, any_unequal, k, mass_a, mass_b, zero_mass = stats
    if min_a < 0 or min_b < 0:
        return (f"diffcomb.{fn}: the marginals a and b must be non-negative, got a minimum of {min_a:g} for a "
                f"and {min_b:g} for b")
    if any_unequal:
        return (f"diffcomb.{fn}: the marginals must have equal mass, sum(a) == sum(b); got sum(a) = "
                f"{mass_a:.9g} and sum(b) = {mass_b:.9g} in batch element {int(k)} (unbalanced transport is not "
                f"supported)")
    if zero_mass:
        return f"diffcomb.{fn}: the marginals must have positive mass, got sum(a) = 0"
    return None


_INTERNAL_PATHS = tuple(os.path.dirname(path) + os.sep for path in (__file__, torch.__file__))


def _warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside diffcomb and torch (the user's line,
    also when the custom op runs inside a compiled graph)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_PATHS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level - 1 if frame is None else level)


def _warn_not_converged(fn: str, err: Tensor, tol: float, max_iter: int) -> None:
    """One warning when some problem stopped at max_iter above tol (err on the CPU costs nothing to
    read, on CUDA one synchronization; NaN problems are not counted, their results are NaN)."""
    bad = err > tol
    count = int(bad.sum())
    if count:
        worst = float(err[bad].max())
        _warn(f"diffcomb.{fn}: Sinkhorn did not converge in {count} of {err.numel()} problem(s): stopped at "
              f"max_iter={max_iter} with a row-marginal error sum_i |sum_j P_ij - a_i| of up to {worst:.3g} > "
              f"tol={tol:g}, so the plan (and its gradient) is that far from the transport between a and b. "
              f"Increase max_iter, or epsilon (it is on the scale of the cost: rescale a large cost); "
              f"`converged` reports each problem")


# ---------------------------------------------------------------------------
# Custom ops on contiguous (B, n, m) batches.
#
# Each op's implementation (and its fake) first checks what a direct call could get wrong:
# shapes, dtypes, devices, contiguity and the scalar arguments' ranges, with torch._check (no
# tensor values are read, so the checks are free and pass under torch.compile and opcheck).
# The public functions have already validated with named messages; these checks keep a direct
# call of torch.ops.diffcomb.* from reading out of bounds.

_OP_DEVICES = ("cpu", "cuda", "meta")


def _check_op_cost(op: str, C: Tensor) -> None:
    torch._check(C.dim() == 3, lambda: f"diffcomb::{op}: C must have shape (B, n, m), got {tuple(C.shape)}")
    torch._check(C.dtype in _native.DTYPE_CODES,
                 lambda: f"diffcomb::{op}: C must be float32 or float64, got {C.dtype}")
    torch._check(C.device.type in _OP_DEVICES, lambda: f"diffcomb::{op}: C is on {C.device}; cpu or cuda only")
    torch._check(C.is_contiguous(), lambda: f"diffcomb::{op}: C must be contiguous")


def _check_op_tensor(op: str, name: str, t: Optional[Tensor], shape: tuple, C: Tensor,
                     dtype: Optional[torch.dtype] = None) -> None:
    """A side input of a raw op (None is skipped): its shape, dtype (C's unless given), device
    (C's) and contiguity."""
    if t is None:
        return
    torch._check(t.dim() == len(shape) and all(s == e for s, e in zip(t.shape, shape)),
                 lambda: f"diffcomb::{op}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    want = C.dtype if dtype is None else dtype
    torch._check(t.dtype == want, lambda: f"diffcomb::{op}: {name} must have dtype {want}, got {t.dtype}")
    torch._check(t.device == C.device, lambda: f"diffcomb::{op}: {name} is on {t.device}, C is on {C.device}")
    torch._check(t.is_contiguous(), lambda: f"diffcomb::{op}: {name} must be contiguous")


def _check_op_eps(op: str, eps: float) -> None:
    torch._check_value(0.0 < eps < math.inf, lambda: f"diffcomb::{op}: eps must be positive and finite, got {eps}")


def _check_forward_args(C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float,
                        check_every: int) -> None:
    op = "sinkhorn"
    _check_op_cost(op, C)
    batch, n, m = C.shape
    _check_op_tensor(op, "a", a, (batch, n), C)
    _check_op_tensor(op, "b", b, (batch, m), C)
    _check_op_eps(op, eps)
    torch._check_value(max_iter >= 1, lambda: f"diffcomb::{op}: max_iter must be >= 1, got {max_iter}")
    torch._check_value(check_every >= 1, lambda: f"diffcomb::{op}: check_every must be >= 1, got {check_every}")
    torch._check_value(tol < math.inf, lambda: f"diffcomb::{op}: tol must be finite (<= 0: no check), got {tol}")


def _check_backward_args(op: str, C: Tensor, a: Tensor, b: Tensor, G: Optional[Tensor], gcost: Optional[Tensor],
                         eps: float) -> None:
    _check_op_cost(op, C)
    batch, n, m = C.shape
    _check_op_tensor(op, "a", a, (batch, n), C)
    _check_op_tensor(op, "b", b, (batch, m), C)
    _check_op_tensor(op, "G", G, (batch, n, m), C)
    _check_op_tensor(op, "gcost", gcost, (batch,), C)
    _check_op_eps(op, eps)


def _capturing(x: Tensor) -> bool:
    """Whether x's device is being captured into a CUDA graph (no synchronization allowed)."""
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def _cuda_work(x: Tensor, batch: int, n: int, m: int) -> Tensor:
    nbytes = _native.cuda("sinkhorn").sinkhorn_work_bytes(batch, n, m)
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, device=x.device)


def _history_shapes(batch: int, n: int, m: int, max_iter: int, unroll: bool) -> tuple[tuple, tuple]:
    steps = max_iter if unroll else 0
    return (batch, steps, n), (batch, steps + 1 if unroll else 0, m)


@torch.library.custom_op("diffcomb::sinkhorn", mutates_args=())
def _sinkhorn_op(C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float, check_every: int,
                 unroll: bool, check_weights: bool = False, caller: str = "sinkhorn"
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(P, f, g, cost, n_iter, err, f_hist, g_hist) for costs C (B, n, m) and weights a (B, n), b (B, m).
    tol <= 0: exactly max_iter iterations. f_hist/g_hist: recorded iterates when unroll.

    check_weights: raise ValueError for negative weights or unequal masses (SPEC 4.4; reads the
    weights, one synchronization on CUDA, skipped while a CUDA graph is captured). A run with
    tol > 0 warns (UserWarning) when some problem stopped at max_iter above tol (on CUDA reading
    the errors costs one synchronization; skipped while a CUDA graph is captured). Both happen here, in the op, so that compiled graphs raise and
    warn as eager calls do. caller: the public function those messages name. A problem with n = 0
    or m = 0 has no transport between masses 0 and 1: its cost, potentials and err are NaN."""
    _check_forward_args(C, a, b, eps, max_iter, tol, check_every)
    if check_weights and not _capturing(C):
        message = _weights_error(caller, a, b)
        if message is not None:
            raise ValueError(message)
    batch, n, m = C.shape
    fh_shape, gh_shape = _history_shapes(batch, n, m, max_iter, unroll)
    if C.numel() == 0:
        nan = math.nan
        return (torch.zeros_like(C), C.new_full((batch, n), nan), C.new_full((batch, m), nan),
                C.new_full((batch,), nan), torch.zeros(batch, dtype=torch.int64, device=C.device),
                torch.full((batch,), nan, dtype=torch.float64, device=C.device), C.new_zeros(fh_shape),
                C.new_zeros(gh_shape))
    P = torch.empty_like(C)
    f = C.new_empty((batch, n))
    g = C.new_empty((batch, m))
    cost = C.new_empty(batch)
    n_iter = torch.empty(batch, dtype=torch.int64, device=C.device)
    err = torch.empty(batch, dtype=torch.float64, device=C.device)
    f_hist = C.new_zeros(fh_shape)  # rows past a problem's n_iter stay 0
    g_hist = C.new_zeros(gh_shape)
    addr = _native.address
    args = (addr(C), addr(a), addr(b), addr(P), addr(f), addr(g), addr(cost), addr(n_iter), addr(err),
            addr(f_hist), addr(g_hist))
    if C.is_cuda:
        work = _cuda_work(C, batch, n, m)
        device, stream = _native.stream_of(C)
        _native.cuda("sinkhorn").sinkhorn_forward(*args, addr(work), batch, n, m, eps, max_iter, tol, check_every,
                                                  _native.dtype_code(C), device, stream)
    else:
        _native.cpu().sinkhorn_forward(*args, batch, n, m, eps, max_iter, tol, check_every, _native.dtype_code(C),
                                       _native.threads())
    if tol > 0 and not _capturing(C):  # on CUDA: one synchronization, the price of never failing silently
        _warn_not_converged(caller, err, tol, max_iter)
    return P, f, g, cost, n_iter, err, f_hist, g_hist


@_sinkhorn_op.register_fake
def _(C, a, b, eps, max_iter, tol, check_every, unroll, check_weights=False, caller="sinkhorn"):
    _check_forward_args(C, a, b, eps, max_iter, tol, check_every)
    batch, n, m = C.shape
    fh_shape, gh_shape = _history_shapes(batch, n, m, max_iter, unroll)
    return (torch.empty_like(C), C.new_empty((batch, n)), C.new_empty((batch, m)), C.new_empty(batch),
            C.new_empty(batch, dtype=torch.int64), C.new_empty(batch, dtype=torch.float64), C.new_empty(fh_shape),
            C.new_empty(gh_shape))


def _empty_backward(C: Tensor, a: Tensor, b: Tensor, gcost: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of problems with n = 0 or m = 0: the plan is empty and the cost NaN, so a cost
    gradient makes the weights' gradients NaN."""
    fill = math.nan if gcost is not None else 0.0
    return torch.zeros_like(C), torch.full_like(a, fill), torch.full_like(b, fill)


@torch.library.custom_op("diffcomb::sinkhorn_implicit_backward", mutates_args=())
def _implicit_backward_op(C: Tensor, a: Tensor, b: Tensor, P: Tensor, f: Tensor, g: Tensor, G: Optional[Tensor],
                          gcost: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dC, da, db) by implicit differentiation (SPEC 4.3 b) of the plan P's own optimality
    conditions (its marginals P 1, P^T 1 in H: exact for the returned plan, converged or not) for
    plan gradients G (B, n, m) and cost gradients gcost (B) (envelope, SPEC 4.2); None stands for
    zero."""
    op = "sinkhorn_implicit_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    batch, n, m = C.shape
    _check_op_tensor(op, "P", P, (batch, n, m), C)
    _check_op_tensor(op, "f", f, (batch, n), C)
    _check_op_tensor(op, "g", g, (batch, m), C)
    if C.numel() == 0:
        return _empty_backward(C, a, b, gcost)
    dC, da, db = torch.zeros_like(C), torch.zeros_like(a), torch.zeros_like(b)
    addr = _native.address
    cg_tol = _CG_TOL[C.dtype]
    cg_max = 10 * (n + m) + 100
    args = (addr(C), addr(a), addr(b), addr(P), addr(f), addr(g), addr(G), addr(gcost), addr(dC), addr(da),
            addr(db))
    if C.is_cuda:
        work = _cuda_work(C, batch, n, m)
        device, stream = _native.stream_of(C)
        _native.cuda("sinkhorn").sinkhorn_implicit_backward(*args, addr(work), batch, n, m, eps, cg_tol, cg_max,
                                                            _native.dtype_code(C), device, stream)
    else:
        _native.cpu().sinkhorn_implicit_backward(*args, batch, n, m, eps, cg_tol, cg_max, _native.dtype_code(C),
                                                 _native.threads())
    return dC, da, db


@_implicit_backward_op.register_fake
def _(C, a, b, P, f, g, G, gcost, eps):
    op = "sinkhorn_implicit_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    batch, n, m = C.shape
    _check_op_tensor(op, "P", P, (batch, n, m), C)
    _check_op_tensor(op, "f", f, (batch, n), C)
    _check_op_tensor(op, "g", g, (batch, m), C)
    return torch.empty_like(C), torch.empty_like(a), torch.empty_like(b)


def _check_history(op: str, C: Tensor, f_hist: Tensor, g_hist: Tensor, n_iter: Tensor) -> None:
    batch, n, m = C.shape
    torch._check(f_hist.dim() == 3, lambda: f"diffcomb::{op}: f_hist must have shape (B, T, n), got "
                                            f"{tuple(f_hist.shape)}")
    steps = f_hist.shape[1]
    _check_op_tensor(op, "f_hist", f_hist, (batch, steps, n), C)
    _check_op_tensor(op, "g_hist", g_hist, (batch, steps + 1, m), C)
    _check_op_tensor(op, "n_iter", n_iter, (batch,), C, torch.int64)


@torch.library.custom_op("diffcomb::sinkhorn_unrolled_backward", mutates_args=())
def _unrolled_backward_op(C: Tensor, a: Tensor, b: Tensor, f_hist: Tensor, g_hist: Tensor, n_iter: Tensor,
                          G: Optional[Tensor], gcost: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dC, da, db) through the recorded iterations (SPEC 4.3 a); cost gradients by the envelope.
    n_iter is clamped to the recorded history by the kernels."""
    op = "sinkhorn_unrolled_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    _check_history(op, C, f_hist, g_hist, n_iter)
    batch, n, m = C.shape
    if C.numel() == 0:
        return _empty_backward(C, a, b, gcost)
    dC, da, db = torch.zeros_like(C), torch.zeros_like(a), torch.zeros_like(b)
    max_iter = f_hist.shape[1]
    addr = _native.address
    args = (addr(C), addr(a), addr(b), addr(f_hist), addr(g_hist), addr(n_iter), addr(G), addr(gcost), addr(dC),
            addr(da), addr(db))
    if C.is_cuda:
        work = _cuda_work(C, batch, n, m)
        device, stream = _native.stream_of(C)
        _native.cuda("sinkhorn").sinkhorn_unrolled_backward(*args, addr(work), batch, n, m, max_iter, eps,
                                                            _native.dtype_code(C), device, stream)
    else:
        _native.cpu().sinkhorn_unrolled_backward(*args, batch, n, m, max_iter, eps, _native.dtype_code(C),
                                                 _native.threads())
    return dC, da, db


@_unrolled_backward_op.register_fake
def _(C, a, b, f_hist, g_hist, n_iter, G, gcost, eps):
    op = "sinkhorn_unrolled_backward"
    _check_backward_args(op, C, a, b, G, gcost, eps)
    _check_history(op, C, f_hist, g_hist, n_iter)
    return torch.empty_like(C), torch.empty_like(a), torch.empty_like(b)


def _setup(ctx, inputs, output) -> None:
    C, a, b, eps, _max_iter, _tol, _check_every, unroll, _check_weights, _caller = inputs
    P, f, g, cost, n_iter, err, f_hist, g_hist = output
    ctx.mark_non_differentiable(f, g, n_iter, err, f_hist, g_hist)
    ctx.set_materialize_grads(False)  # an unused plan gradient stays None: envelope only, no CG
    ctx.eps = eps
    ctx.unroll = unroll
    if unroll:
        ctx.save_for_backward(C, a, b, f_hist, g_hist, n_iter)
    else:
        ctx.save_for_backward(C, a, b, P, f, g)


def _backward(ctx, gP, _gf, _gg, gcost, _gn, _gerr, _gfh, _ggh):
    none = (None,) * 7
    if gP is None and gcost is None:
        return (None, None, None) + none
    G = None if gP is None else gP.contiguous()
    gc = None if gcost is None else gcost.contiguous()
    if ctx.unroll:
        C, a, b, f_hist, g_hist, n_iter = ctx.saved_tensors
        dC, da, db = torch.ops.diffcomb.sinkhorn_unrolled_backward(C, a, b, f_hist, g_hist, n_iter, G, gc, ctx.eps)
    else:
        # Exact for the returned plan whether or not the forward converged (a forward that did
        # not has warned already, on the CPU).
        C, a, b, P, f, g = ctx.saved_tensors
        dC, da, db = torch.ops.diffcomb.sinkhorn_implicit_backward(C, a, b, P, f, g, G, gc, ctx.eps)
    need = ctx.needs_input_grad
    return (dC if need[0] else None, da if need[1] else None, db if need[2] else None) + none


torch.library.register_autograd("diffcomb::sinkhorn", _backward, setup_context=_setup)


def _solve(fn: str, C: Tensor, a: Tensor, b: Tensor, eps: float, max_iter: int, tol: float, check_every: int,
           unroll: bool, check_weights: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(P, f, g, cost, n_iter, err) of contiguous (B, n, m) problems through the custom op, which
    checks the weights when asked and warns (on the CPU) about problems that did not converge, in
    the name of the public function fn."""
    P, f, g, cost, n_iter, err, _, _ = torch.ops.diffcomb.sinkhorn(
        C.contiguous(), a.contiguous(), b.contiguous(), eps, max_iter, tol, check_every, unroll, check_weights, fn)
    return P, f, g, cost, n_iter, err


# ---------------------------------------------------------------------------
# Public functions.


def sinkhorn(cost: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None, epsilon: float = 0.1, *,
             max_iter: int = 1000, tol: Optional[float] = None, check_every: int = 10,
             backward: str = "implicit") -> SinkhornResult:
    r"""Entropic optimal transport between histograms by log-domain Sinkhorn iterations.

    .. math::
        \mathrm{OT}_\varepsilon(a, b, C) = \min_{P \ge 0,\ P 1 = a,\ P^\top 1 = b}
            \langle P, C\rangle + \varepsilon\, \mathrm{KL}(P \,\|\, a b^\top),
        \qquad P_{ij} = a_i b_j \exp\big((f_i + g_j - C_{ij})/\varepsilon\big)

    Args:
        cost (Tensor[..., n, m]): cost matrices; any leading batch dimensions.
        a (Tensor[..., n], optional): source weights, non-negative; uniform ``1/n`` when None.
            Broadcast against the batch.
        b (Tensor[..., m], optional): target weights with ``sum(b) == sum(a)``; uniform ``1/m`` when None.
        epsilon (float): entropic regularization, > 0. Default 0.1.
        max_iter (int): iteration limit (one iteration = the f- and the g-update). Default 1000.
        tol (float, optional): stop when ``sum_i |sum_j P_ij - a_i| <= tol`` (columns are exact after
            each iteration). Default 1e-6 for float64, 1e-4 for float32 (SPEC 4.1). ``tol=0`` runs
            exactly ``max_iter`` iterations (``converged`` is then False).
        check_every (int): test convergence every this many iterations (and at the last one). Default 10.
        backward (str): ``"implicit"`` (default): implicit differentiation of the returned plan's
            optimality conditions (see Note), no stored iterates; ``"unroll"``: backpropagation through
            the executed iterations, exact for the truncated algorithm, stores the iterates
            (``O(T (n + m))`` memory per problem).

    Returns:
        SinkhornResult: ``plan (Tensor[..., n, m])``, ``cost (Tensor[...])`` (the regularized cost above),
        ``f (Tensor[..., n])``, ``g (Tensor[..., m])`` (dual potentials, 0 at zero weights),
        ``n_iter (Tensor[...], int64)``, ``converged (Tensor[...], bool)``.

    Note:
        Each problem iterates until its own convergence, so a result does not depend on the other
        problems of the batch. Time ``O(T n m)``, memory ``O(n m)`` beyond the plan. Gradients flow to
        ``cost``, ``a`` and ``b`` from ``plan`` and ``cost``; the cost's gradient is the envelope
        gradient ``(P, f, g)`` (SPEC 4.2, exact at convergence); the potentials, ``n_iter`` and
        ``converged`` are not differentiable. Gradients with respect to ``a`` and ``b`` are defined up
        to an additive constant (the mass constraint). The implicit backward differentiates the
        optimality conditions of the returned plan with that plan's own row and column sums (they
        differ from ``a`` and ``b`` by up to ``tol``; the plan is the exact transport between them),
        so it is exact for the returned plan, converged or not. Its distance to the derivative of
        the exact transport between ``a`` and ``b`` is the forward's own error, about
        ``tol / epsilon`` relative on well-conditioned problems (up to ``tol * n_iter / epsilon``
        on slowly converging ones): lower ``tol`` when that matters.

        Convergence: a problem that stops at ``max_iter`` with a marginal error above ``tol`` has
        ``converged = False``, and the call emits one ``UserWarning`` naming the worst error (raise
        ``max_iter`` or ``epsilon``). The warning is given on every device, also inside
        ``torch.compile``d graphs (it is issued by the custom op at run time); on CUDA reading the
        errors costs one device synchronization per call (skipped while a CUDA graph is captured).
        ``tol=0`` asks for exactly ``max_iter`` iterations and never warns.

        Errors and NaN: a problem whose cost or weights contain NaN or infinity gives NaN outputs (no
        error); a problem with ``n = 0`` or ``m = 0`` has an empty plan and a NaN cost (there is no
        transport between masses 0 and 1). Shape mismatches, tensors on different devices,
        ``epsilon <= 0``, and, when ``a`` or ``b`` is given, negative weights or unequal masses raise
        (eagerly and under ``torch.compile``; checking the weights' values synchronizes once on
        CUDA). Small ``epsilon`` needs more iterations (about ``1/epsilon`` on a unit-scale cost);
        float32 with ``epsilon`` below about ``1e-3 max|C|`` is fragile.

    Example:
        >>> C = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> out = sinkhorn(C, epsilon=1.0, tol=1e-9)
        >>> out.plan
        tensor([[0.3655, 0.1345],
                [0.1345, 0.3655]])
        >>> round(float(out.cost), 4)
        0.3799

    References:
        M. Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013.
    """
    return _sinkhorn("sinkhorn", cost, a, b, epsilon, max_iter, tol, check_every, backward)


def _sinkhorn(fn: str, cost: Tensor, a: Optional[Tensor], b: Optional[Tensor], epsilon: float, max_iter: int,
              tol: Optional[float], check_every: int, backward: str) -> SinkhornResult:
    """sinkhorn, with messages in the name of the public function fn."""
    check_same_device(fn, cost=cost, a=a, b=b)
    _check_tensor(fn, "cost", cost, 2)
    eps = _check_positive(fn, "epsilon", epsilon)
    max_iter = _check_int(fn, "max_iter", max_iter, 1)
    check_every = _check_int(fn, "check_every", check_every, 1)
    backward = _check_choice(fn, "backward", backward, _BACKWARDS)
    dtype = _compute_dtype(cost.dtype)
    tol = _check_tol(fn, tol, dtype)
    C = cost.to(dtype)
    *lead, n, m = C.shape
    lead = torch.Size(lead)
    aw = _marginal(fn, "a", a, lead, n, C)
    bw = _marginal(fn, "b", b, lead, m, C)
    batch = math.prod(lead)
    # Uniform default weights are valid by construction: only given weights are checked.
    P, f, g, value, n_iter, err = _solve(fn, C.reshape(batch, n, m), aw.reshape(batch, n), bw.reshape(batch, m), eps,
                                         max_iter, tol, check_every, backward == "unroll",
                                         check_weights=a is not None or b is not None)
    f = torch.where(aw.reshape(batch, n) == 0, torch.zeros_like(f), f)
    g = torch.where(bw.reshape(batch, m) == 0, torch.zeros_like(g), g)
    out_dtype = cost.dtype
    return SinkhornResult(P.reshape(*lead, n, m).to(out_dtype), value.reshape(lead).to(out_dtype),
                          f.reshape(*lead, n).to(out_dtype), g.reshape(*lead, m).to(out_dtype),
                          n_iter.reshape(lead), (err <= tol).reshape(lead))


# ---------------------------------------------------------------------------
# Soft sort, rank and quantiles through transport to sorted targets (SPEC 4.5).


def _squash(x: Tensor, kind: str) -> Tensor:
    """sigmoid((x - mean) / (std + 1e-10)) along the last axis (population std), or x."""
    if kind == "none":
        return x
    mu = x.mean(-1, keepdim=True)
    d = x - mu
    # The std as scale * std(d / scale), scale = max |d| (a constant for autograd: the std is
    # homogeneous in it), so that squaring cannot overflow for large finite x.
    scale = d.detach().abs().amax(-1, keepdim=True) if d.shape[-1] else d.new_zeros((*d.shape[:-1], 1))
    positive = scale > 0
    scale = torch.where(positive, scale, torch.ones_like(scale))
    var = (d / scale).square().mean(-1, keepdim=True)
    # sqrt with a zero gradient at var = 0 (the std term multiplies x - mean = 0 there).
    sd = torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt() * scale, torch.zeros_like(var))
    return torch.sigmoid(d / (sd + _SQUASH_STD_OFFSET))


def _sort_rows(fn: str, x: Tensor, dim: int) -> tuple[Tensor, torch.Size, int]:
    """x (a float tensor: as_float first) as contiguous rows (B, n) of the compute dtype, with dim last."""
    _check_tensor(fn, "x", x, 1)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"diffcomb.{fn}: dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise IndexError(f"diffcomb.{fn}: dim={dim} is out of range for a tensor of shape {tuple(x.shape)}")
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    n = moved.shape[-1]
    rows = moved.reshape(math.prod(lead), n).to(_compute_dtype(x.dtype))
    return rows, lead, dim % x.dim()


def _plan_to_sorted_targets(fn: str, x: Tensor, dim: int, epsilon: float, num_targets: Optional[int], squash: str,
                            max_iter: int, tol: Optional[float], backward: str):
    """What sinkhorn_rank and sinkhorn_sort share: x's rows (B, n), its lead shape and dim, the
    target weights b (1, m) and the plan P (B, n, m) to m sorted targets."""
    rows, lead, dim = _sort_rows(fn, x, dim)
    eps = _check_positive(fn, "epsilon", epsilon)
    n = rows.shape[-1]
    y, b = _targets(n, _num_targets(fn, num_targets, n), rows)
    return rows, lead, dim, b, _transport_to_targets(fn, rows, y, b, eps, squash, max_iter, tol, backward)


def _transport_to_targets(fn: str, rows: Tensor, y: Tensor, b: Tensor, eps: float, squash: str, max_iter: int,
                          tol: Optional[float], backward: str) -> Tensor:
    """P (B, n, m) from x~ = squash(x) (B, n) to targets y (m) with weights b (B or 1, m), a = 1/n."""
    _check_choice(fn, "squash", squash, _SQUASHES)
    backward = _check_choice(fn, "backward", backward, _BACKWARDS)
    max_iter = _check_int(fn, "max_iter", max_iter, 1)
    tol_v = _check_tol(fn, tol, rows.dtype)
    batch, n = rows.shape
    xt = _squash(rows, squash)
    C = (xt.unsqueeze(-1) - y).square()
    a = torch.full((batch, n), 1.0 / n if n else 0.0, dtype=rows.dtype, device=rows.device)
    P = _solve(fn, C, a, b.expand(batch, -1), eps, max_iter, tol_v, 10, backward == "unroll")[0]
    return P


def _targets(n: int, m: int, like: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.linspace(0.0, 1.0, m, dtype=like.dtype, device=like.device) if m > 1 \
        else torch.zeros(m, dtype=like.dtype, device=like.device)
    b = torch.full((1, m), 1.0 / m if m else 0.0, dtype=like.dtype, device=like.device)
    return y, b


def _num_targets(fn: str, num_targets: Optional[int], n: int) -> int:
    if num_targets is None:
        return n
    return _check_int(fn, "num_targets", num_targets, 1)


def sinkhorn_rank(x: Tensor, epsilon: float = 1e-2, *, dim: int = -1, descending: bool = False,
                  num_targets: Optional[int] = None, squash: str = "sigmoid", max_iter: int = 1000,
                  tol: Optional[float] = None, backward: str = "implicit") -> Tensor:
    r"""Soft ranks through optimal transport to sorted targets (Cuturi, Teboul, Vert 2019).

    .. math::
        \tilde x = \sigma\Big(\frac{x - \bar x}{\mathrm{std}(x) + 10^{-10}}\Big),\quad
        C_{ij} = (\tilde x_i - y_j)^2,\quad
        R_i = n\, \frac{(P \bar b)_i}{a_i},\ \ \bar b_j = \textstyle\sum_{k \le j} b_k

    with ``P`` the entropic transport plan (:func:`sinkhorn`) from ``a = 1/n`` to ``m`` targets
    ``y_j = (j - 1)/(m - 1)`` with weights ``b = 1/m``.

    Args:
        x (Tensor[..., n]): values to rank along ``dim``; integer and bool tensors are ranked in
            torch's default float dtype (the result has that dtype).
        epsilon (float): entropic regularization (on the squashed [0, 1] scale). Default 1e-2.
        dim (int): the ranked dimension. Default -1.
        descending (bool): rank 1 for the largest value. Default False.
        num_targets (int, optional): number of targets ``m`` (default ``n``).
        squash (str): ``"sigmoid"`` (default) or ``"none"`` (then ``x`` should lie in [0, 1]).
        max_iter, tol, backward: as in :func:`sinkhorn`.

    Returns:
        Tensor[..., n]: soft ranks in ``[1, n]`` (1-based; they sum to ``n(n + 1)/2`` when ``m = n``).

    Note:
        ``O(T n m)`` time: for large ``n`` the permutahedron :func:`diffcomb.soft_rank` is faster; this
        operator offers weights and ``m != n``. As ``epsilon -> 0`` the ranks tend to the hard ranks.
        NaN or infinite values make their row NaN. A transport that stops at ``max_iter`` above
        ``tol`` warns as in :func:`sinkhorn` (small ``epsilon`` needs a larger ``max_iter``).

    Example:
        >>> sinkhorn_rank(torch.tensor([3.0, 1.0, 2.0]), 1e-3).round()
        tensor([3., 1., 2.])

    References:
        M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
        NeurIPS 2019.
    """
    fn = "sinkhorn_rank"
    x = as_float(x)
    descending = check_flag(fn, "descending", descending)
    rows, lead, dim, b, P = _plan_to_sorted_targets(fn, x, dim, epsilon, num_targets, squash, max_iter, tol,
                                                    backward)
    n = rows.shape[-1]
    R = n * n * (P @ b[0].cumsum(0))  # n (P bbar)_i / a_i with a_i = 1/n
    if descending:
        R = (n + 1) - R
    return R.reshape(*lead, n).movedim(-1, dim).to(x.dtype)


def sinkhorn_sort(x: Tensor, epsilon: float = 1e-2, *, dim: int = -1, descending: bool = False,
                  num_targets: Optional[int] = None, squash: str = "sigmoid", max_iter: int = 1000,
                  tol: Optional[float] = None, backward: str = "implicit") -> Tensor:
    r"""Soft sort through optimal transport to sorted targets (Cuturi, Teboul, Vert 2019).

    .. math::
        S_j = \frac{(P^\top x)_j}{b_j}

    with ``P`` the plan of :func:`sinkhorn_rank` (squashed values to ``m`` sorted targets); ``S`` is a
    weighted mean of the original values, so it stays on their scale.

    Args:
        x (Tensor[..., n]): values to sort along ``dim``; integer and bool tensors are sorted in
            torch's default float dtype (the result has that dtype).
        epsilon (float): entropic regularization. Default 1e-2.
        dim (int): the sorted dimension. Default -1.
        descending (bool): largest first. Default False.
        num_targets (int, optional): output length ``m`` (default ``n``): ``m < n`` gives soft
            ``m``-quantiles of the values.
        squash, max_iter, tol, backward: as in :func:`sinkhorn_rank`.

    Returns:
        Tensor[..., m]: soft sorted values along ``dim``.

    Note:
        Mass is conserved: ``mean(S) = mean(x)`` when ``m = n``. As ``epsilon -> 0`` ``S`` tends to the
        sorted values. NaN or infinite values make their row NaN; ``n = 0`` values give NaN for
        ``m > 0`` targets. A transport that stops at ``max_iter`` above ``tol`` warns as in
        :func:`sinkhorn`.

    Example:
        >>> sinkhorn_sort(torch.tensor([3.0, 1.0, 2.0]), 1e-3).round(decimals=4)
        tensor([1., 2., 3.])

    References:
        M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
        NeurIPS 2019.
    """
    fn = "sinkhorn_sort"
    x = as_float(x)
    descending = check_flag(fn, "descending", descending)
    rows, lead, dim, b, P = _plan_to_sorted_targets(fn, x, dim, epsilon, num_targets, squash, max_iter, tol,
                                                    backward)
    m = P.shape[-1]
    S = (P.transpose(-1, -2) @ rows.unsqueeze(-1)).squeeze(-1) * m
    if rows.shape[-1] == 0:  # no values to sort into m > 0 targets: the means are undefined (SPEC 0)
        S = S + math.nan
    if descending:
        S = S.flip(-1)
    return S.reshape(*lead, m).movedim(-1, dim).to(x.dtype)


def sinkhorn_quantile(x: Tensor, q: Union[float, Sequence[float]], epsilon: float = 1e-2, *,
                      width: float = 0.1, dim: int = -1, squash: str = "sigmoid", max_iter: int = 1000,
                      tol: Optional[float] = None, backward: str = "implicit") -> Tensor:
    r"""Soft quantiles through optimal transport to three targets (SPEC 4.5).

    .. math::
        y = (0, \tfrac12, 1),\quad b = (q - \tfrac t2,\ t,\ 1 - q - \tfrac t2),\quad
        Q_q(x) = \frac{(P^\top x)_2}{t}

    a smoothed mean of the values around the ``q``-quantile (``t`` = ``width``).

    Args:
        x (Tensor[..., n]): values along ``dim``; integer and bool tensors are used in torch's
            default float dtype (the result has that dtype).
        q (float or sequence of floats): levels with ``width/2 <= q <= 1 - width/2``.
        epsilon (float): entropic regularization. Default 1e-2.
        width (float): the mass ``t`` of the middle target. Default 0.1.
        dim (int): the reduced dimension. Default -1.
        squash, max_iter, tol, backward: as in :func:`sinkhorn_rank`.

    Returns:
        Tensor[...] for a float ``q`` (``dim`` removed); Tensor[..., k] for ``k`` levels (the levels
        replace ``dim``, last).

    Note:
        For ``epsilon -> 0`` it is the mean of the values whose ranks lie in ``n (q -/+ t/2)``. NaN or
        infinite values make their row NaN, and so does ``n = 0`` (no values: like ``torch.mean``).
        A transport that stops at ``max_iter`` above ``tol`` warns as in :func:`sinkhorn`.

    Example:
        >>> round(float(sinkhorn_quantile(torch.arange(1.0, 11.0), 0.5, 1e-3, width=0.2, max_iter=5000)), 3)
        5.5

    References:
        M. Cuturi, O. Teboul, J.-P. Vert. Differentiable Ranks and Sorting using Optimal Transport.
        NeurIPS 2019.
    """
    fn = "sinkhorn_quantile"
    x = as_float(x)
    rows, lead, _ = _sort_rows(fn, x, dim)
    eps = _check_positive(fn, "epsilon", epsilon)
    width = _check_positive(fn, "width", width)
    scalar = isinstance(q, (int, float)) and not isinstance(q, bool)
    levels = [q] if scalar else list(q)
    if not levels:
        raise ValueError(f"diffcomb.{fn}: q must be a level or a non-empty sequence of levels")
    for level in levels:
        if isinstance(level, (bool, Tensor)) or not isinstance(level, (int, float)):
            raise TypeError(f"diffcomb.{fn}: q must be a float or a sequence of floats, got {type(level).__name__}")
        if not width / 2 <= level <= 1 - width / 2:
            raise ValueError(f"diffcomb.{fn}: each level q must satisfy width/2 <= q <= 1 - width/2 "
                             f"(width = {width}), got q = {level}")
    batch, n = rows.shape
    k = len(levels)
    y = torch.tensor([0.0, 0.5, 1.0], dtype=rows.dtype, device=rows.device)
    b = torch.tensor([[lv - width / 2, width, 1 - lv - width / 2] for lv in levels], dtype=rows.dtype,
                     device=rows.device)
    rep = rows.unsqueeze(1).expand(batch, k, n).reshape(batch * k, n)
    P = _transport_to_targets(fn, rep, y, b.repeat(batch, 1), eps, squash, max_iter, tol, backward)
    out = (P[:, :, 1] * rep).sum(-1).reshape(*lead, k) / width
    if n == 0:  # the quantile of no values is undefined, like torch.mean's (SPEC 0)
        out = out + math.nan
    return (out.squeeze(-1) if scalar else out).to(x.dtype)


# ---------------------------------------------------------------------------
# Gumbel-Sinkhorn (SPEC 4.6).


def _hard_permutation(X: Tensor) -> Tensor:
    """One-hot matrices (B, n, n) of the maximum-weight assignments of X (B, n, n), from the shared
    exact assignment op (diffcomb::linear_assignment, CPU and CUDA); NaN matrices where X has
    non-finite scores."""
    return torch.ops.diffcomb.linear_assignment(X.detach().contiguous(), True)


def gumbel_sinkhorn(log_alpha: Tensor, tau: float = 1.0, n_iter: int = 20, noise: bool = True,
                    generator: Optional[torch.Generator] = None, *, noise_factor: float = 1.0,
                    n_samples: Optional[int] = None, hard: bool = False) -> Tensor:
    r"""Gumbel-Sinkhorn: a doubly-stochastic relaxation of a permutation (Mena et al. 2018).

    .. math::
        S^0 = (X + s G)/\tau;\quad L \text{ times: } S \leftarrow S - \mathrm{LSE}_{\text{row}}(S),\
        S \leftarrow S - \mathrm{LSE}_{\text{col}}(S);\quad \text{output } \exp(S)

    with ``G`` i.i.d. standard Gumbel noise, ``G = -log(-log(U + 1e-20) + 1e-20)``.

    Args:
        log_alpha (Tensor[..., n, n]): square score matrices ``X``.
        tau (float): temperature, > 0. Default 1.
        n_iter (int): number ``L`` of row+column normalizations, >= 0. Default 20.
        noise (bool): add Gumbel noise. Default True.
        generator (torch.Generator, optional): the noise's generator (on ``log_alpha``'s device).
        noise_factor (float): the noise scale ``s``. Default 1.
        n_samples (int, optional): independent draws, stacked in a new leading dimension.
        hard (bool): return the nearest permutation matrix (the maximum-weight linear assignment of
            ``X + s G``) in the forward and the soft sample's gradient in the backward
            (straight-through). Default False.

    Returns:
        Tensor[..., n, n] (or Tensor[n_samples, ..., n, n]): columns sum to 1 exactly, rows
        approximately (exactly as ``n_iter -> inf``); a permutation matrix when ``hard``.

    Note:
        The ``L`` normalizations are ``L`` log-domain Sinkhorn iterations for the cost ``-X/1`` with
        ``epsilon = tau`` and unit weights, run by the native kernel; the backward replays them in
        reverse (exact derivative of the truncated algorithm). ``tau -> 0`` tends to the assignment
        permutation. ``hard`` solves the assignment exactly on the input's device
        (:func:`diffcomb.linear_assignment`, ``O(n^3)``). NaN or infinite scores make their matrix
        NaN. The ``L`` iterations are a fixed count by design: there is no convergence test and no
        warning (the rows sum to 1 only approximately).

    Example:
        >>> gumbel_sinkhorn(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), noise=False)
        tensor([[0.6225, 0.3775],
                [0.3775, 0.6225]])

    References:
        G. Mena, D. Belanger, S. Linderman, J. Snoek. Learning Latent Permutations with Gumbel-Sinkhorn
        Networks. ICLR 2018.
    """
    fn = "gumbel_sinkhorn"
    noise = check_flag(fn, "noise", noise)
    hard = check_flag(fn, "hard", hard)
    _check_tensor(fn, "log_alpha", log_alpha, 2)
    if log_alpha.shape[-1] != log_alpha.shape[-2]:
        raise ValueError(f"diffcomb.{fn}: log_alpha must be square in its last two dimensions, got shape "
                         f"{tuple(log_alpha.shape)}")
    tau = _check_positive(fn, "tau", tau)
    n_iter = _check_int(fn, "n_iter", n_iter, 0)
    if isinstance(noise_factor, (Tensor, bool)) or not isinstance(noise_factor, (int, float)) \
            or not 0 <= noise_factor < math.inf:
        raise ValueError(f"diffcomb.{fn}: noise_factor must be a finite float >= 0, got {noise_factor!r}")
    if n_samples is not None:
        _check_int(fn, "n_samples", n_samples, 1)
    X = log_alpha.to(_compute_dtype(log_alpha.dtype))
    if n_samples is not None:
        X = X.unsqueeze(0).expand(n_samples, *X.shape)
    if noise and noise_factor > 0:
        U = torch.rand(X.shape, generator=generator, dtype=X.dtype, device=X.device)
        X = X + noise_factor * (-torch.log(-torch.log(U + _GUMBEL_OFFSET) + _GUMBEL_OFFSET))
    *lead, n, _ = X.shape
    batch = math.prod(lead)
    Xr = X.reshape(batch, n, n)
    if n_iter == 0:
        soft = torch.exp(Xr / tau)
    else:
        ones = torch.ones((batch, n), dtype=X.dtype, device=X.device)
        # tol = -1: exactly n_iter iterations by design (no convergence check, no warning).
        soft = _solve(fn, -Xr, ones, ones, tau, n_iter, -1.0, 1, True)[0]
    if hard:
        soft = _hard_permutation(Xr) + (soft - soft.detach())
    return soft.reshape(*lead, n, n).to(log_alpha.dtype)


# ---------------------------------------------------------------------------
# Sinkhorn divergence between point clouds.


def _sqeuclidean(x: Tensor, y: Tensor) -> Tensor:
    """|x_i - y_j|^2: by differences for few features (exact, and faster than a batched matrix
    product with an inner size of 2 or 3), else by the quadratic expansion."""
    if x.shape[-1] <= 4:
        return (x.unsqueeze(-2) - y.unsqueeze(-3)).square().sum(-1)
    return (x.square().sum(-1).unsqueeze(-1) + y.square().sum(-1).unsqueeze(-2)
            - 2.0 * (x @ y.transpose(-1, -2)))


def sinkhorn_divergence(x: Tensor, y: Tensor, epsilon: float = 0.1, *, a: Optional[Tensor] = None,
                        b: Optional[Tensor] = None, max_iter: int = 1000, tol: Optional[float] = None) -> Tensor:
    r"""Debiased Sinkhorn divergence between point clouds, squared Euclidean cost.

    .. math::
        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
            - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha) - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),
        \qquad C_{ij} = \|x_i - y_j\|^2

    Args:
        x (Tensor[..., n, d]): source points; y (Tensor[..., m, d]): target points (batch shapes
            broadcast); integer and bool tensors are used in torch's default float dtype.
        epsilon (float): entropic regularization, on the scale of the squared distances. Default 0.1.
        a (Tensor[..., n], optional), b (Tensor[..., m], optional): weights (uniform when None).
        max_iter, tol: as in :func:`sinkhorn`.

    Returns:
        Tensor[...]: the divergences (0 when the clouds are equal; non-negative).

    Note:
        Three :func:`sinkhorn` solves; gradients with respect to the points and weights are the
        envelope gradients of each term (exact at convergence). Each solve that stops at
        ``max_iter`` above ``tol`` warns as in :func:`sinkhorn`. A cloud with no points (``n = 0`` or
        ``m = 0``) gives NaN: there is no transport between masses 0 and 1 (SPEC 0).

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> float(sinkhorn_divergence(x, x, 0.1))
        0.0

    References:
        J. Feydy, T. Sejourne, F.-X. Vialard, S. Amari, A. Trouve, G. Peyre. Interpolating between
        Optimal Transport and MMD using Sinkhorn Divergences. AISTATS 2019.
    """
    fn = "sinkhorn_divergence"
    check_same_device(fn, x=x, y=y, a=a, b=b)
    x, y = as_float(x), as_float(y)
    _check_tensor(fn, "x", x, 2)
    _check_tensor(fn, "y", y, 2)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"diffcomb.{fn}: x and y must have the same point dimension d, got x of shape "
                         f"{tuple(x.shape)} and y of shape {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"diffcomb.{fn}: x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    lead = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    x = x.expand(*lead, *x.shape[-2:])
    y = y.expand(*lead, *y.shape[-2:])

    def ot(p: Tensor, q: Tensor, wp: Optional[Tensor], wq: Optional[Tensor]) -> Tensor:
        return _sinkhorn(fn, _sqeuclidean(p, q), wp, wq, epsilon, max_iter, tol, 10, "implicit").cost

    return ot(x, y, a, b) - 0.5 * (ot(x, x, a, a) + ot(y, y, b, b))
