"""The soft-DTW family in the op x mode x dtype matrix (tests/test_autodiff_modes.py).

Every public differentiable op and module of diffcomb.softdtw, at the configurations that take different
paths: cost matrices and series (the in-kernel cost path), a band with per-pair lengths, the hard DTW
(gamma = 0), each cost, the divergences, the sharp and mean-cost variants, the alignment, the pairwise
costs and the barycenter's objective.

Undefined cells: the second derivative of the expected alignment and of the sharp soft-DTW is a third
derivative of soft-DTW (the derivative of the Hessian-vector product with respect to the costs), which
has no kernel; both raise.
"""

from __future__ import annotations

import torch

import diffcomb
from diffcomb.softdtw.barycenter import objective
from tests.autodiff_cases import Case

_THIRD = {"gradgrad": "third derivatives of soft-DTW are not implemented"}


def _costs(batch: int, n: int, m: int):
    def inputs(dtype, device, gen):
        return (torch.rand(batch, n, m, generator=gen, dtype=dtype, device=device) * 2.0,)

    return inputs


def _series(batch: int, n: int, m: int, d: int):
    def inputs(dtype, device, gen):
        return (torch.randn(batch, n, d, generator=gen, dtype=dtype, device=device) * 0.7,
                torch.randn(batch, m, d, generator=gen, dtype=dtype, device=device) * 0.7)

    return inputs


def _lengths(like: torch.Tensor, values) -> torch.Tensor:
    return torch.tensor(values, device=like.device)


def _banded(f, gamma: float):
    """f on (x, y) or C with a band and per-pair lengths (batch of 2; the lengths are constants)."""
    return lambda *a: f(*a, gamma, bandwidth=2, x_lengths=_lengths(a[0], [5, 3]), y_lengths=_lengths(a[0], [4, 4]))


def _barycenter_inputs(dtype, device, gen):
    X = torch.randn(5, 2, generator=gen, dtype=dtype, device=device) * 0.7
    Y = torch.randn(3, 4, 2, generator=gen, dtype=dtype, device=device) * 0.7
    w = torch.rand(3, generator=gen, dtype=dtype, device=device) + 0.5
    return X, Y, w


def _barycenter(divergence: bool):
    def fn(X, Y, w):
        return objective("soft_dtw_barycenter", X, Y, w, 0.7, "sqeuclidean", None, None, divergence)

    return fn


F = diffcomb
CASES = [
    # Cost matrices.
    Case("soft_dtw_from_cost-plain", lambda C: F.soft_dtw_from_cost(C, 0.7), _costs(2, 4, 3)),
    Case("soft_dtw_from_cost-band_lengths", _banded(F.soft_dtw_from_cost, 0.5), _costs(2, 5, 4)),
    Case("soft_dtw_from_cost-hard", lambda C: F.soft_dtw_from_cost(C, 0.0), _costs(2, 4, 3)),
    Case("soft_dtw_alignment-plain", lambda C: F.soft_dtw_alignment(C, 0.7), _costs(2, 4, 3), undefined=_THIRD),
    Case("soft_dtw_alignment-band_lengths", _banded(F.soft_dtw_alignment, 0.5), _costs(2, 5, 4),
         undefined=_THIRD),
    Case("sharp_soft_dtw_from_cost-plain", lambda C: F.sharp_soft_dtw_from_cost(C, 0.7), _costs(2, 4, 3),
         undefined=_THIRD),
    Case("sharp_soft_dtw_from_cost-band_lengths", _banded(F.sharp_soft_dtw_from_cost, 0.5), _costs(2, 5, 4),
         undefined=_THIRD),
    Case("mean_cost_from_cost-band_lengths",
         lambda C: F.mean_cost_from_cost(C, bandwidth=2, x_lengths=_lengths(C, [5, 3])), _costs(2, 5, 4)),
    # Series (in-kernel costs) and the pairwise costs.
    Case("soft_dtw-sqeuclidean", lambda x, y: F.soft_dtw(x, y, 0.7), _series(2, 4, 3, 2)),
    Case("soft_dtw-log_augmented", lambda x, y: F.soft_dtw(x, y, 0.7, cost="log_augmented"), _series(2, 4, 3, 2)),
    Case("soft_dtw-half_band_lengths",
         lambda x, y: F.soft_dtw(x, y, 0.5, cost="half_sqeuclidean", bandwidth=2, x_lengths=_lengths(x, [5, 3]),
                                 y_lengths=_lengths(x, [4, 4])), _series(2, 5, 4, 2)),
    Case("soft_dtw-broadcast", lambda x, y: F.soft_dtw(x, y[:1], 0.7), _series(2, 4, 3, 2)),
    Case("pairwise_cost-log_augmented", lambda x, y: F.pairwise_cost(x, y, "log_augmented"), _series(2, 4, 3, 2)),
    Case("soft_dtw_divergence-sqeuclidean", lambda x, y: F.soft_dtw_divergence(x, y, 0.7), _series(2, 4, 3, 2)),
    Case("soft_dtw_divergence-band_lengths", _banded(F.soft_dtw_divergence, 0.5), _series(2, 5, 4, 2)),
    Case("sharp_soft_dtw-sqeuclidean", lambda x, y: F.sharp_soft_dtw(x, y, 0.7), _series(2, 4, 3, 2),
         undefined=_THIRD),
    Case("sharp_soft_dtw_divergence-log_augmented",
         lambda x, y: F.sharp_soft_dtw_divergence(x, y, 0.7, cost="log_augmented"), _series(2, 4, 3, 2),
         undefined=_THIRD),
    Case("mean_cost-sqeuclidean", lambda x, y: F.mean_cost(x, y), _series(2, 4, 3, 2)),
    Case("mean_cost_divergence-lengths", lambda x, y: F.mean_cost_divergence(x, y, y_lengths=_lengths(x, [2, 3])),
         _series(2, 4, 3, 2)),
    # The barycenter's objective (in X, the series Y and the weights).
    Case("soft_dtw_barycenter-objective", _barycenter(False), _barycenter_inputs),
    Case("soft_dtw_barycenter-divergence_objective", _barycenter(True), _barycenter_inputs),
    # The modules.
    Case("SoftDTW-mean", lambda x, y: F.SoftDTW(0.7)(x, y), _series(2, 4, 3, 2)),
    Case("SoftDTWDivergence-band", lambda x, y: F.SoftDTWDivergence(0.5, bandwidth=1, reduction="sum")(x, y),
         _series(2, 4, 4, 2)),
    Case("SharpSoftDTW-none", lambda x, y: F.SharpSoftDTW(0.7, reduction="none")(x, y), _series(2, 4, 3, 2),
         undefined=_THIRD),
    Case("SharpSoftDTWDivergence-mean", lambda x, y: F.SharpSoftDTWDivergence(0.7)(x, y), _series(2, 4, 3, 2),
         undefined=_THIRD),
    Case("SoftDTWAlignment-plain", lambda x, y: F.SoftDTWAlignment(0.7)(x, y), _series(2, 4, 3, 2),
         undefined=_THIRD),
]
