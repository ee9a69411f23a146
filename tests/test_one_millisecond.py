"""One millisecond: paired figures are on ``hwnas bench``'s warm scale, against a scripted runtime whose first run
after another model ran is slow (its caches hold the other model's weights), as on a machine with a small L3.

Also: files timed with cold turns (before warm turns existed) are not mixed with warm ones: a set is not resumed
with the other scale, sets of two scales are not fitted together.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.latency.sets import MeasurementSet
from hwnas.runtimes.base import PreparedModel
from hwnas.runtimes.paired import COLD, PairedProtocol, measure_paired, turns_of
from hwnas.runtimes.protocol import Protocol, measure


class Cache:
    """Which model ran last: a model's run after another model's costs ``penalty`` of its own time more."""

    def __init__(self) -> None:
        self.last: str | None = None


class ColdAfterSwitch(PreparedModel):
    """Runs take ``warm_s`` each, the first ``slow_runs`` after another model ran ``warm_s * (1 + penalty)``."""

    def __init__(self, name: str, warm_s: float, penalty: float, cache: Cache, slow_runs: int = 1) -> None:
        self.name, self.warm_s, self.penalty, self.cache, self.slow_runs = name, warm_s, penalty, cache, slow_runs
        self.since_switch, self.runs = 0, 0

    def run(self) -> None:
        raise AssertionError("the protocols only call time_runs")

    def time_runs(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            if self.cache.last not in (None, self.name):
                self.since_switch = 0
            cold = self.since_switch < self.slow_runs and self.cache.last is not None
            times.append(self.warm_s * (1 + self.penalty) if cold else self.warm_s)
            self.cache.last, self.since_switch, self.runs = self.name, self.since_switch + 1, self.runs + 1
        return times


# Networks from 0.4 to 3 ms with cold penalties of 26-64% (what a 32 MB-L3 machine showed), a 1.2 ms reference
NETWORKS = {"small": (0.4e-3, 0.64), "mid": (1.0e-3, 0.40), "large": (3.0e-3, 0.26)}
REFERENCE = (1.2e-3, 0.35)
BENCH = Protocol(warmup_runs=3, warmup_s=0.0, min_runs=20, min_time_s=0.0, max_runs=20, rounds=3)


def _family() -> tuple[dict[str, ColdAfterSwitch], ColdAfterSwitch]:
    cache = Cache()
    nets = {name: ColdAfterSwitch(name, warm, penalty, cache) for name, (warm, penalty) in NETWORKS.items()}
    return nets, ColdAfterSwitch("reference", *REFERENCE, cache)


def _bench_ms() -> dict[str, float]:
    """What ``hwnas bench`` reports for each model: the device protocol's rounds, one model at a time."""
    nets, reference = _family()
    return {key: measure({key: model}, BENCH)[key].median_ms for key, model in {**nets, "reference": reference}.items()}


def test_paired_latency_is_benchs_scale_network_by_network() -> None:
    bench = _bench_ms()
    assert bench == pytest.approx({key: warm * 1e3 for key, (warm, _) in {**NETWORKS, "reference": REFERENCE}.items()})
    nets, reference = _family()
    protocol = PairedProtocol(pairs=8, warmup_runs=2, warmup_s=0.0)
    stats = measure_paired(nets, reference, protocol)
    for key in NETWORKS:
        assert stats[key].ratio * bench["reference"] == pytest.approx(bench[key], rel=1e-9)
        assert stats[key].reference.median_ms == pytest.approx(bench["reference"])  # the level, bench's too
        assert not stats[key].noisy


