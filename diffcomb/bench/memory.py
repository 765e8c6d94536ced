"""Peak host memory of one forward+backward (the forward where a workload has none), each in a fresh process.

CPU tensors come from malloc/mmap, which torch's allocator does not count, so
the measure is the process's resident set: a child process imports the
contender, builds the workload's input and upstream gradient, runs one
forward+backward on one row (imports, lazy initialization and per-shape
buffers warm up), then resets
the kernel's high-water mark (``/proc/self/clear_refs``, Linux) and records
``VmHWM - VmRSS``, i.e. the peak of everything one forward+backward
allocates beyond its inputs: outputs, what autograd keeps, scratch, the
gradient. Every contender is measured the same way, with glibc's mmap threshold
fixed at 64 KiB so that freed tensors leave the resident set at once. A contender that cannot
run the workload's batch (``peers.Unsupported``, e.g. diffsort needing tens
of GB, or minutes of dense products) is measured at batches 2 and 4, past its
work limit, and extrapolated linearly in the batch (its memory is linear in
B); the result says so.

Run as ``python -m diffcomb.bench.memory CONTENDER WORKLOAD_JSON LIFT(0|1) [WORKLOAD_CLASS]``; ``measure``
calls it and parses the one JSON line it prints.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import subprocess
import sys
from typing import Sequence

__all__ = ["measure", "measure_or_extrapolate"]

SMALL_BATCHES = (2, 4)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _child(contender_name: str, workload_json: str, lift_work_limit: bool, kind: str = "SortNetWorkload") -> dict:
    import torch

    from . import peers, workloads
    from .runner import call_once

    w = getattr(workloads, kind)(**{k: v for k, v in json.loads(workload_json).items() if k != "name"})
    ld = peers.load(peers.CONTENDERS[contender_name])
    if ld.status != "ok":
        return {"status": ld.status}
    try:
        if lift_work_limit and contender_name in peers.UNLIMITED_BUILDERS:
            fn = peers.UNLIMITED_BUILDERS[contender_name](ld.module, w)
        else:
            fn = ld.contender.build(ld.module, w)
    except peers.Unsupported as e:
        return {"status": f"unsupported: {e}"}
    # Warm up on one row of the same shape: the first call at a shape allocates buffers
    # that later calls reuse (measured: about 1.4 GiB for diffsort at n = 1024), which
    # is not the per-call memory.
    inputs = w.inputs("cpu", 0)
    call_once(fn, dataclasses.replace(w, batch=1).inputs("cpu", 0), dataclasses.replace(w, batch=1))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current VmRSS
    base = _status_kib("VmRSS")
    call_once(fn, inputs, w)  # forward and, where the workload has one, backward
    peak = _status_kib("VmHWM")
    return {"status": "ok", "peak_bytes": (peak - base) * 1024, "torch_threads": torch.get_num_threads()}


def measure(contender_name: str, workload, lift_work_limit: bool = False, timeout: float = 1800.0) -> dict:
    """{"status", "peak_bytes"} of one forward+backward of ``workload`` in a fresh process
    (``lift_work_limit``: run diffsort past its work limit, for the small-batch probes)."""
    env = dict(os.environ)
    # A fixed mmap threshold: every block of 64 KiB or more is mapped on allocation and
    # unmapped on free, so the resident set follows the live tensors (glibc's default
    # raises the threshold after frees and keeps freed blocks in the heap).
    env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds diffcomb/
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        command = [sys.executable, "-m", "diffcomb.bench.memory", contender_name, json.dumps(workload.as_dict()),
                   str(int(lift_work_limit)), type(workload).__name__]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout (> {timeout:g} s)"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"error: {tail[:200]}"}
    return json.loads(lines[-1])


def measure_or_extrapolate(contender_name: str, workload, small_batches: Sequence[int] = SMALL_BATCHES) -> dict:
    """``measure`` at the workload's batch, or, when the contender cannot run it, at
    ``small_batches`` with a linear extrapolation to the workload's batch."""
    result = measure(contender_name, workload)
    if not result["status"].startswith("unsupported"):
        result["batch"] = workload.batch
        return result
    small = [measure(contender_name, dataclasses.replace(workload, batch=b), lift_work_limit=True)
             for b in small_batches]
    if any(r["status"] != "ok" for r in small):
        return {"status": result["status"], "small_batches": small}
    (b1, b2), (p1, p2) = small_batches, (small[0]["peak_bytes"], small[1]["peak_bytes"])
    slope = (p2 - p1) / (b2 - b1)
    return {
        "status": "extrapolated",
        "reason": result["status"],
        "peak_bytes": int(p1 + slope * (workload.batch - b1)),
        "measured": {str(b): r["peak_bytes"] for b, r in zip(small_batches, small)},
        "batch": workload.batch,
    }


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table of peak memory rows {workload, contender, result}."""
    from .peers import CONTENDERS

    lines = ["| workload | contender | peak MiB (fwd+bwd) | ratio | note |", "|---|---|---:|---:|---|"]
    base = {r["workload"]: r["result"].get("peak_bytes") for r in rows
            if r["contender"] in CONTENDERS and CONTENDERS[r["contender"]].is_baseline}
    for r in rows:
        res = r["result"]
        peak = res.get("peak_bytes")
        ref = base.get(r["workload"])
        ratio = f"{peak / ref:.1f}" if peak is not None and ref else ""
        if res["status"] == "extrapolated":
            measured = ", ".join(f"B={b}: {v / 2**20:.0f} MiB" for b, v in res["measured"].items())
            note = f"extrapolated linearly from {measured} ({res['reason']})"
        else:
            note = "" if res["status"] == "ok" else res["status"]
        cell = f"{peak / 2**20:,.1f}" if peak is not None else "-"
        lines.append(f"| {r['workload']} | {r['contender']} | {cell} | {ratio} | {note} |")
    lines.append("")
    lines.append("Peak resident memory of one forward+backward (a forward where the workload has no backward) "
                 "beyond its inputs, each in a fresh process "
                 "(VmHWM - VmRSS after a reset of the high-water mark; diffcomb/bench/memory.py). "
                 "ratio = contender / diffcomb.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2], sys.argv[3] == "1", *sys.argv[4:5])))
