"""A one-line progress bar on a terminal, and silence everywhere else.

Long commands (pack, verify, census, info, convert) report progress on stderr
only when stderr is a terminal, so piped or logged output stays clean.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import IO

__all__ = ["Progress", "add_progress_options"]


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` for a command that may run long."""
    parser.add_argument(
        "--progress", dest="progress", action="store_true", default=None,
        help="always show a progress bar on standard error",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false",
        help="never show a progress bar (default: shown on a terminal only)",
    )


class Progress:
    """``with Progress("verify", total=n) as bar: bar.advance()``.

    ``total`` None shows a running count instead of a bar.  ``enabled`` None
    means "when the stream is a terminal".  Redraws at most ten times a second.
    """

    interval = 0.1

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "objects",
        stream: IO[str] | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.done = 0
        self.note = ""
        self._last_draw = 0.0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        if self.enabled:
            now = time.monotonic()
            if now - self._last_draw >= self.interval:
                self._last_draw = now
                self.draw()

    def set_total(self, total: int | None) -> None:
        self.total = total

    def render(self, width: int) -> str:
        note = f" {self.note}" if self.note else ""
        if self.total:
            fraction = min(1.0, self.done / self.total)
            counts = f" {fraction * 100:3.0f}% {self.done}/{self.total} {self.unit}{note}"
            bar_width = max(10, min(40, width - len(self.label) - len(counts) - 4))
            filled = int(fraction * bar_width)
            bar = "#" * filled + "-" * (bar_width - filled)
            line = f"{self.label} [{bar}]{counts}"
        else:
            line = f"{self.label}: {self.done} {self.unit}{note}"
        return line[: width - 1]

    def draw(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r" + self.render(width).ljust(width - 1))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar, leaving the terminal line clean for the report."""
        if self.enabled and self._drawn:
            width = shutil.get_terminal_size((80, 24)).columns
            self.stream.write("\r" + " " * (width - 1) + "\r")
            self.stream.flush()
            self._drawn = False
