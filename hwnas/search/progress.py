"""How a search run shows its progress on stderr: tqdm bars to a terminal; to anything else (a log file, a pipe,
a CI job) a few summary lines, one per epoch or phase, instead of hundreds of KB of carriage returns."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``bars``: tqdm progress bars; ``lines``: summary lines (:meth:`say`). Both off: silent."""

    bars: bool = False
    lines: bool = False

    @classmethod
    def to_stderr(cls, wanted: bool) -> Progress:
        """Bars when ``wanted`` and stderr is a terminal, summary lines when ``wanted`` and it is not."""
        terminal = sys.stderr.isatty()
        return cls(bars=wanted and terminal, lines=wanted and not terminal)

    def say(self, text: str) -> None:
        """One summary line on stderr (only in ``lines`` mode)."""
        if self.lines:
            print(f"hwnas: {text}", file=sys.stderr, flush=True)
