"""Adaptive pairs and the all-runs ratio, against scripted models (no real clock): a steady pair stops at ``pairs``,
a noisy one takes steps of ``pairs // 2`` until its ratio's 90% bootstrap interval is within ``precision``, a
hopeless one stops at ``max_pairs`` or ``max_s`` and is noisy with the figures; ``precision=0`` is the fixed count."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.runtimes.base import PreparedModel
from hwnas.runtimes.paired import BOOTSTRAP_RESAMPLES, PairedProtocol, PairedStats, measure_paired
from tests.test_interruptions import SLICE_S, Scheduler, ScriptedModel, clean

# one call per turn of one run (no untimed runs), and the halves check out of the way unless a test asks for it
BASE = PairedProtocol(pairs=8, warmup_runs=0, warmup_s=0.0, min_turn_s=0.0, turn_warmup_runs=0, noise_threshold=1.0,
                      max_remeasure=0, precision=0.02, max_pairs=64, max_s=1000.0)


class Served(PreparedModel):
    """Each call's runs take ``base_s`` times the next factor of a seeded log-normal noise (a plain list: nothing
    detected); ``served`` keeps every call's time, the first one the call that sizes the turns."""

    def __init__(self, base_s: float, sigma: float, seed: int, slope: float = 0.0) -> None:
        self.base_s, self.sigma, self.slope = base_s, sigma, slope
        self.rng, self.served = np.random.default_rng(seed), []

    def run(self) -> None:
        raise AssertionError("the protocol calls time_runs")

    def time_runs(self, n: int) -> list[float]:
        drift = 1 + self.slope * len(self.served)
        seconds = self.base_s * drift * float(np.exp(self.sigma * self.rng.standard_normal()))
        self.served.append(seconds)
        return [seconds] * n


def _measure(net: Served, ref: Served, protocol: PairedProtocol) -> tuple[PairedStats, np.ndarray, np.ndarray]:
    stats = measure_paired({"n": net}, ref, protocol)["n"]
    return stats, np.asarray(net.served[1:]), np.asarray(ref.served[1:])  # the turns, in order


def _bootstrap_pct(net: np.ndarray, ref: np.ndarray) -> float:
    """The interval written again: 90% percentile bootstrap of the ratio of medians, pairs resampled jointly."""
    index = np.random.default_rng(0).integers(0, net.size, (BOOTSTRAP_RESAMPLES, net.size))
    ratios = np.median(net[index], axis=1) / np.median(ref[index], axis=1)
    low, high = np.percentile(ratios, [5, 95])
    return float((high - low) / 2 / (np.median(net) / np.median(ref)) * 100)


def test_a_steady_pair_stops_at_pairs() -> None:
    stats, net, ref = _measure(Served(2e-3, 0.0, 1), Served(1e-3, 0.0, 2), BASE)
    assert net.size == ref.size == 8 and stats.clean_pairs == 8 and stats.ci_pct == 0.0
    assert stats.ratio == pytest.approx(2.0) and not stats.noisy


