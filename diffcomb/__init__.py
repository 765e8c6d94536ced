"""diffcomb: differentiable sorting, ranking and combinatorial layers for PyTorch.

Functional API (every op takes a batch: any leading dimensions, the op's own
axes last or chosen with ``dim``):

- :func:`soft_sort`, :func:`soft_rank`, :func:`soft_topk`, :func:`soft_quantile`,
  :func:`isotonic_regression` (permutahedron projections, PAV)
- :func:`spearman_loss`, :func:`soft_lts` (losses)
- :func:`soft_dtw`, :func:`soft_dtw_from_cost`, :func:`soft_dtw_alignment`, :func:`soft_dtw_divergence`
  (soft-DTW; CPU and CUDA)
- :func:`sorting_network`, :func:`ranking_loss` (differentiable sorting networks)
- :func:`sinkhorn`, :func:`sinkhorn_sort`, :func:`sinkhorn_rank`, :func:`sinkhorn_quantile`,
  :func:`gumbel_sinkhorn`, :func:`sinkhorn_divergence` (entropic optimal transport)
- :func:`perturbed`, :func:`perturbed_fenchel_young_loss`, :func:`imle`, :func:`blackbox` (gradient
  estimators around MAP solvers), the solvers :func:`argmax_onehot`, :func:`topk_mask`,
  :func:`sort_permutation`, :func:`grid_shortest_path`, :func:`linear_assignment` and the noise
  samplers :func:`sample_gumbel`, :func:`sample_normal`, :func:`sample_sum_of_gamma`

Modules: :class:`SoftSort`, :class:`SoftRank`, :class:`SoftTopK`, :class:`SoftQuantile`,
:class:`IsotonicRegression`, :class:`SoftSpearman`, :class:`SpearmanLoss`, :class:`SoftLTSLoss`,
:class:`SoftDTW`, :class:`SoftDTWDivergence`, :class:`SharpSoftDTW`,
:class:`SharpSoftDTWDivergence`, :class:`SoftDTWAlignment`, :class:`DiffSortNet`,
:class:`RankingLoss`, :class:`Sinkhorn`, :class:`SinkhornSort`, :class:`SinkhornRank`,
:class:`SinkhornQuantile`, :class:`GumbelSinkhorn`, :class:`SinkhornDivergence`, :class:`PerturbedTopK`,
:class:`PerturbedArgmax`,
:class:`PerturbedShortestPath`, :class:`IMLETopK`, :class:`IMLEShortestPath`, :class:`BlackboxShortestPath`,
:class:`PerturbedFenchelYoungLoss`.
"""

from .isotonic import isotonic_regression, soft_quantile, soft_rank, soft_sort, soft_topk
from .losses import perturbed_fenchel_young_loss, soft_lts, soft_spearman, spearman_loss
from .nn import (
    BlackboxShortestPath,
    IMLEShortestPath,
    IMLETopK,
    PerturbedArgmax,
    PerturbedFenchelYoungLoss,
    PerturbedShortestPath,
    PerturbedTopK,
)
from .nn import SharpSoftDTW, SharpSoftDTWDivergence, SoftDTW, SoftDTWAlignment, SoftDTWDivergence
from .nn import SoftLTSLoss, SoftRank, SoftSort, SpearmanLoss
from .nn import GumbelSinkhorn, Sinkhorn, SinkhornDivergence, SinkhornQuantile, SinkhornRank, SinkhornSort
from .transport import SinkhornResult, sinkhorn, sinkhorn_divergence
from .transport_permutation import gumbel_sinkhorn
from .transport_sort import sinkhorn_quantile, sinkhorn_rank, sinkhorn_sort
from .perturb import (
    BlackboxSolver,
    IMLESolver,
    PerturbedSolver,
    argmax_onehot,
    blackbox,
    grid_shortest_path,
    imle,
    linear_assignment,
    perturbed,
    sample_gumbel,
    sample_normal,
    sample_sum_of_gamma,
    sort_permutation,
    topk_mask,
)
from .softdtw import (
    mean_cost,
    mean_cost_divergence,
    mean_cost_from_cost,
    pairwise_cost,
    sharp_soft_dtw,
    sharp_soft_dtw_divergence,
    sharp_soft_dtw_from_cost,
    soft_dtw,
    soft_dtw_alignment,
    soft_dtw_barycenter,
    soft_dtw_divergence,
    soft_dtw_from_cost,
)
from .sortnet import SortingNetworkResult, sorting_network
from .nn import DiffSortNet, RankingLoss
from .losses import ranking_loss
from .ranking import (
    auc_loss,
    average_precision_loss,
    ndcg_loss,
    recall_at_k_loss,
    soft_auc,
    soft_average_precision,
    soft_ndcg,
    soft_recall_at_k,
)
from .fenchel_young import fenchel_young_loss
from .nn import AUCLoss, AveragePrecisionLoss, FenchelYoungLoss, NDCGLoss, RecallAtKLoss
from .topk import TopKRouting, sparse_soft_topk, topk_routing
from .nn import SparseSoftTopK, TopKRouter
from .nn import IsotonicRegression, SoftQuantile, SoftSpearman, SoftTopK

