"""Modules over the sorting networks: :class:`DiffSortNet` (:func:`diffcomb.sorting_network`) and
:class:`RankingLoss` (:func:`diffcomb.ranking_loss`)."""

from __future__ import annotations

from torch import Tensor, nn

from .._checks import check_flag, check_int, check_module_dim, check_reduction, message
from .._sortnet_layout import warn_if_pruned_bitonic_unsorted
from ..losses.sortnet import ranking_loss
from ..sortnet import SortingNetworkResult, check_options, sorting_network

__all__ = ["DiffSortNet", "RankingLoss"]


class DiffSortNet(nn.Module):
    """Module form of :func:`sorting_network` for inputs of a fixed ``size`` n along ``dim``.

    ``forward(x)`` with x (Tensor[..., size]; size along ``dim``) returns a
    :class:`SortingNetworkResult` ``(values, matrix)``. The arguments are those of
    :func:`sorting_network`; for code written for the papers' diffsort,
    ``diffsort.DiffSortNet(network, size, device, steepness=b, distribution=s)`` is
    ``diffcomb.DiffSortNet(network, size, steepness=b, sigmoid=s)`` (no device: it follows the
    input), with the same outputs for every size.

    Example:
        >>> sorter = diffcomb.DiffSortNet("bitonic", 4, steepness=50.0)
        >>> values, P = sorter(torch.tensor([[3.0, 1.0, 4.0, 2.0]]))
        >>> values.round(decimals=2)
        tensor([[1.0200, 2.0100, 2.9900, 3.9800]])
    """

    def __init__(self, network: str, size: int, steepness: float = 10.0, sigmoid: str = "cauchy",
                 art_lambda: float = 0.25, return_matrix: bool = True, descending: bool = False,
                 bitonic_padding: str = "prune", dim: int = -1) -> None:
        super().__init__()
        name = "DiffSortNet"
        check_options(name, network, sigmoid, steepness, art_lambda, bitonic_padding)
        self.network = network
        self.size = check_int(name, "size", size, 0)
        self.steepness = float(steepness)
        self.sigmoid = sigmoid
        self.art_lambda = float(art_lambda)
        self.return_matrix = check_flag(name, "return_matrix", return_matrix)
        self.descending = check_flag(name, "descending", descending)
        self.bitonic_padding = bitonic_padding
        self.dim = check_module_dim(name, dim)
        if network == "bitonic" and bitonic_padding == "prune":
            warn_if_pruned_bitonic_unsorted(size)  # now rather than at the first call

    def extra_repr(self) -> str:
        return (f"network={self.network!r}, size={self.size}, steepness={self.steepness}, sigmoid={self.sigmoid!r}, "
                f"art_lambda={self.art_lambda}, return_matrix={self.return_matrix}, descending={self.descending}, "
                f"bitonic_padding={self.bitonic_padding!r}, dim={self.dim}")

    def forward(self, x: Tensor) -> SortingNetworkResult:
        if isinstance(x, Tensor) and -x.dim() <= self.dim < x.dim() and x.shape[self.dim] != self.size:
            where = f"(..., {self.size})" if self.dim == -1 else f"{self.size} along dim={self.dim}"
            raise ValueError(message("DiffSortNet", f"expected x of shape {where}, got {tuple(x.shape)}"))
        return sorting_network(x, network=self.network, sigmoid=self.sigmoid, steepness=self.steepness,
                               art_lambda=self.art_lambda, return_matrix=self.return_matrix,
                               descending=self.descending, bitonic_padding=self.bitonic_padding, dim=self.dim)


class RankingLoss(nn.Module):
    """Module form of :func:`ranking_loss`: ``forward(P, target_ranks)``, sorted along ``dim``.

    Example:
        >>> P = diffcomb.sorting_network(torch.tensor([[2.0, 0.0, 1.0]]), steepness=20.0).matrix
        >>> diffcomb.RankingLoss()(P, torch.tensor([[2, 0, 1]])).round(decimals=4)
        tensor(0.0179)
    """

    def __init__(self, reduction: str = "mean", dim: int = -1) -> None:
        super().__init__()
        self.reduction = check_reduction("RankingLoss", reduction)
        self.dim = check_module_dim("RankingLoss", dim)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, dim={self.dim}"

    def forward(self, P: Tensor, target_ranks: Tensor) -> Tensor:
        return ranking_loss(P, target_ranks, self.reduction, dim=self.dim)
