"""
Sinkhorn: transport plans, soft sorting and latent permutations
===============================================================

:func:`diffcomb.sinkhorn` solves the entropic optimal transport problem between weights
:math:`a` and :math:`b` with cost :math:`C`,

.. math::
    \\mathrm{OT}_\\varepsilon(a, b) = \\min_{P \\ge 0,\\ P 1 = a,\\ P^\\top 1 = b}
    \\langle P, C \\rangle + \\varepsilon\\, \\mathrm{KL}(P \\,\\|\\, a b^\\top),

with log-domain Sinkhorn iterations, batched, and differentiates the plan and the cost
implicitly (no unrolled iterations in memory). Three uses: transport plans between point clouds,
soft sorting by transport onto a sorted grid, and Gumbel-Sinkhorn for learning a permutation.

The point clouds are two species of scikit-learn's bundled iris data set.
"""

# %%
# Transport plans at several epsilons
# -----------------------------------
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_iris

import diffcomb

iris = load_iris()
features = torch.tensor(iris.data[:, :2], dtype=torch.float64)  # sepal length and width
features = (features - features.mean(0)) / features.std(0)
x = features[iris.target == 0][:25]  # setosa
y = features[iris.target == 1][:25]  # versicolor
C = torch.cdist(x, y) ** 2

epsilons = (1.0, 0.1, 0.03)
fig, axes = plt.subplots(1, len(epsilons), figsize=(10, 3.6), sharex=True, sharey=True)
for ax, eps in zip(axes, epsilons):
    out = diffcomb.sinkhorn(C, epsilon=eps, max_iter=20000)
    P = out.plan / out.plan.max()
    for i, j in zip(*torch.nonzero(P > 0.02, as_tuple=True)):
        ax.plot(
            [x[i, 0], y[j, 0]],
            [x[i, 1], y[j, 1]],
            color="k",
            alpha=float(P[i, j]),
            lw=1,
        )
    ax.scatter(x[:, 0], x[:, 1], s=14, label="setosa", zorder=3)
    ax.scatter(y[:, 0], y[:, 1], s=14, label="versicolor", zorder=3)
    ax.set_title(
        f"$\\varepsilon$ = {eps}: cost {out.cost.item():.3f}, {int(out.n_iter)} iterations",
        fontsize=9,
    )
    ax.set_xlabel("sepal length (standardized)")
axes[0].set_ylabel("sepal width (standardized)")
axes[0].legend(fontsize=8)
fig.tight_layout()

# %%
# Large :math:`\varepsilon` spreads each point's mass over many partners; as
# :math:`\varepsilon \to 0` the plan concentrates on a matching (the unregularized optimal
# transport between two uniform clouds of the same size is a permutation).
#
# Soft sorting by optimal transport
# ---------------------------------
# :func:`diffcomb.sinkhorn_sort` transports the (squashed) inputs onto ``n`` sorted targets and
# reads the sorted values off the plan (Cuturi, Teboul and Vert, 2019); :func:`diffcomb.sinkhorn_rank`
# reads the ranks. Small :math:`\varepsilon` gives the hard sort.
values = features[[0, 50, 100, 20, 70, 120, 30, 140], 0]  # eight flowers, no ties
print("input:       ", [round(v, 2) for v in values.tolist()])
print("torch.sort:  ", [round(v, 2) for v in values.sort().values.tolist()])
for eps in (1e-1, 1e-2, 3e-3):
    print(
        f"eps = {eps:<6g}",
        [
            round(v, 2)
            for v in diffcomb.sinkhorn_sort(values, eps, max_iter=20000).tolist()
        ],
    )

grid = torch.logspace(-2.5, 0, 40)
sorted_path = torch.stack(
    [diffcomb.sinkhorn_sort(values, float(e), max_iter=20000) for e in grid]
)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(grid, sorted_path)
ax.set_xscale("log")
ax.set_xlabel("$\\varepsilon$")
ax.set_ylabel("soft-sorted value")
ax.set_title("diffcomb.sinkhorn_sort: each line one output position")
fig.tight_layout()

