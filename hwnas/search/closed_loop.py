"""The closed loop on the device, before training (latency does not depend on the weights): the searched
architecture and the uniform baseline are decoded, measured and decoded again until one measures just under T.

One loop (:func:`close_loop`) measures (each architecture once, within the budget: :class:`LoopMeter`), records
every measurement in the run's checkpoint (replayed on resume) and decides when to stop; what it tries next comes
from a small policy object (:class:`LoopPolicy`), chosen by what the latency model can do:

* :class:`~hwnas.search.aim.RefitPolicy` for a model that :func:`~hwnas.search.aim.refits` (``supports_refit`` at a
  known reference level): every measurement joins the predictor's rows and the refitted predictor decodes the next
  architecture under the aim;
* :class:`StepPolicy` for any other model (a table, a transfer or kernel predictor): the model's target is stepped
  by trial, bracketed between targets decoded over and under the aim.

The loop measures paired with the reference network where the model has a reference level
(:func:`~hwnas.search.aim.latency_level`), else end to end; each measurement is one typed record
(:class:`~hwnas.search.records.Measurement` or :class:`~hwnas.search.records.PairedMeasurement`).
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Mapping, Protocol

from hwnas.devices import DeviceProfile
from hwnas.errors import RuntimeUnavailable
from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.aim import RefitPolicy, latency_level, refits
from hwnas.search.checkpoint import RunCheckpoint
from hwnas.search.decoders import as_decoder
from hwnas.search.measure import PairedMeter, measure_networks, paired_protocol
from hwnas.search.progress import Progress
from hwnas.search.records import AnyMeasurement, LoopStep, arch_id, as_measurement
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import Architecture, SearchSpace

BRACKET_CLOSED = 1.002  # tightest over / loosest under table target below which no target lies between them
MAX_STEP_EXPONENT = 16.0  # a step that decodes the same architecture again is doubled, up to (aim/ms)^16

Proposal = tuple[float, Architecture]  # the model's latency target and the architecture decoded under it
def baseline_candidates(space: SearchSpace) -> list[Architecture]:
    """The space's uniform MobileNetV2-like architectures (:meth:`~hwnas.spaces.SearchSpace.uniform_archs`)."""
    return space.uniform_archs()


def _slowest_within(archs: list[Architecture], estimator: LatencyEstimator, target_ms: float) -> Architecture | None:
    fitting = [a for a in archs if estimator.latency_ms(a) <= target_ms]
    return max(fitting, key=estimator.latency_ms) if fitting else None


def _within_memory(space: SearchSpace, archs: list[Architecture], config: SearchConfig) -> list[Architecture]:
    """``archs`` within the config's memory bound (all of them when there is none, or when none fits)."""
    from hwnas.search.memory_bound import MemoryBound

    memory = MemoryBound.of(space, config.max_memory_mb, config.max_params_mb)
    if memory is None:
        return archs
    return [a for a in archs if memory.fits(a)] or archs


def baseline_arch(space: SearchSpace, estimator: LatencyEstimator, target_ms: float) -> Architecture | None:
    """The same-budget uniform baseline: the slowest of :func:`baseline_candidates` whose estimated latency is
    <= ``target_ms`` (deeper first on ties), None if none fits. The search run then corrects it on the device
    with the same closed loop as the searched architecture."""
    return _slowest_within(baseline_candidates(space), estimator, target_ms)


