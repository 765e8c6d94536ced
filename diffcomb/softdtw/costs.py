"""Costs between the steps of two series (SPEC 3.1) and their vector-Jacobian product (SPEC 3.3), in
torch ops: the public :func:`pairwise_cost`, and the pieces the custom ops' double backward uses."""

from __future__ import annotations

from torch import Tensor

from .._checks import as_float, check_same_device
from ._boundary import check_cost, check_series, pair_batch_shape

__all__ = ["pairwise_cost"]


def pairwise(x: Tensor, y: Tensor, cost: str) -> Tensor:
    """The (..., N, M) costs of series x (..., N, D) and y (..., M, D) (checked by the caller)."""
    sq = (x.pow(2).sum(-1).unsqueeze(-1) + y.pow(2).sum(-1).unsqueeze(-2) - 2.0 * (x @ y.transpose(-1, -2)))
    sq = sq.clamp_min(0.0)
    if cost == "sqeuclidean":
        return sq
    half = 0.5 * sq
    if cost == "half_sqeuclidean":
        return half
    return half + (2.0 - (-half).exp()).log()


def cost_vjp(x: Tensor, y: Tensor, G: Tensor, cost: str) -> tuple[Tensor, Tensor]:
    """Gradients with respect to x (B, N, D) and y (B, M, D) of <G, C(x, y)> (SPEC 3.3), in torch ops
    (differentiable again)."""
    if cost == "sqeuclidean":
        G = 2.0 * G
    elif cost == "log_augmented":
        e = (-0.5 * pairwise(x, y, "sqeuclidean")).exp()
        G = G * (1.0 + e / (2.0 - e))
    gx = G.sum(-1, keepdim=True) * x - G @ y
    gy = G.sum(-2).unsqueeze(-1) * y - G.transpose(-1, -2) @ x
    return gx, gy


def pairwise_cost(x: Tensor, y: Tensor, cost: str = "sqeuclidean") -> Tensor:
    r"""Cost matrices between the steps of series ``x`` (..., N, D) and ``y`` (..., M, D).

    ``"sqeuclidean"``: :math:`\|x_i - y_j\|^2`; ``"half_sqeuclidean"``: half of it;
    ``"log_augmented"``: :math:`c + \log(2 - e^{-c})` with :math:`c = \tfrac12 \|x_i - y_j\|^2`.
    Formed as :math:`\|x\|^2 + \|y\|^2 - 2 x y^\top` (one matrix product, no (N, M, D) tensor),
    clamped at 0; in float32 this loses relative accuracy for nearly equal steps of large norm.
    Integer and bool series are computed in torch's default float dtype; batch dimensions
    broadcast.

    Example:
        >>> diffcomb.pairwise_cost(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]))
        tensor([[0., 4.],
                [1., 1.]])
    """
    check_same_device("pairwise_cost", x=x, y=y)
    x, y = as_float(x), as_float(y)
    check_series("pairwise_cost", x, y)
    pair_batch_shape("pairwise_cost", x, y)
    return pairwise(x, y, check_cost("pairwise_cost", cost))
