"""Sparse soft top-k (diffcomb.topk) modules."""

from __future__ import annotations


from torch import Tensor, nn

from .. import topk as _topk
from .._checks import check_flag, check_int
from .._checks import check_module_dim
from .._isotonic_checks import check_p, check_strength

__all__ = ["SparseSoftTopK", "TopKRouter"]


class SparseSoftTopK(nn.Module):
    """Module form of :func:`diffcomb.sparse_soft_topk`: the sparse soft top-k mask along ``dim``.

    Example:
        >>> diffcomb.SparseSoftTopK(k=2, regularization_strength=0.1)(torch.tensor([0.1, 2.0, -1.0, 1.5, 0.3]))
        tensor([0., 1., 0., 1., 0.])
    """

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0, p: float = 4.0 / 3.0,
                 magnitude: bool = False) -> None:
        super().__init__()
        name = "SparseSoftTopK"
        self.k = check_int(name, "k", k, 0)
        self.dim = check_module_dim(name, dim)
        self.regularization_strength = check_strength(name, regularization_strength)
        self.p = check_p(name, p)
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

    Example:
        >>> _ = torch.manual_seed(0)
        >>> router = diffcomb.TopKRouter(16, num_experts=4, k=2)
        >>> r = router(torch.randn(10, 16))
        >>> r.combine_weights.shape
        torch.Size([10, 4])
        >>> bool(r.experts_per_token >= 2), bool((r.combine_weights == 0).any())
        (True, True)
        >>> r.balance_loss.requires_grad
        True
    """

    def __init__(self, in_features: int, num_experts: int, k: int, regularization_strength: float = 1.0,
                 p: float = 4.0 / 3.0, normalize: bool = False, bias: bool = False) -> None:
        super().__init__()
        name = "TopKRouter"
        self.in_features = check_int(name, "in_features", in_features, 1)
        self.num_experts = check_int(name, "num_experts", num_experts, 1)
        self.k = check_int(name, "k", k, 1, num_experts)
        self.regularization_strength = check_strength(name, regularization_strength)
        self.p = check_p(name, p)
        self.normalize = check_flag(name, "normalize", normalize)
        self.proj = nn.Linear(in_features, num_experts, bias=check_flag(name, "bias", bias))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_experts={self.num_experts}, k={self.k}, "
                f"regularization_strength={self.regularization_strength}, p={self.p:.6g}, "
                f"normalize={self.normalize}")

    def forward(self, x: Tensor) -> "_topk.TopKRouting":
        return _topk.topk_routing(self.proj(x), self.k, self.regularization_strength, self.p, self.normalize)


