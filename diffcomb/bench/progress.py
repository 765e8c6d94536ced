"""A minimal progress bar on stderr (no dependency).

On a terminal it redraws one line with ``\\r``; by default it stays silent
when stderr is not a terminal (a log file, CI), so logs stay clean. Use as a
context manager::

    with Progress(total=10) as bar:
        bar.step("label")
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, enabled: bool | None = None, stream: TextIO | None = None,
                 width: int = 28) -> None:
        """``enabled=None``: draw only when ``stream`` is a terminal."""
        self.total = max(total, 1)
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self._last_len = 0

    def __enter__(self) -> "Progress":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self, label: str, units: int = 1) -> None:
        """Announce the step about to run (``label``) and count ``units`` done before it."""
        if not self.enabled:
            self.done += units
            return
        self._draw(label)
        self.done += units

    def _draw(self, label: str) -> None:
        frac = min(self.done / self.total, 1.0)
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"[{bar}] {self.done:>3}/{self.total} {elapsed:5.1f}s {label}"[:110]
        pad = " " * max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)

    def close(self) -> None:
        if self.enabled and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()
            self._last_len = 0
