"""``python -m benchmarks`` / ``diffcomb-bench``: run a suite, print, save.

Examples::

    python -m benchmarks                          # the "sort" suite on CPU
    python -m benchmarks --suite softdtw          # soft-DTW vs tslearn and pysdtw
    python -m benchmarks --suite sortnet          # sorting networks vs diffsort, with peak memory
    python -m benchmarks --suite sinkhorn         # Sinkhorn vs POT and geomloss; OT ranks vs torchsort
    python -m benchmarks --suite perturb          # I-MLE top-k, grid shortest path, assignment
    python -m benchmarks --suite ranking          # ranking-metric losses vs pairwise, with peak memory
    python -m benchmarks --suite topk             # sparse soft top-k vs PyTorch alternatives, torch.topk
    python -m benchmarks --suite latency          # small calls (microseconds) vs peers, torch.softmax
    python -m benchmarks --suite ot               # OT at scale vs ott-jax and geomloss, with peak memory
    python -m benchmarks --list                   # workloads and contenders
    python -m benchmarks --quick --workload 128x1000
    python -m benchmarks --device cuda --out /tmp/gpu-results
    diffcomb-bench --suite sort --plot --out results/   # table, JSON and PNG charts in results/

Results go to ``--out DIR`` (default ``./bench-results`` in the current directory): never into the
installed package or over the tables committed in a clone (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

from . import memory, peers, ranking_suite, report, runner
from .progress import Progress
from .suites import SUITES, select

OT_SUITE = "ot"
from .timing import Budget
from .workloads import DTYPES

__all__ = ["main", "build_parser", "DEFAULT_OUT"]

DEFAULT_OUT = Path("bench-results")  # relative to the current directory

# Sized so the default sort suite, fast-soft-sort included (its backward runs
# seconds per call at n >= 1000), finishes in about a minute on 2 cores.
DEFAULT_BUDGET = Budget(repeat=5, min_time=0.1, max_time=0.5, warmup=2)
QUICK_BUDGET = Budget(repeat=3, min_time=0.02, max_time=0.1, warmup=1)
# Soft-DTW calls take 0.03-1.5 s on 2 cores (numba peers: 3-12 s of JIT on
# their first call): the max_time cap leaves the largest workloads with 3-5
# samples, and a forward+backward above max_call (twice) is reported
# "too slow". About 75 s with both peers, well under the 3-minute target.
SOFTDTW_BUDGET = Budget(repeat=5, min_time=1.0, max_time=4.0, warmup=1, max_call=10.0)
SOFTDTW_QUICK_BUDGET = Budget(repeat=1, min_time=0.0, max_time=0.5, warmup=0, max_call=5.0)
# Sorting networks: diffcomb takes 1 ms - 10 s per call, diffsort up to minutes
# (bitonic 128x256 fwd+bwd: about 1.5 min on 2 cores), so slow calls get one
# sample; nothing is cut as too slow below 10 minutes.
SORTNET_BUDGET = Budget(repeat=3, min_time=0.5, max_time=3.0, warmup=1, max_call=600.0)
SORTNET_QUICK_BUDGET = Budget(repeat=1, min_time=0.0, max_time=0.5, warmup=0, max_call=120.0)
# Sinkhorn: POT's per-problem torch loop takes seconds per batch-32 call at n = 1000 (its
# backward more): max_call is high so that the batch-32, n = 1000 comparison is measured (it
# takes about 10 minutes on 2 busy cores; -w selects fewer workloads).
SINKHORN_BUDGET = Budget(repeat=3, min_time=0.5, max_time=4.0, warmup=1, max_call=900.0)
SINKHORN_QUICK_BUDGET = Budget(repeat=1, min_time=0.0, max_time=0.5, warmup=0, max_call=30.0)
# (default, --quick) per suite
SUITE_BUDGETS: Mapping[str, tuple[Budget, Budget]] = {
    "sort": (DEFAULT_BUDGET, QUICK_BUDGET),
    "softdtw": (SOFTDTW_BUDGET, SOFTDTW_QUICK_BUDGET),
    "sortnet": (SORTNET_BUDGET, SORTNET_QUICK_BUDGET),
    "sinkhorn": (SINKHORN_BUDGET, SINKHORN_QUICK_BUDGET),
    # torch-imle and the Python Dijkstra take ~0.5-2 s per call on 2 cores.
    "perturb": (Budget(repeat=5, min_time=0.3, max_time=3.0, warmup=1),
                Budget(repeat=2, min_time=0.0, max_time=0.5, warmup=0)),
    # Ranking losses: the pairwise formulations take seconds per call at 256 x 1000 (n = 10^4 is
    # unsupported for them: ~400 GiB); diffcomb 1-300 ms.
    "ranking": (Budget(repeat=3, min_time=0.3, max_time=3.0, warmup=1, max_call=120.0),
                Budget(repeat=1, min_time=0.0, max_time=0.5, warmup=0, max_call=60.0)),
    # Calls of tens of microseconds: many samples, so the medians hold through a busy machine's noise.
    "latency": (Budget(repeat=300, min_time=0.3, max_time=1.0, warmup=20),
                Budget(repeat=30, min_time=0.0, max_time=0.1, warmup=3)),
    # diffcomb takes milliseconds, the one-hot O(n^2) port up to a second per call.
    "topk": (Budget(repeat=7, min_time=0.3, max_time=2.0, warmup=1, max_call=60.0),
             Budget(repeat=2, min_time=0.0, max_time=0.3, warmup=0, max_call=30.0)),
}
BUSY_FRACTION = 0.1  # share of all CPUs used by other processes above which the header warns
# Suites whose CPU runs measure peak memory unless --no-memory (any suite does with --memory), and
# the batches at which a contender too big for the workload's batch is probed (memory.py).
MEMORY_SUITES = ("sortnet", "ranking")
MEMORY_PROBE_BATCHES: Mapping[str, tuple[int, ...]] = {"ranking": ranking_suite.SMALL_BATCHES}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffcomb-bench",
        description="Time diffcomb against peer libraries on named workloads "
        "(median forward and forward+backward, same run).",
    )
    p.add_argument("--suite", default="sort", choices=sorted((*SUITES, OT_SUITE)),
                   help="workload suite (default: sort); suite ot: the optimal-transport cases at scale "
                   "(benchmarks/ot/run.py, from a clone: one process per case and contender, for their peak memory; "
                   "see benchmarks/ot/README.md)")
    p.add_argument("--ottjax", default=None, metavar="PYTHON",
                   help="suite ot: the python of the environment that has ott-jax (default: "
                   "$DIFFCOMB_OTTJAX_PYTHON, else /work/venvs/ottjax/bin/python)")
    p.add_argument("--cases", default=None, metavar="LIST",
                   help="suite ot: the cases to run (default: dense,cloud1e4,cloud1e5)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="override the workloads' dtype (default: the suite's, float32)")
    p.add_argument("--strength", type=float, default=None,
                   help="suite sort: override regularization_strength (default: the suite's, 1.0)")
    p.add_argument("--gamma", type=float, default=None,
                   help="suite softdtw: override gamma (default: the suite's, 0.1)")
    p.add_argument("-w", "--workload", action="append", default=[], metavar="PATTERN",
                   help="run only matching workloads (names read op/regularization/batchxn, "
                   "or soft_dtw/batchxnxmxd): whole /-separated segments such as kl, 128x1000, "
                   "soft_rank/l2, or a glob such as '*x1000'; repeatable")
    p.add_argument("-c", "--contender", action="append", default=[], metavar="NAME",
                   help="run only these contenders (repeatable; default: all of the suite's, except those "
                   "--list marks 'on request', which run only when named)")
    sd = SOFTDTW_BUDGET
    p.add_argument("--repeat", type=int, default=None,
                   help=f"minimum samples per measurement (default {DEFAULT_BUDGET.repeat}; "
                   f"softdtw {sd.repeat})")
    p.add_argument("--min-time", type=float, default=None,
                   help=f"minimum seconds of sampling per measurement (default {DEFAULT_BUDGET.min_time}; "
                   f"softdtw {sd.min_time})")
    p.add_argument("--max-time", type=float, default=None,
                   help=f"cap on seconds of sampling per measurement (default {DEFAULT_BUDGET.max_time}; "
                   f"softdtw {sd.max_time})")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"warm-up calls per measurement (default {DEFAULT_BUDGET.warmup}; softdtw {sd.warmup})")
    p.add_argument("--max-call", type=float, default=None, metavar="SECONDS",
                   help="report a contender whose forward+backward call takes longer than SECONDS "
                   f"(twice) as 'too slow' instead of timing it (default: none; softdtw {sd.max_call:g}); "
                   "0 disables the cap")
    p.add_argument("--quick", action="store_true",
                   help=f"small budget (repeat {QUICK_BUDGET.repeat}, min-time {QUICK_BUDGET.min_time}, "
                   f"max-time {QUICK_BUDGET.max_time}; softdtw: one sample, max-time "
                   f"{SOFTDTW_QUICK_BUDGET.max_time}, too slow above {SOFTDTW_QUICK_BUDGET.max_call:g} s); "
                   "default output gets a -quick suffix")
    p.add_argument("--seed", type=int, default=0, help="input seed (default 0)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"folder for the results: <suite>-<device>.json, the printed table as .md, and "
                   f"with --plot the PNG charts (default: ./{DEFAULT_OUT}, created when missing)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="JSON output path instead of DIR/<suite>-<device>.json (the table goes beside it)")
    p.add_argument("--plot", action="store_true",
                   help="also write PNG charts beside the JSON: time against input size, one line per "
                   "contender, log scales (needs matplotlib: pip install 'diffcomb[bench]')")
    p.add_argument("--no-save", action="store_true", help="print only; write no files")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always draw the progress bar (default: only when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before starting, wait up to SECONDS until other processes use less than "
                   f"{BUSY_FRACTION * 100:.0f}%% of the CPUs (default 0: do not wait)")
    p.add_argument("--memory", dest="memory", action="store_true", default=None,
                   help="also measure each contender's peak memory of one forward+backward (CPU; one fresh "
                   f"process per workload and contender, diffcomb/bench/memory.py); the default for suites "
                   f"{' and '.join(MEMORY_SUITES)}")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurements")
    p.add_argument("--list", action="store_true", help="list suites, workloads and contenders, then exit")
    return p


def _budget(args: argparse.Namespace) -> Budget:
    default, quick = SUITE_BUDGETS[args.suite]
    base = quick if args.quick else default
    if args.max_call is None:
        max_call = base.max_call
    else:
        max_call = args.max_call if args.max_call > 0 else None
    return Budget(
        repeat=base.repeat if args.repeat is None else max(args.repeat, 1),
        min_time=base.min_time if args.min_time is None else args.min_time,
        max_time=base.max_time if args.max_time is None else args.max_time,
        warmup=base.warmup if args.warmup is None else args.warmup,
        max_call=max_call,
    )


def _default_json(args: argparse.Namespace) -> Path:
    device = torch.device(args.device).type
    parts = [args.suite, device]
    if args.dtype not in (None, "float32"):
        parts.append(args.dtype)
    if args.strength is not None:
        parts.append(f"eps{args.strength:g}")
    if args.gamma is not None:
        parts.append(f"gamma{args.gamma:g}")
    if args.workload or args.contender:
        parts.append("partial")
    if args.quick:
        parts.append("quick")
    return args.out / ("-".join(parts) + ".json")


def _wait_quiet(max_wait: float) -> dict:
    """Probe the other processes' CPU use; with ``max_wait`` > 0, retry until quiet."""
    deadline = time.perf_counter() + max_wait
    while True:
        probe = report.probe_other_load(0.5 if max_wait <= 0 else 2.0)
        frac = probe["other_fraction"]
        if frac is None or frac <= BUSY_FRACTION or time.perf_counter() >= deadline:
            return probe
        print(f"diffcomb-bench: waiting for a quiet machine (others use {frac:.0%} of the CPUs)",
              file=sys.stderr)
        time.sleep(min(10.0, max(deadline - time.perf_counter(), 0.0)))


