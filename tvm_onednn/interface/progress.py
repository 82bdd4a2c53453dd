"""A one-line progress bar for tuning, drawn only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..tuning.progress import TuneProgress


class TerminalProgress:
    """``tune(progress=TerminalProgress())``: redraws one line on a TTY, silent otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, label: str = "tuning"):
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.label = label
        self.start = time.perf_counter()
        self.drawn = False

    def __call__(self, p: TuneProgress) -> None:
        if not self.enabled:
            return
        done = min(p.trials, p.max_trials)
        filled = int(self.width * done / max(1, p.max_trials))
        bar = "#" * filled + "-" * (self.width - filled)
        best = f"{p.task.best_us:.1f} us" if p.task.best_us is not None else "-"
        line = (
            f"\r{self.label} [{bar}] {done}/{p.max_trials} trials, "
            f"{time.perf_counter() - self.start:.0f} s | {p.task.name[:28]}: best {best}"
        )
        self.stream.write(line.ljust(100)[:120])
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
