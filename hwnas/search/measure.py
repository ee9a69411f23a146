"""Measurement of whole networks during a search: end to end in repeated attempts, keeping each network's quietest
one (:func:`measure_networks`), or paired with the space's reference network (:class:`PairedMeter`).

On a shared CPU interference only adds time, and its bursts last seconds to minutes, so the quietest of attempts
spread in time is the best estimate of a network's own latency (docs/search.md: "A verdict from the quietest
measurement", "Why the search defaults are what they are").
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn
from tqdm import tqdm

from hwnas.devices import DeviceProfile
from hwnas.devices import device_protocol
from hwnas.latency.reference import prepare_reference, reference_module
from hwnas.runtimes import get_runtime
from hwnas.runtimes.machine_state import LoadWatcher
from hwnas.runtimes.paired import PairedProtocol, PairedStats, measure_paired
from hwnas.runtimes.protocol import Stats, measure
from hwnas.search.records import Attempt, Measurement, PairedMeasurement
from hwnas.search.run_config import MeasurementOptions, SearchConfig
from hwnas.spaces import SearchSpace

AttemptSet = dict[str, Stats]  # one attempt: every network's statistics, measured in the same interleaved rounds


def measure_networks(device: DeviceProfile, nets: dict[str, nn.Module], input_shape: tuple[int, ...],
                     config: MeasurementOptions, progress: bool, attempts: int = 1, *,
                     earlier: dict[str, list[Stats]] | None = None, untrained_copies: dict[str, str] | None = None,
                     stop_when: Callable[[dict[str, Measurement]], bool] | None = None,
                     extra_attempts: int = 0) -> tuple[dict[str, Measurement], dict]:
    """Measure networks end to end on ``device`` (its runtime and measurement protocol, rounds interleaved across
    the networks); returns (each network's :class:`Measurement`, the runtime's description).

    The set is measured ``attempts`` times, ``config.retry_pause_s`` apart, and again while some network comes out
    ``noisy`` or ``stop_when(kept)`` is false, at most ``config.noisy_retries + extra_attempts`` more times;
    :func:`quietest_per_network` (with ``earlier`` and ``untrained_copies``) keeps each network's statistics.
    ``progress``: a tqdm bar per attempt (to a terminal).
    """
    protocol = device_protocol(device, config.protocol)
    with tempfile.TemporaryDirectory(prefix="hwnas-search-") as tmp:
        runtime = get_runtime(device.backend, device.runtime_config(), Path(tmp))
        prepared = {}
        try:
            for name, net in nets.items():
                prepared[name] = runtime.prepare(net.eval(), input_shape, name)
            done: list[AttemptSet] = []
            while len(done) < attempts + config.noisy_retries + extra_attempts:
                if done:
                    time.sleep(config.retry_pause_s)
                label = f"measure on {device.name}" + (f" (attempt {len(done) + 1})" if done else "")
                with tqdm(total=len(nets), desc=label, unit="net", disable=not progress, dynamic_ncols=True) as bar:
                    done.append(measure(prepared, protocol, on_done=lambda *_: bar.update(1)))
                if len(done) < attempts or any(s.noisy for s in done[-1].values()):
                    continue
                kept = quietest_per_network(done, earlier, untrained_copies, protocol.noise_threshold)
                if stop_when is None or stop_when(kept):
                    break
        finally:
            for model in prepared.values():
                model.close()
        return quietest_per_network(done, earlier, untrained_copies, protocol.noise_threshold), runtime.describe()


def latency_independent_of_weights(attempts: list[AttemptSet], untrained_copies: dict[str, str],
                                   threshold: float) -> bool:
    """Whether every network in ``untrained_copies`` (name -> name of its untrained copy, measured in the same
    attempts) ran no slower than its copy: the median over attempts of network/copy medians is at most
    1 + ``threshold``."""
    for name, copy in untrained_copies.items():
        ratios = [a[name].median_ms / a[copy].median_ms for a in attempts if a[copy].median_ms > 0]
        if not ratios or float(np.median(ratios)) > 1.0 + threshold:
            return False
    return True


def quietest_per_network(attempts: list[AttemptSet], earlier: dict[str, list[Stats]] | None = None,
                         untrained_copies: dict[str, str] | None = None,
                         threshold: float = 0.1) -> dict[str, Measurement]:
    """Each network's quietest statistics over repeated measurements of the same networks: its attempt with the
    lowest median among those where it was not noisy (else among all).

    ``earlier`` holds earlier measurements per network (the closed loop's, of an untrained copy of the same
    architecture); they compete with the attempts only when :func:`latency_independent_of_weights` holds for
    ``untrained_copies`` (the trained networks ran no slower than their untrained copies, so an earlier quiet
    measurement tells as much as a later one). Each :class:`Measurement` says its ``source`` ("closed loop" or
    "final") and lists every attempt, earlier ones first, in order."""
    use_earlier = bool(earlier) and latency_independent_of_weights(attempts, untrained_copies or {}, threshold)
    kept = {}
    for name in attempts[0]:
        history = [(s, "closed loop") for s in (earlier or {}).get(name, [])] if use_earlier else []
        history += [(a[name], "final") for a in attempts]
        quiet = [h for h in history if not h[0].noisy] or history
        stats, source = min(quiet, key=lambda h: h[0].median_ms)
        kept[name] = Measurement(stats, source, [Attempt(s.median_ms, s.noisy, src) for s, src in history])
    return kept


def paired_protocol(config: SearchConfig) -> PairedProtocol:
    """The paired protocol of a search: the defaults with ``config.paired``'s fields over them."""
    return PairedProtocol.from_dict({**PairedProtocol().to_dict(), **config.paired}, "search config: paired")


