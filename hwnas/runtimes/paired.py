"""Paired measurement: time a network against a fixed reference network, alternating warm turns.

On a machine whose speed drifts (the same ONNX file measured 0.73, 1.11 and 1.67 ms within one minute here),
an absolute median is a fact about one moment. A *ratio* is not: network and reference take turns
(network, reference, network, reference, ... ``pairs`` times), so a drift slows both sides of a pair alike and
the ratio of their medians keeps what belongs to the network. Measured on this project's CPU machine on
40 networks: plain medians re-measured within +-10% for 62-70% of them, paired ratios within +-5% for 100%.
A latency is then ``ratio x reference_ms``, with the reference's quiet latency recorded once per data set.

A turn runs a model enough times to last ``min_turn_s`` (microsecond kernels are timed in small batches, a
whole network once), so the timer's resolution and the ~20 us call cost do not dominate small kernels. Every turn
starts with untimed runs (at least ``turn_warmup_runs`` and ``turn_warmup_s`` of run time): the other side's turn has
just filled the caches with its own weights and buffers, and a first run after the switch pays for that (26-64% of
a sub-millisecond network on a 32 MB-L3 AMD EPYC, differently for each network; docs/timing.md); one untimed run
was not enough for sub-millisecond networks there (their ratios sat up to 10% off ``hwnas bench``'s, several runs
brought them within a few %), while a network of tens of milliseconds is warm after one. Timed warm, each side is
on the scale of ``hwnas bench`` (the runtime's warm steady state, as onnxruntime_perf_test and benchmark_model
report it), and a ratio times the reference's warm latency is a network's warm latency. ``turn_warmup_runs=0``
gives the *cold* figure on purpose (:data:`COLD`); files measured before warm turns existed are cold
(:func:`turns_of`).

Pairing does not cancel the time slices another process takes: they add a fixed time to whichever turn they hit.
A pair whose network turn or reference turn was interrupted (:mod:`hwnas.runtimes.interruptions`) is dropped and
taken again, so the ratio uses clean turns of both sides.

The number of pairs adapts: ``pairs`` is the minimum, and while the ratio's 90% bootstrap interval is wider than
``precision`` more clean pairs are taken, up to ``max_pairs`` and ``max_s`` of turn time (docs/timing.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from hwnas.errors import HwnasError
from hwnas.runtimes.base import PreparedModel
from hwnas.runtimes.interruptions import RetimeBudget, detection_of, disturbed_runs, run_times_less_waits
from hwnas.runtimes.protocol import Stats, TimingConfig, time_chunk, warm_up


WARM, COLD_TURNS = "warm", "cold"
"""The scales of paired figures (:func:`turns_of`): warm turns (``hwnas bench``'s scale), or cold single runs."""
COLD = {"turn_warmup_runs": 0, "turn_warmup_s": 0.0}
"""``--protocol`` overrides that time each turn's first run after the switch: a model run once between other work."""
DROPPED_PER_PAIR = 4
"""A pass (or an adaptive step) of n pairs may drop up to this many times n interrupted pairs before it gives up:
it still completes when one pair in five comes clean (two busy loops on a 2-core machine drop most pairs), and its
dropped turn time stays bounded by :class:`RetimeBudget`'s max(1 s, the clean turns' time)."""
NOISY_CI_FACTOR = 2.0
"""A measurement bounded short of ``precision`` is ``noisy`` only when its interval is wider than this many times
``precision``: on the quiet development VM a sub-millisecond network often stopped at 160 pairs with +-2.2-2.8%
(``ci_pct`` records it), and re-measured within +-5% all the same (docs/timing.md)."""
_TurnRuns = tuple[tuple[int, int], tuple[int, int]]
"""(timed, untimed) runs per turn of the network and of the reference."""
BOOTSTRAP_RESAMPLES = 400
BOOTSTRAP_SEED = 0
"""The ratio's interval: a percentile bootstrap over pairs with this many resamples of a freshly seeded generator,
so a measurement's figures depend on its turns only."""


def turns_of(protocol: Mapping[str, Any] | None) -> str:
    """:data:`WARM` or :data:`COLD_TURNS` for a stored protocol (a set's, a predictor's training data): a protocol
    without ``turn_warmup_runs`` was written before warm turns existed, and timed every turn's first run."""
    runs = (protocol or {}).get("turn_warmup_runs", 0)
    return WARM if isinstance(runs, int) and not isinstance(runs, bool) and runs >= 1 else COLD_TURNS


@dataclass(frozen=True)
class PairedProtocol(TimingConfig):
    """How a network is timed against the reference.

    Attributes:
        pairs: turns of each side (network, reference, network, ...); 40 re-measured within +-5% here.
        warmup_runs: untimed runs of each side before its pairs.
        warmup_s: and at least this much untimed run time per side.
        min_turn_s: a turn runs its model ``ceil(min_turn_s / per-run time)`` times (at least once) and counts
            the mean; a whole network is one run per turn, a 5 us kernel about a hundred.
        max_turn_runs: at most this many runs per turn.
        noise_threshold: the ratios of the first and the second half of the pairs agree within this relative
            difference, else the network is measured again (``max_remeasure`` times) and flagged ``noisy``.
        max_remeasure: extra passes of ``pairs`` for a network whose halves disagree.
        turn_warmup_runs: untimed runs at the start of every turn, so each side is timed warm (its weights and
            buffers back in the cache after the other side's turn), as ``hwnas bench`` times it; 0 times the first
            run after the switch too: the *cold* figure of a model run once between other work (``turn_warmup_s``
            is then ignored).
        turn_warmup_s: and at least this much untimed run time per turn (at most ``max_turn_runs`` runs): a
            sub-millisecond network needs several runs to be back at its steady state, one of 20 ms does not.
        precision: the target relative half-width of the ratio's 90% bootstrap interval (pairs resampled jointly):
            while wider, more clean pairs are taken in steps of ``pairs // 2``; 0 turns adaptation off (a fixed
            ``pairs``, the protocol before it). A sub-millisecond network re-measured within 4.1% (median) from 30
            pairs on a noisy 2-core machine, so a fixed count is not enough there.
        max_pairs: adaptation stops at this many clean pairs (``pairs`` is always taken, and each halves pass).
        max_s: and once this much turn time (timed and untimed runs of both sides, dropped pairs included) is
            spent on the network. Bounded with an interval over :data:`NOISY_CI_FACTOR` x ``precision``: ``noisy``,
            the reason naming the figures.

    Halves and adaptation: each pass (the first, or one taken because the halves disagreed) is followed by the
    adaptive steps, then the halves check runs on every clean pair so far. More pairs make the halves' medians
    steadier, so noise alone rarely fails the check; a real shift of the ratio (a change of the machine's state
    that pairing does not cancel) still does, and gets its extra pass, after which adaptation goes on within the
    same ``max_pairs`` / ``max_s`` (they bound the whole measurement, not each pass).
    """

    pairs: int = 40
    warmup_runs: int = 5
    warmup_s: float = 0.02
    min_turn_s: float = 0.0005
    max_turn_runs: int = 200
    noise_threshold: float = 0.05
    max_remeasure: int = 1
    turn_warmup_runs: int = 1
    turn_warmup_s: float = 0.005
    precision: float = 0.02
    max_pairs: int = 160
    max_s: float = 10.0

    _LABEL: ClassVar[str] = "paired protocol"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pairs < 4:
            raise HwnasError(f"paired protocol: field 'pairs' must be at least 4, got {self.pairs}")
        if self.max_turn_runs < 1:
            raise HwnasError("paired protocol: field 'max_turn_runs' must be at least 1")


@dataclass
class PairedStats:
    """One network measured against the reference: the ratio of medians, and each side's own statistics.

    ``network`` and ``reference`` are the usual :class:`Stats` of the per-turn times (ms per run) during the
    pairs; ``half_ratios`` are the ratios of the first and second half of the pairs (the agreement check).
    ``discarded``: pairs dropped because a turn was interrupted, and taken again (each side's ``discarded``: its
    own interrupted turns); ``noisy_reason``: why ``noisy``. ``ratio_all``: the ratio of medians over *all* pairs
    taken, the dropped ones included (what the measurement would have said without detection); ``clean_pairs``:
    the clean pairs the ratio comes from; ``ci_pct``: the half-width of the ratio's 90% bootstrap interval, in
    percent of the ratio (only when the protocol's ``precision`` asked for it). The last three are None in files
    written before them, and written only when set, so those files load and write back unchanged.
    """

    ratio: float
    network: Stats
    reference: Stats
    half_ratios: list[float]
    noisy: bool = False
    remeasured: int = 0
    discarded: int = 0
    noisy_reason: str = ""
    ratio_all: float | None = None
    clean_pairs: int | None = None
    ci_pct: float | None = None

    def latency_ms(self, reference_ms: float) -> float:
        return self.ratio * reference_ms

    def to_dict(self) -> dict[str, Any]:
        optional = {"ratio_all": self.ratio_all, "clean_pairs": self.clean_pairs, "ci_pct": self.ci_pct}
        return {"ratio": self.ratio, "network": self.network.to_dict(), "reference": self.reference.to_dict(),
                "half_ratios": list(self.half_ratios), "noisy": self.noisy, "remeasured": self.remeasured,
                **({"discarded": self.discarded} if self.discarded else {}),
                **({"noisy_reason": self.noisy_reason} if self.noisy_reason else {}),
                **{name: value for name, value in optional.items() if value is not None}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "paired stats") -> PairedStats:
        if not isinstance(data, Mapping):
            raise HwnasError(f"{source}: expected an object with ratio, network, reference")
        for name in ("ratio", "network", "reference"):
            if name not in data:
                raise HwnasError(f"{source}: missing field {name!r}")
        ratio = data["ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < math.inf:
            raise HwnasError(f"{source}: field 'ratio': expected a positive number, got {ratio!r}")
        return cls(ratio=float(ratio), network=Stats.from_dict(data["network"], f"{source}: network"),
                   reference=Stats.from_dict(data["reference"], f"{source}: reference"),
                   half_ratios=[float(v) for v in data.get("half_ratios", [])], noisy=bool(data.get("noisy", False)),
                   remeasured=int(data.get("remeasured", 0)), discarded=int(data.get("discarded", 0)),
                   noisy_reason=str(data.get("noisy_reason", "")), **_optional_fields(data, source))


def _optional_fields(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``ratio_all``, ``clean_pairs`` and ``ci_pct`` where present (None otherwise), checked."""
    values: dict[str, Any] = {}
    for name, kind in (("ratio_all", float), ("clean_pairs", int), ("ci_pct", float)):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf or (
                kind is int and value != int(value)):
            raise HwnasError(f"{source}: field {name!r}: expected a non-negative number, got {value!r}")
        values[name] = kind(value)
    return values


def measure_paired(
    prepared: Mapping[str, PreparedModel],
    reference: PreparedModel,
    protocol: PairedProtocol = PairedProtocol(),
    on_done: Callable[[str, PairedStats], None] | None = None,
) -> dict[str, PairedStats]:
    """Measure every prepared model against ``reference`` in alternating turns; see the module docstring.

    Models are measured one after the other, each with its own warm-up of both sides (a network and the
    reference share the caches, so each warm-up restores the pair's state). ``on_done(key, stats)`` is called as
    soon as a model's statistics are final.
    """
    results: dict[str, PairedStats] = {}
    for key, model in prepared.items():
        stats = _measure_one(model, reference, protocol)
        results[key] = stats
        if on_done is not None:
            on_done(key, stats)
    return results


@dataclass
class _Pairs:
    """Clean turns (mean seconds per run) of both sides, every pair taken, and the evidence of what was dropped."""

    net: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    all_net: list[float] = field(default_factory=list)  # every pair taken, dropped ones included: ratio_all
    all_ref: list[float] = field(default_factory=list)
    dropped: int = 0  # pairs
    dropped_net: int = 0  # interrupted network turns
    dropped_ref: int = 0
    turn_s: float = 0.0  # run time of every turn, untimed runs and dropped pairs included: max_s
    short: list[str] = field(default_factory=list)
    detection: str = ""


def _measure_one(model: PreparedModel, reference: PreparedModel, protocol: PairedProtocol) -> PairedStats:
    """Passes of ``pairs`` clean pairs, each followed by the adaptive steps, until the halves agree (or
    ``max_remeasure`` extra passes); see :class:`PairedProtocol` for how the two interact."""
    pairs, passes, bound = _Pairs(), 0, ""
    while True:
        runs = (_turn_runs(model, protocol), _turn_runs(reference, protocol))
        complete = _take_pairs(pairs, model, reference, runs, protocol, protocol.pairs)
        bound = _adapt(pairs, model, reference, runs, protocol) if complete and protocol.precision > 0 else ""
        passes += 1
        halves = _half_ratios(pairs.net, pairs.ref)
        difference = abs(halves[0] - halves[1]) / min(halves)
        if difference <= protocol.noise_threshold or passes > protocol.max_remeasure:
            break
    reasons = list(pairs.short)
    if difference > protocol.noise_threshold:
        reasons.insert(0, f"halves disagree: ratios {halves[0]:.4g} and {halves[1]:.4g} differ by {difference:.1%} "
                          f"(> {protocol.noise_threshold:.1%}) after {passes - 1} extra passes")
    ci = _ci_half_width(pairs.net, pairs.ref) if protocol.precision > 0 else None
    if ci is not None and ci > NOISY_CI_FACTOR * protocol.precision:
        reasons.append(f"ratio +-{ci:.1%} (90% bootstrap) after {len(pairs.net)} pairs, asked "
                       f"+-{protocol.precision:.1%}" + (f" ({bound})" if bound else ""))
    return _stats(pairs, protocol, halves, passes, reasons, ci)


def _stats(pairs: _Pairs, protocol: PairedProtocol, halves: list[float], passes: int, reasons: list[str],
           ci: float | None) -> PairedStats:
    net_ms, ref_ms = np.asarray(pairs.net) * 1e3, np.asarray(pairs.ref) * 1e3
    return PairedStats(
        ratio=float(np.median(net_ms) / np.median(ref_ms)),
        network=Stats.from_samples(list(net_ms / 1e3), [float(np.median(net_ms))], discarded=pairs.dropped_net,
                                   detection=pairs.detection),
        reference=Stats.from_samples(list(ref_ms / 1e3), [float(np.median(ref_ms))], discarded=pairs.dropped_ref,
                                     detection=pairs.detection),
        half_ratios=halves, noisy=bool(reasons), remeasured=passes - 1, discarded=pairs.dropped,
        noisy_reason="; ".join(reasons), ratio_all=float(np.median(pairs.all_net) / np.median(pairs.all_ref)),
        clean_pairs=len(pairs.all_net) - pairs.dropped, ci_pct=None if ci is None else round(ci * 100, 4),
    )


def _adapt(pairs: _Pairs, model: PreparedModel, reference: PreparedModel, runs: _TurnRuns,
           protocol: PairedProtocol) -> str:
    """Steps of ``pairs // 2`` clean pairs while the ratio's interval is wider than ``precision``, within
    ``max_pairs`` and ``max_s``; returns the bound that stopped it ("" when the precision was reached, or a step
    came up short of clean pairs, which its own reason reports)."""
    step = max(1, protocol.pairs // 2)
    while _ci_half_width(pairs.net, pairs.ref) > protocol.precision:
        room = protocol.max_pairs - len(pairs.net)
        per_pair_s = pairs.turn_s / max(len(pairs.all_net), 1)
        affordable = math.floor((protocol.max_s - pairs.turn_s) / per_pair_s) if per_pair_s > 0 else step
        if room <= 0:
            return f"max_pairs {protocol.max_pairs} reached"
        if affordable < 1:
            return f"max_s {protocol.max_s:g} s of turns reached"
        if not _take_pairs(pairs, model, reference, runs, protocol, min(step, room, affordable)):
            return ""
    return ""


def _ci_half_width(net: list[float], ref: list[float]) -> float:
    """Half the width of the 90% percentile-bootstrap interval of median(net) / median(ref), relative to that
    ratio: pairs resampled jointly (a pair's two turns share the machine's moment), vectorized."""
    net_a, ref_a = np.asarray(net, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if net_a.size < 2:
        return math.inf
    index = np.random.default_rng(BOOTSTRAP_SEED).integers(0, net_a.size, (BOOTSTRAP_RESAMPLES, net_a.size))
    ratios = np.median(net_a[index], axis=1) / np.median(ref_a[index], axis=1)
    low, high = np.percentile(ratios, [5, 95])
    return float((high - low) / 2 / (np.median(net_a) / np.median(ref_a)))


def _take_pairs(pairs: _Pairs, model: PreparedModel, reference: PreparedModel, runs: _TurnRuns,
                protocol: PairedProtocol, count: int) -> bool:
    """Alternate turns until ``count`` clean pairs are added to ``pairs``, dropping a pair whose turn of either
    side was interrupted, within a :class:`RetimeBudget` of ``DROPPED_PER_PAIR * count`` pairs; a pass left with
    fewer than 2 clean pairs keeps its dropped ones (its figures are then flagged noisy). Returns whether all
    ``count`` came clean."""
    budget, clean, clean_s, dropped, dropped_s = RetimeBudget(DROPPED_PER_PAIR * count), 0, 0.0, [], 0.0
    while clean < count:
        if budget.exhausted(len(dropped), dropped_s, clean_s):
            pairs.short.append(f"{clean} clean pairs of {count} asked; {len(dropped)} pairs with an "
                               "interrupted turn dropped")
            break
        net, net_bad, net_less = _turn(model, *runs[0], pairs)
        ref, ref_bad, ref_less = _turn(reference, *runs[1], pairs)
        pairs.all_net.append(net)
        pairs.all_ref.append(ref)
        if net_bad or ref_bad:
            dropped.append((net_less, ref_less))
            dropped_s += net * runs[0][0] + ref * runs[1][0]
            pairs.dropped_net, pairs.dropped_ref = pairs.dropped_net + net_bad, pairs.dropped_ref + ref_bad
            continue
        pairs.net.append(net)
        pairs.ref.append(ref)
        clean, clean_s = clean + 1, clean_s + net * runs[0][0] + ref * runs[1][0]
    pairs.dropped += len(dropped)
    if clean < 2:  # a run longer than the scheduler's slice beside a busy loop is never clean: its time less waits
        pairs.net += [net for net, _ in dropped]
        pairs.ref += [ref for _, ref in dropped]
        pairs.short.append("the ratio uses interrupted turns' times less their waits for a CPU")
    return clean == count


def _turn_runs(model: PreparedModel, protocol: PairedProtocol) -> tuple[int, int]:
    """Warm the model up and return how many timed runs one turn needs to last ``min_turn_s``, and how many
    untimed runs start it (:attr:`PairedProtocol.turn_warmup_runs` and ``turn_warmup_s``)."""
    chunk = max(1, min(protocol.warmup_runs, 32))
    times = warm_up(model, protocol.warmup_runs, protocol.warmup_s, lambda runs, elapsed: chunk)
    per_run = max(float(np.median(times or time_chunk(model, 1))), 1e-9)  # no warm-up asked: one run to size turns
    timed = max(1, min(protocol.max_turn_runs, math.ceil(protocol.min_turn_s / per_run)))
    if protocol.turn_warmup_runs == 0:
        return timed, 0
    by_time = min(protocol.max_turn_runs, math.ceil(protocol.turn_warmup_s / per_run))
    return timed, max(protocol.turn_warmup_runs, by_time)


def _turn(model: PreparedModel, runs: int, untimed: int, pairs: _Pairs) -> tuple[float, bool, float]:
    """Mean seconds per run of one turn after ``untimed`` warm runs, whether any of its timed runs was interrupted
    (noting the detection and adding the turn's run time to ``pairs.turn_s``), and the mean less the calling
    thread's waits for a CPU (:func:`~hwnas.runtimes.interruptions.run_times_less_waits`)."""
    if untimed:
        pairs.turn_s += sum(time_chunk(model, untimed))
    times = time_chunk(model, runs)
    pairs.detection = pairs.detection or detection_of(times)
    pairs.turn_s += sum(times)
    return sum(times) / len(times), any(disturbed_runs(times)), sum(run_times_less_waits(times)) / len(times)


def _half_ratios(net: list[float], ref: list[float]) -> list[float]:
    half = len(net) // 2
    return [float(np.median(net[:half]) / np.median(ref[:half])), float(np.median(net[half:]) / np.median(ref[half:]))]
