"""The final measurement of the trained networks and its verdict.

With a latency table (any model in plain milliseconds), every trained network is measured end to end in repeated
attempts together with an untrained copy of the searched architecture (the control), and keeps its quietest attempt
(:func:`~hwnas.search.measure.quietest_per_network`); the closed loop's measurement of the same architecture counts
as one more attempt when the control shows that the weights do not change the latency. With a model whose
predictions are at a reference level (:func:`~hwnas.search.aim.latency_level`: a predictor fitted on measurement
sets of the space, whatever its kind), one paired measurement per network against the reference network. The
verdict is checkpointed, so a run interrupted after it does not measure again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from hwnas.devices import DeviceProfile
from hwnas.errors import RuntimeUnavailable
from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.aim import latency_level
from hwnas.search.checkpoint import RunCheckpoint
from hwnas.search.measure import PairedMeter, measure_networks, paired_protocol
from hwnas.search.progress import Progress
from hwnas.search.records import (AnyMeasurement, LoopStep, Measurement, TrainedNetwork, last_step_of,
                                  measurement_from_dict)
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import Architecture, SearchSpace

DRIFT_WARNING = 1.25  # closed loop / verdict above which the run warns that the device was busy during the loop


@dataclass
class Verdict:
    """What the final measurement did: ``how`` (the report's ``measurement`` line), the runtime's description,
    each trained network's measurement, and the untrained copy's (the control; end to end only)."""

    how: str
    runtime: dict[str, Any] | None = None
    measured: dict[str, AnyMeasurement] = field(default_factory=dict)
    untrained: Measurement | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"how": self.how, "runtime": self.runtime,
                "measured": {name: m.to_dict() for name, m in self.measured.items()},
                "untrained": self.untrained.to_dict() if self.untrained else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        untrained = data["untrained"]
        return cls(data["how"], data["runtime"], {k: measurement_from_dict(m) for k, m in data["measured"].items()},
                   Measurement.from_dict(untrained) if untrained else None)


def final_verdict(device: DeviceProfile, trained: dict[str, TrainedNetwork], space: SearchSpace,
                  estimator: LatencyEstimator, config: SearchConfig, target_ms: float, loops: dict[str, list[LoopStep]],
                  checkpoint: RunCheckpoint, progress: Progress) -> Verdict:
    """Measure the trained networks (or take the checkpoint's verdict of the same architectures) and fill each
    one's ``measured``."""
    if not config.measure:
        return Verdict("off (config.measure is false)")
    archs = {name: list(t.arch.choices) for name, t in trained.items()}
    saved = checkpoint.state.get("verdict")
    if saved is not None and saved["archs"] == archs:
        verdict = Verdict.from_dict(saved["verdict"])
    else:
        level = latency_level(estimator)
        try:
            if level is not None:
                verdict = _paired(device, trained, space, level, config)
            else:
                verdict = _end_to_end(device, trained, space, config, progress.bars, target_ms, loops)
        except RuntimeUnavailable as exc:
            print(f"hwnas: warning: not measured on {device.name}: {exc}", file=sys.stderr)
            return Verdict(f"skipped: {exc}")
        checkpoint.update("verdict", {"archs": archs, "verdict": verdict.to_dict()})
    for name, t in trained.items():
        t.measured = verdict.measured[name]
    progress.say("final measurement: " + ", ".join(f"{name} {m.median_ms:.4g} ms ({m.median_ms / target_ms:.2f} x T,"
                                                   f" {len(m.attempts)} attempts)"
                                                   for name, m in verdict.measured.items()))
    return verdict


def _end_to_end(device: DeviceProfile, trained: dict[str, TrainedNetwork], space: SearchSpace, config: SearchConfig,
                bars: bool, target_ms: float, loops: dict[str, list[LoopStep]]) -> Verdict:
    """Every trained network with an untrained copy of the derived architecture, in the same interleaved rounds
    and attempts; attempts are added (``config.final_extra_attempts``) while a network's quietest measurement is
    over ``target_ms``: an over-target verdict should come from a quiet machine, not from one burst."""
    nets = {name: t.net for name, t in trained.items()}
    nets["derived_untrained"] = space.build(trained["derived"].arch)
    earlier = {}
    for name, t in trained.items():
        step = last_step_of(loops.get(name, []), t.arch)
        earlier[name] = [step.measured.stats] if step is not None and isinstance(step.measured, Measurement) else []
    kept, runtime = measure_networks(
        device, nets, space.input_shape, config, bars, config.final_attempts, earlier=earlier,
        untrained_copies={"derived": "derived_untrained"}, extra_attempts=config.final_extra_attempts,
        stop_when=lambda chosen: all(chosen[name].median_ms <= target_ms for name in trained))
    return Verdict(f"end to end on {device.name} ({device.backend})", runtime,
                   {name: kept[name] for name in trained}, kept["derived_untrained"])


def _paired(device: DeviceProfile, trained: dict[str, TrainedNetwork], space: SearchSpace, reference_ms: float,
            config: SearchConfig) -> Verdict:
    """One paired measurement of each trained network against the reference, ``latency = ratio x reference_ms``
    at the model's reference level."""
    with PairedMeter(device, space, reference_ms, paired_protocol(config), "measuring the final verdict") as meter:
        records = meter.measure({name: t.net for name, t in trained.items()}, "final (paired)")
        runtime = meter.describe()
    return Verdict(f"end to end on {device.name} ({device.backend}), paired with the reference network "
                   f"(latency = ratio x {reference_ms:.4g} ms)", runtime, dict(records))


def closed_loop_drift(loop: list[LoopStep], arch: Architecture, measured: AnyMeasurement | None) -> float | None:
    """The closed loop's measurement of ``arch`` over its final verdict (None when either is missing). Well over 1:
    the device was busier during the closed loop than at its quietest, so the loop saw ``arch`` nearer the aim than
    it is and the result lies further under the target than it had to."""
    step = last_step_of(loop, arch)
    if step is None or measured is None or measured.median_ms <= 0:
        return None
    return step.measured_ms / measured.median_ms


def warn_if_drifted(drift: float | None, measured: AnyMeasurement | None) -> None:
    """One warning line when :func:`closed_loop_drift` is over :data:`DRIFT_WARNING`."""
    if drift is None or measured is None or drift <= DRIFT_WARNING:
        return
    print(f"hwnas: warning: the closed loop measured this architecture {drift:.2f}x slower than its quietest "
          f"measurement ({drift * measured.median_ms:.4g} vs {measured.median_ms:.4g} ms): the device was busy "
          "then, so the result lies further under the target than needed; search again when it is quiet",
          file=sys.stderr)
