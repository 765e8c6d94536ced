"""The native boundary's own checks (csrc/common/common.h, check_entry; csrc/<family>/checks.h):
every entry point of the isotonic, soft-DTW, Sinkhorn and perturb families, called directly through its raw
binding (diffcomb._C, diffcomb._C_cuda), raises ValueError naming the entry point and the argument
for a negative size, a null address of a non-empty problem, an unknown code (dtype, mode, method,
cost, kind) and a count out of range; it accepts a valid empty problem with null addresses and the
optional arrays left at 0. The checks run before any memory access: none of these calls may crash
the process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import torch

import diffcomb
from diffcomb import _native
from tests.conftest import DEVICES

F64 = torch.float64
I32 = torch.int32
I64 = torch.int64

Shape = Callable[[dict], tuple]


@dataclass(frozen=True)
class Entry:
    """A raw entry point: its required arrays (name -> (dtype, shape of the sizes)), optional arrays
    (passed as 0), sizes of a small non-empty problem, the other op arguments, the size arguments
    that may be 0 (a valid empty problem), the codes it takes (name -> number of codes), its counts
    (name -> upper bound, a size name) and, on CUDA, its work-bytes function and arguments."""

    name: str
    arrays: dict[str, tuple[torch.dtype, Shape]]
    sizes: dict[str, int]
    scalars: dict[str, object] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    codes: dict[str, int] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)
    work: Optional[tuple[str, Callable[[dict], tuple]]] = None
    cpu_only: bool = False


def _rows(s):
    return (s["rows"], s["n"])


def _starts(s):
    return (s["rows"], s["n"] + 1)


def _pairs(s):
    return (s["batch"], s["m"], s["n"])


def _batch(s):
    return (s["batch"],)


def _grid(s):
    return (s["rows"], s["h"], s["wd"])


def _plans(s):
    return (s["batch"], s["n"], s["m"])


def _left(s):
    return (s["batch"], s["n"])


def _right(s):
    return (s["batch"], s["m"])


def _lines(s):
    return (s["batch"], s["n"] + s["m"])


ROWS = {"rows": 2, "n": 3}
PLANS = {"batch": 2, "n": 3, "m": 4}
PAIRS = {"batch": 2, "m": 3, "n": 4}
SDTW = {"gamma": 0.5, "band": -1, "dtype": 1}

ENTRIES = [
    Entry("isotonic_argsort_descending", {"x": (F64, _rows), "sorted": (F64, _rows), "perm": (I32, _rows)}, ROWS,
          {"scale": 1.0, "dtype": 1}, empty=("rows", "n"), codes={"dtype": 2}, cpu_only=True),
    Entry("isotonic_project",
          {"a": (F64, _rows), "c": (F64, lambda s: (s["n"],)), "perm": (I32, _rows), "out": (F64, _rows),
           "starts": (I32, _starts), "weights": (F64, _rows)}, ROWS,
          {"out_scale": 1.0, "rank": True, "kl": False, "dtype": 1}, empty=("rows", "n"), codes={"dtype": 2},
          work=("isotonic_work_bytes", lambda s: (s["rows"], s["n"]))),
    Entry("isotonic_regression",
          {"y": (F64, _rows), "out": (F64, _rows), "starts": (I32, _starts), "weights": (F64, _rows)}, ROWS,
          {"sign": 1.0, "dtype": 1}, optional=("sample_weight",), empty=("rows", "n"), codes={"dtype": 2},
          work=("isotonic_work_bytes", lambda s: (s["rows"], s["n"]))),
    Entry("isotonic_vjp",
          {"grad": (F64, _rows), "perm": (I32, _rows), "starts": (I32, _starts), "weights": (F64, _rows),
           "dx": (F64, _rows)}, ROWS,
          {"scale": 1.0, "mode": 0, "dtype": 1}, empty=("rows", "n"), codes={"mode": 3, "dtype": 2}),
    Entry("sparse_topk",
          {"s": (F64, _rows), "perm": (I32, _rows), "out": (F64, _rows), "deriv": (F64, _rows),
           "starts": (I32, _starts), "weights": (F64, _rows)}, ROWS,
          {"k": 1, "r": 1.0, "method": 0, "dtype": 1}, empty=("rows", "n"),
          codes={"method": 3, "dtype": 2}, counts={"k": "n"},
          work=("sparse_topk_work_bytes", lambda s: (s["rows"], s["n"]))),
    Entry("softdtw_value_and_alignment", {"C": (F64, _pairs), "value": (F64, _batch)}, PAIRS, SDTW,
          optional=("E", "lengths_x", "lengths_y"), empty=("batch",), codes={"dtype": 2},
          work=("softdtw_work_bytes", lambda s: (s["batch"], s["m"], s["n"], -1, False))),
    Entry("softdtw_series",
          {"x": (F64, lambda s: (s["batch"], s["m"], s["D"])), "y": (F64, lambda s: (s["batch"], s["n"], s["D"])),
           "value": (F64, _batch)}, {**PAIRS, "D": 2}, {**SDTW, "cost": 0},
          optional=("gx", "gy", "lengths_x", "lengths_y"), empty=("batch", "D"), codes={"cost": 3, "dtype": 2},
          work=("softdtw_work_bytes", lambda s: (s["batch"], s["m"], s["n"], -1, False))),
    Entry("softdtw_second_order",
          {"C": (F64, _pairs), "Z": (F64, _pairs), "jvp": (F64, _batch), "E": (F64, _pairs), "HZ": (F64, _pairs)},
          PAIRS, SDTW, optional=("lengths_x", "lengths_y"), empty=("batch",), codes={"dtype": 2},
          work=("softdtw_work_bytes", lambda s: (s["batch"], s["m"], s["n"], -1, True))),
    Entry("sinkhorn_forward",
          {"C": (F64, _plans), "a": (F64, _left), "b": (F64, _right), "P": (F64, _plans), "f": (F64, _left),
           "g": (F64, _right), "cost": (F64, _batch), "n_iter": (I64, _batch), "err": (F64, _batch)}, PLANS,
          {"eps": 1.0, "max_iter": 5, "tol": 1e-6, "check_every": 1, "dtype": 1}, optional=("f_hist", "g_hist"),
          empty=("batch", "n", "m"), codes={"dtype": 2}, work=("sinkhorn_work_bytes", _plans)),
    Entry("sinkhorn_implicit_backward",
          {"C": (F64, _plans), "a": (F64, _left), "b": (F64, _right), "P": (F64, _plans), "f": (F64, _left),
           "g": (F64, _right), "dC": (F64, _plans), "da": (F64, _left), "db": (F64, _right)}, PLANS,
          {"eps": 1.0, "cg_tol": 1e-10, "cg_max_iter": 10, "dtype": 1}, optional=("G", "gcost"),
          empty=("batch", "n", "m"), codes={"dtype": 2}, work=("sinkhorn_work_bytes", _plans)),
    Entry("sinkhorn_implicit_solve",
          {"P": (F64, _plans), "rhs": (F64, _lines), "wt": (F64, _lines), "x": (F64, _lines)}, PLANS,
          {"cg_tol": 1e-10, "cg_max_iter": 10, "dtype": 1}, empty=("batch", "n", "m"), codes={"dtype": 2},
          work=("sinkhorn_work_bytes", _plans)),
    Entry("sinkhorn_unrolled_backward",
          {"C": (F64, _plans), "a": (F64, _left), "b": (F64, _right),
           "f_hist": (F64, lambda s: (s["batch"], s["max_iter"], s["n"])),
           "g_hist": (F64, lambda s: (s["batch"], s["max_iter"] + 1, s["m"])), "n_iter": (I64, _batch),
           "dC": (F64, _plans), "da": (F64, _left), "db": (F64, _right)}, {**PLANS, "max_iter": 2},
          {"eps": 1.0, "dtype": 1}, optional=("G", "gcost"), empty=("batch", "n", "m"), codes={"dtype": 2},
          work=("sinkhorn_work_bytes", _plans)),
    Entry("perturb_noise", {"seed": (I64, lambda s: (1,)), "out": (F64, lambda s: (s["numel"],))}, {"numel": 5},
          {"kind": 0, "k": 1.0, "tau": 1.0, "s": 1, "dtype": 1}, empty=("numel",), codes={"kind": 3, "dtype": 2}),
    Entry("perturb_argmax", {"x": (F64, _rows), "out": (F64, _rows)}, ROWS, {"dtype": 1}, empty=("rows", "n"),
          codes={"dtype": 2}),
    Entry("perturb_topk", {"x": (F64, _rows), "out": (F64, _rows)}, ROWS, {"k": 1, "dtype": 1},
          empty=("rows", "n"), codes={"dtype": 2}, counts={"k": "n"}),
    Entry("perturb_ranks", {"x": (F64, _rows), "out": (F64, _rows)}, ROWS, {"dtype": 1}, empty=("rows", "n"),
          codes={"dtype": 2}),
    Entry("perturb_grid_path", {"w": (F64, _grid), "out": (F64, _grid)}, {"rows": 2, "h": 3, "wd": 4},
          {"dtype": 1}, empty=("rows", "h", "wd"), codes={"dtype": 2},
          work=("perturb_grid_work_bytes", lambda s: (s["rows"], s["h"], s["wd"]))),
    Entry("perturb_assignment",
          {"cost": (F64, lambda s: (s["rows"], s["n"], s["m"])), "out": (F64, lambda s: (s["rows"], s["n"], s["m"]))},
          {"rows": 2, "n": 3, "m": 4}, {"maximize": False, "dtype": 1}, empty=("rows", "n", "m"), codes={"dtype": 2},
          work=("perturb_assignment_work_bytes", lambda s: (s["rows"], s["n"], s["m"]))),
    Entry("scale_rows", {"g": (F64, lambda s: (s["rows"],)), "x": (F64, lambda s: (s["rows"], s["cols"])),
                         "out": (F64, lambda s: (s["rows"], s["cols"]))}, {"rows": 3, "cols": 4},
          {"g_stride": 1, "dtype": 1}, empty=("rows", "cols"), codes={"dtype": 2}, cpu_only=True),
]


def _params(device: str, select: Callable[[Entry], list] = lambda e: [None]):
    """(entry, item) cases for one device; CPU-only entries are left out on CUDA."""
    out = []
    for entry in ENTRIES:
        if device == "cuda" and entry.cpu_only:
            continue
        for item in select(entry):
            out.append(pytest.param(entry, item, id=entry.name if item is None else f"{entry.name}-{item}"))
    return out


def _fill(name: str, dtype: torch.dtype, shape: tuple, device: str) -> torch.Tensor:
    """Valid contents: zeros, identity permutations and singleton blocks (starts[:, n] = n blocks)."""
    if name == "perm":
        return torch.arange(shape[-1], dtype=dtype, device=device).expand(shape).contiguous()
    if name in ("a", "b"):  # marginals: uniform weights
        return torch.full(shape, 1.0 / max(shape[-1], 1), dtype=dtype, device=device)
    if name == "P":  # the plan of a zero cost between uniform marginals
        return torch.full(shape, 1.0 / max(shape[-1] * shape[-2], 1), dtype=dtype, device=device)
    if name == "n_iter":  # one recorded iteration (the unrolled backward's input)
        return torch.ones(shape, dtype=dtype, device=device)
    if name == "starts":
        return torch.arange(shape[-1], dtype=dtype, device=device).expand(shape).contiguous()
    return torch.zeros(shape, dtype=dtype, device=device)


class Call:
    """Keyword arguments of a raw call: the arrays allocated for `sizes` (0 for an empty array, for
    the names in `null` and for the optional arrays), then the sizes, scalars and the context."""

    def __init__(self, entry: Entry, device: str, sizes: Optional[dict] = None, null: tuple[str, ...] = (),
                 alloc_sizes: Optional[dict] = None, **scalars):
        self.entry = entry
        self.device = device
        sizes = dict(entry.sizes if sizes is None else sizes)
        shapes_of = dict(alloc_sizes if alloc_sizes is not None else sizes)
        self.tensors = {}
        kwargs = {}
        for name, (dtype, shape) in entry.arrays.items():
            tensor = _fill(name, dtype, shape(shapes_of), device) if min(shape(shapes_of)) >= 0 else None
            self.tensors[name] = tensor
            kwargs[name] = 0 if name in null or tensor is None else _native.address(tensor)
        kwargs.update({name: 0 for name in entry.optional})
        kwargs.update(sizes)
        kwargs.update({k: v for k, v in entry.scalars.items() if k not in sizes})
        kwargs.update(scalars)
        self.kwargs = kwargs
        self.sizes = sizes

    def __call__(self, null_work: bool = False):
        if self.device == "cpu":
            return getattr(_native.cpu(), self.entry.name)(**self.kwargs, threads=1)
        module = _native.cuda(self.entry.name)
        context = {}
        if self.entry.work is not None:
            name, args = self.entry.work
            work_sizes = {k: max(v, 0) for k, v in self.sizes.items()}
            self.work = torch.empty(getattr(module, name)(*args(work_sizes)), dtype=torch.uint8, device=self.device)
            context["work"] = 0 if null_work else _native.address(self.work)
        device, stream = _native.stream_of(torch.empty(0, device=self.device))
        result = getattr(module, self.entry.name)(**self.kwargs, **context, device=device, stream=stream)
        torch.cuda.synchronize()
        return result


def _message(entry: Entry, text: str) -> str:
    return f"^diffcomb native {entry.name}: {text}"


@pytest.mark.parametrize("device", DEVICES)
def test_valid_problem_runs(device):
    """The positive control of the tables below: every entry point with all its required arrays
    valid (and the optional ones 0) runs, and writes its outputs (no NaN left in the zeros)."""
    for entry in ENTRIES:
        if device == "cuda" and entry.cpu_only:
            continue
        call = Call(entry, device)
        assert call() is None
        for name, tensor in call.tensors.items():
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), (entry.name, name)


@pytest.mark.parametrize("device", DEVICES)
def test_negative_size_raises(device):
    """A negative size raises before any array is touched (every address is 0)."""
    for entry in ENTRIES:
        if device == "cuda" and entry.cpu_only:
            continue
        for size in entry.sizes:
            sizes = {**entry.sizes, size: -1}
            call = Call(entry, device, sizes, null=tuple(entry.arrays))
            with pytest.raises(ValueError, match=_message(entry, f"{size} = -1 is negative")):
                call(null_work=True)


@pytest.mark.parametrize("device", DEVICES)
def test_null_address_raises(device):
    """A null address of a required array of a non-empty problem raises, naming the array; the
    other arrays are valid, so the message shows which check fired."""
    for entry in ENTRIES:
        if device == "cuda" and entry.cpu_only:
            continue
        for name in entry.arrays:
            call = Call(entry, device, null=(name,))
            with pytest.raises(ValueError, match=_message(entry, f"{name} is null \\(address 0\\) for a non-empty")):
                call()


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=DEVICES[1].marks, id="cuda")])
def test_null_work_raises(device):
    """CUDA: the work array of an entry point that needs one is required for a non-empty problem."""
    for entry in ENTRIES:
        if entry.work is None:
            continue
        with pytest.raises(ValueError, match=_message(entry, "work is null")):
            Call(entry, device)(null_work=True)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_problem_accepted(device):
    """A valid empty problem: one size 0, the arrays with no elements null (arrays that still have
    elements, such as the block starts (rows, n + 1) at n = 0, are valid). Counts are clamped to
    the empty size."""
    for entry in ENTRIES:
        if device == "cuda" and entry.cpu_only:
            continue
        for size in entry.empty:
            sizes = {**entry.sizes, size: 0}
            for count, bound in entry.counts.items():
                sizes[count] = min(entry.scalars[count], sizes[bound])
            call = Call(entry, device, sizes)
            for name, tensor in call.tensors.items():
                assert (call.kwargs[name] == 0) == (tensor.numel() == 0), (entry.name, size, name)
            assert call() is None, (entry.name, size)


@pytest.mark.parametrize("device", DEVICES)
def test_all_null_empty_problem_accepted(device):
    """Size 0 on the leading axis and every address 0 (the work array too) is a valid call."""
    for entry in ENTRIES:
        if device == "cuda" and entry.cpu_only:
            continue
        lead = entry.empty[0]
        sizes = {**entry.sizes, lead: 0}
        assert Call(entry, device, sizes, null=tuple(entry.arrays))(null_work=True) is None


@pytest.mark.parametrize("device", DEVICES)
def test_unknown_code_raises(device):
    """dtype, mode, method, cost and kind codes out of range raise, even on an empty problem."""
    for entry in ENTRIES:
        if device == "cuda" and entry.cpu_only:
            continue
        for code, count in entry.codes.items():
            for bad in (-1, count):
                call = Call(entry, device, **{code: bad})
                with pytest.raises(ValueError, match=_message(entry, f"unknown {code} code {bad} \\(expected 0 to "
                                                                     f"{count - 1}\\)")):
                    call()
            sizes = {**entry.sizes, entry.empty[0]: 0}
            with pytest.raises(ValueError, match=_message(entry, f"unknown {code} code")):
                Call(entry, device, sizes, null=tuple(entry.arrays), **{code: count})(null_work=True)


@pytest.mark.parametrize("device", DEVICES)
def test_count_out_of_range_raises(device):
    """k of the top-k entry points must lie in [0, n]: k = -1 and k = n + 1 raise."""
    for entry in ENTRIES:
        for count, bound in entry.counts.items():
            n = entry.sizes[bound]
            for bad in (-1, n + 1):
                with pytest.raises(ValueError, match=_message(entry, f"{count} = {bad} is outside \\[0, {n}\\]")):
                    Call(entry, device, **{count: bad})()


def test_int32_axes_checked():
    """Axes indexed by int32 are bounded natively too (no allocation happens: the check fires first)."""
    cpu = _native.cpu()
    with pytest.raises(ValueError, match=r"^diffcomb native isotonic_project: n = 2147483647 is outside"):
        cpu.isotonic_project(1, 1, 1, 1, 1, 1, rows=1, n=2**31 - 1, out_scale=1.0, rank=True, kl=False, dtype=1,
                             threads=1)
    with pytest.raises(ValueError, match=r"^diffcomb native perturb_grid_path: h \* wd = 1073741824 is outside"):
        cpu.perturb_grid_path(1, 1, rows=1, h=2**15, wd=2**15, dtype=1, threads=1)
    with pytest.raises(ValueError, match=r"^diffcomb native perturb_grid_path: wd = 1099511627776 is outside"):
        cpu.perturb_grid_path(1, 1, rows=1, h=1, wd=2**40, dtype=1, threads=1)


def test_softdtw_needs_a_step_per_series():
    """A soft-DTW pair uses at least one step of each series: m = 0 or n = 0 with batch > 0 raises
    (the engine clamps the used lengths into [1, m]), and batch = 0 accepts them."""
    cpu = _native.cpu()
    value = torch.zeros(2, dtype=F64)
    for m, n in ((0, 3), (3, 0)):
        with pytest.raises(ValueError, match=rf"softdtw_value_and_alignment: every pair needs .* m = {m}, n = {n}$"):
            cpu.softdtw_value_and_alignment(0, value.data_ptr(), 0, 0, 0, batch=2, m=m, n=n, gamma=1.0, band=-1,
                                            dtype=1, threads=1)
        cpu.softdtw_value_and_alignment(0, 0, 0, 0, 0, batch=0, m=m, n=n, gamma=1.0, band=-1, dtype=1, threads=1)


# ---------------------------------------------------------------------------------------------
# Optional arrays left at 0 on non-empty problems: the raw results agree with the public ops.


@pytest.mark.parametrize("device", DEVICES)
def test_optional_arrays_zero_values(device):
    gen = torch.Generator().manual_seed(15)
    y = torch.randn(3, 7, generator=gen, dtype=F64).to(device)
    call = Call(ENTRIES[2], device, {"rows": 3, "n": 7}, sign=-1.0)  # isotonic_regression, unweighted
    call.tensors["y"].copy_(y)
    call()
    torch.testing.assert_close(call.tensors["out"], diffcomb.isotonic_regression(y, increasing=True))

    x = torch.randn(2, 5, 3, generator=gen, dtype=F64).to(device)
    z = torch.randn(2, 4, 3, generator=gen, dtype=F64).to(device)
    series = ENTRIES[6]
    call = Call(series, device, {"batch": 2, "m": 5, "n": 4, "D": 3}, gamma=0.7)  # no gradients, no lengths
    call.tensors["x"].copy_(x)
    call.tensors["y"].copy_(z)
    call()
    torch.testing.assert_close(call.tensors["value"], diffcomb.soft_dtw(x, z, gamma=0.7))

    # D = 0: x and y hold no elements (null), every cost is 0; the value is that of zero costs.
    call = Call(series, device, {"batch": 2, "m": 5, "n": 4, "D": 0}, gamma=0.7)
    assert call.kwargs["x"] == 0 and call.kwargs["y"] == 0
    call()
    zeros = torch.zeros(2, 5, 0, dtype=F64, device=device)
    expected = diffcomb.soft_dtw(zeros, zeros[:, :4], gamma=0.7)
    torch.testing.assert_close(call.tensors["value"], expected)
    assert math.isfinite(float(expected[0]))

    # The plain VJP reads no permutation: perm = 0 is accepted and dx = weights * block sums.
    vjp = ENTRIES[3]
    call = Call(vjp, device, null=("perm",), mode=2)
    call.tensors["grad"].copy_(torch.arange(6, dtype=F64).view(2, 3))
    call.tensors["weights"].fill_(2.0)
    call()
    torch.testing.assert_close(call.tensors["dx"], 2.0 * torch.arange(6, dtype=F64, device=device).view(2, 3))
    with pytest.raises(ValueError, match=_message(vjp, "perm is null")):
        Call(vjp, device, null=("perm",), mode=0)()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride", [0, 1, 3])
def test_scale_rows_values(dtype, stride):
    """scale_rows (csrc/common/scale_rows.h): out[r] = g[r * g_stride] * x[r], into a new array and in
    place, on one thread and on several (a problem big enough to be split)."""
    gen = torch.Generator().manual_seed(5)
    for rows, cols in ((4, 7), (300, 1000)):
        g = torch.randn(rows * max(stride, 1), generator=gen, dtype=dtype)
        x = torch.randn(rows, cols, generator=gen, dtype=dtype)
        factors = g[0].expand(rows) if stride == 0 else g[::stride]
        expected = factors[:, None] * x
        code = _native.DTYPE_CODES[dtype]
        for threads in (1, 2):
            out = torch.empty_like(x)
            _native.cpu().scale_rows(g.data_ptr(), stride, x.data_ptr(), out.data_ptr(), rows, cols, code, threads)
            assert torch.equal(out, expected)
        inplace = x.clone()
        _native.cpu().scale_rows(g.data_ptr(), stride, inplace.data_ptr(), inplace.data_ptr(), rows, cols, code, 2)
        assert torch.equal(inplace, expected)
    with pytest.raises(ValueError, match="^diffcomb native scale_rows: g_stride = -1 is outside"):
        _native.cpu().scale_rows(0, -1, 0, 0, 1, 1, 1, 1)
