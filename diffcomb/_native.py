"""The boundary to the native modules diffcomb._C (CPU) and diffcomb._C_cuda.

The native core takes raw addresses, shapes, a dtype code and, on the CPU, a
thread count; on CUDA the device index and the current stream. This module
turns tensors into those arguments and raises clear errors when a module is
missing. Family modules call it; nothing here knows about a family's math.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Optional

import torch

__all__ = [
    "DTYPE_CODES",
    "address",
    "cpu",
    "cuda",
    "cuda_available",
    "dtype_code",
    "launch",
    "stream_of",
    "threads",
]

# Codes shared with csrc/common/common.h (enum DType).
DTYPE_CODES = {torch.float32: 0, torch.float64: 1}

_REBUILD_HINT = (
    "Rebuild diffcomb with CUDA: make nvcc visible (on PATH, or set CUDA_HOME) and run "
    "`pip install --no-build-isolation -e .` (DIFFCOMB_CUDA=1 makes a missing nvcc an error)."
)

try:
    from . import _C as _cpu_module  # type: ignore[attr-defined]

    _cpu_error: Optional[BaseException] = None
except ImportError as exc:  # pragma: no cover - only without a build
    _cpu_module = None
    _cpu_error = exc

try:
    from . import _C_cuda as _cuda_module  # type: ignore[attr-defined]

    _cuda_error: Optional[object] = None
except ImportError as exc:
    _cuda_module = None
    # A module that is absent (not built) or present but failing to load (say, a missing library):
    # Python words the first as a circular import while the package initializes, so name it here.
    _cuda_error = ("no such module was built" if importlib.util.find_spec(f"{__package__}._C_cuda") is None
                   else exc)


def cpu() -> ModuleType:
    """The CPU module, or a clear error when diffcomb was not built."""
    if _cpu_module is None:
        raise ImportError(
            "diffcomb's native module diffcomb._C is missing; install diffcomb with "
            f"`pip install -e .` from its source tree ({_cpu_error})"
        )
    return _cpu_module


def cuda_available() -> bool:
    """True when diffcomb._C_cuda was built (a GPU may still be absent)."""
    return _cuda_module is not None


def cuda(function: str) -> ModuleType:
    """The CUDA module, or an error naming the function and how to rebuild."""
    if _cuda_module is None:
        raise RuntimeError(
            f"diffcomb.{function}: got a CUDA tensor, but diffcomb was built without CUDA "
            f"support (diffcomb._C_cuda could not be imported: {_cuda_error}). {_REBUILD_HINT}"
        )
    return _cuda_module


def address(tensor: Optional[torch.Tensor]) -> int:
    """Address of a contiguous tensor's data (0 for None or an empty tensor)."""
    if tensor is None or tensor.numel() == 0:
        return 0
    return tensor.data_ptr()


def dtype_code(tensor: torch.Tensor) -> int:
    return DTYPE_CODES[tensor.dtype]


def threads() -> int:
    """CPU threads for native kernels: torch's own setting (torch.set_num_threads)."""
    return torch.get_num_threads()


def stream_of(tensor: torch.Tensor) -> tuple[int, int]:
    """(device index, current stream handle) for a CUDA tensor."""
    device = tensor.device
    return device.index, torch.cuda.current_stream(device).cuda_stream


def launch(fn: str, entry: str, like: torch.Tensor, *args: object,
           workspace: Optional[tuple[str, tuple[int, ...]]] = None) -> object:
    """Call native entry point ``entry`` on ``like``'s device. The CPU and CUDA entry points of an op
    take the same arguments (``args``), then their execution context: the thread count on the CPU;
    on CUDA the address of a scratch workspace when the op needs one, the device index and the
    current stream. ``workspace`` names the CUDA module's byte-count function and its arguments, for
    example ``("sinkhorn_work_bytes", (batch, n, m))``; the scratch is a uint8 tensor from torch's
    caching allocator (freeing it after an asynchronous launch is safe: the allocator reuses memory
    in stream order). ``fn`` names the public function in the error raised when diffcomb was built
    without CUDA."""
    if like.is_cuda:
        module = cuda(fn)
        device = like.device
        stream = torch.cuda.current_stream(device).cuda_stream
        if workspace is None:
            return getattr(module, entry)(*args, device.index, stream)
        name, sizes = workspace
        work = torch.empty(getattr(module, name)(*sizes), dtype=torch.uint8, device=device)
        return getattr(module, entry)(*args, address(work), device.index, stream)
    return getattr(cpu(), entry)(*args, torch.get_num_threads())
