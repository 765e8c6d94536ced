"""Run a list of workloads against the contenders: check, then time. Every suite runs here.

For every workload: build the seeded input (``BaseWorkload.inputs``), run each
contender once with a backward (the correctness check, which also triggers any
JIT compilation; forward only where the workload has no backward, e.g. the
perturb suite's solvers), check it against the reference (diffcomb, or the
first available soft contender when diffcomb is missing) with the workload's
``check`` (values and gradients within tolerance by default), then time the
forward on an input that does not require grad, and forward+backward, i.e.
``(fn(x) * g).sum().backward()`` with the workload's fixed ``g`` (or
``fn(x, y).sum().backward()`` for soft-DTW: see ``workloads.Inputs``). A
contender built as ``peers.ManualBackward`` computes its input gradient itself
(one problem at a time, say): its check and forward+backward call that.

With ``Budget.max_call`` set, a contender whose forward+backward call takes
longer than that is reported ``too slow (> N s)`` instead of being timed.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .peers import Contender, Loaded, ManualBackward, OpFn, Unsupported
from .progress import Progress
from .timing import Budget, Timing, measure
from .workloads import TOLERANCE, AnyWorkload, Check, Inputs

__all__ = ["ContenderResult", "WorkloadResult", "run", "count_units", "call_once", "TOLERANCE"]


@dataclass
class ContenderResult:
    name: str
    status: str  # "ok" | "not installed" | "unsupported: ..." | "error: ..."
    version: str | None = None
    is_reference: bool = False
    is_floor: bool = False
    max_abs_diff: float | None = None
    grad_max_abs_diff: float | None = None
    agree: bool | None = None
    grad_agree: bool | None = None
    note: str | None = None  # the workload's own check verdict (workloads.Check.note)
    fwd: Timing | None = None
    fwd_bwd: Timing | None = None
    ratio_fwd: float | None = None  # this / diffcomb, same run
    ratio_fwd_bwd: float | None = None

    def as_dict(self) -> dict:
        check = {k: getattr(self, k) for k in ("max_abs_diff", "agree", "grad_max_abs_diff", "grad_agree")}
        if self.note is not None:
            check["note"] = self.note
        return {
            "name": self.name, "status": self.status, "version": self.version,
            "is_check_reference": self.is_reference, "is_floor": self.is_floor,
            "check": check,
            "fwd": None if self.fwd is None else self.fwd.as_dict(),
            "fwd_bwd": None if self.fwd_bwd is None else self.fwd_bwd.as_dict(),
            "ratio_fwd": self.ratio_fwd, "ratio_fwd_bwd": self.ratio_fwd_bwd,
        }

    def record(self, check: Check) -> None:
        for f in dataclasses.fields(check):
            setattr(self, f.name, getattr(check, f.name))


@dataclass
class WorkloadResult:
    workload: AnyWorkload
    check_reference: str | None
    contenders: list[ContenderResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "workload": self.workload.as_dict(),
            "check_reference": self.check_reference,
            "tolerance": TOLERANCE[self.workload.dtype],
            "contenders": [c.as_dict() for c in self.contenders],
        }


_OOM_MESSAGES = ("can't allocate memory", "out of memory", "not enough memory")


def _error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    first = msg[0] if msg else ""
    # MemoryError (numpy), RuntimeError from torch's allocators
    head = "out of memory" if isinstance(e, MemoryError) or any(m in first for m in _OOM_MESSAGES) else "error"
    return f"{head}: {type(e).__name__}: {first}"[:200]


def _sync_for(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def _loss(out: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    return out.sum() if g is None else (out * g).sum()


def call_once(fn: OpFn, inputs: Inputs, w: AnyWorkload) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One checked call: the output and, where the workload has a backward, the input gradient
    of ``(out * g).sum()`` (``out.sum()`` when ``g`` is None)."""
    grad = xg = None
    if w.backward and isinstance(fn, ManualBackward):
        out, grad = fn.forward_backward(inputs.x.detach(), inputs.g, *inputs.others)
    elif w.backward:
        xg = inputs.x.detach().clone().requires_grad_(True)
        out = fn(xg, *inputs.others)
    else:
        out = fn(inputs.x, *inputs.others)
    if tuple(out.shape) != tuple(w.out_shape):
        raise ValueError(f"output shape {tuple(out.shape)} != expected {tuple(w.out_shape)}")
    if xg is not None:
        _loss(out, inputs.g).backward()
        assert xg.grad is not None
        grad = xg.grad
    return out.detach(), None if grad is None else grad.detach()


def _fwd_step(fn: OpFn, x: torch.Tensor, others: tuple[torch.Tensor, ...]) -> None:
    fn(x, *others)


def _fwd_bwd_step(fn: OpFn, x: torch.Tensor, g: torch.Tensor | None, others: tuple[torch.Tensor, ...]) -> None:
    if isinstance(fn, ManualBackward):
        fn.forward_backward(x, g, *others)
        return
    x.grad = None
    _loss(fn(x, *others), g).backward()


@dataclass
class _Entry:
    contender: Contender
    result: ContenderResult
    fn: OpFn | None  # None: cannot run (status says why)