class LoopMeter:
    """Measures each architecture of one closed loop once (``measure(arch)``), at most ``budget`` of them;
    ``known`` (architecture id -> record or its JSON) are replayed instead of measured, ``on_measured(arch_id,
    record)`` hears of new ones (the run's checkpoint). Calling it returns the record, or None when the budget is
    spent or the runtime is unavailable."""

    def __init__(self, measure: Callable[[Architecture], AnyMeasurement], budget: int, *,
                 known: Mapping[str, AnyMeasurement | Mapping[str, Any]] | None = None,
                 on_measured: Callable[[str, AnyMeasurement], None] | None = None,
                 progress: Progress = Progress()) -> None:
        self.measure, self.budget, self.on_measured, self.progress = measure, budget, on_measured, progress
        self.known = {key: as_measurement(value) for key, value in (known or {}).items()}
        self.measured: dict[tuple[str, ...], tuple[Architecture, AnyMeasurement]] = {}  # by choices, in order

    @property
    def spent(self) -> bool:
        return len(self.measured) >= self.budget

    def __call__(self, arch: Architecture) -> AnyMeasurement | None:
        if arch.choices in self.measured:
            return self.measured[arch.choices][1]
        if self.spent:
            return None
        key = arch_id(arch)
        if key in self.known:
            measurement = self.known[key]
        else:
            try:
                measurement = self.measure(arch)
            except RuntimeUnavailable:
                return None
            if self.on_measured is not None:
                self.on_measured(key, measurement)
        self.measured[arch.choices] = (arch, measurement)
        self.progress.say(f"closed loop: measured {measurement.median_ms:.4g} ms ({len(self.measured)} of at most "
                          f"{self.budget})")
        return measurement

    def chosen(self, aim_ms: float) -> Architecture | None:
        """The slowest architecture measured under ``aim_ms``, else the fastest measured (the first measured on
        ties), None before any."""
        pairs = list(self.measured.values())
        under = [(arch, m) for arch, m in pairs if m.median_ms <= aim_ms]
        pick = max(under, key=lambda p: p[1].median_ms) if under else min(pairs, key=lambda p: p[1].median_ms,
                                                                            default=None)
        return pick[0] if pick else None


def device_measure(space: SearchSpace, device: DeviceProfile | None, config: SearchConfig,
                   meter: Any = None) -> Callable[[Architecture], AnyMeasurement]:
    """How the loop measures one architecture: paired with ``meter`` (a :class:`PairedMeter`, or anything with its
    ``measure(nets, source)``) when given, else end to end on ``device`` (:func:`measure_networks`)."""
    def measure(arch: Architecture) -> AnyMeasurement:
        nets = {"candidate": space.build(arch)}
        if meter is not None:
            return as_measurement(meter.measure(nets, "closed loop")["candidate"])
        kept, _ = measure_networks(device, nets, space.input_shape, config, False)
        return kept["candidate"]
    return measure


class LoopPolicy(Protocol):
    """The pluggable part of the closed loop: which latency target, and so which architecture, it tries next.

    ``estimator`` is the model the steps' estimates come from (a refitting policy replaces it as it learns);
    ``logs_repeats``: whether an architecture decoded again (not consecutively) is logged again."""

    estimator: Any
    logs_repeats: bool

    def first(self) -> Proposal:
        """The first target and the architecture decoded under it."""

    def next(self, target_ms: float, arch: Architecture, measured_ms: float, new: bool,
             meter: LoopMeter) -> Proposal | None:
        """What to try after ``arch`` (decoded under ``target_ms``, newly measured when ``new``) measured
        ``measured_ms`` outside the accepted band; None ends the loop."""

    def fallback(self) -> Architecture:
        """The result when nothing was measured (a zero budget, the runtime unavailable)."""


def loop_aim(target_ms: float, margin: float) -> float:
    """What the closed loop aims at: ``(1 - margin) T``."""
    return target_ms * (1.0 - margin)


def close_loop(policy: LoopPolicy, meter: LoopMeter, target_ms: float, margin: float
               ) -> tuple[Architecture, list[LoopStep], Any]:
    """The closed loop: measure what ``policy`` proposes until one measures in the accepted band (within ``2 margin``
    under the aim ``(1 - margin) T``), the policy has nothing more to propose, or ``meter`` stops (its budget spent,
    the runtime unavailable); at most ``4 x budget`` proposals. Returns the slowest architecture measured under the
    aim (else the fastest measured; else the policy's :meth:`~LoopPolicy.fallback`), one
    :class:`~hwnas.search.records.LoopStep` per architecture decoded (a consecutive repeat once; an earlier one
    again only when ``policy.logs_repeats``), and the policy's final estimator."""
    aim = loop_aim(target_ms, margin)
    good_enough = aim * (1.0 - 2.0 * margin)
    if meter.budget == 0:
        return policy.fallback(), [], policy.estimator
    log: list[LoopStep] = []
    proposal: Proposal | None = policy.first()
    previous = None
    for _ in range(4 * meter.budget):
        if proposal is None:
            break
        target, arch = proposal
        new = arch.choices not in meter.measured
        measurement = meter(arch)
        if measurement is None:
            break
        if arch != previous and (new or policy.logs_repeats):
            log.append(LoopStep(target, policy.estimator.latency_ms(arch), arch_id(arch), measurement))
        if good_enough <= measurement.median_ms <= aim:
            break
        proposal, previous = policy.next(target, arch, measurement.median_ms, new, meter), arch
    return meter.chosen(aim) or policy.fallback(), log, policy.estimator


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


