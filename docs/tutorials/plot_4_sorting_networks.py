"""
Sorting networks: relaxed permutation matrices and ranking supervision
======================================================================

A sorting network is a fixed sequence of conditional swaps. Replacing each swap of
:math:`(a, b)` by a sigmoid-weighted mix,

.. math::
    \\min{}_\\beta(a, b) = \\sigma(\\beta (b - a))\\, a + \\sigma(\\beta (a - b))\\, b ,

makes the whole network differentiable, and the product of the swap matrices is a doubly
stochastic *relaxed permutation matrix* :math:`P` with sorted values :math:`P^\\top x`
(:func:`diffcomb.sorting_network`; monotonic sigmoids as in Petersen et al., 2022). The
steepness :math:`\\beta` trades smoothness for sharpness.
"""

# %%
# The relaxed permutation matrix against the steepness
# ----------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits

import diffcomb

x = torch.tensor([0.3, -1.2, 2.0, 0.9, -0.4, 1.5, -2.1, 0.1])
print("hard order (argsort):", torch.argsort(x).tolist())
steepnesses = (1.0, 4.0, 16.0, 64.0)
fig, axes = plt.subplots(1, len(steepnesses), figsize=(11, 3.2))
for ax, beta in zip(axes, steepnesses):
    res = diffcomb.sorting_network(x, network="odd_even", steepness=beta)
    ax.imshow(res.matrix.numpy(), cmap="magma", vmin=0, vmax=1)
    ax.set_title(f"steepness {beta:g}")
    ax.set_xlabel("sorted position")
axes[0].set_ylabel("input position")
fig.suptitle(
    "relaxed permutation matrix P of an odd-even network, n = 8 (values = P^T x)"
)
fig.tight_layout()

# %%
# At low steepness the mass of each input spreads over neighbouring positions; at high steepness
# :math:`P` is the permutation matrix of ``torch.argsort(x)``. :math:`P` costs :math:`O(n^2)` per
# layer, the values alone :math:`O(n)`.
#
# Ranking 4-digit numbers from ordering supervision
# -------------------------------------------------
# The setting of the sorting-network papers' ranking experiment on scikit-learn's bundled 8 x 8
# digits: each image shows a 4-digit number (four digit images side by side). A small CNN gives
# one score per image; the scores of a set of five images go through the network and
# :func:`diffcomb.ranking_loss` compares :math:`P` with the true order. The model never sees a
# number or a digit label. (``examples/sortnet_digits_ranking.py`` is the full experiment; this
# is a short run.)
torch.manual_seed(0)
rng = np.random.default_rng(0)
digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)
order = rng.permutation(len(images))
train_idx, test_idx = order[:1300], order[1300:]


def make_sets(idx: np.ndarray, count: int, n: int = 5):
    """count sets of n distinct 4-digit numbers: images (count, n, 1, 8, 32), numbers
    (count, n)."""
    xs = np.empty((count, n, 1, 8, 32), dtype=np.float32)
    numbers = np.empty((count, n), dtype=np.int64)
    for s in range(count):
        while True:
            pick = rng.choice(idx, size=(n, 4))
            value = (digits.target[pick] * np.array([1000, 100, 10, 1])).sum(-1)
            if len(set(value.tolist())) == n:
                break
        xs[s, :, 0] = np.concatenate([images[pick[:, j]] for j in range(4)], axis=-1)
        numbers[s] = value
    return torch.from_numpy(xs), torch.from_numpy(numbers)


train_x, train_numbers = make_sets(train_idx, 2000)
test_x, test_numbers = make_sets(test_idx, 300)

scorer = torch.nn.Sequential(
    torch.nn.Conv2d(1, 16, 3, padding=1),
    torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(16, 32, 3, padding=1),
    torch.nn.ReLU(),
    torch.nn.MaxPool2d(2),
    torch.nn.Flatten(),
    torch.nn.Linear(32 * 2 * 8, 64),
    torch.nn.ReLU(),
    torch.nn.Linear(64, 1),
)


def scores(xs: torch.Tensor) -> torch.Tensor:  # (..., 1, 8, 32) -> (...)
    return scorer(xs.reshape(-1, 1, 8, 32)).reshape(xs.shape[:-3])


@torch.no_grad()
def accuracy() -> tuple[float, float]:
    """Exact-match (whole set ranked right) and element-wise accuracy on the test sets."""
    correct = scores(test_x).argsort(-1).argsort(-1) == test_numbers.argsort(
        -1
    ).argsort(-1)
    return correct.all(-1).float().mean().item(), correct.float().mean().item()


sorter = diffcomb.DiffSortNet("odd_even", 5, steepness=10.0)
opt = torch.optim.Adam(scorer.parameters(), lr=1e-3)
print("before training: exact-match %.2f, element-wise %.2f" % accuracy())
for step in range(300):
    batch = torch.from_numpy(rng.integers(0, len(train_x), size=32))
    loss = diffcomb.ranking_loss(
        sorter(scores(train_x[batch])).matrix, train_numbers[batch]
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
print(
    "after 300 steps: exact-match %.2f, element-wise %.2f (chance: 0.01, 0.20)"
    % accuracy()
)

# %%
# One test set, ordered by the learned scores:
with torch.no_grad():
    s = scores(test_x[0])
fig, axes = plt.subplots(1, 5, figsize=(10, 1.8))
for ax, i in zip(axes, torch.argsort(s).tolist()):
    ax.imshow(test_x[0, i, 0].numpy(), cmap="gray_r")
    ax.set_title(f"score {s[i]:.2f}\nnumber {int(test_numbers[0, i])}", fontsize=9)
    ax.axis("off")
fig.suptitle("a test set sorted by the learned score (ascending)")
fig.tight_layout()