__version__ = "0.2.0"  # the one place the version is set (pyproject.toml reads it)

__all__ = [
    "DiffSortNet",
    "RankingLoss",
    "SortingNetworkResult",
    "BlackboxShortestPath",
    "IMLEShortestPath",
    "IMLETopK",
    "PerturbedArgmax",
    "PerturbedFenchelYoungLoss",
    "PerturbedShortestPath",
    "PerturbedTopK",
    "BlackboxSolver",
    "IMLESolver",
    "PerturbedSolver",
    "argmax_onehot",
    "blackbox",
    "grid_shortest_path",
    "imle",
    "linear_assignment",
    "perturbed",
    "perturbed_fenchel_young_loss",
    "sample_gumbel",
    "sample_normal",
    "sample_sum_of_gamma",
    "sort_permutation",
    "topk_mask",
    "SharpSoftDTW",
    "SharpSoftDTWDivergence",
    "GumbelSinkhorn",
    "Sinkhorn",
    "SinkhornDivergence",
    "SinkhornQuantile",
    "SinkhornRank",
    "SinkhornResult",
    "SinkhornSort",
    "SoftDTW",
    "SoftDTWAlignment",
    "SoftDTWDivergence",
    "SoftLTSLoss",
    "SoftRank",
    "SoftSort",
    "SpearmanLoss",
    "gumbel_sinkhorn",
    "isotonic_regression",
    "mean_cost",
    "mean_cost_divergence",
    "mean_cost_from_cost",
    "pairwise_cost",
    "ranking_loss",
    "sharp_soft_dtw",
    "sharp_soft_dtw_divergence",
    "sharp_soft_dtw_from_cost",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_quantile",
    "sinkhorn_rank",
    "sinkhorn_sort",
    "soft_dtw",
    "soft_dtw_alignment",
    "soft_dtw_barycenter",
    "soft_dtw_divergence",
    "soft_dtw_from_cost",
    "soft_lts",
    "soft_quantile",
    "soft_rank",
    "soft_sort",
    "soft_spearman",
    "soft_topk",
    "sorting_network",
    "spearman_loss",
    "AUCLoss",
    "AveragePrecisionLoss",
    "FenchelYoungLoss",
    "NDCGLoss",
    "RecallAtKLoss",
    "auc_loss",
    "average_precision_loss",
    "fenchel_young_loss",
    "ndcg_loss",
    "recall_at_k_loss",
    "soft_auc",
    "soft_average_precision",
    "soft_ndcg",
    "soft_recall_at_k",
    "SparseSoftTopK",
    "TopKRouter",
    "TopKRouting",
    "sparse_soft_topk",
    "topk_routing",
    "IsotonicRegression",
    "SoftQuantile",
    "SoftSpearman",
    "SoftTopK",
]
