"""Sparse soft top-k (diffcomb.topk) modules."""

from __future__ import annotations


from torch import Tensor, nn

from .._checks import check_flag

from .. import topk as _topk
from ..isotonic import _check_strength

__all__ = ["SparseSoftTopK", "TopKRouter"]


class SparseSoftTopK(nn.Module):
    """Module form of :func:`diffcomb.sparse_soft_topk`: the sparse soft top-k mask along ``dim``."""

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0, p: float = 4.0 / 3.0,
                 magnitude: bool = False) -> None:
        super().__init__()
        name = "SparseSoftTopK"
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"diffcomb.{name}: k must be a non-negative int, got {k!r}")
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"diffcomb.{name}: dim must be an int, got {type(dim).__name__}")
        self.k, self.dim = k, dim
        self.regularization_strength = _check_strength(name, regularization_strength)
        self.p = _topk._check_p(name, p)
        self.magnitude = check_flag(name, "magnitude", magnitude)

    def extra_repr(self) -> str:
        return (f"k={self.k}, dim={self.dim}, regularization_strength={self.regularization_strength}, "
                f"p={self.p:.6g}, magnitude={self.magnitude}")

    def forward(self, x: Tensor) -> Tensor:
        return _topk.sparse_soft_topk(x, self.k, self.dim, self.regularization_strength, self.p, self.magnitude)


class TopKRouter(nn.Module):
    """Mixture-of-experts router: a linear map of each token to ``num_experts`` logits, then
    :func:`diffcomb.topk_routing` (about ``k`` experts per token, selected by the sparse soft top-k,
    so the selection itself is trained).

    ``forward(x)`` takes tokens ``(..., in_features)`` and returns a :class:`diffcomb.TopKRouting`:
    ``combine_weights (..., num_experts)`` (exactly 0 for unused experts), the mask, the gates and
    the load statistics (``load``, ``importance``, ``balance_loss``, ``experts_per_token``).

    Example (a dense-dispatch MoE layer)::

        router = diffcomb.TopKRouter(64, num_experts=8, k=2)
        experts = nn.ModuleList(nn.Linear(64, 64) for _ in range(8))
        r = router(x)                                           # x: (tokens, 64)
        y = sum(r.combine_weights[:, e, None] * experts[e](x) for e in range(8))
        loss = task_loss(y) + 0.01 * r.balance_loss

    A sparse dispatch runs expert ``e`` only on ``r.combine_weights[:, e].nonzero()``
    (examples/moe_router.py).
    """

    def __init__(self, in_features: int, num_experts: int, k: int, regularization_strength: float = 1.0,
                 p: float = 4.0 / 3.0, normalize: bool = False, bias: bool = False) -> None:
        super().__init__()
        name = "TopKRouter"
        for arg, value in (("in_features", in_features), ("num_experts", num_experts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"diffcomb.{name}: {arg} must be a positive int, got {value!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_experts:
            raise ValueError(f"diffcomb.{name}: k must be an int with 1 <= k <= num_experts = {num_experts}, got {k!r}")
        self.in_features, self.num_experts, self.k = in_features, num_experts, k
        self.regularization_strength = _check_strength(name, regularization_strength)
        self.p = _topk._check_p(name, p)
        self.normalize = check_flag(name, "normalize", normalize)
        self.proj = nn.Linear(in_features, num_experts, bias=check_flag(name, "bias", bias))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_experts={self.num_experts}, k={self.k}, "
                f"regularization_strength={self.regularization_strength}, p={self.p:.6g}, "
                f"normalize={self.normalize}")

    def forward(self, x: Tensor) -> "_topk.TopKRouting":
        return _topk.topk_routing(self.proj(x), self.k, self.regularization_strength, self.p, self.normalize)


