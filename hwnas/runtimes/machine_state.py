"""Machine state, shown: the load hwnas cannot remove while it measures, and one warning line saying what it did.

Discarding interrupted runs (:mod:`hwnas.runtimes.interruptions`) removes the time slices another process takes;
it does not make a busy machine quiet (the busy loops of docs/timing.md slowed even clean runs by 20%), and a
reference whose clean level moves between paired measurements means the machine's state changed under them. So a
command that measures (``hwnas measure``, ``profile``, ``bench``, the search's paired meter) keeps a
:class:`LoadWatcher` and, when the machine was busy, prints ONE line on stderr at its end::

    hwnas: warning: the machine was busy while measuring (other processes: 1.4 of 2 cores on average, 1.9 at peak;
    the reference's clean level moved 23%): 312 interrupted pairs discarded and taken again, 2 of 60 networks noisy

*Other processes' CPU use* is the system's busy time from ``/proc/stat`` (user, nice, system, irq, softirq and the
hypervisor's steal, every core) minus this process's own CPU time and its waited-for children's (``/proc/self/stat``
utime, stime, cutime, cstime: every thread), over the wall time, in cores. It is sampled at measurement boundaries
(the start, each measured network or op, the end), never by a background thread: a thread in the measuring
process would itself interrupt timed runs. Elsewhere (not Linux, ``/proc`` unreadable) the watcher is inert: it
says nothing and reports nothing.

*Busy* (see docs/timing.md, "Machine state"): other processes used at least :data:`BUSY_AVERAGE_CORES` on average
over the command, or at least :data:`BUSY_PEAK_CORES` over some stretch of at least :data:`PEAK_WINDOW_S`, or the
reference's clean medians spread by more than :data:`DRIFT_RATIO` (max / min).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, TextIO

BUSY_AVERAGE_CORES = 0.25
"""Other processes' average use (cores) over a command from which the machine counts as busy."""
BUSY_PEAK_CORES = 0.5
"""Other processes' use (cores) over one stretch of at least :data:`PEAK_WINDOW_S` from which it counts as busy."""
PEAK_WINDOW_S = 1.0
"""Samples closer than this are merged before the peak is taken (``/proc`` counts CPU time in 10 ms ticks)."""
MIN_WATCHED_S = 0.5
"""A command watched for less wall time than this gets no CPU verdict (too few ticks to tell)."""
DRIFT_RATIO = 1.5
"""The reference's highest clean median over its lowest, over one command, above which its level moved: on the
quiet development VM (no other process) it moved 17-35% within a minute (docs/timing.md), under load 100%."""
PROC_STAT, PROC_SELF_STAT = "/proc/stat", "/proc/self/stat"


@dataclass(frozen=True)
class CpuReading:
    """One instant: its wall clock (seconds, monotonic), and the cumulative CPU seconds of the whole machine's busy
    time (every core) and of this process's own."""

    wall_s: float
    busy_s: float
    own_s: float


class CpuSource(Protocol):
    """Where a :class:`LoadWatcher` reads the clock and CPU time (a seam: tests script it). ``cores``: the cores
    ``busy_s`` counts."""

    cores: int

    def read(self) -> CpuReading | None: ...


