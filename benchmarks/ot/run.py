"""Optimal-transport benchmark: diffcomb against ott-jax and geomloss in the same run, one process
per (contender, case), each under /usr/bin/time -v for its peak resident memory. Writes a Markdown
table (and the JSON records) to benchmarks/results/ot-cpu.md / .json.

    python benchmarks/ot/run.py [--cases dense,cloud1e4,cloud1e5] [--ottjax PYTHON] [--baseline DIR]

--ottjax: the python of the environment that has ott-jax (jax is kept out of diffcomb's
environment; README.md here says how to make it). --baseline: the root of another diffcomb
build (e.g. a checkout of main built in place) timed as "diffcomb-main" on the dense case.
Missing peers are reported as such, never silently dropped.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CASES = {
    # name: (arguments, contenders)
    "dense": (["dense", "32", "1000", "100", "0.05"], ["diffcomb", "diffcomb-main", "ott-jax"]),
    "cloud1e4": (["cloud", "10000", "100"], ["diffcomb", "geomloss-online", "ott-jax", "geomloss-tensorized"]),
    "cloud1e5": (["cloud", "100000", "10"], ["diffcomb"]),  # forward+backward only (minutes)
}


def cloud_eps(n):
    """0.05 times the squared diameter of the two clouds' bounding box (as diffcomb's
    relative_epsilon='diameter'), computed from the same inputs."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.random((n, 3), dtype=np.float32), rng.random((n, 3), dtype=np.float32)
    lo, hi = np.minimum(x.min(0), y.min(0)), np.maximum(x.max(0), y.max(0))
    return 0.05 * float(((hi - lo).astype(np.float64) ** 2).sum())


def run_one(command, env, timeout):
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env,
                          timeout=timeout)
    wall = time.perf_counter() - start
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    record = {"wall_s": wall, "peak_rss_mb": int(peak.group(1)) / 1024 if peak else None}
    if proc.returncode != 0:
        record["error"] = proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else "failed"
        return record
    record.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return record


def table(records):
    """The Markdown table of the records: time, peak memory and the ratio to diffcomb per case."""
    lines = ["| case | contender | forward s | forward+backward s | fwd+bwd / diffcomb | peak RSS MB | value | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ours = {r["case"]: r.get("forward_backward_s") for r in records if r["contender"] == "diffcomb"}
    for r in records:
        fb, base = r.get("forward_backward_s"), ours.get(r["case"])
        ratio = f"{fb / base:.2f}" if fb and base else ""
        fmt = lambda v, f: "" if v is None else format(v, f)
        lines.append(f"| {r['case']} | {r['contender']} | {fmt(r.get('forward_s'), '.2f')} | {fmt(fb, '.2f')} | "
                     f"{ratio} | {fmt(r.get('peak_rss_mb'), '.0f')} | {fmt(r.get('value'), '.6g')} | "
                     f"{r.get('error', '')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="dense,cloud1e4,cloud1e5")
    parser.add_argument("--ottjax", default=os.environ.get("DIFFCOMB_OTTJAX_PYTHON", "/work/venvs/ottjax/bin/python"))
    parser.add_argument("--baseline", default=os.environ.get("DIFFCOMB_BASELINE"))
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ot-cpu"))
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        print(f"benchmarks/ot/run.py: unknown case(s) {unknown}; choose from {sorted(CASES)}", file=sys.stderr)
        return 2
    records = []
    for case in args.cases.split(","):
        argv, contenders = CASES[case]
        if argv[0] == "cloud":
            argv = argv + [repr(cloud_eps(int(argv[1])))] + (["fb"] if case == "cloud1e5" else [])
        for name in contenders:
            env = dict(os.environ)
            if name == "ott-jax":
                if not Path(args.ottjax).exists():
                    records.append({"case": case, "contender": name, "error": "no ott-jax environment"})
                    continue
                command = [args.ottjax, str(HERE / "ottjax_contender.py"), *argv]
            else:
                if name == "diffcomb-main":
                    if not args.baseline:
                        records.append({"case": case, "contender": name, "error": "no --baseline"})
                        continue
                    env["DIFFCOMB_BASELINE"] = args.baseline
                command = [sys.executable, str(HERE / "torch_contenders.py"), name, *argv]
            record = {"case": case, "contender": name, "args": argv, **run_one(command, env, args.timeout)}
            print(json.dumps(record), flush=True)
            records.append(record)
            Path(args.out + ".json").write_text(json.dumps(records, indent=1))
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
