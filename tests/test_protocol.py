"""The measurement protocol against scripted timings: no real clock, fully deterministic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.runtimes.base import PreparedModel
from hwnas.runtimes.protocol import Protocol, Stats, measure, relative_spread

# Budgets met by run counts alone: every visit is exactly WARMUP warm-up runs then RUNS timed runs.
WARMUP, RUNS = 3, 5
EXACT = Protocol(warmup_runs=WARMUP, warmup_s=0.0, min_runs=RUNS, min_time_s=0.0, max_runs=RUNS, rounds=3,
                 noise_threshold=0.10, max_remeasure=2, seed=0)


class ScriptedModel(PreparedModel):
    """``time_runs`` returns the next values of a script (seconds); records each request for inspection."""

    def __init__(self, script: list[float], name: str = "", log: list[str] | None = None) -> None:
        self.script, self.position, self.requests = list(script), 0, []
        self.name, self.log = name, log

    def run(self) -> None:
        raise AssertionError("the protocol must only call time_runs")

    def time_runs(self, n: int) -> list[float]:
        self.requests.append(n)
        if self.log is not None:
            self.log.append(self.name)
        values = self.script[self.position:self.position + n]
        self.position += n
        assert len(values) == n, "the protocol asked for more runs than scripted"
        return values


def visits(timed_ms_per_visit: list[list[float]], warmup_s: float = 1.0) -> list[float]:
    """A script for EXACT: each visit is WARMUP (huge, must be excluded) warm-up values, then its timed values."""
    script: list[float] = []
    for timed in timed_ms_per_visit:
        assert len(timed) == RUNS
        script += [warmup_s] * WARMUP + [t / 1e3 for t in timed]
    return script


def steady(ms: float, rounds: int) -> list[list[float]]:
    return [[ms] * RUNS for _ in range(rounds)]


def test_statistics_match_numpy_and_exclude_warmup() -> None:
    rng = np.random.default_rng(3)
    timed = [list(1.0 + 0.02 * rng.standard_normal(RUNS)) for _ in range(3)]
    model = ScriptedModel(visits(timed))
    stats = measure({"op": model}, EXACT)["op"]
    pooled = np.concatenate(timed)
    assert stats.n == pooled.size == 3 * RUNS
    assert stats.median_ms == pytest.approx(np.median(pooled))
    assert stats.p10_ms == pytest.approx(np.percentile(pooled, 10))
    assert stats.p90_ms == pytest.approx(np.percentile(pooled, 90))
    assert stats.mean_ms == pytest.approx(pooled.mean())
    assert stats.std_ms == pytest.approx(pooled.std())
    assert stats.round_medians_ms == pytest.approx([np.median(t) for t in timed])
    assert not stats.noisy and stats.remeasured == 0
    assert model.position == len(model.script)  # every scripted value used: warm-ups were run, not timed


def test_burst_in_one_round_is_remeasured_and_dropped() -> None:
    burst = [[1.0] * RUNS, [1.6] * RUNS, [1.0] * RUNS, [1.0] * RUNS]
    models = {"burst": ScriptedModel(visits(burst)), "quiet": ScriptedModel(visits(steady(2.0, 3)))}
    done: list[tuple[str, Stats]] = []
    results = measure(models, EXACT, on_done=lambda key, stats: done.append((key, stats)))
    assert results["burst"].remeasured == 1 and not results["burst"].noisy
    assert results["burst"].round_medians_ms == pytest.approx([1.0, 1.6, 1.0, 1.0])
    assert results["burst"].median_ms == pytest.approx(1.0) and results["burst"].p90_ms == pytest.approx(1.0)
    assert results["burst"].n == 3 * RUNS  # the burst round is not pooled
    assert results["quiet"].remeasured == 0 and results["quiet"].median_ms == pytest.approx(2.0)
    assert sorted(key for key, _ in done) == ["burst", "quiet"]  # on_done once per key
    assert dict(done) == results


def test_persistent_disagreement_is_flagged_noisy() -> None:
    drifting = [[ms] * RUNS for ms in (1.0, 1.5, 2.0, 2.5, 3.0)]
    stats = measure({"op": ScriptedModel(visits(drifting))}, EXACT)["op"]
    assert stats.noisy and stats.remeasured == EXACT.max_remeasure
    assert stats.round_medians_ms == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert stats.median_ms == pytest.approx(1.5)  # pooled over the 3 fastest rounds (1.0, 1.5, 2.0)


def test_agreeing_rounds_keep_every_sample() -> None:
    timed = [[1.00] * RUNS, [1.05] * RUNS, [0.98] * RUNS]
    stats = measure({"op": ScriptedModel(visits(timed))}, EXACT)["op"]
    assert stats.remeasured == 0 and stats.n == 3 * RUNS
    assert stats.mean_ms == pytest.approx(np.mean(timed))


def test_time_budgets() -> None:
    # min_time_s: runs of 1/64 s need 7 runs to reach 0.1 s (6 give 0.09375); warm-up needs 0.05 s -> 4 runs of 1/64.
    protocol = Protocol(warmup_runs=1, warmup_s=0.05, min_runs=2, min_time_s=0.1, max_runs=100, rounds=1)
    model = ScriptedModel([1 / 64] * 11)
    stats = measure({"op": model}, protocol)["op"]
    assert stats.n == 7 and model.position == 11
    # max_runs caps a visit whose runs are too short to ever reach min_time_s.
    capped = ScriptedModel([1e-6] * (10 + 50))
    stats = measure({"op": capped}, dataclasses.replace(protocol, warmup_s=0.0, warmup_runs=10, max_runs=50))["op"]
    assert stats.n == 50 and max(capped.requests) <= 32


def test_rounds_are_interleaved_in_seeded_order() -> None:
    def order(seed: int) -> list[str]:
        log: list[str] = []
        models = {k: ScriptedModel(visits(steady(1.0, 3)), k, log) for k in "abcde"}
        measure(models, dataclasses.replace(EXACT, seed=seed))
        per_visit = 2  # one warm-up request and one timed request per visit
        return log[::per_visit]

    first = order(0)
    rounds = [first[i:i + 5] for i in range(0, 15, 5)]
    assert all(sorted(r) == list("abcde") for r in rounds)  # every round visits every key once
    assert len({tuple(r) for r in rounds}) > 1  # in a shuffled order
    assert order(0) == first and order(1) != first  # reproducibly, per seed


def test_empty_mapping() -> None:
    assert measure({}, EXACT) == {}


def test_relative_spread() -> None:
    assert relative_spread([1.0, 1.1, 1.2]) == pytest.approx(0.2 / 1.1)
    assert relative_spread([0.0, 0.0]) == 0.0


def test_protocol_round_trip_and_errors() -> None:
    protocol = Protocol(rounds=5, noise_threshold=0.2)
    assert Protocol.from_dict(protocol.to_dict()) == protocol
    assert Protocol.from_dict({"warmup_s": 1}).warmup_s == 1.0  # TOML integers are fine for float fields
    with pytest.raises(HwnasError, match="pixel.toml: \\[protocol\\]: unknown field 'round'"):
        Protocol.from_dict({"round": 3}, source="pixel.toml: [protocol]")
    with pytest.raises(HwnasError, match="'rounds' must be a non-negative integer"):
        Protocol.from_dict({"rounds": 2.5})
    with pytest.raises(HwnasError, match="'rounds' must be at least 1"):
        Protocol(rounds=0)
    with pytest.raises(HwnasError, match="'noise_threshold'"):
        Protocol(noise_threshold=-0.1)
    with pytest.raises(HwnasError, match="'max_runs'"):
        Protocol(min_runs=10, max_runs=5)


def test_stats_round_trip_and_errors() -> None:
    stats = Stats(1.0, 0.9, 1.2, 1.05, 0.1, 60, [1.0, 1.1, 1.0], noisy=True, remeasured=1)
    assert Stats.from_dict(stats.to_dict()) == stats
    with pytest.raises(HwnasError, match="unknown field 'measured_at'"):
        Stats.from_dict({**stats.to_dict(), "measured_at": "today"})
    with pytest.raises(HwnasError, match="missing field 'median_ms'"):
        Stats.from_dict({k: v for k, v in stats.to_dict().items() if k != "median_ms"})


def test_priming_runs_every_model_untimed_before_the_first_round() -> None:
    """prime_s: models take turns in 32-run chunks of untimed load until prime_s of run time has passed (3 chunks
    of 0.032 s for 0.08 s: a, b, a), then the rounds time exactly what EXACT times; the priming values (huge) never
    reach the statistics."""
    log: list[str] = []
    chunk, prime = [1e-3] * 32, dataclasses.replace(EXACT, prime_s=0.08)
    a = ScriptedModel(chunk * 2 + visits(steady(1.0, 3)), "a", log)
    b = ScriptedModel(chunk + visits(steady(2.0, 3)), "b", log)
    stats = measure({"a": a, "b": b}, prime)
    assert log[:3] == ["a", "b", "a"] and a.requests[:2] == b.requests[:1] + [32] == [32, 32]
    assert stats["a"].median_ms == pytest.approx(1.0) and stats["b"].median_ms == pytest.approx(2.0)
    assert a.position == len(a.script) and b.position == len(b.script)  # nothing asked beyond the script
    unprimed = ScriptedModel(visits(steady(1.0, 3)))
    assert measure({"op": unprimed}, EXACT)["op"].median_ms == pytest.approx(1.0)  # prime_s 0: no extra runs
    with pytest.raises(HwnasError, match="prime_s"):
        Protocol(prime_s=-1.0)
