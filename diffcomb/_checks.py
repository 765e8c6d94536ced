"""Checks shared by every family's public functions (validation happens once, at the boundary).

Each check names the public function and the argument in its message, in one format:
``diffcomb.<function>: <argument> must be ..., got ...`` (``torch.ops.diffcomb.<op>: ...`` for the
checks that the custom ops run on their own arguments, check_op and check_op_tensor). Nothing here
reads tensor values, so the checks cost no device synchronization and pass under torch.compile.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

__all__ = ["as_float", "check_flag", "check_op", "check_op_tensor", "check_same_device"]


def check_flag(fn: str, name: str, value: object) -> bool:
    """A boolean flag: only True or False (a string such as "no" would otherwise count as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"diffcomb.{fn}: {name} must be a bool (True or False), got {value!r} of type "
                        f"{type(value).__name__}")
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
            raise RuntimeError(f"diffcomb.{fn}: all tensor arguments must be on the same device, got "
                               f"{first[0]} on {first[1].device} and {name} on {t.device}")


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
