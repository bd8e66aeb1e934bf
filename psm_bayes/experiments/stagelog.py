"""Stage timings and progress lines of ``psm-bayes run`` (on stderr)."""

from __future__ import annotations

import sys
import time


class StageLog:
    """Times each named stage; prints start and end lines when ``progress``.

    Parameters
    ----------
    progress : bool
        Print ``[psm-bayes run   12.3s] stage ...`` lines on stderr.
    """

    def __init__(self, progress: bool = False) -> None:
        self.progress = progress
        self.t0 = time.perf_counter()
        self.stages: dict[str, float] = {}
        self._start = self.t0

    def stage(self, name: str) -> None:
        """Start timing stage ``name``."""
        self._start = time.perf_counter()
        if self.progress:
            print(f"[psm-bayes run {time.perf_counter() - self.t0:7.1f}s] {name} ...", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """Print a line (when ``progress``) without starting or ending a stage (e.g. a refit of a fit)."""
        if self.progress:
            print(f"[psm-bayes run {time.perf_counter() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    def done(self, name: str) -> None:
        """Record the seconds since the last :meth:`stage` under ``name``."""
        self.stages[name] = round(time.perf_counter() - self._start, 2)
        if self.progress:
            print(f"[psm-bayes run {time.perf_counter() - self.t0:7.1f}s] {name}: {self.stages[name]:.1f}s",
                  file=sys.stderr, flush=True)

    def total(self) -> float:
        """Seconds since the log was created."""
        return round(time.perf_counter() - self.t0, 2)
