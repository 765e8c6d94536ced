"""The permutahedron family's own argument checks, on top of the shared boundary (diffcomb._checks).

Every public function and module of the family (diffcomb.isotonic, diffcomb.topk, diffcomb.ranking,
diffcomb.fenchel_young, diffcomb.losses.isotonic, diffcomb.nn's isotonic, topk and ranking modules)
checks its regularization strength, regularization, sparse top-k norm, quantile levels, second tensor
argument and a module's dim here, so each rule and its message exist once. Comparisons only (no
math.isfinite): symbolic floats under torch.compile pass.
"""

from __future__ import annotations

import sys
from typing import Sequence

import torch
from torch import Tensor

from ._checks import check_choice, check_float, message

__all__ = ["MIN_STRENGTH", "REGULARIZATIONS", "check_p", "check_quantile_levels", "check_regularization", "check_strength"]

REGULARIZATIONS = ("l2", "kl")
# The smallest normal double: below it 1 / regularization_strength, the projections' scale, overflows.
MIN_STRENGTH = sys.float_info.min


def check_strength(fn: str, strength: object) -> float:
    """The regularization strength eps: a positive, finite Python float whose inverse is finite."""
    eps = check_float(fn, "regularization_strength", strength)
    if eps < MIN_STRENGTH:
        raise ValueError(message(fn, f"regularization_strength must be at least {MIN_STRENGTH} (the smallest normal "
                                     f"double, so that 1 / regularization_strength is finite), got {strength}"))
    return eps


def check_regularization(fn: str, regularization: object) -> bool:
    """``"l2"`` or ``"kl"``; True for KL."""
    return check_choice(fn, "regularization", regularization, REGULARIZATIONS) == "kl"


def check_p(fn: str, p: object) -> float:
    """The norm of the sparse soft top-k: 1 < p <= 2."""
    return check_float(fn, "p", p, 1.0, maximum=2.0, allow_maximum=True)


def check_quantile_levels(fn: str, q: object) -> tuple[bool, list[float]]:
    """(is_scalar, levels) of soft_quantile's q: a float, a sequence of floats or a 0-d or 1-D tensor (read
    on the host), each level in [0, 1]."""
    if isinstance(q, Tensor):
        if q.dtype == torch.bool or q.is_complex():
            raise TypeError(message(fn, f"q must be a tensor of a floating-point or integer dtype, got {q.dtype}"))
        if q.dim() > 1:
            raise ValueError(message(fn, f"q must be a float or a 1-D tensor, got shape {tuple(q.shape)}"))
        scalar, levels = q.dim() == 0, [float(v) for v in q.reshape(-1).tolist()]
    elif isinstance(q, (int, float)) and not isinstance(q, bool):
        scalar, levels = True, [float(q)]
    elif isinstance(q, Sequence) and not isinstance(q, str) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in q
    ):
        scalar, levels = False, [float(v) for v in q]
    else:
        raise TypeError(message(fn, f"q must be a float, a sequence of floats or a tensor, got {q!r}"))
    for level in levels:
        if not 0.0 <= level <= 1.0:
            raise ValueError(message(fn, f"q must be in [0, 1], got {level}"))
    return scalar, levels