@dataclass
class PairedMeter:
    """Measures networks of one space on the device, each paired with the space's reference network.

    ``reference_ms`` is the level a ratio is turned into milliseconds at (the predictor's). Use as a context
    manager: the runtime and the prepared reference live as long as it, and so does a
    :class:`~hwnas.runtimes.machine_state.LoadWatcher` that prints one warning line on exit when the machine was
    busy while it measured (``during`` names what it measured).
    """

    device: DeviceProfile
    space: SearchSpace
    reference_ms: float
    protocol: PairedProtocol = field(default_factory=PairedProtocol)
    during: str = "measuring"

    def __enter__(self) -> PairedMeter:
        self.watcher = LoadWatcher("network", self.during)
        self._tmp = tempfile.TemporaryDirectory(prefix="hwnas-paired-")
        self.runtime = get_runtime(self.device.backend, self.device.runtime_config(), Path(self._tmp.name))
        module, shape, _ = reference_module(self.space)
        self.reference = prepare_reference(self.runtime, module, shape)
        return self

    def __exit__(self, *exc: object) -> None:
        self.reference.close()
        self._tmp.cleanup()
        if exc[0] is None:
            self.watcher.warn()

    def measure(self, nets: dict[str, nn.Module], source: str) -> dict[str, PairedMeasurement]:
        """Each network's record (``median_ms = ratio x reference_ms``), one paired measurement each."""
        prepared = {name: self.runtime.prepare(net.eval(), self.space.input_shape, name) for name, net in nets.items()}
        try:
            stats = measure_paired(prepared, self.reference, self.protocol, on_done=lambda _, s: self.watcher.note(s))
        finally:
            for model in prepared.values():
                model.close()
        return {name: paired_measurement(s, self.reference_ms, source) for name, s in stats.items()}

    def describe(self) -> dict[str, Any]:
        return self.runtime.describe()


def paired_measurement(stats: PairedStats, reference_ms: float, source: str) -> PairedMeasurement:
    """The record of one paired measurement at the level ``reference_ms``: one attempt, ``ratio x reference_ms``."""
    ms = stats.ratio * reference_ms
    return PairedMeasurement(ms, stats.noisy, source, stats.ratio, reference_ms, stats.to_dict(),
                             [Attempt(ms, stats.noisy, source)])
