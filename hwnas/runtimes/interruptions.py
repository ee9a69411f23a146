"""Which timed runs were interrupted: another process (or a kernel thread) took the CPU from our threads.

Pairing and rounds cancel a machine that runs uniformly slower; they do not cancel the time slices another
process takes, which add a fixed few milliseconds to whichever run they hit. Linux tells, per run, whether that
happened, and :func:`hwnas.runtimes.base.time_calls` records it next to each run's time; the protocols then
discard those runs and time them again (:mod:`hwnas.runtimes.protocol`, :mod:`hwnas.runtimes.paired`).

The signal, read once after each run (outside the timed interval, so it costs wall time, not measured time):

* the calling thread's ``run_delay`` from ``/proc/thread-self/schedstat`` (nanoseconds it spent runnable but
  waiting for a CPU): how long the run was kept off the CPU; read with ``pread`` on a descriptor kept open for the
  call (1.6 us per read on the 2-core AMD EPYC development VM; opening it: 7.5 us, once per ``time_calls``);
* ``getrusage(RUSAGE_SELF).ru_nivcsw``, the involuntary context switches of *every* thread of the process (1.1 us),
  so the worker threads of a multi-threaded runtime (ORT's intra-op pool, XNNPACK's pool, torch's OpenMP threads)
  count too, at a cost that does not grow with the number of threads (summing every task's schedstat: 6 us for
  3 threads, and a listing of ``/proc/self/task`` per run 56 us).

A run is *disturbed* when the process had an involuntary switch during it, or the calling thread waited at least
:data:`MIN_WAIT_S` for a CPU (a wake-up that found the core taken). Measured on that VM (one ORT network, 2.5 ms,
400 runs; docs/measurements.md): quiet, 0.8% of runs flagged; with a busy loop per core, 30% (1 thread) and 53%
(2 threads), the clean runs' p90 3.0 ms against 7.0 ms for all runs. Either counter alone flags the same runs for
one thread; with two threads, the calling thread's wait alone missed half of them (its clean p90 stayed 5.5 ms).

Elsewhere (not Linux, ``/proc`` unreadable, or a runtime that times itself, as the GPU runtimes do with device
events) nothing is detected: every run counts as clean, and the measurement's ``detection`` says why.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Protocol, Sequence

MIN_WAIT_S = 5e-6
"""A wait for a CPU this long marks a run disturbed even without an involuntary switch (a wake-up delayed)."""
SCHEDSTAT = "/proc/thread-self/schedstat"
DETECTED = "schedstat+nivcsw"
"""The ``detection`` of runs timed with the Linux signal."""
MIN_RETIME_S = 1.0
"""Retiming may always spend this much run time on discarded runs (see :class:`RetimeBudget`)."""
NOT_REPORTED = "none: the runtime's timing reports no interruptions (device events or an external tool)"


@dataclass(frozen=True)
class WaitReading:
    """Cumulative counters at one instant: seconds the calling thread waited for a CPU, involuntary switches of
    the whole process."""

    waited_s: float
    switches: int


class WaitSource(Protocol):
    """Where :func:`~hwnas.runtimes.base.time_calls` reads the counters after each run (a seam: tests script it)."""

    detection: str  # DETECTED, or "none: <why>" when read() always returns None

    def read(self) -> WaitReading | None: ...

    def close(self) -> None: ...


class NoWaits:
    """No detection here; ``detection`` says why."""

    def __init__(self, reason: str) -> None:
        self.detection = f"none: {reason}"

    def read(self) -> WaitReading | None:
        return None

    def close(self) -> None:
        pass


class LinuxWaits:
    """The calling thread's ``run_delay`` and the process's ``ru_nivcsw`` (see the module docstring)."""

    detection = DETECTED

    def __init__(self) -> None:
        import resource

        self._fd = os.open(SCHEDSTAT, os.O_RDONLY)
        self._getrusage, self._who = resource.getrusage, resource.RUSAGE_SELF

    def read(self) -> WaitReading | None:
        waited_ns = int(os.pread(self._fd, 64, 0).split()[1])
        return WaitReading(waited_ns * 1e-9, self._getrusage(self._who).ru_nivcsw)

    def close(self) -> None:
        os.close(self._fd)


def thread_waits() -> WaitSource:
    """The source for the calling thread: :class:`LinuxWaits`, or :class:`NoWaits` saying why not."""
    if not sys.platform.startswith("linux"):
        return NoWaits(f"interruptions are detected on Linux only (this is {sys.platform})")
    try:
        source = LinuxWaits()
        if source.read() is None:  # pragma: no cover - LinuxWaits always reads
            raise OSError("no reading")
    except (OSError, ValueError, IndexError, ImportError) as exc:
        return NoWaits(f"{SCHEDSTAT} unreadable ({exc})")
    return source


def is_disturbed(before: WaitReading | None, after: WaitReading | None) -> tuple[bool, float]:
    """Whether a run between two readings was disturbed, and how long its thread waited for a CPU (seconds)."""
    if before is None or after is None:
        return False, 0.0
    waited = max(after.waited_s - before.waited_s, 0.0)
    return after.switches > before.switches or waited >= MIN_WAIT_S, waited


class TimedRuns(list):
    """Seconds per run (a ``list[float]``, as ``time_runs`` always returned), with what the detection saw.

    Attributes:
        disturbed: per run, whether it was interrupted (all False without detection).
        waits_s: per run, seconds the calling thread waited for a CPU.
        detection: :data:`DETECTED`, or ``"none: <why>"``.
    """

    def __init__(self, times: Sequence[float], disturbed: Sequence[bool], waits_s: Sequence[float],
                 detection: str) -> None:
        super().__init__(times)
        self.disturbed, self.waits_s, self.detection = list(disturbed), list(waits_s), detection


def disturbed_runs(times: Sequence[float]) -> list[bool]:
    """Per run, whether it was disturbed: what a :class:`TimedRuns` recorded; all False for a plain list."""
    flags = getattr(times, "disturbed", None)
    return list(flags) if flags is not None and len(flags) == len(times) else [False] * len(times)


def run_times_less_waits(times: Sequence[float]) -> list[float]:
    """Per run, its time less the calling thread's wait for a CPU: the run's time on the CPU where the runtime runs
    in the calling thread (one intra-op thread), a lower estimate otherwise (worker threads' waits are not read);
    the plain times without detection."""
    waits = getattr(times, "waits_s", None)
    if waits is None or len(waits) != len(times):
        return list(times)
    return [max(t - w, 0.0) for t, w in zip(times, waits)]


def detection_of(times: Sequence[float]) -> str:
    """How ``times`` were checked for interruptions (:data:`NOT_REPORTED` for a plain list)."""
    return getattr(times, "detection", NOT_REPORTED)


@dataclass(frozen=True)
class RetimeBudget:
    """How much retiming disturbed runs may cost one visit (or one pass of pairs) before it gives up and the
    measurement is marked noisy: at most ``runs`` discarded runs (as many as it asks for), and their run time at
    most the clean runs' time or :data:`MIN_RETIME_S`, whichever is larger (so a loaded machine costs at most
    about twice the quiet time, plus a second)."""

    runs: int

    def exhausted(self, discarded: int, discarded_s: float, clean_s: float) -> bool:
        return discarded >= self.runs or discarded_s >= max(MIN_RETIME_S, clean_s)

