"""The measurement protocol: warm-up, interleaved rounds, statistics and noise handling.

It follows the practice of TFLite's ``benchmark_model`` (warm-up runs, then at least N runs *and* at least T
seconds), trtexec (a warm-up duration, then timed iterations with percentiles) and nn-Meter (repeat and check
that repeated measurements agree). On top of that, rounds are *interleaved*: every round visits all models in a
seeded shuffled order, so a burst of background load hits one round of several models instead of all rounds of
one model, and a model whose rounds disagree is measured again.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import numpy as np
from torch import nn

from hwnas.checks import check_finite, check_known, check_required, check_type, dataclass_hints
from hwnas.errors import HwnasError
from hwnas.runtimes.base import PreparedModel, Runtime
from hwnas.runtimes.interruptions import RetimeBudget, detection_of, disturbed_runs

STAT_FIELDS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "n")
"""The statistics every :class:`Stats` record holds (the rest: evidence with defaults)."""
_OMITTED_AT_DEFAULT = {"discarded": 0, "noisy_reason": "", "detection": ""}
"""Fields newer than the shipped files: written only when set, so an old record round-trips unchanged."""
_MAX_CHUNK = 32  # timed runs per time_runs() call: small enough to stop soon after min_time_s is reached


_Config = TypeVar("_Config", bound="TimingConfig")


@dataclass(frozen=True)
class TimingConfig:
    """Base of the timing protocols' settings: every field a finite non-negative number, an integer where it is
    declared ``int``, read from plain JSON/TOML; errors are one line starting with ``_LABEL``."""

    _LABEL: ClassVar[str] = "protocol"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise HwnasError(f"{self._LABEL}: field {f.name!r} must be a non-negative integer, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise HwnasError(f"{self._LABEL}: field {f.name!r} must be a non-negative number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[_Config], data: Mapping[str, Any], source: str | None = None) -> _Config:
        """Build from plain JSON/TOML; missing fields take their defaults, unknown fields are an error.

        Args:
            data: field -> value (an integer is taken for a float field).
            source: where ``data`` comes from, named in error messages (e.g. ``"pixel7.toml: [protocol]"``).
        """
        source = source or cls._LABEL
        check_known(data, [f.name for f in dataclasses.fields(cls)], source)
        values = {key: float(value) if _is_float_field(cls, key) and _is_number(value) else value
                  for key, value in data.items()}
        try:
            return cls(**values)
        except HwnasError as error:
            raise HwnasError(f"{source}: {str(error).removeprefix(cls._LABEL + ': ')}") from None


@dataclass(frozen=True)
class Protocol(TimingConfig):
    """How each model is timed. All budgets are per visit (one model, one round).

    Attributes:
        warmup_runs: untimed runs before each visit's timed runs (caches, lazy allocation, XNNPACK packing,
            cuDNN autotuning); TFLite's benchmark_model defaults to 1, we re-warm after every other model.
        warmup_s: warm-up continues until this much run time has passed too (trtexec's ``--warmUp``, 200 ms
            there; 50 ms suffices for single ops on a CPU).
        min_runs: at least this many timed runs per visit (benchmark_model's ``--num_runs`` is 50 per process).
        min_time_s: and at least this much timed run time per visit (benchmark_model's ``--min_secs``, 1 s
            there for a whole network; 0.1 s per op and round keeps a table of hundreds of ops to minutes).
        max_runs: at most this many timed runs per visit (bounds the visit of a microsecond op).
        rounds: visits per model, interleaved with the other models; the statistics come from ``rounds`` rounds.
        noise_threshold: rounds agree when the relative spread (max - min) / median of their medians is at
            most this (10%: a burst on this kind of machine moves an op by 25-80%, normal jitter by a few %).
        max_remeasure: extra rounds for a model whose rounds disagree before it is flagged ``noisy``.
        seed: seed of the visiting order of each round.
        prime_s: untimed run time, cycling through all models, once at the start of a measurement (before the
            first round), so that the device leaves its idle state before anything is timed. A GPU idles at a
            fraction of its clock and needs a sustained load to reach it again, longer than a visit's warm-up;
            CPU devices need none (0). The CUDA device profiles set it (see docs/measurements.md).
    """

    warmup_runs: int = 10
    warmup_s: float = 0.05
    min_runs: int = 20
    min_time_s: float = 0.1
    max_runs: int = 2000
    rounds: int = 3
    noise_threshold: float = 0.10
    max_remeasure: int = 2
    seed: int = 0
    prime_s: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("min_runs", "max_runs", "rounds"):
            if getattr(self, name) < 1:
                raise HwnasError(f"protocol: field {name!r} must be at least 1, got {getattr(self, name)!r}")
        if self.max_runs < self.min_runs:
            raise HwnasError(f"protocol: field 'max_runs' ({self.max_runs}) must be >= min_runs ({self.min_runs})")


@dataclass
class Stats:
    """Latency statistics of one model, in milliseconds per invocation.

    ``median_ms`` .. ``n`` are computed over the pooled timed runs of the kept rounds (see :func:`measure`);
    ``round_medians_ms`` lists the median of every round in measurement order, kept or dropped, as evidence.
    ``std_ms`` is the population standard deviation (``ddof=0``). ``discarded``: timed runs thrown away because
    they were interrupted (:mod:`hwnas.runtimes.interruptions`) and timed again; ``noisy_reason``: why ``noisy``;
    ``detection``: how runs were checked for interruptions (``"none: <why>"`` where they were not).
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    n: int
    round_medians_ms: list[float] = field(default_factory=list)
    noisy: bool = False
    remeasured: int = 0
    discarded: int = 0
    noisy_reason: str = ""
    detection: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if k not in _OMITTED_AT_DEFAULT or v != _OMITTED_AT_DEFAULT[k]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "stats") -> Stats:
        """Rebuild from :meth:`to_dict`; unknown or missing fields, and statistics that are not finite non-negative
        numbers (a NaN or a negative latency would corrupt every sum), are an error naming the field."""
        if not isinstance(data, Mapping):
            raise HwnasError(f"{source}: expected an object of statistics")
        hints = dataclass_hints(cls)
        check_known(data, hints, source)
        check_required(data, STAT_FIELDS, source)
        for name in STAT_FIELDS:
            check_finite(data[name], source, name)
        for name in ("round_medians_ms", "noisy", "remeasured", *_OMITTED_AT_DEFAULT):
            if name in data:
                check_type(data[name], hints[name], source, name)
        values = dict(data)
        values["round_medians_ms"] = [float(v) for v in values.get("round_medians_ms", [])]
        return cls(**values)

    @classmethod
    def from_samples(cls, samples_s: list[float], round_medians_ms: list[float], noisy: bool = False,
                     remeasured: int = 0, **evidence: Any) -> Stats:
        """Statistics of timed runs given in seconds (``evidence``: ``discarded``, ``noisy_reason``, ``detection``)."""
        ms = np.asarray(samples_s, dtype=np.float64) * 1e3
        p10, median, p90 = np.percentile(ms, [10, 50, 90])
        return cls(median_ms=float(median), p10_ms=float(p10), p90_ms=float(p90), mean_ms=float(ms.mean()),
                   std_ms=float(ms.std()), n=int(ms.size), round_medians_ms=[float(m) for m in round_medians_ms],
                   noisy=noisy, remeasured=remeasured, **evidence)


