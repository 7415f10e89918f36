"""A long run's progress: how much is done, how fast, and what is left.

``Progress`` draws a bar redrawn in place on a terminal, and elsewhere (a log file, a pipe,
a batch system's output) one plain line every ``every`` seconds and one at the end, with no
carriage returns; ``clock`` writes a duration with its hours (a sweep of a day is
"25:01:01", never an hour-less "01:01").
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["Progress", "clock"]


def clock(seconds: float) -> str:
    """A duration as H:MM:SS (M:SS under an hour; hours past 24 kept); "--:--" unknown."""
    if not np.isfinite(seconds):
        return "--:--"
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A sweep's progress on ``file``: a bar redrawn in place on a terminal; elsewhere (a
    log file, a pipe) one plain line every ``every`` seconds and one at the end, without
    carriage returns."""

    def __init__(self, total: int, file, every: float = 60.0):
        self.total, self.file, self.every = total, file, every
        self.tty = bool(getattr(file, "isatty", lambda: False)())
        self.t0, self.last, self.shown = time.perf_counter(), -np.inf, False

    def update(self, done: int, new: int, final: bool = False) -> None:
        """``done`` of ``total`` configurations, ``new`` of them solved since the start."""
        now = time.perf_counter()
        if not (self.tty or final or now - self.last >= self.every):
            return
        rate = new / max(now - self.t0, 1e-9)
        left = (self.total - done) / rate if rate else np.inf
        fill = int(30 * done / max(self.total, 1))
        line = (f"[{'#' * fill}{'.' * (30 - fill)}] {done}/{self.total} configurations  "
                f"{rate:.1f}/s  elapsed {clock(now - self.t0)}  ETA {clock(left)}")
        print("\r" + line if self.tty else line, end="" if self.tty else "\n",
              file=self.file, flush=True)
        self.last, self.shown = now, True

    def close(self) -> None:
        if self.tty and self.shown:
            print(file=self.file)
