"""The printed table (Markdown) and the JSON record of a run."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .peers import Loaded
from .runner import TOLERANCE, WorkloadResult
from .timing import Budget

__all__ = ["CpuSnapshot", "cpu_snapshot", "other_load", "probe_other_load", "machine_info", "format_table",
           "table_notes", "to_json", "write_text_atomic", "dumps"]


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except Exception:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy CPU seconds (/proc/stat) and this process's CPU seconds."""

    wall: float
    machine_busy: float | None
    steal: float | None
    own: float


def cpu_snapshot() -> CpuSnapshot:
    busy = steal = None
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal [guest guest_nice]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        total = sum(fields[:8])
        busy = (total - idle) / hz
        steal = (fields[7] if len(fields) > 7 else 0) / hz
    except (OSError, ValueError, IndexError):
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(time.perf_counter(), busy, steal, ru.ru_utime + ru.ru_stime)


def other_load(before: CpuSnapshot, after: CpuSnapshot) -> dict:
    """CPU used by other processes between two snapshots, as seconds and as a
    fraction of all CPUs (0: we had the machine to ourselves)."""
    wall = after.wall - before.wall
    out: dict = {"wall_s": wall, "other_cpu_s": None, "other_fraction": None, "steal_s": None}
    if before.machine_busy is None or after.machine_busy is None or wall <= 0:
        return out
    other = max((after.machine_busy - before.machine_busy) - (after.own - before.own), 0.0)
    out["other_cpu_s"] = other
    out["other_fraction"] = other / (wall * (os.cpu_count() or 1))
    out["steal_s"] = (after.steal or 0.0) - (before.steal or 0.0)
    return out


def probe_other_load(seconds: float = 0.5) -> dict:
    """Sit idle for ``seconds`` and measure what the rest of the machine uses."""
    before = cpu_snapshot()
    time.sleep(seconds)
    return other_load(before, cpu_snapshot())


def machine_info(device: str, loaded: Sequence[Loaded]) -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "repository_commit": _git_commit(Path(__file__).resolve().parent),
        "contenders": {ld.contender.name: {"status": ld.status, "version": ld.version} for ld in loaded},
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        info["cuda_device"] = torch.cuda.get_device_name(dev)
        info["cuda_runtime"] = torch.version.cuda
    return info


def _ms(t: float) -> str:
    v = t * 1e3
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    if v >= 0.1:
        return f"{v:.3f}"
    return f"{v:.4f}"


def _us(t: float) -> str:
    v = t * 1e6
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def _check(c, grad: bool) -> str:
    if c.is_floor:
        return "(floor)" if not grad else ""
    if c.note is not None:  # the workload's own verdict (e.g. valid random samples)
        return "" if grad else c.note + (" !" if c.agree is False else "")
    if c.is_reference:
        return "reference" if not grad else ""
    d, ok = (c.grad_max_abs_diff, c.grad_agree) if grad else (c.max_abs_diff, c.agree)
    if d is None:
        return "-"
    return f"{d:.1e}" + (" !" if ok is False else "")


def _short_status(status: str) -> str:
    """``error: ValueError: long text`` -> ``error: ValueError``; full text goes to a footnote."""
    head, _, rest = status.partition(": ")
    if head == "error" and rest:
        return f"error: {rest.partition(':')[0]}"
    if head in ("import error", "out of memory"):
        return head
    return status


def _tolerances() -> str:
    return ", ".join(f"{k} {v:g}" for k, v in TOLERANCE.items())