def relative_spread(values: list[float]) -> float:
    """(max - min) / median: how much the per-round medians disagree."""
    median = float(np.median(values))
    return (max(values) - min(values)) / median if median > 0 else 0.0


def measure(
    prepared: Mapping[str, PreparedModel],
    protocol: Protocol = Protocol(),
    on_done: Callable[[str, Stats], None] | None = None,
) -> dict[str, Stats]:
    """Time every prepared model with interleaved rounds and return its statistics.

    Each round visits the pending keys in an order shuffled with ``protocol.seed``; each visit warms the model
    up (at least ``warmup_runs`` runs and ``warmup_s`` of run time), then times at least ``min_runs`` runs and
    ``min_time_s`` of run time (at most ``max_runs``) through :meth:`PreparedModel.time_runs`. Budgets count the
    run times the model reports, so a fake model with scripted times is measured deterministically.

    After its ``rounds`` rounds a key is *settled* when its ``rounds`` lowest round medians agree (relative
    spread <= ``noise_threshold``); otherwise it gets another round, up to ``max_remeasure`` extra rounds, and
    is flagged ``noisy`` if they still disagree.

    Final statistics pool the timed runs of the ``rounds`` rounds with the lowest medians; rounds beyond that
    (only ever the slowest ones, after a re-measurement) are dropped. Why: interference on a shared CPU only
    ever *adds* time (a burst makes a whole visit 25-80% slower, never faster), so the fastest rounds that
    agree with each other are the best estimate of the undisturbed latency, and dropping the slowest round
    removes a burst instead of averaging it in. Pooling (rather than taking the median of round medians) keeps
    p10/p90/std meaningful as the spread of single invocations. Without re-measurement no round is dropped, so
    the protocol adds no optimistic bias to quiet measurements.

    Runs that were interrupted (another process took the CPU: :mod:`hwnas.runtimes.interruptions`) are discarded
    and timed again within the visit, so the budgets count clean runs only; a visit that cannot get them within
    its :class:`~hwnas.runtimes.interruptions.RetimeBudget` keeps what it has (all its runs when none was clean),
    and the model is flagged ``noisy`` with the reason. Without interruptions, runs and figures are those of
    the protocol without detection.

    ``on_done(key, stats)`` is called once per key as soon as its statistics are final.
    """
    rng = random.Random(protocol.seed)
    _prime(prepared, protocol.prime_s)
    rounds: dict[str, list[_Visit]] = {key: [] for key in prepared}
    results: dict[str, Stats] = {}
    pending = list(prepared)
    for round_index in range(protocol.rounds + protocol.max_remeasure):
        order = pending[:]
        rng.shuffle(order)
        for key in order:
            rounds[key].append(_visit(prepared[key], protocol))
            if round_index + 1 < protocol.rounds:
                continue
            medians = [float(np.median(visit.samples)) for visit in rounds[key]]
            kept = sorted(range(len(medians)), key=medians.__getitem__)[:protocol.rounds]
            spread = relative_spread([medians[i] for i in kept])
            if spread <= protocol.noise_threshold or round_index + 1 == protocol.rounds + protocol.max_remeasure:
                stats = _final_stats(rounds[key], medians, sorted(kept), spread, protocol)
                results[key] = stats
                pending.remove(key)
                if on_done is not None:
                    on_done(key, stats)
        if not pending:
            break
    return {key: results[key] for key in prepared}


