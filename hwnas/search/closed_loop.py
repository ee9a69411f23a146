"""The closed loop on the device, before training (latency does not depend on the weights): the searched
architecture and the uniform baseline are decoded, measured and decoded again until one measures just under T.

With a model that refits (:func:`hwnas.search.aim.refits`: a calibrated predictor) the loop refits it with every
measurement (:func:`hwnas.search.aim.aim_on_device`); with any other model (a table, a transfer or kernel predictor)
it tunes the model's target by trial (:func:`meet_on_device`), measuring paired with the reference network where the
model has a reference level (:func:`hwnas.search.aim.latency_level`), else end to end. Either way every measurement
is recorded in the run's checkpoint and replayed on resume.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Sequence

from hwnas.devices import DeviceProfile
from hwnas.errors import RuntimeUnavailable
from hwnas.latency.estimator import LatencyEstimator
from hwnas.runtimes.paired import PairedProtocol
from hwnas.search.aim import PairedMeter, aim_on_device, fastest_decoded, latency_level, refits
from hwnas.search.checkpoint import RunCheckpoint
from hwnas.search.decode import decode_under_target, fastest_arch
from hwnas.search.measure import measure_networks
from hwnas.search.progress import Progress
from hwnas.search.records import AnyMeasurement, LoopStep, arch_id, measurement_from_dict
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import Architecture, SearchSpace

BRACKET_CLOSED = 1.002  # tightest over / loosest under table target below which no target lies between them
MAX_STEP_EXPONENT = 16.0  # a step that decodes the same architecture again is doubled, up to (aim/ms)^16


def baseline_candidates(space: SearchSpace) -> list[Architecture]:
    """Uniform MobileNetV2-like architectures: the same op in every layer, at every uniform depth ``d``.

    Ops: every non-zero op shared by all layers. Depth ``d``: the first ``d`` layers of each stage keep the op;
    later layers that offer ``zero`` are skipped (Once-for-All's elastic depth).
    """
    shared = [n for n in space.layers[0].names if n != "zero" and all(n in layer.names for layer in space.layers)]
    depth = max((len(stage.layers) for stage in space.stages), default=len(space.layers))
    position = {i: p for stage in space.stages for p, i in enumerate(stage.layers)}
    archs = []
    for d in range(depth, 0, -1):  # deeper first: kept on latency ties
        for op in shared:
            archs.append(space.arch([op if position.get(layer.index, 0) < d or "zero" not in layer.names else "zero"
                                     for layer in space.layers]))
    return archs


def _slowest_within(archs: list[Architecture], estimator: LatencyEstimator, target_ms: float) -> Architecture | None:
    fitting = [a for a in archs if estimator.latency_ms(a) <= target_ms]
    return max(fitting, key=estimator.latency_ms) if fitting else None


def baseline_arch(space: SearchSpace, estimator: LatencyEstimator, target_ms: float) -> Architecture | None:
    """The same-budget uniform baseline: the slowest of :func:`baseline_candidates` whose estimated latency is
    <= ``target_ms`` (deeper first on ties), None if none fits. The search run then corrects it on the device
    with the same closed loop as the searched architecture."""
    return _slowest_within(baseline_candidates(space), estimator, target_ms)


class _MeasureOnce:
    """Measures each architecture once (with ``meter.measure(nets, source)``, paired, when given; else end to end,
    :func:`measure_networks`), at most ``budget`` of them; ``known`` (architecture id -> measurement) are replayed,
    ``on_measured(arch_id, measurement)`` hears of new ones. Calling it returns the measurement, or None when the
    budget is spent or the runtime is unavailable."""

    def __init__(self, space: SearchSpace, device: DeviceProfile, config: SearchConfig, budget: int,
                 known: dict[str, AnyMeasurement] | None, on_measured: Callable[[str, AnyMeasurement], None] | None,
                 progress: Progress, meter: Any = None) -> None:
        self.space, self.device, self.config, self.budget, self.meter = space, device, config, budget, meter
        self.known, self.on_measured, self.progress = known or {}, on_measured, progress
        self.measured: dict[tuple[str, ...], AnyMeasurement] = {}

    def _measure(self, arch: Architecture) -> AnyMeasurement:
        nets = {"candidate": self.space.build(arch)}
        if self.meter is not None:
            return measurement_from_dict(self.meter.measure(nets, "closed loop")["candidate"])
        kept, _ = measure_networks(self.device, nets, self.space.input_shape, self.config, False)
        return kept["candidate"]

    def __call__(self, arch: Architecture) -> AnyMeasurement | None:
        if arch.choices in self.measured:
            return self.measured[arch.choices]
        if len(self.measured) == self.budget:
            return None
        key = arch_id(arch)
        if key in self.known:
            measurement = self.known[key]
        else:
            try:
                measurement = self._measure(arch)
            except RuntimeUnavailable:
                return None
            if self.on_measured is not None:
                self.on_measured(key, measurement)
        self.measured[arch.choices] = measurement
        self.progress.say(f"closed loop: measured {measurement.median_ms:.4g} ms ({len(self.measured)} of at most "
                          f"{self.budget})")
        return measurement

    def quickest(self) -> Architecture | None:
        """The fastest architecture measured, None before any."""
        if not self.measured:
            return None
        return self.space.arch(list(min(self.measured, key=lambda choices: self.measured[choices].median_ms)))


def _next_table_target(table_target: float, measured_ms: float, aim: float, exponent: float,
                       loosest_under: float | None, tightest_over: float | None) -> float | None:
    """The table target scaled by ``(aim / measured) ** exponent``, kept strictly between the loosest table target
    decoded under the aim and the tightest decoded over it (their geometric mean otherwise); None when the two are
    within :data:`BRACKET_CLOSED` (nothing lies between)."""
    proposal = table_target * (aim / measured_ms) ** exponent
    if loosest_under is not None and tightest_over is not None:
        if tightest_over / loosest_under < BRACKET_CLOSED:
            return None
        if not loosest_under < proposal < tightest_over:
            proposal = math.sqrt(loosest_under * tightest_over)
    return proposal


def meet_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float,
                   decode: Callable[[float], Architecture | None], fastest: Architecture, ceiling_ms: float,
                   device: DeviceProfile, config: SearchConfig, *, known: dict[str, AnyMeasurement] | None = None,
                   on_measured: Callable[[str, AnyMeasurement], None] | None = None,
                   progress: Progress = Progress(), meter: Any = None) -> tuple[Architecture, list[LoopStep]]:
    """Find the table target whose decoded architecture (``decode(table_target)``, None when nothing fits)
    measures on the device just under T.

    The aim is ``measured <= (1 - margin) * T``; a result within ``2 * margin`` below the aim is accepted. Over
    the aim, the table target is scaled down by aim/measured; far under it, up by the same ratio (a step that
    decodes the same architecture again is doubled); once a target over and one under are known, the next lies
    between them. A table target under what ``fastest`` needs tries ``fastest``; one at or over ``ceiling_ms``
    (from there on every target decodes the same) ends the loop. At most ``config.closed_loop_steps``
    measurements (an architecture is measured once). Returns the slowest architecture measured under the aim (the
    first decoded one when nothing was measured, the fastest measured one when none was under the aim) and one
    step per decoded architecture (consecutive repeats once). ``known`` (architecture id -> measurement) replays
    an interrupted loop's measurements; ``on_measured(arch_id, measurement)`` is told of each new one. ``meter``
    (a :class:`~hwnas.search.aim.PairedMeter`) measures paired with the reference network; None: end to end.
    """
    aim = target_ms * (1.0 - config.closed_loop_margin)
    good_enough = aim * (1.0 - 2.0 * config.closed_loop_margin)
    budget = config.closed_loop_steps if config.measure else 0
    measure_once = _MeasureOnce(space, device, config, budget, known, on_measured, progress, meter)
    slowest_under: tuple[float, Architecture] | None = None
    loosest_under = tightest_over = None  # table targets decoded to an architecture under / over the aim
    table_target, exponent, previous, log = target_ms, 1.0, None, []
    arch = decode(target_ms) or fastest
    for _ in range(4 * budget):
        measurement = measure_once(arch)
        if measurement is None:
            break
        ms = measurement.median_ms
        if arch != previous:
            log.append(LoopStep(table_target, estimator.latency_ms(arch), arch_id(arch), measurement))
        if ms <= aim:
            loosest_under = table_target if loosest_under is None else max(loosest_under, table_target)
            if slowest_under is None or ms > slowest_under[0]:
                slowest_under = (ms, arch)
            if ms >= good_enough or table_target >= ceiling_ms:
                break
        else:
            tightest_over = table_target if tightest_over is None else min(tightest_over, table_target)
        exponent = min(exponent * 2.0, MAX_STEP_EXPONENT) if arch == previous else 1.0
        proposal = _next_table_target(table_target, ms, aim, exponent, loosest_under, tightest_over)
        if proposal is None:
            break
        previous, table_target = arch, proposal
        decoded = decode(table_target)
        if decoded is None:  # tighter than the fastest architecture: try that one
            decoded, table_target = fastest, estimator.latency_ms(fastest)
            if decoded.choices in measure_once.measured:
                break
        arch = decoded
    if slowest_under is not None:
        return slowest_under[1], log
    return measure_once.quickest() or arch, log


def _replay_table(checkpoint: RunCheckpoint, loop: str) -> dict[str, Any]:
    """:func:`meet_on_device`'s arguments that replay ``loop``'s recorded measurements and record new ones."""
    return {"known": {key: measurement_from_dict(m) for key, m in checkpoint.measured(loop).items()},
            "on_measured": lambda key, measurement: checkpoint.record(loop, key, measurement.to_dict())}


def paired_protocol(config: SearchConfig) -> PairedProtocol:
    return PairedProtocol.from_dict({**PairedProtocol().to_dict(), **config.paired}, "search config: paired")


@contextmanager
def _loop_meter(device: DeviceProfile, space: SearchSpace, estimator: LatencyEstimator,
                config: SearchConfig) -> Iterator[PairedMeter | None]:
    """What :func:`meet_on_device` measures with: a :class:`PairedMeter` at the model's reference level when it has
    one (:func:`~hwnas.search.aim.latency_level`) and the loop measures; None (end to end) otherwise, or when the
    runtime is unavailable here (the loop then ends at its first measurement, as end to end)."""
    level = latency_level(estimator)
    with ExitStack() as stack:
        meter = None
        if level is not None and config.measure and config.closed_loop_steps > 0:
            try:
                meter = stack.enter_context(PairedMeter(device, space, level, paired_protocol(config)))
            except RuntimeUnavailable:
                meter = None
        yield meter


def search_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float, slowest_ms: float,
                     log_probs: list[list[float]], device: DeviceProfile, config: SearchConfig,
                     checkpoint: RunCheckpoint, progress: Progress
                     ) -> tuple[Architecture, list[LoopStep], LatencyEstimator]:
    """The searched architecture after the closed loop (``derived`` in the checkpoint): returns it, the loop's
    steps, and the estimator (a model that :func:`~hwnas.search.aim.refits` comes back refitted with the loop's
    measurements; any other unchanged, its target stepped instead)."""
    if refits(estimator):
        arch, log, refitted = _aim(space, estimator, target_ms, log_probs, device, config, checkpoint)
        return arch, [LoopStep.from_dict(step) for step in log], refitted
    decode = lambda t: decode_under_target(space, log_probs, estimator, t)  # noqa: E731
    fastest = fastest_decoded(space, log_probs, estimator)
    ceiling_ms = estimator.latency_ms(decode(slowest_ms) or fastest)
    with _loop_meter(device, space, estimator, config) as meter:
        arch, steps = meet_on_device(space, estimator, target_ms, decode, fastest, ceiling_ms, device, config,
                                     progress=progress, meter=meter, **_replay_table(checkpoint, "derived"))
    return arch, steps, estimator


def _aim(space: SearchSpace, predictor: Any, target_ms: float, log_probs: list[list[float]],
         device: DeviceProfile, config: SearchConfig,
         checkpoint: RunCheckpoint) -> tuple[Architecture, Sequence[dict[str, Any]], Any]:
    """The closed loop that refits the model (:func:`hwnas.search.aim.aim_on_device`), paired measurements."""
    if not config.measure or config.closed_loop_steps == 0:
        decoded = decode_under_target(space, log_probs, predictor, target_ms * (1.0 - config.closed_loop_margin))
        return decoded or fastest_arch(space, predictor), [], predictor
    with PairedMeter(device, space, float(predictor.reference_ms), paired_protocol(config)) as meter:
        return aim_on_device(space, predictor, target_ms, log_probs, meter, config, known=dict(
            checkpoint.measured("derived")), on_measured=lambda key, record: checkpoint.record("derived", key, record))


def baseline_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float, device: DeviceProfile,
                       config: SearchConfig, checkpoint: RunCheckpoint,
                       progress: Progress) -> tuple[Architecture, list[LoopStep]]:
    """The uniform baseline (:func:`baseline_arch`): with a model that refits, the slowest predicted under the aim
    (else the fastest candidate), without a loop; with any other, chosen by the same closed loop as the searched
    architecture (``baseline`` in the checkpoint)."""
    uniform = baseline_candidates(space)
    if refits(estimator):
        aim = target_ms * (1.0 - config.closed_loop_margin)
        return baseline_arch(space, estimator, aim) or min(uniform, key=estimator.latency_ms), []
    by_latency = sorted(uniform, key=estimator.latency_ms)
    with _loop_meter(device, space, estimator, config) as meter:
        return meet_on_device(space, estimator, target_ms, lambda t: _slowest_within(uniform, estimator, t),
                              by_latency[0], estimator.latency_ms(by_latency[-1]), device, config, progress=progress,
                              meter=meter, **_replay_table(checkpoint, "baseline"))
