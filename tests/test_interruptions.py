"""Interrupted runs against a scripted scheduler: a fake clock and a fake wait source (time_calls' seam), where
chosen runs are interrupted (their thread waits for a CPU and the run is slow). The protocols discard exactly
those, time them again, and report what they discarded; an undisturbed script measures as before."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from hwnas.runtimes.base import PreparedModel, time_calls
from hwnas.runtimes import interruptions
from hwnas.runtimes.interruptions import (DETECTED, MIN_WAIT_S, NOT_REPORTED, NoWaits, TimedRuns, WaitReading,
                                          thread_waits)
from hwnas.runtimes.paired import PairedProtocol, PairedStats, measure_paired
from hwnas.runtimes.protocol import Protocol, Stats, measure

SLICE_S = 0.004  # what another process's time slice adds to the run it hits


class Scheduler:
    """A fake clock and the counters of a fake ``/proc``: both advance only when a scripted run runs."""

    detection = DETECTED

    def __init__(self) -> None:
        self.now, self.waited_s, self.switches = 0.0, 0.0, 0

    def clock(self) -> float:
        return self.now

    def read(self) -> WaitReading:
        return WaitReading(self.waited_s, self.switches)

    def close(self) -> None:
        pass

    def run(self, seconds: float, interrupted: bool | float) -> None:
        """One run of ``seconds``; interrupted: a time slice (True), or a wait of that many seconds without a
        switch (a float: a delayed wake-up)."""
        wait = SLICE_S if interrupted is True else float(interrupted)
        self.now += seconds + wait
        self.waited_s += wait
        self.switches += interrupted is True


class ScriptedModel(PreparedModel):
    """Runs the next (seconds, interrupted) of a script through the real ``time_calls``; ``plain`` serves the same
    times as a plain list (a runtime without detection, as the code before it)."""

    def __init__(self, script: list[tuple[float, bool | float]], scheduler: Scheduler, plain: bool = False) -> None:
        self.script, self.scheduler, self.plain, self.requests = list(script), scheduler, plain, []

    def run(self) -> None:
        raise AssertionError("the protocols call time_runs")

    def _step(self) -> None:
        self.scheduler.run(*self.script.pop(0))

    def time_runs(self, n: int) -> list[float]:
        self.requests.append(n)
        times = time_calls(self._step, n, clock=self.scheduler.clock, waits=self.scheduler)
        return list(times) if self.plain else times


def clean(times_ms: list[float], interrupted: set[int] = frozenset()) -> list[tuple[float, bool]]:
    return [(t / 1e3, i in interrupted) for i, t in enumerate(times_ms)]


def test_time_calls_records_which_runs_waited_and_how_long():
    scheduler = Scheduler()
    model = ScriptedModel([(1e-3, False), (1e-3, True), (1e-3, 3e-6), (1e-3, 2 * MIN_WAIT_S)], scheduler)
    times = model.time_runs(4)
    assert isinstance(times, TimedRuns) and times.detection == DETECTED
    assert times == pytest.approx([1e-3, 1e-3 + SLICE_S, 1e-3 + 3e-6, 1e-3 + 2 * MIN_WAIT_S])
    assert times.disturbed == [False, True, False, True]  # a 3 us wait is a wake-up, not an interruption
    assert times.waits_s == pytest.approx([0.0, SLICE_S, 3e-6, 2 * MIN_WAIT_S])


ROUNDS = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=5, min_time_s=0.0, max_runs=50, rounds=1, max_remeasure=0)


def test_rounds_discard_exactly_the_interrupted_runs_and_time_them_again():
    times = [1.0, 1.2, 5.0, 1.1, 1.3, 6.0, 0.9, 1.4]
    model = ScriptedModel(clean(times, {2, 5}), Scheduler())
    stats = measure({"m": model}, ROUNDS)["m"]
    kept_ms = [1.0, 1.2, 1.1, 1.3, 0.9]  # the first five clean runs; 1.4 is never timed
    assert stats.n == 5 and stats.median_ms == pytest.approx(float(np.median(kept_ms)))
    assert stats.mean_ms == pytest.approx(float(np.mean(kept_ms)))
    assert stats.discarded == 2 and not stats.noisy and stats.noisy_reason == ""
    assert stats.detection == DETECTED and model.script == clean([1.4])
    assert model.requests == [5, 1, 1]  # each interrupted run is asked for again


def test_an_undisturbed_script_measures_as_without_detection():
    """Three rounds, one of them slow: the same requests and figures as a runtime whose times carry no detection
    (the protocol before it), and the pooled runs of the three fastest rounds computed by hand."""
    protocol = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=3, min_time_s=0.0, max_runs=40, rounds=3,
                        noise_threshold=0.1, max_remeasure=1)
    times_s = [int(k) * 2.0**-20 for k in np.random.default_rng(0).integers(950, 1000, 20)]  # exact on the clock
    times_s[5:10] = [2000 * 2.0**-20] * 5  # the second visit slow: an extra round, the slowest dropped
    script = [(t, False) for t in times_s]
    detected, plain = ScriptedModel(script, Scheduler()), ScriptedModel(script, Scheduler(), plain=True)
    new, old = measure({"m": detected}, protocol)["m"], measure({"m": plain}, protocol)["m"]
    assert detected.requests == plain.requests == [2, 3] * 4 and detected.script == plain.script == []
    assert new.to_dict() == {**old.to_dict(), "detection": DETECTED} and old.detection == NOT_REPORTED
    visits = [times_s[5 * i + 2:5 * i + 5] for i in range(4)]  # each visit: 2 warm-up runs, 3 timed
    medians = [float(np.median(v)) for v in visits]
    expected = Stats.from_samples([t for i in (0, 2, 3) for t in visits[i]], [m * 1e3 for m in medians],
                                  remeasured=1, detection=DETECTED)
    assert new == expected and new.discarded == 0 and not new.noisy


def test_a_model_always_interrupted_ends_noisy_with_its_reason():
    stats = measure({"m": ScriptedModel(clean([1.0] * 200, set(range(200))), Scheduler())}, ROUNDS)["m"]
    assert stats.noisy and stats.discarded == 50  # at most as many discarded runs as a visit may time
    assert stats.noisy_reason.startswith("round 1: 0 clean runs")
    assert "50 interrupted runs discarded" in stats.noisy_reason
    assert stats.n == 50 and stats.median_ms == pytest.approx(1.0 + SLICE_S * 1e3)  # their figure, flagged


def test_retiming_is_bounded_in_time():
    """Slow interrupted runs: retiming stops after a second of discarded run time, far below max_runs."""
    protocol = Protocol(warmup_runs=0, warmup_s=0.0, min_runs=2, min_time_s=0.0, max_runs=2000, rounds=1,
                        max_remeasure=0)
    stats = measure({"m": ScriptedModel(clean([246.0] * 10, set(range(10))), Scheduler())}, protocol)["m"]
    assert stats.discarded == 4 and stats.noisy  # checked between chunks of 2 runs: 4 x 0.25 s = 1 s


PAIRS = PairedProtocol(pairs=4, warmup_runs=0, warmup_s=0.0, min_turn_s=0.0, noise_threshold=1.0, max_remeasure=0,
                       turn_warmup_runs=0, precision=0)


def test_a_pair_with_an_interrupted_turn_is_dropped_and_taken_again():
    # each side: one run sizes its turns, then one run per turn
    net = clean([2.0, 2.0, 2.2, 9.0, 1.8, 2.4, 2.1, 2.0], {3})
    ref = clean([1.0, 1.0, 1.1, 1.0, 1.0, 5.0, 0.9, 1.2], {5})
    stats = measure_paired({"n": ScriptedModel(net, Scheduler())}, ScriptedModel(ref, Scheduler()), PAIRS)["n"]
    # pairs: (2.0,1.0) (2.2,1.1) dropped:(9.0,1.0) (1.8,1.0) dropped:(2.4,5.0) (2.1,0.9); the 4 clean ones kept
    clean_net, clean_ref = [2.0, 2.2, 1.8, 2.1], [1.0, 1.1, 1.0, 0.9]
    assert stats.ratio == pytest.approx(float(np.median(clean_net) / np.median(clean_ref)))
    assert stats.half_ratios == pytest.approx([np.median(clean_net[:2]) / np.median(clean_ref[:2]),
                                               np.median(clean_net[2:]) / np.median(clean_ref[2:])])
    assert stats.discarded == 2 and stats.network.discarded == 1 and stats.reference.discarded == 1
    assert stats.network.n == 4 and not stats.noisy and stats.network.detection == DETECTED
    assert PairedStats.from_dict(stats.to_dict()).to_dict() == stats.to_dict()


def test_paired_undisturbed_is_as_without_detection():
    """Two passes (the halves disagree): the same figures as without detection, and the ratio by hand."""
    net_ms = [2.0, 2.0, 2.2, 1.9, 1.8, 2.4, 2.1, 2.0, 2.05, 1.95]
    ref_ms = [1.0, 1.0, 1.1, 1.0, 1.0, 1.3, 0.9, 1.2, 1.0, 1.05]
    protocol = PairedProtocol(pairs=4, warmup_runs=0, warmup_s=0.0, min_turn_s=0.0, noise_threshold=0.01,
                              turn_warmup_runs=0, precision=0)
    new = measure_paired({"n": ScriptedModel(clean(net_ms), Scheduler())}, ScriptedModel(clean(ref_ms), Scheduler()),
                         protocol)["n"]
    old = measure_paired({"n": ScriptedModel(clean(net_ms), Scheduler(), plain=True)},
                         ScriptedModel(clean(ref_ms), Scheduler(), plain=True), protocol)["n"]
    assert (new.ratio, new.half_ratios, new.remeasured, new.noisy) == (old.ratio, old.half_ratios, 1, True)
    assert new.network.to_dict() == {**old.network.to_dict(), "detection": DETECTED} and new.discarded == 0
    turns_net, turns_ref = net_ms[1:5] + net_ms[6:10], ref_ms[1:5] + ref_ms[6:10]  # each pass: one sizing run
    assert new.ratio == pytest.approx(float(np.median(turns_net) / np.median(turns_ref)))
    assert new.noisy_reason.startswith("halves disagree") and "after 1 extra passes" in new.noisy_reason


def test_a_reference_always_interrupted_ends_noisy_with_its_reason():
    net, ref = clean([2.0] * 20), clean([1.0] * 20, set(range(1, 20)))
    stats = measure_paired({"n": ScriptedModel(net, Scheduler())}, ScriptedModel(ref, Scheduler()), PAIRS)["n"]
    # a pass of 4 pairs may drop 4 x paired.DROPPED_PER_PAIR = 16 pairs before it gives up
    assert stats.noisy and stats.discarded == 16 and stats.reference.discarded == 16 and stats.network.discarded == 0
    assert stats.noisy_reason == ("0 clean pairs of 4 asked; 16 pairs with an interrupted turn dropped; the ratio "
                                  "uses interrupted turns' times less their waits for a CPU")
    # the dropped pairs stand in, flagged, each turn less its wait: the slice taken by the other process removed
    assert stats.ratio == pytest.approx(2.0) and stats.ratio_all == pytest.approx(2.0 / (1.0 + SLICE_S * 1e3))


def test_old_records_load_and_write_back_unchanged():
    old = {"median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.2, "mean_ms": 1.05, "std_ms": 0.1, "n": 60,
           "round_medians_ms": [1.0], "noisy": False, "remeasured": 0}
    stats = Stats.from_dict(old)
    assert (stats.discarded, stats.noisy_reason, stats.detection) == (0, "", "") and stats.to_dict() == old
    new = {**old, "noisy": True, "discarded": 3, "noisy_reason": "why", "detection": DETECTED}
    assert Stats.from_dict(new).to_dict() == new
    paired = {"ratio": 2.0, "network": old, "reference": old, "half_ratios": [2.0, 2.0], "noisy": False,
              "remeasured": 0}
    loaded = PairedStats.from_dict(paired)
    assert loaded.discarded == 0 and loaded.noisy_reason == "" and loaded.to_dict() == paired
    with pytest.raises(Exception, match="discarded"):
        Stats.from_dict({**old, "discarded": "three"})


def test_without_linux_nothing_is_detected_and_the_stats_say_so(monkeypatch):
    monkeypatch.setattr(interruptions.sys, "platform", "darwin")
    source = thread_waits()
    assert isinstance(source, NoWaits) and source.detection.startswith("none: interruptions are detected on Linux")
    monkeypatch.undo()
    scheduler = Scheduler()

    class Unreadable(NoWaits):
        pass

    model = ScriptedModel(clean([1.0] * 5, {1, 2}), scheduler)
    model.time_runs = lambda n: time_calls(model._step, n, clock=scheduler.clock, waits=Unreadable("no /proc"))
    stats = measure({"m": model}, ROUNDS)["m"]
    assert stats.detection == "none: no /proc" and stats.discarded == 0 and stats.n == 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the real signal is Linux's")
def test_the_real_signal_is_read_here():
    times = time_calls(lambda: sum(range(1000)), 20)
    assert times.detection == DETECTED and len(times.disturbed) == len(times.waits_s) == 20
    assert all(w >= 0 for w in times.waits_s)