class StepPolicy:
    """The step choice of the next target, for a model that does not learn from the loop: over the aim, the table
    target is scaled down by aim/measured; far under it, up by the same ratio (a step that decodes the same
    architecture again is doubled, up to :data:`MAX_STEP_EXPONENT`); once a target over and one under are known, the
    next lies between them (:func:`_next_table_target`). A target under what ``fastest`` needs tries ``fastest``
    (the end when it was measured); a result under the aim at a target at or over ``ceiling_ms`` (from there on
    every target decodes the same) ends the loop. ``decode(target)`` is None when nothing fits."""

    logs_repeats = True

    def __init__(self, estimator: LatencyEstimator, target_ms: float, aim_ms: float,
                 decode: Callable[[float], Architecture | None], fastest: Architecture, ceiling_ms: float) -> None:
        self.estimator, self.target_ms, self.aim, self.decode = estimator, target_ms, aim_ms, decode
        self.fastest, self.ceiling_ms = fastest, ceiling_ms
        self.exponent, self.previous = 1.0, None
        self.loosest_under: float | None = None  # table targets decoded to an architecture under / over the aim
        self.tightest_over: float | None = None

    def first(self) -> Proposal:
        return self.target_ms, self.fallback()

    def fallback(self) -> Architecture:
        return self.decode(self.target_ms) or self.fastest

    def next(self, target_ms: float, arch: Architecture, measured_ms: float, new: bool,
             meter: LoopMeter) -> Proposal | None:
        if measured_ms <= self.aim:
            self.loosest_under = target_ms if self.loosest_under is None else max(self.loosest_under, target_ms)
            if target_ms >= self.ceiling_ms:
                return None
        else:
            self.tightest_over = target_ms if self.tightest_over is None else min(self.tightest_over, target_ms)
        self.exponent = min(self.exponent * 2.0, MAX_STEP_EXPONENT) if arch == self.previous else 1.0
        proposal = _next_table_target(target_ms, measured_ms, self.aim, self.exponent, self.loosest_under,
                                      self.tightest_over)
        if proposal is None:
            return None
        self.previous = arch
        decoded = self.decode(proposal)
        if decoded is None:  # tighter than the fastest architecture: try that one
            decoded, proposal = self.fastest, self.estimator.latency_ms(self.fastest)
            if decoded.choices in meter.measured:
                return None
        return proposal, decoded


def meet_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float,
                   decode: Callable[[float], Architecture | None], fastest: Architecture, ceiling_ms: float,
                   device: DeviceProfile | None, config: SearchConfig, *,
                   known: Mapping[str, AnyMeasurement | Mapping[str, Any]] | None = None,
                   on_measured: Callable[[str, AnyMeasurement], None] | None = None,
                   progress: Progress = Progress(), meter: Any = None) -> tuple[Architecture, list[LoopStep]]:
    """:func:`close_loop` with the :class:`StepPolicy`: the table target whose decoded architecture
    (``decode(table_target)``) measures on the device just under T, from ``target_ms`` on. At most
    ``config.closed_loop_steps`` measurements (none when ``config.measure`` is off); ``meter`` (a
    :class:`PairedMeter`) measures paired with the reference network, None end to end on ``device``. ``known`` and
    ``on_measured``: :class:`LoopMeter`'s. Returns the architecture and the loop's steps."""
    policy = StepPolicy(estimator, target_ms, loop_aim(target_ms, config.closed_loop_margin), decode, fastest,
                        ceiling_ms)
    budget = config.closed_loop_steps if config.measure else 0
    loop_meter = LoopMeter(device_measure(space, device, config, meter), budget, known=known,
                           on_measured=on_measured, progress=progress)
    arch, log, _ = close_loop(policy, loop_meter, target_ms, config.closed_loop_margin)
    return arch, log


def checkpointed_meter(checkpoint: RunCheckpoint, loop: str, measure: Callable[[Architecture], AnyMeasurement],
                       budget: int, progress: Progress = Progress()) -> LoopMeter:
    """The meter of ``loop``: it replays the loop's measurements recorded in the checkpoint (written by this version
    or an earlier one: both records' JSON) and records new ones."""
    return LoopMeter(measure, budget, known=checkpoint.measured(loop), progress=progress,
                     on_measured=lambda key, measurement: checkpoint.record(loop, key, measurement.to_dict()))


