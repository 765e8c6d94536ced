"""The perturb-and-MAP estimators in the autodiff matrix: perturbed (its Monte-Carlo Jacobian in every
mode), perturbed_fenchel_young_loss (exact derivatives of its estimate), imle and blackbox (a VJP only).

Each case draws its noise from a generator seeded inside the case function, so that every call (forward,
reverse, forward mode, the loop of the vmap check) uses the same samples, and vmap runs with
randomness="same" (the same noise for every vmapped sample, as the loop has).

perturbed: the matrix compares forward mode with reverse mode (the same Monte-Carlo Jacobian), not with
finite differences: with its samples fixed the estimate y_hat(theta) is piecewise constant, so finite
differences give 0 while the Jacobian estimator does not. Its double backward differentiates that
estimator: linear in the cotangent, constant in theta (the samples are fixed).

imle, blackbox: surrogate gradients (not the derivative of a function of theta), hence no forward mode
and no second derivative: those cells raise.
"""

from __future__ import annotations

import torch

import diffcomb
from tests.autodiff_cases import Case

__all__ = ["CASES"]

_SURROGATE = {mode: rf"diffcomb\.{{op}}: the {what} is not defined: .*gradient estimate"
              for mode, what in (("jacfwd", "forward-mode derivative"), ("jvp", "forward-mode derivative"),
                                 ("forward_ad", "forward-mode derivative"), ("gradgrad", "second derivative"))}


def _scores(*shape: int):
    def inputs(dtype, device, gen):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype),)

    return inputs


def _seeded(x: torch.Tensor) -> torch.Generator:
    return torch.Generator(device=x.device).manual_seed(5)


def _top2(scores):
    return diffcomb.topk_mask(scores, 2)


def _estimator(name: str, make, shape=(2, 5), surrogate: bool = False, **case) -> Case:
    def fn(theta):
        return make()(theta, generator=_seeded(theta))

    if surrogate:
        op = name.split("-")[0]
        case["undefined"] = {mode: regex.format(op=op) for mode, regex in _SURROGATE.items()}
    return Case(name, fn, _scores(*shape), randomness="same", **case)


def _blackbox(name: str, **options) -> Case:
    est = diffcomb.blackbox(_top2, **options)
    return Case(name, est, _scores(2, 5),
                undefined={mode: regex.format(op="blackbox") for mode, regex in _SURROGATE.items()})


def _fenchel_young(theta, target):
    return diffcomb.perturbed_fenchel_young_loss(theta, target, diffcomb.argmax_onehot, num_samples=4, sigma=0.7,
                                                 reduction="none", generator=_seeded(theta))


def _fy_inputs(dtype, device, gen):
    theta = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    target = torch.nn.functional.one_hot(torch.randint(0, 4, (3,), generator=gen), 4).to(torch.float64)
    return theta.to(device=device, dtype=dtype), target.to(device=device, dtype=dtype)


CASES = [
    _estimator("perturbed-topk-gumbel", lambda: diffcomb.perturbed(_top2, num_samples=6, sigma=0.8),
               finite_differences=False),
    _estimator("perturbed-argmax-normal-no_baseline",
               lambda: diffcomb.perturbed(diffcomb.argmax_onehot, num_samples=5, noise="normal", baseline=False),
               finite_differences=False),
    _estimator("perturbed-grid_path-minimize",
               lambda: diffcomb.perturbed(diffcomb.grid_shortest_path, num_samples=3, sigma=0.3, noise="normal",
                                          minimize=True),
               shape=(2, 3, 3), finite_differences=False),
    Case("perturbed_fenchel_young_loss-argmax-gumbel", _fenchel_young, _fy_inputs, randomness="same"),
    _estimator("imle-topk-sum_of_gamma-samples",
               lambda: diffcomb.imle(_top2, num_samples=3, k=2, lambda_=2.0, return_samples=True), surrogate=True),
    _estimator("imle-argmax-gumbel-mean",
               lambda: diffcomb.imle(diffcomb.argmax_onehot, num_samples=2, noise="gumbel", divide_by_lambda=True),
               surrogate=True),
    _blackbox("blackbox-topk", lambda_=3.0),
    _blackbox("blackbox-topk-straight_through", straight_through=True),
]