def _suite_contenders(suite: str) -> tuple[str, ...]:
    """Every contender of a suite: the default ones, then those that run on request (-c)."""
    return tuple(peers.SUITE_CONTENDERS[suite]) + tuple(peers.ON_REQUEST_CONTENDERS.get(suite, ()))


def _list(suite_names: Sequence[str], loaded_by_name: dict) -> str:
    lines = []
    for s in suite_names:
        lines.append(f"suite {s}:")
        for w in SUITES[s]:
            lines.append(f"  {w.name:<26} {w.settings}")
        lines.append("  contenders:")
        for name in _suite_contenders(s):
            ld = loaded_by_name[name]
            ver = f" {ld.version}" if ld.version else ""
            extra = " (on request: -c)" if name not in peers.SUITE_CONTENDERS[s] else ""
            lines.append(f"    {name:<16} {ld.status}{ver}{extra}")
    return "\n".join(lines)


def _run_ot(args: argparse.Namespace) -> int:
    """Suite ot: benchmarks/ot/run.py (it lives in the clone's benchmarks/ folder, with the ott-jax
    contender script that runs in ott-jax's own environment)."""
    try:
        from benchmarks.ot import run as ot_run
    except ImportError:
        print("diffcomb-bench: suite ot runs from a clone of diffcomb (python -m benchmarks --suite ot)",
              file=sys.stderr)
        return 2
    forwarded = []
    if args.cases:
        forwarded += ["--cases", args.cases]
    ottjax = args.ottjax or os.environ.get("DIFFCOMB_OTTJAX_PYTHON")
    if ottjax:
        forwarded += ["--ottjax", ottjax]
    if args.out != DEFAULT_OUT:
        forwarded += ["--out", str(args.out / "ot-cpu")]
    return ot_run.main(forwarded)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if args.suite == OT_SUITE:
        return _run_ot(args)

    if args.plot and args.no_save:
        print("diffcomb-bench: --plot writes files; it cannot be combined with --no-save", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("diffcomb-bench: --plot needs matplotlib (pip install 'diffcomb[bench]')", file=sys.stderr)
            return 2

    names = list(peers.SUITE_CONTENDERS[args.suite])
    if args.contender:
        known = list(_suite_contenders(args.suite))
        unknown = [c for c in args.contender if c not in known]
        if unknown:
            print(f"diffcomb-bench: unknown contender(s) {unknown}; choose from {known}", file=sys.stderr)
            return 2
        names = [n for n in known if n in args.contender]
    loaded = [peers.load(peers.CONTENDERS[n]) for n in names]

    if args.list:
        all_names = {n for s in SUITES for n in _suite_contenders(s)}
        by_name = {ld.contender.name: ld for ld in loaded}
        by_name.update({n: peers.load(peers.CONTENDERS[n]) for n in all_names if n not in by_name})
        print(_list(sorted(SUITES), by_name))
        return 0

    try:
        dev = torch.device(args.device)
    except RuntimeError as e:
        print(f"diffcomb-bench: --device: {e}", file=sys.stderr)
        return 2
    if dev.type not in ("cpu", "cuda"):
        print(f"diffcomb-bench: --device must be cpu or cuda[:N], got {args.device!r}", file=sys.stderr)
        return 2
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("diffcomb-bench: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2

    try:
        workloads = select(SUITES[args.suite], args.workload, args.dtype, args.strength, args.gamma)
    except ValueError as e:
        flag = "--strength" if args.strength is not None else "--gamma"
        print(f"diffcomb-bench: {flag} does not apply to suite {args.suite!r}: {e}", file=sys.stderr)
        return 2
    if not workloads:
        print(f"diffcomb-bench: no workload of suite {args.suite!r} matches {args.workload}", file=sys.stderr)
        return 2

    budget = _budget(args)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    idle_probe = _wait_quiet(args.wait_quiet)
    snap0 = report.cpu_snapshot()
    t0 = time.perf_counter()
    total = runner.count_units(workloads, loaded, args.device)
    with Progress(total, enabled=args.progress) as bar:
        results = runner.run(workloads, loaded, args.device, args.seed, budget, bar)
    wall = time.perf_counter() - t0
    during = report.other_load(snap0, report.cpu_snapshot())

    machine = report.machine_info(args.device, loaded)
    machine["other_load_before"] = idle_probe
    machine["other_load_during"] = during
    machine["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    dtypes = sorted({w.dtype for w in workloads})
    versions = ", ".join(
        f"{ld.contender.name} {ld.version or ''}".strip() if ld.status == "ok" else f"{ld.contender.name}: {ld.status}"
        for ld in loaded
    )
    cap = "" if budget.max_call is None else f"; too slow above {budget.max_call:g} s per fwd+bwd call"
    header = [
        f"diffcomb-bench suite={args.suite} device={args.device} dtype={'/'.join(dtypes)} "
        f"seed={args.seed} created={created}",
        f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']} "
        f"({machine['torch_num_threads']} threads), {machine['platform']}",
        f"contenders: {versions}",
        f"budget: warmup {budget.warmup}, >= {budget.repeat} samples and >= {budget.min_time:g} s, "
        f"<= {budget.max_time:g} s per measurement{cap}; wall time {wall:.1f} s",
    ]
    busy = [(label, d["other_fraction"]) for label, d in (("before", idle_probe), ("during", during))
            if d["other_fraction"] is not None and d["other_fraction"] > BUSY_FRACTION]
    if busy:
        what = ", ".join(f"{frac:.0%} of the CPUs {label} the run" for label, frac in busy)
        header.append(f"WARNING: other processes used {what}; they inflate timings "
                      "(most of all multi-threaded ones). Rerun on a quiet machine.")
    if "cuda_device" in machine:
        header.insert(2, f"gpu: {machine['cuda_device']} (CUDA {machine['cuda_runtime']})")
    table = report.format_table(results, header, report.table_notes(args.suite), micro=args.suite == "latency")
    memory_rows = []
    measure_memory = args.suite in MEMORY_SUITES if args.memory is None else args.memory
    if measure_memory and dev.type == "cpu":
        small = MEMORY_PROBE_BATCHES.get(args.suite, memory.SMALL_BATCHES)
        for w in workloads:
            for ld in loaded:
                if ld.status != "ok":
                    continue
                print(f"diffcomb-bench: peak memory of {ld.contender.name} on {w.name}", file=sys.stderr)
                memory_rows.append({"workload": w.name, "contender": ld.contender.name,
                                    "result": memory.measure_or_extrapolate(ld.contender.name, w, small)})
        table += "\n" + memory.format_table(memory_rows)
        if args.suite == "ranking":
            table += "\n".join(ranking_suite.summary_lines(memory_rows)) + "\n"
        table += f"\nload average after the run: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n"
    print(table, end="")

    if not args.no_save:
        path = args.json if args.json is not None else _default_json(args)
        doc = report.to_json(args.suite, args.device, budget, args.seed, wall, machine,
                             results, created, argv_list)
        if memory_rows:
            doc["memory"] = memory_rows
        report.write_text_atomic(path, report.dumps(doc))
        report.write_text_atomic(path.with_suffix(".md"), table)
        print(f"\nwrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
        if args.plot:
            from .plot import plot_results

            pngs = plot_results(doc, path.parent, path.stem)
            print(f"wrote {len(pngs)} chart(s): {', '.join(str(p) for p in pngs) or 'none (no timed sizes)'}",
                  file=sys.stderr)
    return 0
