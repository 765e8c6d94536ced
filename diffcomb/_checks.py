"""Checks shared by every family's public functions (validation happens once, at the boundary).

Each check names the public function and the argument in its message, in one format:
``diffcomb.<function>: <argument> must be ..., got ...``. Nothing here reads tensor values, so the
checks cost no device synchronization and pass under torch.compile.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["as_float", "check_flag", "check_same_device"]


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
