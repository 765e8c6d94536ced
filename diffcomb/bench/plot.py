"""PNG charts of a benchmark run (``diffcomb-bench --plot``): time against input size.

Workloads whose names differ only in their last part (the size, ``128x1000``) form one chart;
the x axis is the number of input elements (the product of the size's factors), the y axis the
median forward+backward time (forward where a contender has no backward), one line per
contender, both axes logarithmic. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Optional

__all__ = ["plot_results"]


def _size(name: str) -> Optional[tuple[str, int, str]]:
    """(group, elements, size label) from a workload name such as ``soft_rank/l2/128x1000``."""
    group, _, last = name.rpartition("/")
    if not re.fullmatch(r"\d+(x\d+)*", last):
        return None
    return group or name, math.prod(int(f) for f in last.split("x")), last


def _median(timing: Optional[dict]) -> Optional[float]:
    return None if not isinstance(timing, dict) else timing.get("median_s")


def _series(doc: dict) -> dict[str, dict[str, list[tuple[int, float, str]]]]:
    """group -> contender -> [(elements, seconds, size label)], sorted by size."""
    groups: dict[str, dict[str, list[tuple[int, float, str]]]] = defaultdict(lambda: defaultdict(list))
    for result in doc["results"]:
        parsed = _size(result["workload"]["name"])
        if parsed is None:
            continue
        group, elements, label = parsed
        for c in result["contenders"]:
            both, fwd = _median(c.get("fwd_bwd")), _median(c.get("fwd"))
            if c.get("status") == "ok" and (both or fwd):
                name = c["name"] if both else f"{c['name']} (forward only)"
                groups[group][name].append((elements, both or fwd, label))
    return {g: {c: sorted(points) for c, points in by_c.items()} for g, by_c in groups.items()}


def plot_results(doc: dict, out_dir: Path, stem: str) -> list[Path]:
    """Writes one PNG per workload group with at least one timed point; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for group, by_contender in sorted(_series(doc).items()):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        labelled: set[int] = set()
        for contender, points in sorted(by_contender.items()):
            xs, ys, labels = zip(*points)
            ax.plot(xs, ys, marker="o", label=contender)
            for x, y, label in points:  # each size once, beside its first point
                if x not in labelled:
                    labelled.add(x)
                    ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("input elements (product of the workload's sizes; log scale)")
        ax.set_ylabel("median time per call, s (fwd+bwd; log scale)")
        ax.set_title(f"{doc['suite']} on {doc['device']}: {group}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / f"{stem}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', group)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
