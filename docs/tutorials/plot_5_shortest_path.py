"""
Perturb-and-MAP and I-MLE: learning costs from shortest paths
=============================================================

A combinatorial solver, here the shortest top-left to bottom-right path on a grid of vertex
costs (:func:`diffcomb.grid_shortest_path`, king moves), has a zero gradient almost everywhere.
The estimators of :mod:`diffcomb` give it a useful one:

- :func:`diffcomb.imle` (implicit maximum-likelihood estimation): the gradient is the difference
  of two solver calls, at the perturbed costs and at costs moved against the upstream gradient;
- :func:`diffcomb.perturbed_fenchel_young_loss`: the expected solution under cost noise,
  :math:`\\nabla_\\theta L = \\mathbb E[y^*(\\theta + \\sigma Z)] - y`;
- :func:`diffcomb.blackbox`: the interpolation gradient of Vlastelica et al. (2020).

The task, in the style of the Warcraft shortest-path benchmark: 12 x 12 terrain maps are cut from
the digital elevation model that ships with matplotlib. Each cell has three features (elevation,
slope, and a random "vegetation" value); its hidden cost is ``softplus(features @ w) + 0.2``.
A model predicts costs from the features and is trained from the true paths alone.
"""

# %%
# Terrain maps and their shortest paths
# -------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import cbook

import diffcomb

SIZE = 12
gen = torch.Generator().manual_seed(0)
torch.manual_seed(0)
dem = cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"].astype(
    np.float64
)  # (344, 403)
dem = torch.tensor((dem - dem.mean()) / dem.std())
slope = torch.zeros_like(dem)
slope[1:-1, 1:-1] = torch.hypot(
    dem[2:, 1:-1] - dem[:-2, 1:-1], dem[1:-1, 2:] - dem[1:-1, :-2]
)
slope = (slope - slope.mean()) / slope.std()


def make_maps(count: int):
    """count maps: features (count, SIZE, SIZE, 3), true costs and paths (count, SIZE, SIZE)."""
    r = torch.randint(1, dem.shape[0] - SIZE - 1, (count,), generator=gen)
    c = torch.randint(1, dem.shape[1] - SIZE - 1, (count,), generator=gen)
    rows = r[:, None] + torch.arange(SIZE)
    cols = c[:, None] + torch.arange(SIZE)
    elevation = dem[rows[:, :, None], cols[:, None, :]]
    steep = slope[rows[:, :, None], cols[:, None, :]]
    vegetation = torch.randn(count, SIZE, SIZE, generator=gen, dtype=torch.float64)
    x = torch.stack([elevation, steep, vegetation], -1)
    cost = F.softplus(x @ W_TRUE) + 0.2
    return x, cost, diffcomb.grid_shortest_path(cost)


W_TRUE = torch.tensor([0.5, 1.5, 1.0], dtype=torch.float64)
train = make_maps(600)
test = make_maps(200)


class CostModel(torch.nn.Module):
    """A per-cell linear map of the features and a softplus: positive costs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.linear(x).squeeze(-1)) + 0.2


def hamming(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return (pred * (1 - true) + (1 - pred) * true).sum((-2, -1)).mean()


@torch.no_grad()
def evaluate(model: CostModel) -> tuple[float, float]:
    """Path accuracy and normalized regret on the test maps."""
    x, cost, paths = test
    pred = diffcomb.grid_shortest_path(model(x))
    accuracy = (pred == paths).all(-1).all(-1).double().mean().item()
    optimal = (paths * cost).sum((-2, -1))
    regret = (((pred * cost).sum((-2, -1)) - optimal) / optimal).mean().item()
    return accuracy, regret


# %%
# Training with three estimators
# ------------------------------
imle_paths = diffcomb.imle(
    diffcomb.grid_shortest_path, noise="gumbel", lambda_=10.0, tau=0.1, minimize=True
)
blackbox_paths = diffcomb.blackbox(
    diffcomb.grid_shortest_path, lambda_=10.0, minimize=True
)


def train_model(method: str, epochs: int = 4) -> CostModel:
    torch.manual_seed(0)
    model = CostModel()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, _, paths = train
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(32):
            cost = model(x[batch])
            if method == "I-MLE":
                loss = hamming(imle_paths(cost, generator=gen), paths[batch])
            elif method == "perturbed":
                loss = diffcomb.perturbed_fenchel_young_loss(
                    cost,
                    paths[batch],
                    diffcomb.grid_shortest_path,
                    num_samples=8,
                    sigma=0.5,
                    noise="normal",
                    minimize=True,
                    generator=gen,
                )
            else:
                loss = hamming(blackbox_paths(cost), paths[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


torch.manual_seed(0)
untrained = CostModel()
models = {name: train_model(name) for name in ("I-MLE", "perturbed", "blackbox")}
print(f"{'model':<10} {'path accuracy':>13} {'regret':>8}")
for name, model in {"untrained": untrained, **models}.items():
    acc, reg = evaluate(model)
    print(f"{name:<10} {acc:>13.3f} {reg:>8.4f}")

# %%
# The learned cost map and the predicted paths
# --------------------------------------------
# One test map: the true costs with the true path, and the I-MLE model's costs with its path.
x, cost, paths = test
k = 0
with torch.no_grad():
    learned = models["I-MLE"](x[k])
pred = diffcomb.grid_shortest_path(learned)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
axes[0].imshow(x[k, :, :, 0].numpy(), cmap="terrain")
axes[0].set_title("elevation")
vmax = float(cost[k].max())
for ax, c, p, title in (
    (axes[1], cost[k], paths[k], "true cost, true path"),
    (axes[2], learned, pred, "learned cost (I-MLE), predicted path"),
):
    ax.imshow(c.numpy(), cmap="viridis", vmin=0, vmax=vmax)
    rr, cc = torch.nonzero(p, as_tuple=True)
    ax.plot(cc.numpy(), rr.numpy(), "w.-", ms=8, lw=1.5)
    ax.set_title(title, fontsize=10)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

# %%
# The model recovers the cost map up to what the paths can tell (a path is unchanged when every
# cost is scaled, so only relative costs are learned). The native solver runs the whole batch of
# Dijkstra problems in one call, which keeps the training loop dominated by the model, not the
# solver.
