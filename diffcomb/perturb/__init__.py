"""Perturb-and-MAP: noise samplers, batched MAP solvers and gradient estimators.

Three layers (SPEC.md section 6), one module each:

- Noise samplers (:func:`sample_gumbel`, :func:`sample_normal`,
  :func:`sample_sum_of_gamma`; noise.py): native on CPU and CUDA, counter-based
  (Philox), so a sample is a pure function of a seed that is drawn from the
  caller's ``torch.Generator``; the same seed gives the same numbers on both
  devices.
- MAP solvers (:func:`argmax_onehot`, :func:`topk_mask`,
  :func:`sort_permutation`, :func:`grid_shortest_path`,
  :func:`linear_assignment`; solvers.py): batched native kernels, plain
  functions on tensors (not differentiable themselves).
- Gradient estimators around any solver, native or a user callable that maps a
  batch of scores ``(B', *S)`` to a batch of solutions ``(B', *S)``:
  :func:`perturbed` (perturbed_solver.py), :func:`imle` (imle_solver.py) and
  :func:`blackbox` (blackbox_solver.py), each a plain wrapper or a decorator, with or
  without arguments. All noisy copies of a batch are solved in ONE solver call
  on a ``(samples * B, *S)`` batch (sample-major). The perturbed Fenchel-Young
  loss lives with the losses (diffcomb/losses/perturb.py) and is importable
  from here too.

Solvers are written in maximize form, ``y*(theta) = argmax_y <y, theta>``;
the estimators take ``minimize=True`` for a solver of costs (shortest path,
min-cost assignment), which they then call as ``solver(-theta)`` internally.
"""

from __future__ import annotations

from typing import Any

from . import blackbox_solver, imle_solver, noise, perturbed_solver, solvers
from .blackbox_solver import BlackboxSolver, blackbox
from .imle_solver import IMLESolver, imle
from .noise import sample_gumbel, sample_normal, sample_sum_of_gamma
from .perturbed_solver import PerturbedSolver, perturbed
from .solvers import argmax_onehot, grid_shortest_path, linear_assignment, sort_permutation, topk_mask

__all__ = sorted([*blackbox_solver.__all__, *imle_solver.__all__, *noise.__all__, *perturbed_solver.__all__,
                  *solvers.__all__, "perturbed_fenchel_young_loss"])


def __getattr__(name: str) -> Any:
    # The loss is defined in diffcomb.losses.perturb (losses import the family modules, not the
    # reverse); it stays reachable as diffcomb.perturb.perturbed_fenchel_young_loss, loaded on use.
    if name == "perturbed_fenchel_young_loss":
        from ..losses.perturb import perturbed_fenchel_young_loss

        return perturbed_fenchel_young_loss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
