"""The accuracy-latency points a search run evaluated, for ``RUN/pareto.json`` and ``RUN/pareto.png``
(:mod:`hwnas.search.pareto`):

* predicted latency, shared-weight accuracy: every candidate an evolution evaluated; for a strategy that learns a
  distribution (``proxyless``, ``mnas``), the most probable architecture under each of ``sweep`` bounds spread over
  the space's range (what the search's distribution offers at other targets), each evaluated on the supernet;
* measured latency, shared-weight accuracy: the architectures the closed loops measured;
* measured latency, trained accuracy: the derived network and the baseline, trained from scratch and measured by
  the verdict.

Latency is in the latency model's milliseconds (its reference level for a paired model), as the loop measures.
Every point carries its architecture's peak activation memory (:func:`~hwnas.spaces.footprint.arch_footprint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.decoders import Decoder, EvolutionDecoder
from hwnas.search.pareto import ParetoPoint, write_pareto
from hwnas.search.records import LoopStep, TrainedNetwork
from hwnas.spaces import Architecture, SearchSpace
from hwnas.spaces.footprint import arch_footprint


def swept_archs(decoder: Decoder, estimator: LatencyEstimator, fastest_ms: float, slowest_ms: float,
                sweep: int) -> list[Architecture]:
    """The decoder's architecture under each of ``sweep`` bounds from the fastest to the slowest (distinct)."""
    found: dict[tuple[str, ...], Architecture] = {}
    for bound in np.linspace(fastest_ms, slowest_ms, max(sweep, 2)):
        arch = decoder.under(estimator, float(bound))
        if arch is not None:
            found.setdefault(arch.choices, arch)
    return list(found.values())


def run_points(space: SearchSpace, decoder: Decoder, estimator: LatencyEstimator,
               accuracy_of: Callable[[Architecture], float], strategy: str, loops: Mapping[str, Sequence[LoopStep]],
               trained: Mapping[str, TrainedNetwork], span: tuple[float, float], sweep: int = 12
               ) -> list[ParetoPoint]:
    """Every point of the run (see the module docstring). ``span``: the fastest and slowest latency of the space by
    the model; ``accuracy_of``: shared-weight accuracy (cached by an evolution decoder)."""
    accuracy = decoder.accuracy if isinstance(decoder, EvolutionDecoder) else _cached(accuracy_of)
    if isinstance(decoder, EvolutionDecoder):
        candidates = [space.arch(list(c)) for c in decoder.accuracies]
    else:
        candidates = swept_archs(decoder, estimator, span[0], span[1], sweep)
    def peak(arch: Architecture) -> float:
        return arch_footprint(space, arch).peak_activation_mb

    points = [ParetoPoint(arch.to_dict(), accuracy(arch), estimator.latency_ms(arch), False, strategy,
                          memory_mb=peak(arch)) for arch in candidates]
    for loop, steps in loops.items():
        for step in steps:
            arch = space.arch(step.arch.split(" "))
            points.append(ParetoPoint(arch.to_dict(), accuracy(arch), step.measured_ms, True, f"closed_loop:{loop}",
                                      memory_mb=peak(arch)))
    for name, net in trained.items():
        if net.measured_ms is not None:
            points.append(ParetoPoint(net.arch.to_dict(), net.accuracy, net.measured_ms, True, name, "trained",
                                      peak(net.arch)))
    return points


def _cached(accuracy_of: Callable[[Architecture], float]) -> Callable[[Architecture], float]:
    seen: dict[tuple[str, ...], float] = {}

    def accuracy(arch: Architecture) -> float:
        if arch.choices not in seen:
            seen[arch.choices] = float(accuracy_of(arch))
        return seen[arch.choices]

    return accuracy


def write_run_pareto(out: Path, points: list[ParetoPoint], title: str, target_ms: float) -> dict[str, Any]:
    """``out/pareto.json`` and ``out/pareto.png``; returns their paths."""
    json_path = write_pareto(out / "pareto.json", out / "pareto.png", points, title, target_ms)
    return {"pareto": str(json_path), "pareto_plot": str(out / "pareto.png")}
