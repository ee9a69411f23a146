"""Random architectures of the space in the searched network's measured latency band, trained with the same budget:
the field's standard check that a search beat a random pick at the same latency (``random_baselines`` of them).

Candidates are drawn uniformly from the space (a generator seeded by the run's seed) and kept when the latency model
(after the closed loop: refitted, or stepped as the table was) puts them in the band ``[band T, T]``; each is
measured on the device the way the closed loop measures (paired with the reference where the model has one), and
kept when the *measurement* lies in the band, until ``random_baselines`` are kept or ``4 x`` that many were
measured. They are then trained from scratch like the derived network and measured by the same final verdict.
Under a memory bound (``max_memory_mb``, ``max_params_mb``) only architectures within it are drawn: uniformly over
the candidates within the peak bound, kept when their parameters fit too.
Measurements and training are checkpointed (loop ``random``; labels ``random1``, ``random2``, ...).
"""

from __future__ import annotations

import random
from typing import Any

from hwnas.devices import DeviceProfile
from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.checkpoint import RunCheckpoint
from hwnas.search.closed_loop import checkpointed_meter, loop_measure
from hwnas.search.memory_bound import MemoryBound
from hwnas.search.progress import Progress
from hwnas.search.records import LoopStep, arch_id
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import Architecture, SearchSpace

DRAWS = 20_000  # random draws to find candidates the model puts in the band


def predicted_in_band(space: SearchSpace, estimator: LatencyEstimator, low_ms: float, high_ms: float,
                      count: int, rng: random.Random, memory: MemoryBound | None = None) -> list[Architecture]:
    """Up to ``count`` distinct random architectures the model puts in ``[low_ms, high_ms]`` (in draw order), all
    within ``memory`` when given."""
    found: dict[tuple[str, ...], Architecture] = {}
    for _ in range(DRAWS):
        arch = space.random_arch(rng) if memory is None else memory.random_arch(rng)
        if memory is not None and not memory.fits(arch):
            continue
        if arch.choices not in found and low_ms <= estimator.latency_ms(arch) <= high_ms:
            found[arch.choices] = arch
            if len(found) >= count:
                break
    return list(found.values())


def random_in_band(space: SearchSpace, estimator: LatencyEstimator, target_ms: float, device: DeviceProfile,
                   config: SearchConfig, checkpoint: RunCheckpoint, progress: Progress,
                   exclude: tuple[Architecture, ...] = ()) -> list[tuple[Architecture, LoopStep]]:
    """The random baselines (see the module docstring): each architecture with the step that measured it."""
    wanted = config.random_baselines
    if wanted == 0 or not config.measure:
        return []
    low, high = config.random_band * target_ms, target_ms
    skip = {arch.choices for arch in exclude}
    memory = MemoryBound.of(space, config.max_memory_mb, config.max_params_mb)
    candidates = [a for a in predicted_in_band(space, estimator, low, high, 4 * wanted + len(skip),
                                               random.Random(config.seed + 7), memory) if a.choices not in skip]
    kept: list[tuple[Architecture, LoopStep]] = []
    with loop_measure(device, space, estimator, config) as measure:
        meter = checkpointed_meter(checkpoint, "random", measure, 4 * wanted, progress)
        for arch in candidates:
            measurement = meter(arch)
            if measurement is None:
                break
            if low <= measurement.median_ms <= high:
                kept.append((arch, LoopStep(high, estimator.latency_ms(arch), arch_id(arch), measurement)))
                if len(kept) == wanted:
                    break
    if len(kept) < wanted:
        progress.say(f"random baselines: {len(kept)} of {wanted} measured in [{low:.4g}, {high:.4g}] ms "
                     f"({len(meter.measured)} measured)")
    return kept


def baseline_rows(trained: dict[str, Any], target_ms: float, space: SearchSpace) -> list[dict[str, Any]]:
    """The report's ``baselines``: the uniform baseline and the random ones, each with its measured latency / T and
    test accuracy (trained with the searched network's budget)."""
    rows = []
    for name, net in trained.items():
        if name == "derived":
            continue
        measured = net.measured_ms
        rows.append({"name": name, "kind": "uniform" if name == "baseline" else "random",
                     "arch_human": space.human(net.arch), "measured_ms": measured,
                     "measured_over_target": None if measured is None else measured / target_ms,
                     "accuracy": net.accuracy})
    return rows
