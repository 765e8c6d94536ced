"""Checks shared by every family's public functions (validation happens once, at the boundary).

Each check names the public function and the argument in its message, in one format:
``diffcomb.<function>: <argument> must be ..., got ...`` (``torch.ops.diffcomb.<op>: ...`` for the
checks that the custom ops run on their own arguments, check_op and check_op_tensor). Nothing here
reads tensor values, so the checks cost no device synchronization and pass under torch.compile.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, TypeVar, Union

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

from . import _native

__all__ = [
    "REDUCTIONS",
    "as_float",
    "check_choice",
    "check_dim",
    "check_flag",
    "check_float",
    "check_int",
    "check_module_dim",
    "check_op",
    "check_op_tensor",
    "check_reduction",
    "check_same_device",
    "check_target",
    "check_tensor",
    "check_tol",
    "compute_dtype",
    "message",
    "reduce",
]

T = TypeVar("T")


def message(fn: str, text: str) -> str:
    """The one format of a public function's error: ``diffcomb.<fn>: <text>``."""
    return f"diffcomb.{fn}: {text}"


def _type_name(value: object) -> str:
    return type(value).__name__


def check_tensor(fn: str, name: str, x: object, min_dim: int = 1) -> Tensor:
    """A real (floating-point) tensor with at least ``min_dim`` dimensions on a device diffcomb
    serves (cpu, cuda, or meta for shape propagation); a CUDA tensor also needs diffcomb's CUDA
    module (the error says how to rebuild). Integer and bool inputs that an op accepts are converted
    by as_float before this check."""
    if not isinstance(x, Tensor):
        raise TypeError(message(fn, f"{name} must be a torch.Tensor, got {_type_name(x)}"))
    if not x.is_floating_point():
        raise TypeError(message(fn, f"{name} must be a real tensor (floating-point: float16, bfloat16, float32 or "
                                    f"float64), got dtype {x.dtype}"))
    if x.dim() < min_dim:
        what = "a 0-d tensor" if x.dim() == 0 else f"shape {tuple(x.shape)}"
        raise ValueError(message(fn, f"{name} must have at least {min_dim} dimension(s), got {what}"))
    kind = x.device.type
    if kind == "cuda":
        _native.cuda(fn)
    elif kind not in ("cpu", "meta"):
        raise RuntimeError(message(fn, f"{name} is on device {x.device}; diffcomb supports cpu and cuda"))
    return x


def check_float(fn: str, name: str, value: object, minimum: float = 0.0, *, allow_minimum: bool = False,
                maximum: float = math.inf, allow_maximum: bool = False) -> float:
    """A Python number (not a tensor, not a bool) in (minimum, maximum), the ends included where
    allowed: by default positive and finite. Comparisons only (no math.isfinite), so a symbolic float
    under torch.compile passes."""
    if isinstance(value, (Tensor, bool)) or not isinstance(value, (int, float)):
        raise TypeError(message(fn, f"{name} must be a Python float, got {_type_name(value)}"))
    low_ok = value >= minimum if allow_minimum else value > minimum
    high_ok = value <= maximum if allow_maximum else value < maximum
    if not (low_ok and high_ok):
        if minimum == 0.0 and maximum == math.inf:
            what = ">= 0 and finite" if allow_minimum else "positive and finite"
        else:
            what = (f"in {'[' if allow_minimum else '('}{minimum}, {maximum}{']' if allow_maximum else ')'}")
        raise ValueError(message(fn, f"{name} must be {what}, got {value}"))
    return float(value)