@contextmanager
def loop_measure(device: DeviceProfile, space: SearchSpace, estimator: LatencyEstimator,
                  config: SearchConfig) -> Iterator[Callable[[Architecture], AnyMeasurement]]:
    """How the loop measures: paired (:class:`PairedMeter`) at the model's reference level when it has one
    (:func:`~hwnas.search.aim.latency_level`) and the loop measures; end to end otherwise, or when the runtime is
    unavailable here (the loop then ends at its first measurement, as end to end)."""
    level = latency_level(estimator)
    with ExitStack() as stack:
        meter = None
        if level is not None and config.measure and config.closed_loop_steps > 0:
            try:
                meter = stack.enter_context(PairedMeter(device, space, level, paired_protocol(config)))
            except RuntimeUnavailable:
                meter = None
        yield device_measure(space, device, config, meter)


def loop_budget(config: SearchConfig) -> int:
    return config.closed_loop_steps if config.measure else 0


def loop_policy(space: SearchSpace, estimator: LatencyEstimator, target_ms: float, slowest_ms: float,
                decoder: Any, config: SearchConfig) -> LoopPolicy:
    """The searched architecture's policy, chosen by what the model can do: the
    :class:`~hwnas.search.aim.RefitPolicy` for a model that :func:`~hwnas.search.aim.refits`, else the
    :class:`StepPolicy` over the decode under the table target (from T up to the target the slowest architecture
    needs, ``slowest_ms``, where every target decodes the same). ``decoder``: a
    :class:`~hwnas.search.decoders.Decoder`, or the search's log-probabilities (decoded by their mode)."""
    aim = loop_aim(target_ms, config.closed_loop_margin)
    decoder = as_decoder(space, decoder)
    if refits(estimator):
        return RefitPolicy(space, estimator, decoder, aim, config)
    fastest = decoder.fastest(estimator)
    ceiling = estimator.latency_ms(decoder.under(estimator, slowest_ms) or fastest)
    return StepPolicy(estimator, target_ms, aim, lambda t: decoder.under(estimator, t), fastest, ceiling)


def search_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float, slowest_ms: float,
                     decoder: Any, device: DeviceProfile, config: SearchConfig,
                     checkpoint: RunCheckpoint, progress: Progress
                     ) -> tuple[Architecture, list[LoopStep], LatencyEstimator]:
    """The searched architecture after the closed loop (``derived`` in the checkpoint) with :func:`loop_policy`:
    returns it, the loop's steps, and the estimator (a model that refits comes back refitted with the loop's
    measurements; any other unchanged, its target stepped instead)."""
    policy = loop_policy(space, estimator, target_ms, slowest_ms, decoder, config)
    with loop_measure(device, space, estimator, config) as measure:
        meter = checkpointed_meter(checkpoint, "derived", measure, loop_budget(config), progress)
        return close_loop(policy, meter, target_ms, config.closed_loop_margin)


def baseline_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float, device: DeviceProfile,
                       config: SearchConfig, checkpoint: RunCheckpoint,
                       progress: Progress) -> tuple[Architecture, list[LoopStep]]:
    """The uniform baseline (:func:`baseline_arch`): with a model that refits, the slowest predicted under the aim
    (else the fastest candidate), without a loop; with any other, chosen by the same closed loop as the searched
    architecture (``baseline`` in the checkpoint). Under a memory bound, of the candidates within it when any is."""
    uniform = _within_memory(space, baseline_candidates(space), config)
    aim = loop_aim(target_ms, config.closed_loop_margin)
    if refits(estimator):
        return _slowest_within(uniform, estimator, aim) or min(uniform, key=estimator.latency_ms), []
    by_latency = sorted(uniform, key=estimator.latency_ms)
    policy = StepPolicy(estimator, target_ms, aim, lambda t: _slowest_within(uniform, estimator, t), by_latency[0],
                        estimator.latency_ms(by_latency[-1]))
    with loop_measure(device, space, estimator, config) as measure:
        meter = checkpointed_meter(checkpoint, "baseline", measure, loop_budget(config), progress)
        arch, log, _ = close_loop(policy, meter, target_ms, config.closed_loop_margin)
    return arch, log
