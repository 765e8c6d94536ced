"""Checks shared by every family's public functions (validation happens once, at the boundary).

Each check names the public function and the argument in its message, in one format:
``diffcomb.<function>: <argument> must be ..., got ...``. Nothing here reads tensor values, so the
checks cost no device synchronization and pass under torch.compile.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["as_float", "check_flag", "check_op_tensor", "check_same_device"]


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


def check_op_tensor(op: str, name: str, t: Tensor, dtypes: Sequence[torch.dtype],
                    shape: Sequence[object], device: Optional[torch.device] = None) -> None:
    """A raw custom op's tensor argument (``torch.ops.diffcomb.<op>`` called directly), checked in
    the op's own implementation before native code receives its address: one of ``dtypes``,
    exactly ``shape`` (an entry None matches any size), contiguous, and on ``device`` (when given)
    or on a device native code serves. Shapes, strides, dtypes and devices only, through
    ``torch._check``: no values are read, and symbolic sizes under torch.compile are fine."""
    where = f"torch.ops.diffcomb.{op}: {name}"
    torch._check(t.dtype in dtypes, lambda: f"{where} must have dtype {' or '.join(map(str, dtypes))}, "
                                            f"got {t.dtype}")
    torch._check(t.dim() == len(shape), lambda: f"{where} must have {len(shape)} dimension(s), got shape "
                                                 f"{tuple(t.shape)}")
    for size, expected in zip(t.shape, shape):
        if expected is not None:
            torch._check(size == expected, lambda: f"{where} must have shape "
                                                   f"{tuple('*' if e is None else e for e in shape)}, got "
                                                   f"{tuple(t.shape)}")
    torch._check(t.is_contiguous(), lambda: f"{where} must be contiguous, got strides {t.stride()}")
    if device is None:
        torch._check(t.device.type in ("cpu", "cuda", "meta"),
                     lambda: f"{where} is on {t.device}; diffcomb's native code serves cpu and cuda")
    else:
        torch._check(t.device == device, lambda: f"{where} must be on {device}, got {t.device}")
