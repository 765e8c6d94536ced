"""Learn to rank 4-digit numbers from ordering supervision only, with a differentiable sorting network.

The setting of the sorting-network papers' MNIST ranking experiment, on scikit-learn's bundled
8x8 digits (no download): an image shows a 4-digit number (four digit images side by side, 8 x 32
pixels). A set of n such images is scored by a small CNN, one scalar per image; the scores go
through ``diffcomb.sorting_network`` and the loss is ``diffcomb.ranking_loss`` between the relaxed
permutation matrix and the true order of the numbers. The model never sees a number or a digit
label, only which image of a set shows the larger number. Test sets are built from digit images
the model was not trained on.

Reported: exact-match accuracy (the whole set ranked correctly) and element-wise accuracy (the
fraction of images given their correct rank), the metrics of the papers.

The defaults are those of the papers' code (diffsort's experiments): the odd-even network, the
cauchy sigmoid, steepness 10, and the binary cross-entropy of ``torch.nn.BCELoss`` (which
``diffcomb.ranking_loss`` computes); ``--network bitonic`` uses, like that code, the bitonic
network pruned to n wires (``--bitonic-padding inf``: padded with +inf instead, a different
relaxation).

    python examples/sortnet_digits_ranking.py            # about 1 minute on 2 idle CPU cores
    python examples/sortnet_digits_ranking.py --steps 200  # a quick smoke run

With the defaults (seed 0, OMP_NUM_THREADS=1) it ends at 0.46 exact-match and 0.74 element-wise
accuracy on 1000 test sets of 5 (chance: 1/120 and 0.2); ``--network bitonic`` at 0.45 / 0.74,
with ``--bitonic-padding inf`` at 0.47 / 0.75. Any change of rounding (thread count, network)
moves these by a few hundredths. The papers' MNIST numbers are higher: they train on 60000 digit
images, this data set has 1797.

References:
    F. Petersen, C. Borgelt, H. Kuehne, O. Deussen. Differentiable Sorting Networks for Scalable
    Sorting and Ranking Supervision. ICML 2021; Monotonic Differentiable Sorting Networks. ICLR 2022.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import diffcomb


def make_sets(images: np.ndarray, labels: np.ndarray, count: int, n: int, rng: np.random.Generator):
    """`count` sets of n four-digit numbers: images (count, n, 1, 8, 32) and numbers (count, n),
    with distinct numbers within each set."""
    xs = np.empty((count, n, 1, 8, 32), dtype=np.float32)
    numbers = np.empty((count, n), dtype=np.int64)
    for s in range(count):
        while True:
            idx = rng.integers(0, len(images), size=(n, 4))
            value = (labels[idx] * np.array([1000, 100, 10, 1])).sum(-1)
            if len(set(value.tolist())) == n:
                break
        xs[s, :, 0] = np.concatenate([images[idx[:, j]] for j in range(4)], axis=-1)
        numbers[s] = value
    return torch.from_numpy(xs), torch.from_numpy(numbers)


class Scorer(nn.Module):
    """A small CNN: one scalar score per 8 x 32 image."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 2 * 8, 64), nn.ReLU(), nn.Linear(64, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., 1, 8, 32) -> (...)
        lead = x.shape[:-3]
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(lead)


def ranks(values: torch.Tensor) -> torch.Tensor:
    return values.argsort(dim=-1).argsort(dim=-1)


@torch.no_grad()
def evaluate(model: Scorer, xs: torch.Tensor, numbers: torch.Tensor) -> tuple[float, float]:
    model.eval()
    predicted = ranks(model(xs))
    model.train()
    correct = predicted == ranks(numbers)
    return correct.all(-1).float().mean().item(), correct.float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=5, help="numbers per set (default 5, as in the papers)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32, help="sets per step")
    p.add_argument("--network", default="odd_even", choices=["odd_even", "bitonic"])
    p.add_argument("--bitonic-padding", default="prune", choices=["prune", "inf"],
                   help="bitonic network for n not a power of two: 'prune' (default, the papers' code) or 'inf'")
    p.add_argument("--sigmoid", default="cauchy")
    p.add_argument("--steepness", type=float, default=10.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    order = rng.permutation(len(images))
    train, test = order[:1300], order[1300:]  # test numbers use unseen digit images
    test_x, test_numbers = make_sets(images[test], digits.target[test], 1000, args.n, rng)
    train_x, train_numbers = make_sets(images[train], digits.target[train], args.steps * args.batch // 4, args.n,
                                       rng)

    model = Scorer()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sorter = diffcomb.DiffSortNet(args.network, args.n, steepness=args.steepness, sigmoid=args.sigmoid,
                                  bitonic_padding=args.bitonic_padding)
    network = args.network + (f" ({args.bitonic_padding})" if args.network == "bitonic" else "")
    print(f"ranking sets of n={args.n} 4-digit numbers: {network} network, {args.sigmoid} sigmoid, "
          f"steepness {args.steepness:g}; {len(train)} train / {len(test)} test digit images")
    em, ew = evaluate(model, test_x, test_numbers)
    print(f"step     0  test exact-match {em:.3f}  element-wise {ew:.3f}")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        pick = torch.from_numpy(rng.integers(0, len(train_x), size=args.batch))
        scores = model(train_x[pick])
        loss = diffcomb.ranking_loss(sorter(scores).matrix, train_numbers[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(args.steps // 5, 1) == 0 or step == args.steps:
            em, ew = evaluate(model, test_x, test_numbers)
            print(f"step {step:5d}  loss {loss.item():.4f}  test exact-match {em:.3f}  element-wise {ew:.3f}  "
                  f"({time.perf_counter() - start:.0f} s)")
    em, ew = evaluate(model, test_x, test_numbers)
    print(f"final (1000 test sets of {args.n}): exact-match accuracy {em:.3f}, element-wise accuracy {ew:.3f}")


if __name__ == "__main__":
    main()
