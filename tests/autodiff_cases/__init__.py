"""Cases of the op x mode x dtype matrix (tests/test_autodiff_modes.py), one module per family.

A family module defines ``CASES``: a list of ``Case``. A case is a differentiable function of tensors,
the seeded inputs it is checked at, and the modes in which its derivative is not defined (with the
error that says so). The matrix checks every other mode against torch.autograd and, in float64,
against finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["MODES", "Case"]

# grad, vjp, jacrev, jacfwd, jvp and forward_ad: first derivatives through torch.func / forward AD;
# vmap: a batching rule (no fallback warning) equal to a loop; gradgrad: double backward
# (gradgradcheck in float64, a Hessian-vector product against jacfwd of the gradient in float32).
MODES = ("grad", "vjp", "jacrev", "jacfwd", "jvp", "forward_ad", "vmap", "gradgrad")


@dataclass
class Case:
    """One public op at one configuration.

    Attributes:
        name: the test id, ``<op>-<configuration>``.
        fn: a function of the tensors returned by ``inputs``; returns a tensor (or a tuple of
            tensors, of which the floating ones are differentiated).
        inputs: ``inputs(dtype, device, generator)`` -> tuple of tensors, all differentiated.
        undefined: mode -> regex of the RuntimeError raised where the derivative is not defined
            (also listed in the README).
        vmap_size: the size of the vmapped dimension (every input gets one).
        randomness: torch.vmap's ``randomness`` for stochastic ops.
        atol: per dtype, the absolute tolerance of the comparisons (default: tests/conftest.py's).
        finite_differences: compare forward mode with finite differences (float64) as well as with
            reverse mode. False for a gradient estimator whose Jacobian is not the derivative of its
            forward (the perturbed optimizer: with its samples fixed the forward is piecewise
            constant, its Monte-Carlo Jacobian is not).
    """

    name: str
    fn: Callable[..., object]
    inputs: Callable[[torch.dtype, torch.device, torch.Generator], tuple]
    undefined: dict[str, str] = field(default_factory=dict)
    vmap_size: int = 3
    randomness: str = "error"
    atol: dict = field(default_factory=dict)
    finite_differences: bool = True
