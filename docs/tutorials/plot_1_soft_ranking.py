"""
Soft ranking: learning to rank with a Spearman loss
====================================================

:func:`diffcomb.soft_rank` is the projection of :math:`-\\theta / \\varepsilon` onto the
permutahedron (the convex hull of the permutations of :math:`(n, \\dots, 1)`):

.. math::
    r_\\varepsilon(\\theta) = \\arg\\min_{\\mu \\in \\mathcal P(\\rho)}
    \\tfrac12 \\lVert \\mu + \\theta / \\varepsilon \\rVert^2 .

As :math:`\\varepsilon \\to 0` it is the hard rank; as :math:`\\varepsilon` grows every rank
moves to the mean :math:`(n + 1) / 2`. In between it is differentiable, so a model can be trained
on a loss that depends on the order of its predictions only, such as one minus the Spearman
correlation (:func:`diffcomb.spearman_loss`).

The data: scikit-learn's diabetes data set (442 patients, 10 features, a disease-progression
score), bundled with scikit-learn.
"""

# %%
# The path from hard ranks to the mean
# ------------------------------------
# The soft ranks of eight targets of the data set, for strengths from 0.01 to 100 000.
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_diabetes

import diffcomb

torch.manual_seed(0)
X, y = load_diabetes(return_X_y=True)
X = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float64)
y = torch.tensor(y, dtype=torch.float64)

values = y[:8]
strengths = np.logspace(-2, 5, 200)
path = torch.stack(
    [diffcomb.soft_rank(values, regularization_strength=float(s)) for s in strengths]
)
print(
    "hard ranks:        ",
    diffcomb.soft_rank(values, regularization_strength=1e-3).tolist(),
)
print("strength 1e5 ranks:", [round(r, 2) for r in path[-1].tolist()])

fig, ax = plt.subplots(figsize=(7, 4))
for i in range(len(values)):
    ax.plot(strengths, path[:, i], label=f"y = {values[i]:.0f}")
ax.axhline(
    (len(values) + 1) / 2, color="k", ls=":", lw=1, label="mean rank (n + 1) / 2"
)
ax.set_xscale("log")
ax.set_xlabel("regularization strength $\\varepsilon$")
ax.set_ylabel("soft rank")
ax.set_title("diffcomb.soft_rank: from hard ranks to the mean")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()

# %%
# The path is piecewise linear in :math:`1/\varepsilon`: as the strength grows, ranks merge into
# blocks (the blocks of the isotonic regression that computes them) until one block is left.
#
# Learning to rank
# ----------------
# A linear model scores the patients; the loss is the Spearman loss on mini-batches of 32
# patients, so the model is trained on the order of its scores only. Least squares on the
# scores themselves is the baseline. Both are judged by the hard Spearman correlation on held-out
# patients.
perm = torch.randperm(len(y))
train, test = perm[:342], perm[342:]

model = torch.nn.Linear(10, 1, dtype=torch.float64)
opt = torch.optim.Adam(model.parameters(), lr=0.05)
loss_fn = diffcomb.SpearmanLoss(regularization_strength=0.1)


def test_spearman(scores: torch.Tensor) -> float:
    return spearmanr(scores.detach().numpy(), y[test].numpy()).statistic


history = []
for epoch in range(60):
    order = train[torch.randperm(len(train))][: len(train) // 32 * 32].view(
        -1, 32
    )  # (batches, 32)
    pred = model(X[order]).squeeze(-1)  # (batches, 32): one ranking problem per row
    loss = loss_fn(pred, y[order])
    opt.zero_grad()
    loss.backward()
    opt.step()
    history.append(test_spearman(model(X[test]).squeeze(-1)))

coef = torch.linalg.lstsq(
    torch.cat([X[train], torch.ones(len(train), 1, dtype=torch.float64)], 1),
    y[train].unsqueeze(-1),
).solution
least_squares = test_spearman(
    torch.cat([X[test], torch.ones(len(test), 1, dtype=torch.float64)], 1) @ coef
)
print(
    f"test Spearman: Spearman loss {history[-1]:.3f}, least squares {least_squares:.3f}"
)

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(
    np.arange(1, len(history) + 1), history, label="linear model, diffcomb.SpearmanLoss"
)
ax.axhline(least_squares, color="k", ls="--", lw=1, label="linear model, least squares")
ax.set_xlabel("epoch (one step over every training batch)")
ax.set_ylabel("test Spearman correlation")
ax.legend()
fig.tight_layout()

# %%
# The Spearman-trained model reaches the rank correlation of least squares without ever seeing
# the scale of the targets: only their order enters the loss. The soft rank's backward is
# :math:`O(n)` per row, so the loss costs about as much as the model here.
