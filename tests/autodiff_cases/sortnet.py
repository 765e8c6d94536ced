"""Sorting networks in the autodiff matrix: sorting_network (values and P, both networks, both bitonic
paddings, every sigmoid, descending, a moved dim, values only) and ranking_loss on its P.

Inputs are separated (gaps of about 0.5, no ties: SPEC 5.5) and the steepness moderate, so that every
swap is in the smooth part of its sigmoid and finite differences are accurate.
"""

from __future__ import annotations

import torch

import diffcomb
from tests.autodiff_cases import Case

__all__ = ["CASES"]


def _separated(shape: tuple[int, ...]):
    """Rows that are a random permutation of 0.5 * arange(n), plus noise below 0.1: no ties."""

    def inputs(dtype, device, gen):
        *lead, n = shape
        ranks = torch.argsort(torch.rand(*lead, n, generator=gen, dtype=torch.float64), dim=-1)
        noise = 0.1 * torch.rand(*lead, n, generator=gen, dtype=torch.float64)
        return ((0.5 * ranks + noise).to(device=device, dtype=dtype),)

    return inputs


def _network(name: str, shape=(2, 5), matrix: bool = True, **options) -> Case:
    def fn(x):
        r = diffcomb.sorting_network(x, return_matrix=matrix, **options)
        return (r.values, r.matrix) if matrix else r.values

    return Case(f"sorting_network-{name}", fn, _separated(shape))


def _ranking_loss(x):
    n = x.shape[-1]
    targets = torch.arange(n, device=x.device).flip(0).expand(x.shape)
    P = diffcomb.sorting_network(x, network="bitonic", sigmoid="cauchy", steepness=2.0).matrix
    return diffcomb.ranking_loss(P, targets, reduction="none")


CASES = [
    _network("odd_even-cauchy", sigmoid="cauchy", steepness=2.0),
    _network("odd_even-logistic-values_only", matrix=False, sigmoid="logistic", steepness=3.0),
    _network("odd_even-gaussian-descending", sigmoid="gaussian", steepness=2.0, descending=True),
    _network("bitonic_prune-optimal", shape=(2, 6), network="bitonic", sigmoid="optimal", steepness=0.4),
    _network("bitonic_inf-logistic_phi", shape=(2, 5), network="bitonic", bitonic_padding="inf",
             sigmoid="logistic_phi", steepness=3.0, art_lambda=0.5),
    _network("odd_even-reciprocal-dim0", shape=(4, 3), sigmoid="reciprocal", steepness=2.0, dim=0),
    Case("ranking_loss-bitonic-cauchy", _ranking_loss, _separated((2, 6))),
]
