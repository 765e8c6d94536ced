"""Soft-DTW (SPEC.md section 3): a differentiable dynamic time warping loss.

The native engine (csrc/softdtw, CPU and CUDA) runs the DP along
anti-diagonals, with optional per-pair lengths and a Sakoe-Chiba band, storing
only the in-band cells. One pass gives the value and, when a gradient is
needed, the expected alignment (the gradient with respect to the costs); a
second-order pass gives the sharp variant and Hessian-vector products.

For series, :func:`soft_dtw` computes the costs inside the kernel from the
differences x_i - y_j and returns the gradients with respect to x and y from
the same pass: no ``(B, N, M)`` cost matrix and no ``(B, N, M, D)`` difference
tensor is formed, and with a band the memory is O((N + M) b). The cost-matrix
functions (``*_from_cost``) take a given ``(B, N, M)`` matrix;
:func:`pairwise_cost` forms one with a matrix product.

Series are laid out (..., N, D): steps along dim -2, features along dim -1.
A batch of univariate series (B, N) becomes (B, N, 1) with ``x.unsqueeze(-1)``;
channel-first data (B, C, T) becomes (B, T, C) with ``x.transpose(-1, -2)``:

    >>> x = torch.tensor([[0.0, 1.0], [0.0, 3.0]])      # two univariate series (B, N)
    >>> y = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    >>> diffcomb.soft_dtw(x.unsqueeze(-1), y.unsqueeze(-1))
    tensor([0.6734, 0.9817])

Files: _boundary.py (argument checks and batching), costs.py (pairwise costs),
_ops.py (the custom ops and their autograd), functional.py (the public
values, alignments and divergences), barycenter.py.

References:
    M. Cuturi, M. Blondel. Soft-DTW: a Differentiable Loss Function for Time-Series. ICML 2017.
    arXiv:1703.01353
"""

from .barycenter import soft_dtw_barycenter
from .costs import pairwise_cost
from .functional import (
    mean_cost,
    mean_cost_divergence,
    mean_cost_from_cost,
    sharp_soft_dtw,
    sharp_soft_dtw_divergence,
    sharp_soft_dtw_from_cost,
    soft_dtw,
    soft_dtw_alignment,
    soft_dtw_divergence,
    soft_dtw_from_cost,
)

__all__ = [
    "mean_cost",
    "mean_cost_divergence",
    "mean_cost_from_cost",
    "pairwise_cost",
    "sharp_soft_dtw",
    "sharp_soft_dtw_divergence",
    "sharp_soft_dtw_from_cost",
    "soft_dtw",
    "soft_dtw_alignment",
    "soft_dtw_barycenter",
    "soft_dtw_divergence",
    "soft_dtw_from_cost",
]
