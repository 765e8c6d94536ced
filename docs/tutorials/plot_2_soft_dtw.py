"""
Soft-DTW: a barycenter of time series
=====================================

Soft-DTW replaces the minimum over alignments of dynamic time warping by a soft minimum,

.. math::
    \\mathrm{sdtw}_\\gamma(x, y) = -\\gamma \\log \\sum_{A \\in \\mathcal A(N, M)}
    \\exp\\big(-\\langle A, C(x, y) \\rangle / \\gamma\\big),

with :math:`C(x, y)_{ij} = \\lVert x_i - y_j \\rVert^2`. It is differentiable, and its gradient
with respect to :math:`C` is the expected alignment :math:`E_\\gamma(C)`
(:func:`diffcomb.soft_dtw_alignment`). Averaging series under soft-DTW
(:func:`diffcomb.soft_dtw_barycenter`) keeps their shape where the Euclidean mean blurs it.

The series here come from scikit-learn's bundled 8 x 8 digits: each image, read row by row, is
a series of 64 steps. Writers put their strokes a pixel or two left or right of each other, which
in the series is a shift in time: the case soft-DTW is made for.
"""

# %%
# Series from the digits
# ----------------------
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

import diffcomb

digits = load_digits()
classes = (1, 2, 3, 7)
# 30 images per class, each read row by row: (K, M, D) = (30, 64, 1) per class, ink in [0, 1].
series = {
    c: torch.tensor(digits.images[digits.target == c][:30].reshape(30, 64, 1) / 16.0)
    for c in classes
}
print("series per class:", tuple(series[1].shape))

# %%
# The soft-DTW barycenter and the Euclidean mean
# ----------------------------------------------
# The barycenter minimizes the sum of soft-DTW values to the series (L-BFGS, each evaluation one
# batched soft-DTW call over the 30 pairs), started at the Euclidean mean.
GAMMA = 0.1
euclidean = {c: Y.mean(0) for c, Y in series.items()}
barycenter = {
    c: diffcomb.soft_dtw_barycenter(Y, gamma=GAMMA, max_iter=200)
    for c, Y in series.items()
}


def mean_divergence(z: torch.Tensor, Y: torch.Tensor) -> float:
    """The mean soft-DTW divergence from z to the series Y."""
    return diffcomb.soft_dtw_divergence(z.expand_as(Y), Y, gamma=GAMMA).mean().item()


for c in classes:
    print(
        f"digit {c}: mean soft-DTW divergence to its series: barycenter "
        f"{mean_divergence(barycenter[c], series[c]):.3f}, Euclidean mean "
        f"{mean_divergence(euclidean[c], series[c]):.3f}"
    )

Y = series[1]
fig, ax = plt.subplots(figsize=(8, 3.5))
for s in Y[:10, :, 0]:
    ax.plot(s, color="0.75", lw=0.8)
ax.plot(euclidean[1][:, 0], "k--", lw=1.5, label="Euclidean mean")
ax.plot(
    barycenter[1][:, 0],
    color="C3",
    lw=2,
    label=f"soft-DTW barycenter ($\\gamma$ = {GAMMA})",
)
ax.set_xlabel("step (pixel, row by row)")
ax.set_ylabel("ink")
ax.set_title(
    "Ten images of a 1 as series (grey), their Euclidean mean and soft-DTW barycenter"
)
ax.legend(fontsize=8, loc="upper right")
fig.tight_layout()

# %%
# Read back as images, the Euclidean mean (top) averages strokes that sit at different places
# and blurs them; the barycenter (bottom) aligns the series first and keeps the strokes sharp.
fig, axes = plt.subplots(2, len(classes), figsize=(7, 3.8))
for j, c in enumerate(classes):
    for i, z in enumerate((euclidean[c], barycenter[c])):
        axes[i, j].imshow(z.view(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[i, j].set_xticks([])
        axes[i, j].set_yticks([])
    axes[0, j].set_title(f"digit {c}")
axes[0, 0].set_ylabel("Euclidean\nmean")
axes[1, 0].set_ylabel("soft-DTW\nbarycenter")
fig.tight_layout()

# %%
# The alignment matrix
# --------------------
# :func:`diffcomb.soft_dtw_alignment` is the expected alignment between two series: entry
# :math:`(i, j)` is the probability that step :math:`i` of one is matched with step :math:`j` of the
# other under the Gibbs distribution over alignments. Small :math:`\gamma` concentrates it on the
# DTW path.
x = barycenter[1]
y = Y[3]
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, gamma in zip(axes, (1.0, 0.01)):
    E = diffcomb.soft_dtw_alignment(diffcomb.pairwise_cost(x, y), gamma=gamma)
    ax.imshow(E.numpy(), origin="lower", cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"$E_\\gamma$, $\\gamma$ = {gamma}")
    ax.set_xlabel("step of image 3")
    ax.set_ylabel("step of the barycenter")
fig.tight_layout()

# %%
# Soft-DTW and the alignment are differentiable (the alignment through the soft-DTW Hessian):
# :class:`diffcomb.SoftDTW` and :class:`diffcomb.SoftDTWAlignment` are the same computations as
# layers of a model, on the CPU and on CUDA.