def test_a_turn_warms_up_for_turn_warmup_s_not_only_one_run() -> None:
    """A sub-millisecond model needs several runs after the switch (here 4 slow ones): one untimed run leaves its
    timed run cold, ``turn_warmup_s`` (5 ms by default) covers them; a 20 ms model still gets one untimed run."""
    def family(slow: int) -> tuple[ColdAfterSwitch, ColdAfterSwitch]:
        cache = Cache()
        return ColdAfterSwitch("net", 0.8e-3, 0.3, cache, slow), ColdAfterSwitch("ref", 1.0e-3, 0.1, cache, slow)

    net, ref = family(4)
    default = measure_paired({"net": net}, ref, PairedProtocol(pairs=8, warmup_runs=2, warmup_s=0.0))["net"]
    assert default.ratio == pytest.approx(0.8, rel=1e-9)  # warm on both sides: bench's ratio
    net, ref = family(4)
    one_run = measure_paired({"net": net}, ref, PairedProtocol(pairs=8, warmup_runs=2, warmup_s=0.0,
                                                               turn_warmup_s=0.0))["net"]
    assert one_run.ratio == pytest.approx(0.8 * 1.3 / 1.1, rel=1e-9)  # one untimed run: both timed cold
    cache = Cache()
    big, small = ColdAfterSwitch("big", 20e-3, 0.3, cache), ColdAfterSwitch("small", 1e-3, 0.0, cache)
    measure_paired({"big": big}, small, PairedProtocol(pairs=4, warmup_runs=2, warmup_s=0.0, precision=0))
    assert big.runs == 2 + 4 * 2  # its warm-up, then per turn one untimed run and one timed run
    assert small.runs == 2 + 4 * (5 + 1)  # 5 ms of untimed 1 ms runs, then one timed


def test_cold_turns_are_a_named_option_and_are_off_the_scale() -> None:
    """``COLD`` times the first run after the switch: each network off bench's scale by its own amount, so even
    the ratios (not only the level) differ from warm ones."""
    bench = _bench_ms()
    nets, reference = _family()
    one_run = PairedProtocol(pairs=8, warmup_runs=2, warmup_s=0.0, min_turn_s=0.0)  # a turn: one run, all cold
    protocol = PairedProtocol.from_dict({**one_run.to_dict(), **COLD})
    stats = measure_paired(nets, reference, protocol)
    off = {key: stats[key].ratio * bench["reference"] / bench[key] for key in NETWORKS}
    for key, (_, penalty) in NETWORKS.items():
        assert off[key] == pytest.approx((1 + penalty) / (1 + REFERENCE[1]), rel=1e-9)
    assert max(off.values()) / min(off.values()) > 1.2
    assert turns_of(protocol.to_dict()) == "cold" and turns_of(PairedProtocol().to_dict()) == "warm"
    assert turns_of({"pairs": 40, "min_turn_s": 0.0005}) == "cold"  # a set's protocol from before warm turns


def _cold_copy(path, out) -> None:
    """The set at ``path`` as a set measured before warm turns: its protocol without ``turn_warmup_runs``."""
    data = json.loads(path.read_text())
    del data["protocol"]["turn_warmup_runs"]
    out.write_text(json.dumps(data))


def test_a_cold_set_is_neither_resumed_warm_nor_fitted_beside_a_warm_one(tmp_path, capsys) -> None:
    warm = tmp_path / "warm.json"
    argv = ["measure", "--device", "cpu-onnxruntime", "--space", "tiny", "--n", "4", "--repeat", "0", "--quiet",
            "--protocol", "pairs=4"]
    assert main([*argv, "--out", str(warm)]) == 0
    assert MeasurementSet.load(warm).turns == "warm"
    cold = tmp_path / "cold.json"
    _cold_copy(warm, cold)
    assert MeasurementSet.load(cold).turns == "cold"
    capsys.readouterr()
    assert main([*argv, "--n", "4", "--out", str(cold)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "measured with cold turns, this run would time warm turns" in err
    assert str(cold) in err
    with pytest.raises(HwnasError, match=r"measured with cold turns, .* with warm turns \(two scales\)"):
        from hwnas.latency.predictors.fit import load_sets

        load_sets([warm, cold])
    from hwnas.latency.predictors.fit import load_sets

    assert load_sets([cold]).turns == "cold" and load_sets([warm]).turns == "warm"
    assert np.isfinite(load_sets([warm]).latencies_ms).all()
    # a warm set of before turn_warmup_s (one untimed run per turn) is resumed only with that protocol
    older = tmp_path / "older.json"
    data = json.loads(warm.read_text())
    del data["protocol"]["turn_warmup_s"]
    older.write_text(json.dumps(data))
    capsys.readouterr()
    assert main([*argv, "--out", str(older)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "turn_warmup_s 0 s, this run's for 0.005 s" in err
    assert main([*argv, "--protocol", "turn_warmup_s=0", "--out", str(older)]) == 0