def check_int(fn: str, name: str, value: object, minimum: int, maximum: Optional[int] = None,
              optional: bool = False) -> Optional[int]:
    """A Python int (not a bool) in [minimum, maximum]; None passes when ``optional``."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        what = "None or an int" if optional else "an int"
        raise TypeError(message(fn, f"{name} must be {what}, got {_type_name(value)}"))
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
        raise ValueError(message(fn, f"{name} must be {bound}, got {value!r}"))
    return value


def check_choice(fn: str, name: str, value: object, choices: Sequence[T]) -> T:
    """One of ``choices`` (returned as given); the error lists them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(message(fn, f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"))
    return value  # type: ignore[return-value]


def check_dim(fn: str, x: Tensor, dim: object) -> int:
    """``dim`` as a non-negative axis of x."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(message(fn, f"dim must be an int, got {_type_name(dim)}"))
    if not -x.dim() <= dim < x.dim():
        raise IndexError(message(fn, f"dim={dim} is out of range for a tensor with {x.dim()} dimension(s) "
                                     f"(shape {tuple(x.shape)}); expected -{x.dim()} <= dim < {x.dim()}"))
    return dim % x.dim()


def check_module_dim(fn: str, dim: object) -> int:
    """A module's ``dim``: an int (its range is checked against the input, at forward)."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(message(fn, f"dim must be an int, got {type(dim).__name__}"))
    return dim


def check_target(fn: str, name: str, target: object, like: Tensor, like_name: str) -> Tensor:
    """A second tensor argument (relevance, labels, a target) with the shape and device of ``like``;
    integer and bool tensors as the default float dtype (as_float)."""
    target = check_tensor(fn, name, as_float(target))
    if target.shape != like.shape:
        raise ValueError(message(fn, f"{name} must have the shape of {like_name} {tuple(like.shape)}, got "
                                     f"{tuple(target.shape)}"))
    check_same_device(fn, **{like_name: like, name: target})
    return target


def check_tol(fn: str, tol: object, default: float, allow_zero: bool = True) -> float:
    """A convergence tolerance: None gives ``default``; otherwise a finite float, >= 0 (or > 0)."""
    if tol is None:
        return default
    if isinstance(tol, (Tensor, bool)) or not isinstance(tol, (int, float)):
        raise TypeError(message(fn, f"tol must be None or a Python float, got {_type_name(tol)}"))
    return check_float(fn, "tol", tol, allow_minimum=allow_zero)


REDUCTIONS = ("mean", "sum", "none")


def check_reduction(fn: str, reduction: object) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(message(fn, f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}"))
    return reduction  # type: ignore[return-value]


def reduce(values: Tensor, reduction: str) -> Tensor:
    """A loss's per-item values reduced as torch's losses do."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype native code computes in: float16 and bfloat16 go through float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_flag(fn: str, name: str, value: object) -> bool:
    """A boolean flag: only True or False (a string such as "no" would otherwise count as True)."""
    if not isinstance(value, bool):
        raise TypeError(message(fn, f"{name} must be a bool (True or False), got {value!r} of type "
                                    f"{_type_name(value)}"))
    return value


def check_same_device(fn: str, **tensors: Optional[Tensor]) -> None:
    """All given tensors (None is skipped) are on one device; the error names both arguments."""
    first: Optional[tuple[str, Tensor]] = None
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            continue
        if first is None:
            first = (name, t)
        elif t.device != first[1].device:
            raise RuntimeError(message(fn, f"all tensor arguments must be on the same device, got "
                                           f"{first[0]} on {first[1].device} and {name} on {t.device}"))


def as_float(x: object) -> object:
    """An integer or bool tensor as a tensor of torch's default float dtype (as torch.mean would
    need); every other object is returned as it is, for the caller's own checks."""
    if isinstance(x, Tensor) and not x.is_floating_point() and not x.is_complex():
        return x.to(torch.get_default_dtype())
    return x


_TORCH_CHECKS = {RuntimeError: torch._check, ValueError: torch._check_value, IndexError: torch._check_index}


def check_op(cond: object, message: Callable[[], str], error: type = RuntimeError) -> None:
    """torch._check (torch._check_value for ValueError, torch._check_index for IndexError) with a
    fast path: a plain True returns at once, so the checks of a raw custom op cost well under a
    microsecond each in eager mode; False raises, and a symbolic bool under torch.compile goes to
    torch's own check."""
    if cond is True:
        return
    _TORCH_CHECKS[error](cond, message)


def check_op_tensor(op: str, name: str, t: Tensor, dtypes: Sequence[torch.dtype],
                    shape: Union[int, Sequence[object]], device: Optional[torch.device] = None) -> None:
    """A raw custom op's tensor argument (``torch.ops.diffcomb.<op>`` called directly), checked in
    the op's own implementation and fake implementation before native code receives its address:
    one of ``dtypes``; exactly ``shape`` (a tuple of sizes) or, for an int, that many dimensions;
    contiguous; on ``device`` (when given) or on a device native code serves. Shapes, strides,
    dtypes and devices only: no values are read. Concrete tensors take one combined test (the
    messages are built only on failure); fake tensors under torch.compile go through check_op, so
    symbolic sizes become torch's checks."""
    if not isinstance(t, FakeTensor) and (
        t.dtype in dtypes
        and (t.dim() == shape if isinstance(shape, int) else t.shape == shape)
        and t.is_contiguous()
        and ((t.is_cpu or t.is_cuda or t.is_meta) if device is None else t.device == device)
    ):
        return
    where = f"torch.ops.diffcomb.{op}: {name}"
    check_op(t.dtype in dtypes, lambda: f"{where} must have dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
    ndim = shape if isinstance(shape, int) else len(shape)
    check_op(t.dim() == ndim, lambda: f"{where} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if not isinstance(shape, int):
        for size, expected in zip(t.shape, shape):
            check_op(size == expected, lambda: f"{where} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    check_op(t.is_contiguous(), lambda: f"{where} must be contiguous, got strides {t.stride()}")
    if device is None:
        check_op(t.is_cpu or t.is_cuda or t.is_meta,  # meta: the fake implementations
                 lambda: f"{where} is on {t.device}; diffcomb's native code serves cpu and cuda")
    else:
        check_op(t.device == device, lambda: f"{where} must be on {device}, got {t.device}")