# %%
# Gumbel-Sinkhorn: recovering a shuffle
# -------------------------------------
# A sequence was shuffled by an unknown permutation; the model learns the logits of a
# permutation matrix from the sorted sequence alone. :func:`diffcomb.gumbel_sinkhorn` turns
# logits plus Gumbel noise into a doubly stochastic matrix (Mena et al., 2018); with
# ``hard=True`` it returns the nearest permutation (straight-through gradient).
n = 8
gen = torch.Generator().manual_seed(0)
target = torch.arange(n, dtype=torch.float64)  # the sorted sequence
shuffle = torch.randperm(n, generator=gen)
shuffled = target[shuffle]

log_alpha = torch.zeros(n, n, dtype=torch.float64, requires_grad=True)
opt = torch.optim.Adam([log_alpha], lr=0.1)
for step in range(300):
    P = diffcomb.gumbel_sinkhorn(log_alpha, tau=0.5, n_iter=20, generator=gen)  # (n, n)
    loss = ((P @ shuffled - target) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()

P_hard = diffcomb.gumbel_sinkhorn(log_alpha.detach(), noise=False, hard=True)
print("shuffled:         ", shuffled.long().tolist())
print("P_hard @ shuffled:", (P_hard @ shuffled).long().tolist())
print("recovered:", bool(torch.equal(P_hard @ shuffled, target)))

fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
soft = diffcomb.gumbel_sinkhorn(log_alpha.detach(), tau=0.5, noise=False)
axes[0].imshow(soft.numpy(), cmap="Blues", vmin=0, vmax=1)
axes[0].set_title("learned soft permutation")
truth = torch.zeros(n, n)
truth[torch.arange(n), torch.argsort(shuffle)] = 1.0
axes[1].imshow(truth.numpy(), cmap="Blues", vmin=0, vmax=1)
axes[1].set_title("the true unshuffling")
for ax in axes:
    ax.set_xlabel("position in the shuffled sequence")
axes[0].set_ylabel("position in the sorted sequence")
fig.tight_layout()

# %%
# Choosing epsilon: data on an arbitrary scale
# --------------------------------------------
# ``epsilon`` is in the units of the cost, and Sinkhorn needs about ``scale / epsilon``
# iterations. Points in :math:`[0, 100]^2` have squared distances up to :math:`2 \cdot 10^4`:
# the default ``epsilon=0.1`` is then a tiny fraction of the cost and the iteration limit stops
# far from the marginals (``converged`` is False and a warning says so). Set epsilon relative to
# the cost's scale (``relative_epsilon="mean"``, as ott-jax does by default) and anneal it from
# the cost's range (``epsilon_scaling``, as POT and geomloss do).
gen = torch.Generator().manual_seed(0)
p = 100 * torch.rand(200, 2, generator=gen, dtype=torch.float64)
q = 100 * torch.rand(200, 2, generator=gen, dtype=torch.float64)
C = torch.cdist(p, q) ** 2
for options in (dict(epsilon=1e-2, relative_epsilon="mean"),
                dict(epsilon=1e-2, relative_epsilon="mean", epsilon_scaling=0.9)):
    out = diffcomb.sinkhorn(C, max_iter=5000, **options)
    print(options, f"cost {out.cost.item():.1f},", int(out.n_iter), "iterations, converged:",
          bool(out.converged))

# %%
# Unbalanced transport and point clouds
# -------------------------------------
# ``tau_a``/``tau_b`` (ott-jax's convention) or ``reg_m`` (POT's) relax the marginals into KL
# penalties: masses may differ, and outliers can be left untransported. Given the points
# themselves (``x``, ``y``) instead of a cost, the cost is computed inside the kernels and never
# stored: memory grows linearly with the number of points (``plan`` is then None; the potentials
# ``f``, ``g`` describe it).
heavy = torch.cat((torch.full((199,), 1 / 200, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)))
balanced = diffcomb.sinkhorn(x=p, y=q, epsilon=1e-2, relative_epsilon="mean", max_iter=5000)
relaxed = diffcomb.sinkhorn(x=p, y=q, b=heavy, epsilon=1e-2, relative_epsilon="mean", tau_b=0.9,
                            max_iter=5000)
print(f"balanced cost {balanced.cost.item():.1f}; unbalanced with a heavy target point "
      f"{relaxed.cost.item():.1f}")
print("sinkhorn_divergence(p, q):",
      round(diffcomb.sinkhorn_divergence(p, q, 1e-2, relative_epsilon="mean").item(), 2))