class LinuxCpu:
    """``/proc/stat``'s first line and ``/proc/self/stat``'s times, in clock ticks (see the module docstring)."""

    def __init__(self, stat: str = PROC_STAT, self_stat: str = PROC_SELF_STAT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stat, self._self_stat, self._clock = stat, self_stat, clock
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        with open(stat) as handle:
            self.cores = sum(1 for line in handle if line.startswith("cpu") and line[3:4].isdigit())
        if self.cores < 1:
            raise ValueError(f"{stat}: no cpuN line")

    def read(self) -> CpuReading | None:
        wall = self._clock()
        with open(self._stat) as handle:
            ticks = [int(v) for v in handle.readline().split()[1:9]]
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait (guest time is inside user already)
        with open(self._self_stat) as handle:  # the name in parentheses may hold spaces: split after it
            fields = handle.read().rsplit(")", 1)[1].split()
        own = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime (fields 14-17 of proc(5))
        return CpuReading(wall, busy * self._tick_s, own * self._tick_s)


def machine_cpu() -> CpuSource | None:
    """The CPU source of this machine: :class:`LinuxCpu`, or None where ``/proc`` cannot be read (inert)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        source = LinuxCpu(PROC_STAT, PROC_SELF_STAT)
        source.read()
    except (OSError, ValueError, IndexError):
        return None
    return source


@dataclass(frozen=True)
class MachineState:
    """What a :class:`LoadWatcher` saw over one command (cores None when it ran too briefly to tell)."""

    cores: int
    other_cores: float | None
    peak_other_cores: float | None
    reference_drift_pct: float | None
    discarded_runs: int
    discarded_pairs: int
    noisy: int
    measured: int
    busy: bool

    def to_dict(self) -> dict[str, Any]:
        rounded = lambda v: None if v is None else round(v, 2)  # noqa: E731
        return {"busy": self.busy, "cores": self.cores, "other_cores": rounded(self.other_cores),
                "peak_other_cores": rounded(self.peak_other_cores),
                "reference_drift_pct": rounded(self.reference_drift_pct), "discarded_runs": self.discarded_runs,
                "discarded_pairs": self.discarded_pairs, "noisy": self.noisy, "measured": self.measured}


class LoadWatcher:
    """Watches one command's measurements: :meth:`sample` at boundaries, :meth:`note` each measured model's
    statistics (a :class:`~hwnas.runtimes.protocol.Stats` or
    :class:`~hwnas.runtimes.paired.PairedStats`), :meth:`note_reference` a reference median measured beside
    them, then :meth:`warn` once at the end (after any progress bar is closed)."""

    def __init__(self, unit: str = "network", during: str = "measuring", source: CpuSource | None = None) -> None:
        self.unit, self.during = unit, during
        self._source = source if source is not None else machine_cpu()
        self._samples: list[tuple[float, float]] = []  # (wall s, other processes' CPU s), cumulative
        self._reference_ms: list[float] = []
        self.discarded_runs = self.discarded_pairs = self.noisy = self.measured = 0
        self._warned = False
        self.sample()

    @property
    def inert(self) -> bool:
        return self._source is None

    def sample(self) -> None:
        """Read the CPU counters now (a measurement boundary); a failed read is skipped."""
        if self._source is None:
            return
        try:
            reading = self._source.read()
        except (OSError, ValueError, IndexError):
            reading = None
        if reading is not None:
            self._samples.append((reading.wall_s, reading.busy_s - reading.own_s))

    def note(self, stats: Any) -> None:
        """One measured model: its discarded runs (pairs), whether it is noisy, a paired one's reference median;
        then a sample (a measurement boundary)."""
        self.measured += 1
        self.noisy += bool(getattr(stats, "noisy", False))
        reference = getattr(stats, "reference", None)
        if reference is not None:  # PairedStats: discarded counts pairs
            self.discarded_pairs += int(stats.discarded)
            self.note_reference(reference.median_ms)
        else:
            self.discarded_runs += int(getattr(stats, "discarded", 0))
        self.sample()

    def note_reference(self, median_ms: float) -> None:
        """A clean median of the reference network measured beside this command's models."""
        if median_ms > 0:
            self._reference_ms.append(float(median_ms))

    def summary(self) -> MachineState | None:
        """What was seen so far (None when inert)."""
        if self._source is None:
            return None
        average, peak = _other_cores(self._samples)
        drift = (max(self._reference_ms) / min(self._reference_ms) - 1) * 100 if len(self._reference_ms) > 1 else None
        busy = _cpu_busy(average, peak) or (drift is not None and drift > (DRIFT_RATIO - 1) * 100)
        return MachineState(self._source.cores, average, peak, drift, self.discarded_runs, self.discarded_pairs,
                            self.noisy, self.measured, busy)

    def warning_line(self) -> str | None:
        """The one warning line when the machine was busy, else None."""
        state = self.summary()
        if state is None or not state.busy:
            return None
        seen = []
        if state.other_cores is not None:
            seen.append(f"other processes: {state.other_cores:.1f} of {state.cores} cores on average, "
                        f"{state.peak_other_cores:.1f} at peak")
        if state.reference_drift_pct is not None and state.reference_drift_pct > (DRIFT_RATIO - 1) * 100:
            seen.append(f"the reference's clean level moved {state.reference_drift_pct:.0f}%")
        # busy by the drift alone, with no other load: a clock, thermal or neighbour-VM change
        what = "was busy" if _cpu_busy(state.other_cores, state.peak_other_cores) else "changed speed"
        return (f"hwnas: warning: the machine {what} while {self.during} ({'; '.join(seen)}): "
                f"{', '.join(_what_was_done(state, self.unit))}")

    def warn(self, file: TextIO | None = None) -> MachineState | None:
        """Sample once more and print :meth:`warning_line` (at most once per watcher); returns :meth:`summary`.
        Inside :func:`one_warning` the line is left to the scope, which prints one for the whole command."""
        self.sample()
        scope = _SCOPE.get()
        if scope is not None:
            if self not in scope:
                scope.append(self)
            return self.summary()
        line = self.warning_line()
        if line is not None and not self._warned:
            print(line, file=file if file is not None else sys.stderr)
            self._warned = True
        return self.summary()


_SCOPE: ContextVar[list[LoadWatcher] | None] = ContextVar("hwnas_load_scope", default=None)


@contextmanager
def one_warning(during: str, unit: str = "network", file: TextIO | None = None) -> Iterator[None]:
    """One warning line for a command that measures in several steps (a search: its predictor's set, the closed
    loop, the verdict): the watchers inside defer their lines, and on exit what they saw together (their samples,
    counts and reference medians) gives at most one line, "while ``during``"."""
    scope: list[LoadWatcher] = []
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)
    active = [w for w in scope if not w.inert]
    if active:
        merged = LoadWatcher(unit, during, active[0]._source)
        merged._samples = sorted([*(sample for w in active for sample in w._samples), *merged._samples])
        merged._reference_ms = [ms for w in active for ms in w._reference_ms]
        for name in ("discarded_runs", "discarded_pairs", "noisy", "measured"):
            setattr(merged, name, sum(getattr(w, name) for w in active))
        line = merged.warning_line()
        if line is not None:
            print(line, file=file if file is not None else sys.stderr)