def test_a_noisy_pair_takes_more_pairs_until_within_precision() -> None:
    stats, net, ref = _measure(Served(2e-3, 0.05, 3), Served(1e-3, 0.0, 4), BASE)
    assert 8 < stats.clean_pairs == net.size < BASE.max_pairs and (stats.clean_pairs - 8) % 4 == 0  # steps of 4
    assert stats.ci_pct == pytest.approx(_bootstrap_pct(net, ref), abs=1e-3) and stats.ci_pct <= 2.0
    assert _bootstrap_pct(net[:-4], ref[:-4]) > 2.0  # one step fewer was not enough: it stopped when it got there
    assert stats.ratio == pytest.approx(float(np.median(net) / np.median(ref))) and not stats.noisy
    assert stats.network.n == stats.clean_pairs and stats.half_ratios == pytest.approx(
        [np.median(net[:net.size // 2]) / np.median(ref[:net.size // 2]),
         np.median(net[net.size // 2:]) / np.median(ref[net.size // 2:])])


def test_a_hopeless_pair_stops_at_max_pairs_and_says_why() -> None:
    protocol = PairedProtocol.from_dict({**BASE.to_dict(), "max_pairs": 32})
    stats, net, ref = _measure(Served(2e-3, 0.4, 5), Served(1e-3, 0.0, 6), protocol)
    assert net.size == stats.clean_pairs == 32 and stats.noisy
    ci = _bootstrap_pct(net, ref)
    assert ci > 2.0 and stats.ci_pct == pytest.approx(ci, abs=1e-3)
    assert stats.noisy_reason == f"ratio +-{ci / 100:.1%} (90% bootstrap) after 32 pairs, asked +-2.0% " \
                                 "(max_pairs 32 reached)"


def test_adaptation_is_bounded_in_turn_time() -> None:
    """10 ms turns, 0.3 s of turn time: the first pass (0.16 s) is always taken, then steps while they fit."""
    protocol = PairedProtocol.from_dict({**BASE.to_dict(), "max_s": 0.3})
    stats, net, ref = _measure(Served(10e-3, 0.3, 7), Served(10e-3, 0.0, 8), protocol)
    turn_s, pair_s = float(net.sum() + ref.sum()), float(np.max(net + ref))
    assert 8 < stats.clean_pairs < BASE.max_pairs and stats.noisy
    assert protocol.max_s - pair_s < turn_s <= protocol.max_s + pair_s  # spent, and at most one pair over
    assert stats.noisy_reason.endswith(f"after {stats.clean_pairs} pairs, asked +-2.0% (max_s 0.3 s of turns reached)")


def test_precision_zero_is_the_fixed_count() -> None:
    """The same script with adaptation off: ``pairs`` turns, the figures by hand, and no interval written; the
    same figures as an adaptive protocol that may not add a pair (max_pairs = pairs), which writes its interval."""
    off = PairedProtocol.from_dict({**BASE.to_dict(), "precision": 0})
    stats, net, ref = _measure(Served(2e-3, 0.05, 3), Served(1e-3, 0.0, 4), off)
    assert net.size == 8 and stats.clean_pairs == 8 and stats.ci_pct is None and "ci_pct" not in stats.to_dict()
    assert stats.ratio == pytest.approx(float(np.median(net) / np.median(ref))) and not stats.noisy
    capped, _, _ = _measure(Served(2e-3, 0.05, 3), Served(1e-3, 0.0, 4),
                            PairedProtocol.from_dict({**BASE.to_dict(), "max_pairs": 8}))
    assert (capped.ratio, capped.half_ratios, capped.network, capped.reference) == (
        stats.ratio, stats.half_ratios, stats.network, stats.reference)
    # bounded short of +-2% but within twice it (NOISY_CI_FACTOR): recorded in ci_pct, not noisy
    assert 2.0 < capped.ci_pct <= 4.0 and not capped.noisy and capped.noisy_reason == ""


def test_a_ratio_that_keeps_moving_is_noisy_however_many_pairs() -> None:
    """Adaptation first, then the halves check on every pair: a ratio drifting 2% a turn keeps its halves apart
    after the extra pass, and its interval wide at the bound: both reasons."""
    protocol = PairedProtocol.from_dict({**BASE.to_dict(), "noise_threshold": 0.05, "max_remeasure": 1})
    stats, _, _ = _measure(Served(2e-3, 0.0, 9, slope=0.02), Served(1e-3, 0.0, 10), protocol)
    # adapted up to max_pairs, then the extra pass of ``pairs`` (always taken whole), nothing more
    assert stats.noisy and stats.remeasured == 1 and stats.network.n == stats.clean_pairs == protocol.max_pairs + 8
    assert stats.noisy_reason.startswith("halves disagree") and "(90% bootstrap)" in stats.noisy_reason


def test_ratio_all_counts_the_dropped_pairs_too() -> None:
    net_ms = [2.0, 2.0, 2.2, 2.0, 1.8, 2.4, 2.1, 2.0]  # each side: one sizing run, then one run per turn
    ref_ms = [1.0, 1.0, 1.1, 1.0, 1.0, 0.9, 0.9, 1.2]
    net, ref = clean(net_ms, {3}), clean(ref_ms, {5})
    protocol = PairedProtocol(pairs=4, warmup_runs=0, warmup_s=0.0, min_turn_s=0.0, noise_threshold=1.0,
                              max_remeasure=0, turn_warmup_runs=0, precision=0)
    stats = measure_paired({"n": ScriptedModel(net, Scheduler())}, ScriptedModel(ref, Scheduler()), protocol)["n"]
    all_net, all_ref = np.asarray(net_ms[1:7]), np.asarray(ref_ms[1:7])
    all_net[2] += SLICE_S * 1e3  # the interrupted turns as timed, slice included
    all_ref[4] += SLICE_S * 1e3
    assert stats.discarded == 2 and stats.clean_pairs == 4
    assert stats.ratio_all == pytest.approx(float(np.median(all_net) / np.median(all_ref)))
    assert stats.ratio == pytest.approx(float(np.median([2.0, 2.2, 1.8, 2.1]) / np.median([1.0, 1.1, 1.0, 0.9])))
    assert stats.ratio_all != pytest.approx(stats.ratio)


def test_a_pass_completes_when_most_pairs_are_interrupted() -> None:
    """Three pairs in four interrupted (two busy loops): the pass still gets its clean pairs (it stopped after
    ``pairs`` dropped ones before), and drops at most 4 x pairs."""
    net = clean([2.0] * 33, {i for i in range(1, 33) if i % 4})
    protocol = PairedProtocol(pairs=8, warmup_runs=0, warmup_s=0.0, min_turn_s=0.0, noise_threshold=1.0,
                              max_remeasure=0, turn_warmup_runs=0)
    stats = measure_paired({"n": ScriptedModel(net, Scheduler())}, ScriptedModel(clean([1.0] * 33), Scheduler()),
                           protocol)["n"]
    assert stats.clean_pairs == 8 and stats.discarded == 24 and not stats.noisy and stats.ratio == pytest.approx(2.0)
    hopeless = clean([2.0] * 40, set(range(1, 40)))
    stats = measure_paired({"n": ScriptedModel(hopeless, Scheduler())}, ScriptedModel(clean([1.0] * 40), Scheduler()),
                           protocol)["n"]
    assert stats.noisy and stats.discarded == 32 and stats.clean_pairs == 0
    assert stats.noisy_reason == ("0 clean pairs of 8 asked; 32 pairs with an interrupted turn dropped; the ratio "
                                  "uses interrupted turns' times less their waits for a CPU")


def test_new_fields_round_trip_and_old_records_are_unchanged() -> None:
    stats, _, _ = _measure(Served(2e-3, 0.05, 3), Served(1e-3, 0.0, 4), BASE)
    data = stats.to_dict()
    assert {"ratio_all", "clean_pairs", "ci_pct"} <= set(data) and data["ratio_all"] == stats.ratio
    assert PairedStats.from_dict(data) == stats and PairedStats.from_dict(data).to_dict() == data
    old = {"ratio": 2.0, "network": stats.network.to_dict(), "reference": stats.reference.to_dict(),
           "half_ratios": [2.0, 2.0], "noisy": False, "remeasured": 0}
    loaded = PairedStats.from_dict(old)
    assert (loaded.ratio_all, loaded.clean_pairs, loaded.ci_pct) == (None, None, None) and loaded.to_dict() == old
    with pytest.raises(HwnasError, match="field 'ci_pct': expected a non-negative number, got 'wide'"):
        PairedStats.from_dict({**old, "ci_pct": "wide"}, "set.json: row 3")
    assert PairedProtocol.from_dict({"precision": 0, "max_pairs": 80, "max_s": 5}).max_s == 5.0
    with pytest.raises(HwnasError, match="field 'precision' must be a non-negative number"):
        PairedProtocol.from_dict({"precision": -0.01}, "--protocol")