def _plan(w: AnyWorkload, loaded: Sequence[Loaded], device: str) -> list[_Entry]:
    plan = []
    for ld in loaded:
        c = ld.contender
        res = ContenderResult(c.name, ld.status, ld.version, is_floor=c.is_floor)
        fn = None
        if ld.status == "ok":
            if torch.device(device).type not in c.devices:
                res.status = f"unsupported: {'/'.join(c.devices)} only"
            else:
                try:
                    fn = c.build(ld.module, w)
                except Unsupported as e:
                    res.status = f"unsupported: {e}"
                except Exception as e:
                    res.status = _error(e)
        plan.append(_Entry(c, res, fn))
    return plan


def _units(w: AnyWorkload) -> int:
    """Progress units of one runnable contender: its timings (forward, and forward+backward)."""
    return 2 if w.backward else 1


def _run_one(
    w: AnyWorkload, loaded: Sequence[Loaded], device: str, seed: int,
    budget: Budget, progress: Progress,
) -> WorkloadResult:
    plan = _plan(w, loaded, device)
    inputs = w.inputs(device, seed)
    x, g, others = inputs.x, inputs.g, inputs.others
    sync = _sync_for(device)
    units = _units(w)

    # 1. correctness check (one forward + backward each)
    progress.step(f"{w.name} check")
    outs: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    check_time: dict[str, float] = {}
    for e in plan:
        if e.fn is None:
            continue
        try:
            t0 = time.perf_counter()
            outs[e.result.name] = call_once(e.fn, inputs, w)
            sync()
            check_time[e.result.name] = time.perf_counter() - t0
        except Exception as exc:  # MemoryError too: report it, go on
            e.result.status = _error(exc)
    soft = [e for e in plan if e.result.name in outs and not e.contender.is_floor]
    ref = next((e for e in soft if e.contender.is_baseline), soft[0] if soft else None)
    if ref is not None:
        ref.result.is_reference = True
        for e in soft:
            out, grad = outs[e.result.name]
            e.result.record(w.check(out, grad, None if e is ref else outs[ref.result.name], inputs))

    # 2. timing
    x_fwd = x.detach()
    x_bwd = x.detach().clone().requires_grad_(True)
    for e in plan:
        res = e.result
        if e.fn is None:
            continue
        if res.name not in outs:  # failed the check run: skip its timings
            progress.step(f"{w.name} {res.name} skipped", units=units)
            continue
        del outs[res.name]
        step_fwd = functools.partial(_fwd_step, e.fn, x_fwd, others)
        step_fwd_bwd = functools.partial(_fwd_bwd_step, e.fn, x_bwd, g, others) if w.backward else step_fwd
        if budget.max_call is not None and check_time[res.name] > budget.max_call:
            # Numba peers compile on their first call: give one more call
            # before calling the contender too slow. (A native call cannot be
            # interrupted, so the cap is judged after the call.)
            try:
                t0 = time.perf_counter()
                step_fwd_bwd()
                sync()
                check_time[res.name] = time.perf_counter() - t0
            except Exception as exc:
                res.status = _error(exc)
                progress.step(f"{w.name} {res.name} failed", units=units)
                continue
            if check_time[res.name] > budget.max_call:
                res.status = f"too slow (> {budget.max_call:g} s)"
                progress.step(f"{w.name} {res.name} too slow", units=units)
                continue
        # The check run was a forward+backward too: when it alone took longer
        # than the warm-up cap (max_time / 4, see timing.measure), it was the
        # warm-up. Keeps slow peers (seconds per call) within the budget.
        bwd_budget = budget
        if check_time[res.name] > budget.max_time / 4:
            bwd_budget = dataclasses.replace(budget, warmup=0)
        try:
            progress.step(f"{w.name} {res.name} fwd")
            res.fwd = measure(step_fwd, budget if w.backward else bwd_budget, sync)
            if w.backward:
                progress.step(f"{w.name} {res.name} fwd+bwd")
                res.fwd_bwd = measure(step_fwd_bwd, bwd_budget, sync)
        except Exception as exc:
            res.status = _error(exc)

    # 3. ratios against the baseline (diffcomb), same run
    base = next((e.result for e in plan if e.contender.is_baseline and e.result.fwd is not None), None)
    for e in plan:
        res = e.result
        if base is None:
            break
        if res.fwd is not None:
            res.ratio_fwd = res.fwd.median / base.fwd.median
        if res.fwd_bwd is not None and base.fwd_bwd is not None:
            res.ratio_fwd_bwd = res.fwd_bwd.median / base.fwd_bwd.median
    return WorkloadResult(w, None if ref is None else ref.result.name, [e.result for e in plan])


def count_units(workloads: Sequence[AnyWorkload], loaded: Sequence[Loaded], device: str) -> int:
    """Progress units: one check per workload, one or two timings per runnable contender."""
    total = 0
    for w in workloads:
        total += 1 + _units(w) * sum(e.fn is not None for e in _plan(w, loaded, device))
    return total


def run(
    workloads: Sequence[AnyWorkload], loaded: Sequence[Loaded], device: str, seed: int,
    budget: Budget, progress: Progress,
) -> list[WorkloadResult]:
    return [_run_one(w, loaded, device, seed, budget, progress) for w in workloads]
