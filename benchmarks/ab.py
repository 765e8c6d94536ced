"""Paired before/after timing of two source trees, workload by workload (the "no workload slower" gate).

Usage (from anywhere; each tree must have its extension built in place or be importable as is):

    python benchmarks/ab.py --a /path/to/after --b /path/to/before --suite sort [--suite topk ...]
        [-c diffcomb ...] [-w WORKLOAD ...] [--rounds 9] [--processes 3] [--block 0.2] [--threads 2]
        [--out table.md]

Why paired: on a shared machine the speed of the same code drifts by 10-30% within minutes, more than
the 5% a regression gate must resolve. Here two worker processes (one per tree, each importing its own
diffcomb) hold the same seeded inputs; for every workload, contender and mode (forward, and
forward+backward) the parent asks them in turn A B, B A, A B, ... for one block of calls each (one
block = calls until ``--block`` seconds, at least one; the first block of each side warms up first) and takes the median time
per call of each block. Only one worker runs at a time. The ratio A/B is taken round by round (adjacent
blocks see the same machine), and the table reports its median over the rounds with the lowest and
highest round; a median above 1.05 with a lowest round above 1 is a real slowdown.

Why several pairs of processes (``--processes``): a process's speed also depends on where it was
placed (address-space layout, the alignment of its buffers and code), and that offset lasts its
whole life. Measured on the perturb suite's grid_shortest_path/64x30x30 (one thread), the same two
trees gave A/B 1.11-1.13 in every round of one pair of workers and 0.85-0.98 in four other pairs. The
rounds are therefore spread over ``--processes`` pairs of fresh workers (each warms up in its first
round); the table pools their rounds and lists each pair's median ("pairs").

The workloads and contenders are each tree's own ``diffcomb.bench`` suites (``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _worker(suite: str, contenders: list[str], threads: int) -> None:
    import torch

    from diffcomb.bench import cli, peers
    from diffcomb.bench.runner import _fwd_bwd_step, _fwd_step

    torch.set_num_threads(threads)
    loaded = {n: peers.load(peers.CONTENDERS[n]) for n in contenders if n in peers.CONTENDERS}
    workloads = list(cli.SUITES[suite])
    steps: dict = {}
    out = sys.stdout
    print(json.dumps({"workloads": [w.name for w in workloads]}), file=out, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "prepare":
            steps.clear()
            w = workloads[cmd["w"]]
            if hasattr(w, "inputs"):
                inputs = w.inputs("cpu", 0)
            elif suite != "perturb":  # trees older than the one runner for every suite
                from diffcomb.bench.workloads import make_inputs
                inputs = make_inputs(w, "cpu", 0)
            old_perturb = suite == "perturb" and not hasattr(w, "inputs")
            if old_perturb:  # trees before the one runner: the perturb suite had its own builders
                from diffcomb.bench import perturb_suite
                x, g = perturb_suite._inputs(w, 0, "cpu")
                inputs = type("Inputs", (), {"x": x, "g": g, "others": ()})
            for name, ld in loaded.items():
                if ld.status != "ok":
                    continue
                try:
                    if old_perturb:
                        fn, differentiable = perturb_suite.BUILDERS[name](ld.module, w)
                    else:
                        fn = ld.contender.build(ld.module, w)
                except Exception:  # unsupported on this workload
                    continue
                x_bwd = inputs.x.detach().clone().requires_grad_(True)
                steps[(name, "fwd")] = lambda fn=fn: _fwd_step(fn, inputs.x.detach(), inputs.others)
                if getattr(w, "backward", True):
                    steps[(name, "fwd+bwd")] = lambda fn=fn, x=x_bwd: _fwd_bwd_step(fn, x, inputs.g, inputs.others)
            print(json.dumps({"steps": [list(k) for k in steps]}), file=out, flush=True)
        elif cmd["op"] == "time":
            step = steps[(cmd["c"], cmd["mode"])]
            if cmd["warm"]:
                warm = time.perf_counter()
                while True:  # warm-up: the first calls of a workload allocate and fill caches
                    step()
                    if time.perf_counter() - warm > cmd["block"] / 2:
                        break
            samples = []
            start = time.perf_counter()
            while not samples or time.perf_counter() - start < cmd["block"]:
                t0 = time.perf_counter()
                step()
                samples.append(time.perf_counter() - t0)
            print(json.dumps({"median": statistics.median(samples)}), file=out, flush=True)


class _Side:
    def __init__(self, tree: str, suite: str, contenders: list[str], threads: int) -> None:
        env = dict(os.environ, PYTHONPATH=tree)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--suite", suite, "--threads", str(threads),
             *sum((["-c", c] for c in contenders), [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/")
        self.workloads = self._read()["workloads"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a worker exited")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _compare(a_tree: str, b_tree: str, suite: str, contenders: list[str], rounds: int, block: float,
             threads: int, patterns: list[str], measured: dict) -> None:
    """One pair of fresh workers, ``rounds`` paired rounds per workload, contender and mode; the
    times and ratios are appended to ``measured`` (key: (suite, workload, contender, mode); value:
    lists of A times, B times, ratios and one ratio median per pair of workers)."""
    a, b = _Side(a_tree, suite, contenders, threads), _Side(b_tree, suite, contenders, threads)
    try:
        for i, name in enumerate(a.workloads):
            if patterns and not any(p in name for p in patterns):
                continue
            if i >= len(b.workloads) or b.workloads[i] != name:
                measured.setdefault((suite, name, "-", "-"), None)
                continue
            steps_a = {tuple(s) for s in a.ask(op="prepare", w=i)["steps"]}
            steps_b = {tuple(s) for s in b.ask(op="prepare", w=i)["steps"]}
            for c, mode in sorted(steps_a & steps_b):
                ta, tb, ratios, pairs = measured.setdefault((suite, name, c, mode), ([], [], [], []))
                mine = []
                for r in range(rounds):
                    order = (a, b) if r % 2 == 0 else (b, a)
                    got = {id(side): side.ask(op="time", c=c, mode=mode, block=block, warm=r == 0)["median"]
                           for side in order}
                    ta.append(got[id(a)])
                    tb.append(got[id(b)])
                    mine.append(got[id(a)] / got[id(b)])
                ratios.extend(mine)
                pairs.append(statistics.median(mine))
                print(f"{suite} {name} {c} {mode}: A/B {statistics.median(mine):.3f} [{min(mine):.3f}, "
                      f"{max(mine):.3f}]", file=sys.stderr, flush=True)
    finally:
        a.close()
        b.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--a", help="the tree measured (after)")
    p.add_argument("--b", help="the baseline tree (before)")
    p.add_argument("--suite", action="append", required=True)
    p.add_argument("-c", "--contender", action="append", default=None, help="contenders (default: diffcomb)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--processes", type=int, default=1,
                   help="pairs of fresh worker processes the rounds are spread over (default 1)")
    p.add_argument("--block", type=float, default=0.2, help="seconds of calls per block")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-w", "--workload", action="append", default=[],
                   help="only the workloads whose name contains this text (repeatable)")
    p.add_argument("--out", help="write the markdown table here too")
    args = p.parse_args()
    contenders = args.contender or ["diffcomb"]
    if args.worker:
        _worker(args.suite[0], contenders, args.threads)
        return 0
    per_pair = -(-args.rounds // args.processes)  # rounds per pair of workers (ceil)
    total = per_pair * args.processes
    lines = [f"A = {args.a}, B = {args.b}; {args.processes} pair(s) of fresh worker processes x {per_pair} paired "
             f"rounds of {args.block} s blocks = {total} rounds, {args.threads} threads; median time per call (ms) "
             "and the A/B ratio per round: median over all rounds [min, max].",
             "Slower in: the rounds in which A was slower than B. Pairs: the median A/B of each pair of workers "
             "(a process's placement in memory can shift its speed by 10% for its whole life).",
             "", "| suite | workload | contender | mode | B ms | A ms | A/B | lowest | highest | slower in | pairs |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for suite in args.suite:
        measured: dict = {}
        for _ in range(args.processes):
            _compare(args.a, args.b, suite, contenders, per_pair, args.block, args.threads, args.workload, measured)
        for (s, w, c, mode), got in measured.items():
            if got is None:
                lines.append(f"| {s} | {w} | - | - | not in both trees | | | | | | |")
                continue
            ta, tb, ratios, pairs = got
            pair_text = " ".join(f"{r:.3f}" for r in pairs)
            lines.append(f"| {s} | {w} | {c} | {mode} | {statistics.median(tb) * 1e3:.4g} | "
                         f"{statistics.median(ta) * 1e3:.4g} | {statistics.median(ratios):.3f} | {min(ratios):.3f} | "
                         f"{max(ratios):.3f} | {sum(r > 1 for r in ratios)}/{len(ratios)} | {pair_text} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
