"""nn.Module wrappers over the functional API: each checks its hyper-parameters
in ``__init__``, shows them in ``extra_repr``, and its ``forward`` is one call."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import losses, softdtw
from ._checks import check_flag
from . import sinkhorn as sinkhorn_ops
from ._checks import check_flag
from .isotonic import _check_regularization, _check_strength, soft_rank, soft_sort

__all__ = ["SharpSoftDTW", "Sinkhorn", "SoftDTW", "SoftDTWDivergence", "SoftLTSLoss", "SoftRank", "SoftSort",
           "SpearmanLoss"]


def _check_module_dim(name: str, dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"diffcomb.{name}: dim must be an int, got {type(dim).__name__}")
    return dim


class _SoftPermutahedron(nn.Module):
    def __init__(self, name: str, dim: int, descending: bool, regularization_strength: float,
                 regularization: str) -> None:
        super().__init__()
        self.dim = _check_module_dim(name, dim)
        self.descending = check_flag(name, "descending", descending)
        self.regularization_strength = _check_strength(name, regularization_strength)
        _check_regularization(name, regularization)
        self.regularization = regularization

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, descending={self.descending}, "
                f"regularization_strength={self.regularization_strength}, regularization={self.regularization!r}")


class SoftSort(_SoftPermutahedron):
    """Module form of :func:`diffcomb.soft_sort`."""

    def __init__(self, dim: int = -1, descending: bool = False, regularization_strength: float = 1.0,
                 regularization: str = "l2") -> None:
        super().__init__("SoftSort", dim, descending, regularization_strength, regularization)

    def forward(self, x: Tensor) -> Tensor:
        return soft_sort(x, self.dim, self.descending, self.regularization_strength, self.regularization)


class SoftRank(_SoftPermutahedron):
    """Module form of :func:`diffcomb.soft_rank`."""

    def __init__(self, dim: int = -1, descending: bool = False, regularization_strength: float = 1.0,
                 regularization: str = "l2") -> None:
        super().__init__("SoftRank", dim, descending, regularization_strength, regularization)

    def forward(self, x: Tensor) -> Tensor:
        return soft_rank(x, self.dim, self.descending, self.regularization_strength, self.regularization)


class SpearmanLoss(nn.Module):
    """Module form of :func:`diffcomb.spearman_loss`: ``forward(pred, target)``."""

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__()
        self.dim = _check_module_dim("SpearmanLoss", dim)
        self.regularization_strength = _check_strength("SpearmanLoss", regularization_strength)
        _check_regularization("SpearmanLoss", regularization)
        self.regularization = regularization
        self.reduction = losses._check_reduction("SpearmanLoss", reduction)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, regularization_strength={self.regularization_strength}, "
                f"regularization={self.regularization!r}, reduction={self.reduction!r}")

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return losses.spearman_loss(pred, target, self.dim, self.regularization_strength, self.regularization,
                                    self.reduction)


class SoftLTSLoss(nn.Module):
    """Module form of :func:`diffcomb.soft_lts`: ``forward(losses)``."""

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"diffcomb.SoftLTSLoss: k must be a non-negative int, got {k!r}")
        self.k = k
        self.dim = _check_module_dim("SoftLTSLoss", dim)
        self.regularization_strength = _check_strength("SoftLTSLoss", regularization_strength)
        self.reduction = losses._check_reduction("SoftLTSLoss", reduction)

    def extra_repr(self) -> str:
        return (f"k={self.k}, dim={self.dim}, regularization_strength={self.regularization_strength}, "
                f"reduction={self.reduction!r}")

    def forward(self, values: Tensor) -> Tensor:
        return losses.soft_lts(values, self.k, self.dim, self.regularization_strength, self.reduction)


class SoftDTW(nn.Module):
    """Module form of :func:`diffcomb.soft_dtw`: ``forward(x, y, x_lengths=None, y_lengths=None)``.

    ``normalize=True`` gives the soft-DTW divergence (:func:`diffcomb.soft_dtw_divergence`),
    which is 0 for identical series. ``reduction`` over the batch: "mean", "sum" or "none".
    """

    def __init__(self, gamma: float = 1.0, normalize: bool = False, bandwidth: Optional[int] = None,
                 cost: str = "sqeuclidean", reduction: str = "mean") -> None:
        super().__init__()
        self.gamma = softdtw._check_gamma("SoftDTW", gamma)
        self.bandwidth = None if bandwidth is None else softdtw._check_band("SoftDTW", bandwidth)
        if cost not in softdtw._COSTS:
            raise ValueError(f"diffcomb.SoftDTW: cost must be one of {softdtw._COSTS}, got {cost!r}")
        self.cost = cost
        self.normalize = check_flag("SoftDTW", "normalize", normalize)
        self.reduction = losses._check_reduction("SoftDTW", reduction)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, normalize={self.normalize}, bandwidth={self.bandwidth}, "
                f"cost={self.cost!r}, reduction={self.reduction!r}")

    _functions = (softdtw.soft_dtw, softdtw.soft_dtw_divergence)

    def forward(self, x: Tensor, y: Tensor, x_lengths: Optional[Tensor] = None,
                y_lengths: Optional[Tensor] = None) -> Tensor:
        fn = self._functions[1] if self.normalize else self._functions[0]
        values = fn(x, y, self.gamma, cost=self.cost, bandwidth=self.bandwidth, x_lengths=x_lengths,
                    y_lengths=y_lengths)
        return losses._reduce(values, self.reduction)


class SoftDTWDivergence(SoftDTW):
    """:class:`SoftDTW` with ``normalize=True``: the soft-DTW divergence as a loss."""

    def __init__(self, gamma: float = 1.0, bandwidth: Optional[int] = None, cost: str = "sqeuclidean",
                 reduction: str = "mean") -> None:
        super().__init__(gamma, True, bandwidth, cost, reduction)


class SharpSoftDTW(SoftDTW):
    """Module form of :func:`diffcomb.sharp_soft_dtw` (``normalize=True``: the sharp divergence,
    :func:`diffcomb.sharp_soft_dtw_divergence`)."""

    _functions = (softdtw.sharp_soft_dtw, softdtw.sharp_soft_dtw_divergence)


class Sinkhorn(nn.Module):
    """Module form of :func:`diffcomb.sinkhorn`: entropic optimal transport between the rows of a
    batch of cost matrices; ``forward(cost, a=None, b=None)`` returns a
    :class:`diffcomb.SinkhornResult`.

    Args:
        epsilon (float): entropic regularization, > 0. Default 0.1.
        max_iter (int): iteration limit. Default 1000.
        tol (float, optional): marginal tolerance (default 1e-6 for float64, 1e-4 for float32).
        check_every (int): iterations between convergence tests. Default 10.
        backward (str): ``"implicit"`` (default) or ``"unroll"``.

    Example:
        >>> layer = Sinkhorn(epsilon=1.0, tol=1e-9)
        >>> layer(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).plan
        tensor([[0.3655, 0.1345],
                [0.1345, 0.3655]])
    """

    def __init__(self, epsilon: float = 0.1, max_iter: int = 1000, tol: Optional[float] = None,
                 check_every: int = 10, backward: str = "implicit") -> None:
        super().__init__()
        name = "Sinkhorn"
        self.epsilon = sinkhorn_ops._check_positive(name, "epsilon", epsilon)
        self.max_iter = sinkhorn_ops._check_int(name, "max_iter", max_iter, 1)
        self.tol = None if tol is None else sinkhorn_ops._check_tol(name, tol, torch.float64)
        self.check_every = sinkhorn_ops._check_int(name, "check_every", check_every, 1)
        self.backward = sinkhorn_ops._check_choice(name, "backward", backward, sinkhorn_ops._BACKWARDS)

    def extra_repr(self) -> str:
        return (f"epsilon={self.epsilon}, max_iter={self.max_iter}, tol={self.tol}, "
                f"check_every={self.check_every}, backward={self.backward!r}")

    def forward(self, cost: Tensor, a: Optional[Tensor] = None,
                b: Optional[Tensor] = None) -> sinkhorn_ops.SinkhornResult:
        return sinkhorn_ops.sinkhorn(cost, a, b, self.epsilon, max_iter=self.max_iter, tol=self.tol,
                                     check_every=self.check_every, backward=self.backward)


# ---------------------------------------------------------------------------
# Perturb-and-MAP modules (diffcomb.perturb): thin wrappers over perturbed / imle / blackbox
# with a native solver; forward(theta, generator=None).

import functools as _functools  # noqa: E402
from typing import Optional as _Optional  # noqa: E402

import torch as _torch  # noqa: E402

from . import perturb as _perturb  # noqa: E402


class _TopKModule(nn.Module):
    def _set_k(self, name: str, k: int) -> None:
        self.k = _perturb._check_int(name, "k", k, 0)

    def _solver(self):
        return _functools.partial(_perturb.topk_mask, k=self.k)


class PerturbedTopK(_TopKModule):
    """Perturbed top-k: the expected k-subset mask :math:`\\mathbb E[\\mathrm{topk}(\\theta + \\sigma Z)]`
    (:func:`diffcomb.perturbed` around :func:`diffcomb.topk_mask`)."""

    def __init__(self, k: int, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel") -> None:
        super().__init__()
        self._set_k("PerturbedTopK", k)
        self._estimator = _perturb.perturbed(self._solver(), num_samples, sigma, noise)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"k={self.k}, num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}"

    def forward(self, theta: Tensor, generator: _Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(theta, generator)


class PerturbedArgmax(nn.Module):
    """Perturbed one-hot argmax (with Gumbel noise, the softmax of theta / sigma in expectation)."""

    def __init__(self, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel") -> None:
        super().__init__()
        self._estimator = _perturb.perturbed(_perturb.argmax_onehot, num_samples, sigma, noise)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}"

    def forward(self, theta: Tensor, generator: _Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(theta, generator)


class PerturbedShortestPath(nn.Module):
    """Perturbed grid shortest path on vertex costs ``(..., H, W)``: the expected path mask under
    cost noise (:func:`diffcomb.perturbed` with ``minimize=True``)."""

    def __init__(self, num_samples: int = 100, sigma: float = 1.0, noise: str = "normal") -> None:
        super().__init__()
        self._estimator = _perturb.perturbed(_perturb.grid_shortest_path, num_samples, sigma, noise, minimize=True)
        self.num_samples, self.sigma, self.noise = num_samples, float(sigma), noise

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}"

    def forward(self, weights: Tensor, generator: _Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(weights, generator)


class IMLETopK(_TopKModule):
    """I-MLE top-k: a sampled k-subset mask forward, the I-MLE estimate backward
    (:func:`diffcomb.imle` around :func:`diffcomb.topk_mask`, Sum-of-Gamma noise by default)."""

    def __init__(self, k: int, num_samples: int = 1, noise: str = "sum_of_gamma", lambda_: float = 1.0,
                 tau: float = 1.0, s: int = 10) -> None:
        super().__init__()
        self._set_k("IMLETopK", k)
        self._estimator = _perturb.imle(self._solver(), num_samples, noise, lambda_=lambda_, k=max(self.k, 1),
                                        tau=tau, s=s)
        self.num_samples, self.noise, self.lambda_, self.tau, self.s = num_samples, noise, float(lambda_), tau, s

    def extra_repr(self) -> str:
        return (f"k={self.k}, num_samples={self.num_samples}, noise={self.noise!r}, lambda_={self.lambda_}, "
                f"tau={self.tau}, s={self.s}")

    def forward(self, theta: Tensor, generator: _Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(theta, generator)


class IMLEShortestPath(nn.Module):
    """I-MLE grid shortest path on vertex costs ``(..., H, W)``: a sampled path forward, the I-MLE
    estimate backward (:func:`diffcomb.imle` with ``minimize=True``)."""

    def __init__(self, num_samples: int = 1, noise: str = "gumbel", lambda_: float = 1.0, tau: float = 1.0,
                 k: _Optional[float] = None, s: int = 10) -> None:
        super().__init__()
        self._estimator = _perturb.imle(_perturb.grid_shortest_path, num_samples, noise, lambda_=lambda_, k=k,
                                        tau=tau, s=s, minimize=True)
        self.num_samples, self.noise, self.lambda_, self.tau = num_samples, noise, float(lambda_), float(tau)

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, noise={self.noise!r}, lambda_={self.lambda_}, tau={self.tau}"

    def forward(self, weights: Tensor, generator: _Optional[_torch.Generator] = None) -> Tensor:
        return self._estimator(weights, generator)


class BlackboxShortestPath(nn.Module):
    """Grid shortest path on vertex costs with the blackbox (interpolation) gradient
    (:func:`diffcomb.blackbox` with ``minimize=True``)."""

    def __init__(self, lambda_: float = 10.0, straight_through: bool = False) -> None:
        super().__init__()
        self._estimator = _perturb.blackbox(_perturb.grid_shortest_path, lambda_, straight_through, minimize=True)
        self.lambda_, self.straight_through = float(lambda_), self._estimator.straight_through

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, straight_through={self.straight_through}"

    def forward(self, weights: Tensor) -> Tensor:
        return self._estimator(weights)


class PerturbedFenchelYoungLoss(nn.Module):
    """Module form of :func:`diffcomb.perturbed_fenchel_young_loss`: ``forward(theta, target)``."""

    def __init__(self, solver, num_samples: int = 100, sigma: float = 1.0, noise: str = "gumbel",
                 minimize: bool = False, event_dims: _Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        name = "PerturbedFenchelYoungLoss"
        self.event_dims, self.num_samples, self.sigma = _perturb._check_perturbation(
            name, solver, event_dims, num_samples, sigma, noise)
        self.noise = noise
        self.reduction = losses._check_reduction(name, reduction)
        self.solver, self.minimize = solver, check_flag(name, "minimize", minimize)

    def extra_repr(self) -> str:
        return (f"solver={getattr(self.solver, '__name__', self.solver)!r}, num_samples={self.num_samples}, "
                f"sigma={self.sigma}, noise={self.noise!r}, minimize={self.minimize}, reduction={self.reduction!r}")

    def forward(self, theta: Tensor, target: Tensor, generator: _Optional[_torch.Generator] = None) -> Tensor:
        return _perturb.perturbed_fenchel_young_loss(theta, target, self.solver, self.num_samples, self.sigma,
                                                     self.noise, self.minimize, self.event_dims, self.reduction,
                                                     generator)


__all__ += ["BlackboxShortestPath", "IMLEShortestPath", "IMLETopK", "PerturbedArgmax", "PerturbedFenchelYoungLoss",
            "PerturbedShortestPath", "PerturbedTopK"]


# ---------------------------------------------------------------------------
# Ranking-metric losses (diffcomb.ranking) and Fenchel-Young losses (diffcomb.fenchel_young):
# forward(scores, target) / forward(theta, target).

from . import fenchel_young as _fenchel_young  # noqa: E402
from . import ranking as _ranking  # noqa: E402


class _RankingMetricLoss(nn.Module):
    def _set_common(self, name: str, dim: int, regularization_strength: float, reduction: str,
                    regularization: _Optional[str] = None) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"diffcomb.{name}: dim must be an int, got {type(dim).__name__}")
        self.dim = dim
        self.regularization_strength = _check_strength(name, regularization_strength)
        if regularization is not None:
            _check_regularization(name, regularization)
            self.regularization = regularization
        self.reduction = losses._check_reduction(name, reduction)

    def _common_repr(self) -> str:
        reg = f", regularization={self.regularization!r}" if hasattr(self, "regularization") else ""
        return (f"dim={self.dim}, regularization_strength={self.regularization_strength}{reg}, "
                f"reduction={self.reduction!r}")


class NDCGLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.ndcg_loss`: ``forward(scores, relevance)``."""

    def __init__(self, k: _Optional[int] = None, dim: int = -1, regularization_strength: float = 1.0,
                 regularization: str = "l2", gain: str = "exponential", reduction: str = "mean") -> None:
        super().__init__()
        name = "NDCGLoss"
        self.k = _ranking._check_k(name, k, optional=True)
        if gain not in _ranking._GAINS:
            raise ValueError(f"diffcomb.{name}: gain must be 'exponential' or 'linear', got {gain!r}")
        self.gain = gain
        self._set_common(name, dim, regularization_strength, reduction, regularization)

    def extra_repr(self) -> str:
        return f"k={self.k}, gain={self.gain!r}, {self._common_repr()}"

    def forward(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return _ranking.ndcg_loss(scores, relevance, self.k, self.dim, self.regularization_strength,
                                  self.regularization, self.gain, self.reduction)


class AveragePrecisionLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.average_precision_loss`: ``forward(scores, labels)``."""

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__()
        self._set_common("AveragePrecisionLoss", dim, regularization_strength, reduction, regularization)

    def extra_repr(self) -> str:
        return self._common_repr()

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.average_precision_loss(scores, labels, self.dim, self.regularization_strength,
                                               self.regularization, self.reduction)


class RecallAtKLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.recall_at_k_loss`: ``forward(scores, labels)``."""

    def __init__(self, k: int, dim: int = -1, regularization_strength: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.k = _ranking._check_k("RecallAtKLoss", k, optional=False)
        self._set_common("RecallAtKLoss", dim, regularization_strength, reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, {self._common_repr()}"

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.recall_at_k_loss(scores, labels, self.k, self.dim, self.regularization_strength,
                                         self.reduction)


class AUCLoss(_RankingMetricLoss):
    """Module form of :func:`diffcomb.auc_loss`: ``forward(scores, labels)``."""

    def __init__(self, dim: int = -1, regularization_strength: float = 1.0, regularization: str = "l2",
                 reduction: str = "mean") -> None:
        super().__init__()
        self._set_common("AUCLoss", dim, regularization_strength, reduction, regularization)

    def extra_repr(self) -> str:
        return self._common_repr()

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return _ranking.auc_loss(scores, labels, self.dim, self.regularization_strength, self.regularization,
                                 self.reduction)


class FenchelYoungLoss(nn.Module):
    """Module form of :func:`diffcomb.fenchel_young_loss`: ``forward(theta, target)``."""

    def __init__(self, polytope: str = "permutahedron", regularization: _Optional[str] = None,
                 regularization_strength: float = 1.0, reduction: str = "mean", dim: int = -1, *,
                 max_iter: int = 1000, tol: _Optional[float] = None) -> None:
        super().__init__()
        name = "FenchelYoungLoss"
        if polytope not in _fenchel_young._POLYTOPES:
            raise ValueError(f"diffcomb.{name}: polytope must be 'permutahedron' or 'birkhoff', got {polytope!r}")
        if polytope == "permutahedron":
            regularization = "l2" if regularization is None else regularization
            _check_regularization(name, regularization)
        elif regularization not in (None, "kl"):
            raise ValueError(f"diffcomb.{name}: the Birkhoff polytope supports regularization='kl' only, got "
                             f"{regularization!r}")
        else:
            regularization = "kl"
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"diffcomb.{name}: dim must be an int, got {type(dim).__name__}")
        if polytope == "birkhoff" and dim != -1:
            raise ValueError(f"diffcomb.{name}: polytope='birkhoff' uses the last two dimensions; dim must be -1, "
                             f"got {dim}")
        self.polytope, self.regularization, self.dim = polytope, regularization, dim
        self.regularization_strength = _check_strength(name, regularization_strength)
        self.reduction = losses._check_reduction(name, reduction)
        self.max_iter = _fenchel_young._check_positive_int(name, "max_iter", max_iter)
        self.tol = _fenchel_young._check_tol(name, tol)

    def extra_repr(self) -> str:
        extra = f", max_iter={self.max_iter}, tol={self.tol}" if self.polytope == "birkhoff" else ""
        return (f"polytope={self.polytope!r}, regularization={self.regularization!r}, "
                f"regularization_strength={self.regularization_strength}, reduction={self.reduction!r}, "
                f"dim={self.dim}{extra}")

    def forward(self, theta: Tensor, target: Tensor) -> Tensor:
        return _fenchel_young.fenchel_young_loss(theta, target, self.polytope, self.regularization,
                                                 self.regularization_strength, self.reduction, self.dim,
                                                 max_iter=self.max_iter, tol=self.tol)


__all__ += ["AUCLoss", "AveragePrecisionLoss", "FenchelYoungLoss", "NDCGLoss", "RecallAtKLoss"]
# --- sparse soft top-k (diffcomb.topk)
from . import _checks  # noqa: E402
from . import topk as _topk  # noqa: E402


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
        self.magnitude = _checks.check_flag(name, "magnitude", magnitude)

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
        self.normalize = _checks.check_flag(name, "normalize", normalize)
        self.proj = nn.Linear(in_features, num_experts, bias=_checks.check_flag(name, "bias", bias))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_experts={self.num_experts}, k={self.k}, "
                f"regularization_strength={self.regularization_strength}, p={self.p:.6g}, "
                f"normalize={self.normalize}")

    def forward(self, x: Tensor) -> "_topk.TopKRouting":
        return _topk.topk_routing(self.proj(x), self.k, self.regularization_strength, self.p, self.normalize)


__all__ += ["SparseSoftTopK", "TopKRouter"]
