"""Shared test matrix for diffcomb (STYLE.md rule 15): devices, dtypes, tolerances, seeded
generators and the row-by-row bridge to the float64 numpy references in tests/reference/.

Test modules import the constants and helpers with ``from tests.conftest import ...``
(pyproject.toml puts the repository root on sys.path); fixtures are found by pytest.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import pytest
import torch

from diffcomb import _native

def pytest_configure(config):
    """Markers, registered here so that the suite runs the same from outside the source tree
    (against an installed diffcomb, with no pyproject.toml beside it)."""
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU and diffcomb._C_cuda (skipped otherwise)")
    config.addinivalue_line("markers", "slow: long-running cases (large n)")


# ------------------------------------------------------------------------------------------------
# Devices: CUDA cases are always collected, marked `cuda`, and skipped without a GPU and a
# diffcomb built with CUDA (diffcomb._C_cuda).

HAS_CUDA = bool(torch.cuda.is_available() and _native.cuda_available())
CUDA_SKIP_REASON = "needs a CUDA GPU and diffcomb built with CUDA (diffcomb._C_cuda)"

requires_cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON)]

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda, id="cuda")]

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
HALF_DTYPES = [pytest.param(torch.float16, id="f16"), pytest.param(torch.bfloat16, id="bf16")]
REGULARIZATIONS = ["l2", "kl"]
DIRECTIONS = [pytest.param(False, id="asc"), pytest.param(True, id="desc")]

# rtol, and atol relative to the scale of the compared values (max |expected|, at least 1).
TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float64: (1e-7, 1e-9),
}


# ------------------------------------------------------------------------------------------------
# Seeded generators: every test draws from its own generator, seeded from the test's name, so a
# test's data do not depend on which other tests ran (or in which order).


def _seed_of(name: str) -> int:
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % (2**31 - 1)


@pytest.fixture
def gen(request) -> torch.Generator:
    """A CPU torch.Generator seeded from the test id (draw on the CPU, then move to the device)."""
    return torch.Generator().manual_seed(_seed_of(request.node.nodeid))


def randn(gen: torch.Generator, *shape: int, dtype=torch.float64, device="cpu", scale: float = 1.0,
          requires_grad: bool = False) -> torch.Tensor:
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    return x.requires_grad_(requires_grad)


def separated(gen: torch.Generator, *shape: int, min_gap: float = 0.05, scale: float = 3.0) -> torch.Tensor:
    """Float64 random values (CPU) whose sorted values along the last dim differ by >= min_gap."""
    while True:
        x = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        n = shape[-1] if shape else 0
        if n < 2 or bool((x.sort(-1).values.diff(dim=-1) >= min_gap).all()):
            return x


# ------------------------------------------------------------------------------------------------
# Comparisons.


def assert_close(actual: torch.Tensor, expected, dtype: Optional[torch.dtype] = None, *,
                 rtol: Optional[float] = None, atol: Optional[float] = None, msg: str = "") -> None:
    """allclose with the dtype's tolerances; atol scales with the magnitude of `expected`."""
    expected_t = torch.as_tensor(np.asarray(expected, dtype=np.float64) if not isinstance(expected, torch.Tensor)
                                 else expected.detach().cpu().double())
    actual_t = actual.detach().cpu().double()
    dtype = dtype or actual.dtype
    d_rtol, d_atol = TOLERANCES.get(dtype, (1e-2, 1e-2))
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    finite = expected_t[torch.isfinite(expected_t)]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    torch.testing.assert_close(actual_t, expected_t, rtol=rtol, atol=atol * scale, equal_nan=True,
                               msg=(lambda m: f"{msg}\n{m}") if msg else None)


def rows_of(x: torch.Tensor, dim: int) -> np.ndarray:
    """x (any shape) as a float64 numpy (B, n) array with `dim` last."""
    moved = x.detach().cpu().double().movedim(dim, -1)
    return moved.reshape(-1, moved.shape[-1]).numpy() if moved.shape[-1] else np.zeros((moved.numel(), 0))


def from_rows(rows: np.ndarray, like: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of rows_of: a float64 CPU tensor of like's shape."""
    moved_shape = like.movedim(dim, -1).shape
    return torch.from_numpy(np.ascontiguousarray(rows)).reshape(moved_shape).movedim(-1, dim)


def rowwise(fn: Callable[..., np.ndarray], x: torch.Tensor, dim: int, *others: torch.Tensor) -> torch.Tensor:
    """Apply a 1-D reference fn(row, *other_rows) to every row of x along dim (float64, CPU)."""
    xr = rows_of(x, dim)
    other_rows = [rows_of(o, dim) for o in others]
    out = np.stack([np.asarray(fn(xr[b], *[o[b] for o in other_rows]), dtype=np.float64)
                    for b in range(xr.shape[0])]) if xr.shape[0] else np.zeros_like(xr)
    return from_rows(out, x, dim)


def rowwise_scalar(fn: Callable[..., float], x: torch.Tensor, dim: int, *others: torch.Tensor) -> torch.Tensor:
    """Apply a 1-D reference returning a float to every row; result has x's shape without dim."""
    xr = rows_of(x, dim)
    other_rows = [rows_of(o, dim) for o in others]
    vals = np.array([fn(xr[b], *[o[b] for o in other_rows]) for b in range(xr.shape[0])], dtype=np.float64)
    lead = x.movedim(dim, -1).shape[:-1]
    return torch.from_numpy(vals).reshape(lead)


__all__ = [
    "CUDA_SKIP_REASON",
    "DEVICES",
    "DIRECTIONS",
    "DTYPES",
    "HALF_DTYPES",
    "HAS_CUDA",
    "REGULARIZATIONS",
    "TOLERANCES",
    "assert_close",
    "from_rows",
    "randn",
    "requires_cuda",
    "rows_of",
    "rowwise",
    "rowwise_scalar",
    "separated",
]


def flags_inexact(w: "warnings.WarningMessage") -> bool:
    """True for diffcomb's own warning that a result is inexact: an iterative solve (Sinkhorn)
    stopped at max_iter above its tolerance. Tests may excuse a mismatch only on this warning."""
    return issubclass(w.category, UserWarning) and "did not converge" in str(w.message)