def measure_overhead(runtime: Runtime, protocol: Protocol = Protocol()) -> Stats:
    """The per-invocation cost of a minimal model on ``runtime``: one ReLU on a 1x8x1x1 input.

    The ReLU reads the model input, so no converter can fold it into a constant; its own cost is a few
    nanoseconds, so the figure is the runtime's fixed cost per call (Python binding, dispatch, delegate entry,
    kernel launch). Measuring it once lets a table's per-op sum be compared honestly with one end-to-end run,
    which pays this cost once instead of once per op.
    """
    prepared = runtime.prepare(nn.ReLU(), (1, 8, 1, 1), "overhead-relu-1x8x1x1")
    try:
        return measure({"overhead": prepared}, protocol)["overhead"]
    finally:
        prepared.close()


def time_chunk(model: PreparedModel, n: int) -> list[float]:
    """``model.time_runs(n)``; an empty answer is an error (a budget counted on it would never be reached)."""
    times = model.time_runs(n)
    if not times:
        raise HwnasError(f"{type(model).__name__}.time_runs returned no times")
    return times


def warm_up(model: PreparedModel, min_runs: int, min_s: float, chunk: Callable[[int, float], int]) -> list[float]:
    """Untimed runs until at least ``min_runs`` runs and ``min_s`` seconds of run time have passed, asking for
    ``chunk(runs so far, seconds so far)`` runs at a time; the last chunk's times (none when nothing was asked)."""
    runs, elapsed, times = 0, 0.0, []
    while runs < min_runs or elapsed < min_s:
        times = time_chunk(model, chunk(runs, elapsed))
        runs, elapsed = runs + len(times), elapsed + sum(times)
    return times