def table_notes(suite: str) -> list[str]:
    """The explanation printed under a suite's table."""
    tol = _tolerances()
    if suite == "softdtw":
        return [
            "Median times in milliseconds. ratio = contender time / diffcomb time in this run "
            "(> 1: diffcomb is faster). fwd+bwd = forward, then out.sum().backward() "
            "(gradient with respect to x; y is a constant). too slow (> N s): one forward+backward "
            "call took longer than N s (twice), so the contender was not timed; its check is shown.",
            "max abs diff / grad diff: max |contender - reference| of the soft-DTW values / of the "
            "gradients with respect to x on the same input; '!' marks a difference beyond tolerance * "
            f"max(1, max|reference|) ({tol}). Both peers pass the DP table R (and the gradient) through "
            "float32 (torch.Tensor(ndarray)), whatever the input dtype; tslearn also runs its DP in "
            "float32 for float32 input. The backward's exp((R' - R - c) / gamma) magnifies that "
            "rounding by 1/gamma, so their grad '!' reflects the peers' precision, not a different "
            "quantity. In float64 they still differ by ~3e-8 relative in the values and up to ~2e-3 relative in the "
            "gradients, while diffcomb matches the float64 numpy oracle (tests/reference) to 1e-16.",
        ]
    if suite == "latency":
        return [
            "Median times in microseconds of many calls (the budget line says how many). ratio = "
            "contender time / diffcomb time in this run (> 1: diffcomb is faster). fwd+bwd = forward, then "
            "(out * g).sum().backward() (out.sum() for soft-DTW). torch.softmax (along the last dimension) "
            "and torch.sort are plain torch ops on the same tensor, no value check: the fixed cost of the "
            "cheapest differentiable call. Sinkhorn: exactly 20 iterations (tol 0) for every contender; "
            "diffcomb unrolls, diffcomb-implicit differentiates implicitly. imle_topk: random samples, "
            "checked for validity.",
            f"max abs diff / grad diff: as in suite sort ({tol}).",
        ]
    if suite == "perturb":
        return [
            "Median times in milliseconds. ratio = contender time / diffcomb time in this run "
            "(> 1: diffcomb is faster).",
            "imle_topk: 10 samples of top-10 masks on (256, 1000) scores, fwd+bwd = forward, then "
            "(out * g).sum().backward() with the I-MLE estimator (lambda = 1); the plain-torch baseline "
            "draws the same noise with torch and selects with torch.topk. The samples are random, so the "
            "check is their validity, not a comparison: 'valid k-subsets' = 0/1 masks with k ones per row "
            "and a finite gradient of the input's shape.",
            "grid_shortest_path / linear_assignment: forward only (solvers); peers are called once per "
            "instance, their time includes building the graph and reading out the 0/1 solution. max abs "
            "diff = max |total cost - reference's total cost| over the batch; '!' beyond 1e-5 relative "
            "(continuous random costs: the optimum is unique).",
        ]
    if suite == "ranking":
        return [
            "Median times in milliseconds. ratio = contender time / diffcomb time in this run "
            "(> 1: diffcomb is faster). Output: the per-query loss (batch,); fwd+bwd = forward, then "
            "out.sum().backward() with respect to the scores.",
            "diffcomb: soft ranks / soft top-k by projection onto the permutahedron (O(n log n) time, "
            "O(n) memory per query). pairwise (torch): the usual sigmoid-per-pair surrogates "
            "(ApproxNDCG, Smooth-AP, sigmoid recall@k, pairwise AUC; diffcomb/bench/ranking_suite.py), "
            "O(n^2) time and memory per query. They are different surrogates of the same metrics, so "
            "'max abs diff' / 'grad diff' compare different quantities: their '!' marks are expected.",
        ]
    if suite == "topk":
        return [
            "Median times in milliseconds. ratio = contender time / diffcomb.sparse_soft_topk time in this "
            "run (> 1: diffcomb is faster). fwd+bwd = forward, then (mask * g).sum().backward().",
            "max abs diff / grad diff: max |contender - diffcomb| of the masks / of the input gradients; '!' "
            f"marks a difference beyond tolerance * max(1, max|reference|) ({tol}). diffcomb.soft_topk is the "
            "p = 2 operator: on the p != 2 workloads its diff is the distance between two different masks "
            "(its time is the p = 2 baseline); on p = 2 its values agree exactly, and a float32 grad '!' comes "
            "from tied inputs outside the support, where soft_topk spreads gradient over the tie and "
            "sparse_soft_topk returns the derivative, 0. one-hot O(n^2) is skipped where its (batch, n, n) "
            "permutation matrices do not fit. torch.topk is the hard floor (x on the top k): not checked.",
        ]
    return [
        "Median times in milliseconds. ratio = contender time / diffcomb time in this run "
        "(> 1: diffcomb is faster). fwd+bwd = forward, then (out * g).sum().backward().",
        "max abs diff / grad diff: max |contender - reference| of the values / of the input "
        "gradients on the same input and g; '!' marks a difference beyond tolerance * "
        f"max(1, max|reference|) ({tol}). A value '!' is a disagreement. A grad '!' in float32 "
        "can be legitimate: rows of 1000+ float32 randn values contain exact ties, and tied "
        "inputs may swap gradients; rerun with --dtype float64 to judge.",
    ]


