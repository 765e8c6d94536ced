"""The benchmark package (diffcomb/bench): every suite through the one runner and the CLI, on
its smallest workload with diffcomb's own contenders only (peers may be missing), a tiny time
budget, and no assertion on times; the workloads' inputs and checks; the contender kinds the
runner supports (forward-only workloads, contenders that compute their own gradient)."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch

import diffcomb
from diffcomb.bench import cli, memory, peers, report, runner
from diffcomb.bench.progress import Progress
from diffcomb.bench.suites import SUITES, select
from diffcomb.bench.timing import Budget
from diffcomb.bench.workloads import (PerturbWorkload, SinkhornWorkload, SoftDTWWorkload, SortNetWorkload,
                                      TopKWorkload, Workload, Unsupported)

# The smallest workload of each suite (the team compares tables by these names: they must stay).
SMALLEST = {
    "sort": "soft_rank/l2/1x100",
    "softdtw": "soft_dtw/64x128x128x1",
    "sortnet": "sorting_network/odd_even/128x16",
    "sinkhorn": "sinkhorn/1x100x100",
    "perturb": "grid_shortest_path/64x12x12",
    "ranking": "ndcg_loss/256x100",
    "topk": "sparse_soft_topk/p1.333/k2/4096x64",
    "latency": "soft_rank/l2/1x8",
}
TINY = ["--quick", "--repeat", "1", "--warmup", "0", "--min-time", "0", "--max-time", "0.01", "--no-progress"]
TINY_BUDGET = Budget(repeat=1, min_time=0.0, max_time=0.01, warmup=0)


def _diffcomb_contenders(suite: str) -> list[str]:
    return [n for n in peers.SUITE_CONTENDERS[suite] if peers.CONTENDERS[n].module == "diffcomb"]


def _run(workload, contenders) -> runner.WorkloadResult:
    loaded = [peers.load(c) for c in contenders]
    with Progress(runner.count_units([workload], loaded, "cpu"), enabled=False) as bar:
        (result,) = runner.run([workload], loaded, "cpu", 0, TINY_BUDGET, bar)
        assert bar.done == bar.total  # the progress count matches the steps taken
    return result


def test_every_suite_lists_its_workloads_and_contenders(capsys):
    assert set(SMALLEST) == set(SUITES)
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for suite, workloads in SUITES.items():
        assert f"suite {suite}:" in out
        assert SMALLEST[suite] in {w.name for w in workloads}
        for w in workloads:
            assert f"  {w.name:<26} {w.settings}" in out
        for name in peers.SUITE_CONTENDERS[suite]:
            assert f"    {name:<16} " in out
    assert "POT-torch-loop" in out and "(on request: -c)" in out


@pytest.mark.parametrize("suite", sorted(SMALLEST))
def test_suite_runs_its_smallest_workload_through_the_cli(suite, tmp_path, capsys):
    names = _diffcomb_contenders(suite)
    assert names, suite
    path = tmp_path / f"{suite}.json"
    argv = ["--suite", suite, "-w", SMALLEST[suite], *TINY, "--no-memory", "--json", str(path)]
    for n in names:
        argv += ["-c", n]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out

    doc = json.loads(path.read_text())
    assert doc["suite"] == suite and doc["device"] == "cpu" and doc["budget"]["max_time_s"] == 0.01
    (result,) = doc["results"]
    workload = next(w for w in SUITES[suite] if w.name == SMALLEST[suite])
    assert result["workload"]["name"] == SMALLEST[suite]
    assert result["workload"] == workload.as_dict()
    assert [c["name"] for c in result["contenders"]] == names
    baseline = next(n for n in names if peers.CONTENDERS[n].is_baseline)
    assert result["check_reference"] == baseline
    ran = [c for c in result["contenders"] if c["status"] == "ok"]
    assert baseline in {c["name"] for c in ran}
    for c in result["contenders"]:
        assert c["status"] == "ok" or c["status"].startswith("unsupported: "), c
    for c in ran:
        assert c["fwd"]["samples"] >= 1
        assert (c["fwd_bwd"] is not None) == workload.backward
        if c["name"] == baseline:
            assert c["ratio_fwd"] == 1.0 and c["is_check_reference"]
        elif "note" not in c["check"]:  # compared with the reference
            assert c["check"]["max_abs_diff"] is not None

    # The table: the standard header and one row per contender, also in the saved .md. Suite
    # latency shows microseconds and leaves out the contenders that cannot run the workload.
    unit = "us" if suite == "latency" else "ms"
    head = (f"| workload | contender | fwd {unit} | fwd+bwd {unit} | fwd ratio | fwd+bwd ratio | max abs diff | "
            "grad diff |")
    shown = [c["name"] for c in result["contenders"]
             if not (suite == "latency" and c["status"].startswith("unsupported"))]
    lines = table.splitlines()
    assert lines[0].startswith(f"diffcomb-bench suite={suite} device=cpu")
    header = next(i for i, line in enumerate(lines) if line.startswith("| workload "))
    assert " ".join(lines[header].split()) == head
    rows = lines[header + 2:header + 2 + len(shown)]
    assert rows[0].split("|")[1].strip() == SMALLEST[suite]
    assert [r.split("|")[2].strip() for r in rows] == shown
    if suite == "latency":  # a row of diffcomb in microseconds, and nothing after the rows shown
        assert float(rows[0].split("|")[3]) > 0 and not lines[header + 2 + len(shown)].startswith("|")
    assert path.with_suffix(".md").read_text() == table


def test_suite_results_agree_where_the_contenders_compute_the_same_thing(tmp_path):
    # sinkhorn: unrolled and implicit differentiation share the forward (exactly 100 iterations).
    res = _run(SUITES["sinkhorn"][0], [peers.CONTENDERS[n] for n in ("diffcomb", "diffcomb-implicit")])
    implicit = res.contenders[1]
    assert implicit.status == "ok" and implicit.max_abs_diff == 0.0 and implicit.agree
    assert implicit.grad_max_abs_diff is not None
    # perturb: the solver on one thread returns the same optimal paths.
    res = _run(SUITES["perturb"][2], [peers.CONTENDERS[n] for n in ("diffcomb", "diffcomb (1 thread)")])
    ref, one = res.contenders
    assert ref.is_reference and ref.max_abs_diff is None and ref.fwd_bwd is None
    assert one.max_abs_diff == 0.0 and one.agree is True and one.ratio_fwd is not None and one.fwd_bwd is None
    # topk, p = 2: sparse_soft_topk and soft_topk are the same operator.
    w = TopKWorkload(16, 50, 5, p=2.0)
    res = _run(w, [peers.CONTENDERS[n] for n in ("diffcomb.sparse_soft_topk", "diffcomb.soft_topk (p=2)")])
    assert res.contenders[1].max_abs_diff < 1e-5 and res.contenders[1].agree


def test_manual_backward_contender_is_checked_and_timed_with_its_own_gradient():
    calls = []
    w = Workload("soft_rank", 3, 20, regularization="kl", strength=0.5)
    op = functools.partial(diffcomb.soft_rank, regularization="kl", regularization_strength=0.5)

    def forward_backward(x, g):
        calls.append(x.shape)
        outs, grads = [], []
        for xk, gk in zip(x, g):  # one row at a time
            xk = xk.detach().clone().requires_grad_(True)
            out = op(xk.unsqueeze(0))
            (out * gk).sum().backward()
            outs.append(out.detach()[0])
            grads.append(xk.grad)
        return torch.stack(outs), torch.stack(grads)

    manual = peers.Contender("rows", "diffcomb", None, ("cpu",), lambda mod, w: peers.ManualBackward(op, forward_backward))
    res = _run(w, [peers.CONTENDERS["diffcomb"], manual])
    c = res.contenders[1]
    assert c.status == "ok" and c.fwd is not None and c.fwd_bwd is not None
    assert c.max_abs_diff <= 1e-6 and c.agree and c.grad_max_abs_diff <= 1e-5 and c.grad_agree
    assert len(calls) >= 2 and all(s == (3, 20) for s in calls)  # the check, then the timed calls


def test_perturb_check_flags_invalid_samples_and_suboptimal_solutions():
    imle = PerturbWorkload("imle_topk", 4, 30, k=3, samples=2, noise="gumbel")
    not_k = peers.Contender("zeros", "torch", None, ("cpu",),
                            lambda mod, w: lambda x: 0.0 * x.unsqueeze(0).expand(w.samples, *x.shape))
    res = _run(imle, [peers.CONTENDERS["diffcomb"], not_k])
    good, bad = res.contenders
    assert good.note == "valid k-subsets" and good.agree and good.fwd_bwd is not None
    assert bad.note == "INVALID" and bad.agree is False

    grid = PerturbWorkload("grid_shortest_path", 3, 5)
    everything = peers.Contender("all cells", "torch", None, ("cpu",), lambda mod, w: torch.ones_like)
    res = _run(grid, [peers.CONTENDERS["diffcomb"], everything])
    ref, bad = res.contenders
    x = grid.inputs("cpu", 0).x.double()
    path = diffcomb.grid_shortest_path(grid.inputs("cpu", 0).x).double()
    expected = float(((torch.ones_like(x) - path) * x).sum((-2, -1)).abs().max())
    assert bad.max_abs_diff == pytest.approx(expected, rel=1e-9) and bad.agree is False
    table = report.format_table([res], footer=report.table_notes("perturb"))
    assert "INVALID" not in table and " !" in table and "forward only (solvers)" in table


def test_a_failing_or_unsupported_contender_is_reported_and_the_run_goes_on():
    def broken(mod, w):
        def fn(x):
            raise RuntimeError("boom")
        return fn

    def unsupported(mod, w):
        raise Unsupported("not this one")

    w = Workload("soft_sort", 2, 10)
    res = _run(w, [peers.CONTENDERS["diffcomb"], peers.Contender("broken", "torch", None, ("cpu",), broken),
                   peers.Contender("nope", "torch", None, ("cpu",), unsupported)])
    assert [c.status for c in res.contenders] == ["ok", "error: RuntimeError: boom", "unsupported: not this one"]
    table = report.format_table([res])
    assert "error: RuntimeError" in table and "- broken: error: RuntimeError: boom" in table


def test_inputs_are_seeded_drawn_in_float64_and_shaped_for_the_op():
    for suite, workloads in SUITES.items():
        for w in workloads:
            small = dataclasses.replace(w, **{f: min(getattr(w, f), 6) for f in ("batch", "n", "m")
                                              if hasattr(w, f)})
            a, b = small.inputs("cpu", 7), small.inputs("cpu", 7)
            wide = dataclasses.replace(small, dtype="float64").inputs("cpu", 7)
            assert torch.equal(a.x, b.x) and a.x.dtype == torch.float32
            assert torch.equal(a.x, wide.x.float())  # every dtype sees the same numbers
            assert (a.g is None) == (wide.g is None) and len(a.others) == len(wide.others)
            if a.g is not None:
                assert a.g.shape == small.out_shape
            assert not torch.equal(a.x, small.inputs("cpu", 8).x)
    solver = PerturbWorkload("linear_assignment", 2, 4).inputs("cpu", 0).x
    assert float(solver.min()) >= 0.1 and float(solver.max()) <= 9.1
    cost = SinkhornWorkload("sinkhorn", 2, 5, 4).inputs("cpu", 0).x
    assert cost.shape == (2, 5, 4) and float(cost.min()) >= 0.0 and float(cost.max()) <= 1.0


def test_select_matches_whole_segments_and_globs_and_refuses_foreign_overrides():
    names = [w.name for w in select(SUITES["sort"], ["128x100"])]
    assert names == ["soft_rank/l2/128x100", "soft_rank/kl/128x100", "soft_sort/l2/128x100", "soft_sort/kl/128x100"]
    assert [w.name for w in select(SUITES["sort"], ["soft_rank/kl", "*/16x10000"])] == [
        "soft_rank/kl/1x100", "soft_rank/kl/128x100", "soft_rank/kl/128x1000",
        "soft_rank/l2/16x10000", "soft_rank/kl/16x10000", "soft_sort/l2/16x10000", "soft_sort/kl/16x10000",
        "soft_rank/kl/1x100000"]
    (w,) = select(SUITES["softdtw"], ["64x128x128x1"], dtype="float64", gamma=1.0)
    assert w.gamma == 1.0 and w.dtype == "float64" and w.settings == "dtype=float64 gamma=1"
    with pytest.raises(ValueError, match="has no strength"):
        select(SUITES["softdtw"], strength=2.0)


def test_cli_refuses_bad_arguments(capsys):
    assert cli.main(["--suite", "sort", "-c", "POT-torch", "--no-save"]) == 2
    assert "unknown contender(s) ['POT-torch']" in capsys.readouterr().err
    assert cli.main(["--suite", "sort", "-w", "no-such-workload", "--no-save"]) == 2
    assert "no workload of suite 'sort' matches" in capsys.readouterr().err
    assert cli.main(["--suite", "sortnet", "--gamma", "1.0", "--no-save"]) == 2
    assert "--gamma does not apply to suite 'sortnet'" in capsys.readouterr().err
    assert cli.main(["--plot", "--no-save"]) == 2


def test_peak_memory_is_measured_in_a_fresh_process():
    result = memory.measure("diffcomb", SortNetWorkload("odd_even", 64, 64))
    assert result["status"] == "ok", result
    # At least the output P (64, 64, 64) in float32, 1 MiB; far below a GiB.
    assert 64**3 * 4 <= result["peak_bytes"] < 2**30


def test_latency_floors_run_where_the_output_has_the_input_shape():
    floors = [peers.CONTENDERS[n] for n in ("diffcomb", "torch.softmax", "torch.sort")]
    res = _run(Workload(op="soft_rank", batch=2, n=5), floors)
    assert [c.status for c in res.contenders] == ["ok", "ok", "ok"]
    assert all(c.fwd is not None and c.fwd_bwd is not None for c in res.contenders)
    assert [c.is_floor for c in res.contenders] == [False, True, True]
    assert res.contenders[1].max_abs_diff is None  # a floor is not compared
    res = _run(SoftDTWWorkload(batch=2, n=4, m=3, d=1), floors)
    assert res.contenders[0].status == "ok"
    assert all(c.status.startswith("unsupported: ") for c in res.contenders[1:])
    micro = report.format_table([res], micro=True)
    assert "fwd us" in micro and "torch.softmax" not in micro and "torch.sort" not in micro
    assert "torch.softmax" in report.format_table([res])  # the other suites list every contender


def test_ot_suite_delegates_to_the_ot_runner(capsys):
    # suite ot is benchmarks/ot/run.py of a clone (one process per case and contender): there an unknown
    # case is refused; an installed package without the clone's benchmarks/ folder says where it runs
    import importlib.util

    from diffcomb.bench.cli import main
    assert main(["--suite", "ot", "--cases", "nosuchcase"]) == 2
    err = capsys.readouterr().err
    try:
        in_clone = importlib.util.find_spec("benchmarks.ot.run") is not None
    except ModuleNotFoundError:
        in_clone = False
    assert ("unknown case" if in_clone else "runs from a clone of diffcomb") in err
