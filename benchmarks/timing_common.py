"""What the timing benchmarks share: busy loops pinned to cores, sets measured into a folder, bench-style figures of
a set's networks, and agreement lines.

The busy loops are separate processes (``python -c "while 1: pass"``) pinned with ``os.sched_setaffinity``, started
and stopped by the benchmark itself; the measuring process pins itself to core 0, so "a loop on the measurement's
core and one on the other" is exactly that.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hwnas.devices import DeviceProfile, device_protocol
from hwnas.latency.metrics import agreement
from hwnas.latency.profile import artifacts_dir
from hwnas.latency.reference import prepare_reference, reference_module
from hwnas.latency.sets import MeasureConfig, MeasurementSet, measure_set, network_items
from hwnas.runtimes import get_runtime
from hwnas.runtimes.protocol import measure
from hwnas.spaces import SearchSpace

BUSY = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


@contextlib.contextmanager
def busy_loops(cores: Sequence[int]) -> Iterator[None]:
    """One CPU-bound process pinned to each of ``cores`` while the block runs (none for an empty list)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY, str(core)]) for core in cores]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def pin_to(core: int) -> None:
    """Run this process (and the threads it starts from now on) on ``core`` only."""
    os.sched_setaffinity(0, {core})


def measured_set(device: DeviceProfile, space: SearchSpace, out: Path, n: int, seed: int, repeat: int,
                 protocol: dict[str, Any] | None = None) -> MeasurementSet:
    """A set of ``n`` networks measured (or resumed) at ``out``."""
    config = MeasureConfig(n=n, seed=seed, repeat=repeat, protocol=dict(protocol or {}), progress=False)
    return MeasurementSet.load(measure_set(device, space, out, config).path)


def bench_figures(device: DeviceProfile, space: SearchSpace, mset: MeasurementSet) -> dict[int, tuple[float, float]]:
    """Per row id: ``hwnas bench``'s median of the network and of the reference, both measured in one call of the
    device protocol (their rounds interleaved, each visit warm), from the converted files the set used."""
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    module, shape, _ = reference_module(space)
    reference = prepare_reference(runtime, module, shape)
    protocol = device_protocol(device)
    figures = {}
    try:
        for i in sorted(mset.rows):
            (_, model), = runtime.prepare_many(network_items(space, mset.plan, [i])).items()
            try:
                stats = measure({"net": model, "ref": reference}, protocol)
            finally:
                model.close()
            figures[i] = (stats["net"].median_ms, stats["ref"].median_ms)
    finally:
        reference.close()
    return figures


def share_line(name: str, ratios: Sequence[float], tolerance: float = 0.05) -> str:
    """``name``: the share of ``ratios`` (measured / reference figure) within +-tolerance, their median and range."""
    values = np.asarray(ratios, dtype=float)
    within = 100 * float(np.mean(np.abs(values - 1) <= tolerance))
    return (f"{name}: within +-{tolerance:.0%} {within:.0f}% of {values.size}; median {np.median(values):.3f}, "
            f"range {values.min():.3f}-{values.max():.3f}")


def agreement_line(name: str, measured: Sequence[float], truth: Sequence[float]) -> str:
    """``name``: agreement of ``measured`` with ``truth`` in hwnas's vocabulary (+-5%, +-10%, bias)."""
    figures = agreement(list(measured), list(truth))
    return (f"{name}: n {len(measured)}, within +-5% {figures['within5_pct']:.0f}%, within +-10% "
            f"{figures['within10_pct']:.0f}%, bias {figures['bias_pct']:+.1f}%, mape {figures['mape']:.1f}%")


def remeasure_pairs(mset: MeasurementSet) -> tuple[list[float], list[float]]:
    """The set's re-measured ratios and their first measurement, in repeat order."""
    ids = [i for i in mset.repeat_ids if i in mset.rows and i in mset.repeats]
    return [mset.repeats[i].paired.ratio for i in ids], [mset.rows[i].paired.ratio for i in ids]