def format_table(results: Sequence[WorkloadResult], header: Sequence[str] = (),
                 footer: Sequence[str] | None = None, micro: bool = False) -> str:
    """A Markdown table: one row per (workload, contender), then the
    footnotes of failed rows and ``footer`` (default: ``table_notes("sort")``). ``micro``: times
    in microseconds, and contenders that cannot run a workload left out of its rows."""
    unit, fmt = ("us", _us) if micro else ("ms", _ms)
    cols = ["workload", "contender", f"fwd {unit}", f"fwd+bwd {unit}",
            "fwd ratio", "fwd+bwd ratio", "max abs diff", "grad diff"]
    rows = []
    notes: dict[str, None] = {}  # ordered set of full status messages
    for wr in results:
        first = True
        for c in wr.contenders:
            if micro and c.status.startswith("unsupported"):
                continue
            name = wr.workload.name if first else ""
            first = False
            if c.fwd is None:
                short = _short_status(c.status)
                if short != c.status:
                    notes[f"{c.name}: {c.status}"] = None
                # a contender that ran its check but was not timed (too slow) keeps its check
                checked = c.is_reference or c.max_abs_diff is not None or c.note is not None
                rows.append([name, c.name, short, "", "", "",
                             _check(c, False) if checked else "",
                             _check(c, True) if checked and wr.workload.backward else ""])
                continue
            if c.status != "ok":  # timed, then failed (e.g. the backward)
                notes[f"{c.name} ({wr.workload.name}): {c.status}"] = None
            rows.append([
                name, c.name, fmt(c.fwd.median),
                "-" if c.fwd_bwd is None else fmt(c.fwd_bwd.median),
                _ratio(c.ratio_fwd), _ratio(c.ratio_fwd_bwd), _check(c, False),
                _check(c, True) if wr.workload.backward else "",
            ])
    widths = [max(len(col), *(len(r[i]) for r in rows)) if rows else len(col)
              for i, col in enumerate(cols)]
    right = {2, 3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)
    ) + "|"
    lines = list(header)
    if header:
        lines.append("")
    lines += [line(cols), sep] + [line(r) for r in rows]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += [""] + list(table_notes("sort") if footer is None else footer)
    return "\n".join(lines) + "\n"


def to_json(
    suite: str, device: str, budget: Budget, seed: int, wall_time: float,
    machine: dict, results: Sequence[WorkloadResult], created: str, argv: Sequence[str],
) -> dict:
    return {
        "schema": 1,
        "suite": suite,
        "device": device,
        "created": created,
        "argv": list(argv),
        "seed": seed,
        "budget": budget.as_dict(),
        "wall_time_s": wall_time,
        "machine": machine,
        "results": [r.as_dict() for r in results],
    }


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a sibling ``*.tmp.json``-style file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    tmp.write_text(text)
    os.replace(tmp, path)


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=1, sort_keys=False) + "\n"