def _prime(prepared: Mapping[str, PreparedModel], seconds: float) -> None:
    """Run the models in turn, untimed, until ``seconds`` of run time have passed (nothing when 0)."""
    models, total, turn = list(prepared.values()), 0.0, 0
    while models and total < seconds:
        total, turn = total + sum(time_chunk(models[turn % len(models)], _MAX_CHUNK)), turn + 1


@dataclass
class _Visit:
    """One visit's clean timed runs (seconds), how many interrupted runs it discarded, why it has too few clean
    runs ('' when it has enough), and how runs were checked."""

    samples: list[float] = field(default_factory=list)
    discarded: int = 0
    short: str = ""
    detection: str = ""


def _visit(model: PreparedModel, protocol: Protocol) -> _Visit:
    """Warm up, then time runs until the budgets hold for the clean ones (interrupted runs are timed again)."""
    warm_up(model, protocol.warmup_runs, protocol.warmup_s,
            lambda runs, elapsed: _chunk(runs, elapsed, protocol.warmup_runs, protocol.warmup_s, 10**9))
    visit, budget, rejected = _Visit(), RetimeBudget(protocol.max_runs), []
    total = 0.0
    while ((len(visit.samples) < protocol.min_runs or total < protocol.min_time_s)
           and len(visit.samples) < protocol.max_runs):
        if budget.exhausted(len(rejected), sum(rejected), total):
            visit.short = (f"{len(visit.samples)} clean runs ({total * 1e3:.3g} ms) where {protocol.min_runs} runs and "
                           f"{protocol.min_time_s * 1e3:.3g} ms were asked; {len(rejected)} interrupted runs discarded")
            break
        chunk = _chunk(len(visit.samples), total, protocol.min_runs, protocol.min_time_s, protocol.max_runs)
        timed = time_chunk(model, chunk)
        visit.detection = visit.detection or detection_of(timed)
        flags = disturbed_runs(timed)[:chunk]
        times = [t for t, bad in zip(timed[:chunk], flags) if not bad]
        rejected += [t for t, bad in zip(timed[:chunk], flags) if bad]
        visit.samples += times
        total += sum(times)
    visit.discarded = len(rejected)
    if not visit.samples:  # every run interrupted: the figure is theirs, flagged noisy
        visit.samples = rejected
    return visit


def _final_stats(visits: list[_Visit], medians: list[float], kept: list[int], spread: float,
                 protocol: Protocol) -> Stats:
    """The statistics of the ``kept`` rounds' pooled runs, with the evidence of all rounds and why it is noisy."""
    reasons = [f"round {i + 1}: {visits[i].short}" for i in kept if visits[i].short]
    if spread > protocol.noise_threshold:
        reasons.insert(0, f"rounds disagree by {spread:.1%} (> {protocol.noise_threshold:.1%}) after "
                          f"{len(medians) - protocol.rounds} extra rounds")
    pooled = [t for i in kept for t in visits[i].samples]
    return Stats.from_samples(pooled, [m * 1e3 for m in medians], noisy=bool(reasons),
                              remeasured=len(medians) - protocol.rounds, discarded=sum(v.discarded for v in visits),
                              noisy_reason="; ".join(reasons), detection=visits[0].detection)


def _chunk(done: int, elapsed_s: float, min_runs: int, min_time_s: float, max_runs: int) -> int:
    """Runs to ask for next: what reaches both budgets at the observed speed, at most ``_MAX_CHUNK``."""
    needed = max(min_runs - done, 1)
    if done and elapsed_s < min_time_s:
        per_run = max(elapsed_s / done, 1e-9)
        needed = max(needed, math.ceil((min_time_s - elapsed_s) / per_run))
    return max(1, min(needed, _MAX_CHUNK, max_runs - done))


def _is_float_field(cls: type, name: str) -> bool:
    return any(f.name == name and f.type == "float" for f in dataclasses.fields(cls))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