def _cpu_busy(average: float | None, peak: float | None) -> bool:
    """Whether other processes' use counts as busy (:data:`BUSY_AVERAGE_CORES`, :data:`BUSY_PEAK_CORES`)."""
    return average is not None and (average >= BUSY_AVERAGE_CORES or (peak or 0.0) >= BUSY_PEAK_CORES)


def _what_was_done(state: MachineState, unit: str) -> list[str]:
    done = []
    if state.discarded_runs:
        done.append(f"{state.discarded_runs} interrupted run{'s' * (state.discarded_runs != 1)} discarded and "
                    "timed again")
    if state.discarded_pairs:
        done.append(f"{state.discarded_pairs} interrupted pair{'s' * (state.discarded_pairs != 1)} discarded and "
                    "taken again")
    if not done:
        done.append("no interrupted run detected")
    if state.measured:
        done.append(f"{state.noisy} of {state.measured} {unit}{'s' * (state.measured != 1)} noisy")
    return done


def _other_cores(samples: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """Other processes' average use over the samples and its peak over stretches of at least
    :data:`PEAK_WINDOW_S` (None, None when the samples span less than :data:`MIN_WATCHED_S`)."""
    if len(samples) < 2 or samples[-1][0] - samples[0][0] < MIN_WATCHED_S:
        return None, None
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    average = max(c1 - c0, 0.0) / (t1 - t0)
    peak, start = average, samples[0]
    for t, c in samples[1:]:
        if t - start[0] >= PEAK_WINDOW_S:
            peak = max(peak, max(c - start[1], 0.0) / (t - start[0]))
            start = (t, c)
    return average, peak


__all__ = ["BUSY_AVERAGE_CORES", "BUSY_PEAK_CORES", "CpuReading", "CpuSource", "DRIFT_RATIO", "LinuxCpu",
           "LoadWatcher", "MachineState", "machine_cpu", "one_warning"]
