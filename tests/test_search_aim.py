"""The search aiming with a predictor: the refitting closed loop on a scripted device, and the choice of model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors import PredictorMeta
from hwnas.latency.predictors.calibrated import fit_calibrated
from hwnas.latency.sets import sample_stratified
from hwnas.latency.table import LatencyTable
from hwnas.search.aim import aim_on_device, choose_estimator, default_predictor_path
from hwnas.search.closed_loop import meet_on_device
from hwnas.search.decode import decode_under_target, fastest_arch, slowest_arch
from hwnas.search.records import PairedMeasurement
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import get_space
from tests.test_search_run import measured

TABLE = "latency_tables/cpu-onnxruntime__proxyless__32.json"


def _device_ms(space, table_estimator, arch) -> float:
    """A device the table misjudges: 1.4x its sum, plus 0.03 ms per 7x7 layer (structure the table lacks)."""
    k7 = sum(1 for c in arch.choices if c.startswith("k7"))
    return 1.4 * table_estimator.latency_ms(arch) + 0.03 * k7


class ScriptedMeter:
    def __init__(self, space, table_estimator) -> None:
        self.space, self.table_estimator, self.calls = space, table_estimator, []

    def measure(self, nets: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
        out = {}
        for name, net in nets.items():
            ms = _device_ms(self.space, self.table_estimator, net.arch)
            self.calls.append(ms)
            out[name] = PairedMeasurement(ms, False, source, ms, 1.0, {}).to_dict()  # a paired record at level 1
        return out


@pytest.fixture(scope="module")
def setting():
    table = LatencyTable.load(TABLE)
    space = get_space("proxyless", 32, table.num_classes)
    estimator = TableEstimator(table, space)
    archs = sample_stratified(space, 30, seed=5, proxy=estimator)
    rng = np.random.default_rng(0)
    y = [_device_ms(space, estimator, a) * (1 + rng.uniform(-0.02, 0.02)) for a in archs]
    predictor = fit_calibrated(space, archs, y, table=table, meta=PredictorMeta(reference_ms=1.0), residual="linear")
    return space, estimator, predictor


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_refitting_loop_lands_between_085_and_1_of_the_target(setting, seed):
    space, estimator, predictor = setting
    gen = torch.Generator().manual_seed(seed)
    log_probs = [torch.log_softmax(torch.randn(len(layer.names), generator=gen, dtype=torch.float64), 0).tolist()
                 for layer in space.layers]
    fastest = _device_ms(space, estimator, fastest_arch(space, estimator))
    slowest = _device_ms(space, estimator, slowest_arch(space, estimator))
    target = fastest + (0.3 + 0.1 * seed) * (slowest - fastest)
    config = SearchConfig(closed_loop_steps=6, closed_loop_margin=0.03)
    meter = ScriptedMeter(space, estimator)
    rows_before = len(predictor.rows)
    arch, log, refitted = aim_on_device(space, predictor, target, log_probs, meter, config)
    measured = _device_ms(space, estimator, arch)
    assert 1 <= len(meter.calls) <= 6 and len(set(meter.calls)) == len(meter.calls)  # each architecture once
    assert len(refitted.rows) - rows_before in (len(meter.calls), len(meter.calls) - 1)  # the last may be accepted
    assert 0.85 * target <= measured <= 0.97 * target
    assert [step.measured_ms for step in log] == meter.calls


def test_refitting_needs_fewer_measurements_than_the_table_loop(setting):
    """Same device, same probabilities, same targets: the table-only loop against the refitting one."""
    space, estimator, predictor = setting
    totals = {"table": 0, "predictor": 0}
    for seed in range(4):
        gen = torch.Generator().manual_seed(10 + seed)
        log_probs = [torch.log_softmax(torch.randn(len(layer.names), generator=gen, dtype=torch.float64), 0).tolist()
                     for layer in space.layers]
        fastest = _device_ms(space, estimator, fastest_arch(space, estimator))
        slowest = _device_ms(space, estimator, slowest_arch(space, estimator))
        # low in the range, where the table loop has to search (higher up it stops at once, far under T: the mode)
        target = fastest + 0.3 * (slowest - fastest)
        config = SearchConfig(closed_loop_steps=8, closed_loop_margin=0.03)
        meter = ScriptedMeter(space, estimator)
        arch, _, _ = aim_on_device(space, predictor, target, log_probs, meter, config)
        assert 0.85 * target <= _device_ms(space, estimator, arch) <= target
        totals["predictor"] += len(meter.calls)
        calls: list[float] = []

        def fake(device, nets, *args):
            calls.append(_device_ms(space, estimator, nets["candidate"].arch))
            return {"candidate": measured(calls[-1])}, {}

        import hwnas.search.closed_loop as loop_module

        original = loop_module.measure_networks
        loop_module.measure_networks = fake
        try:
            decode = lambda t: decode_under_target(space, log_probs, estimator, t)  # noqa: E731
            meet_on_device(space, estimator, target, decode, fastest_arch(space, estimator),
                           estimator.latency_ms(decode(1e9)), None, config)
        finally:
            loop_module.measure_networks = original
        totals["table"] += len(calls)
    assert totals["predictor"] < totals["table"]


def test_choice_of_latency_model(setting, tmp_path, monkeypatch):
    space, estimator, predictor = setting
    device = load_device("cpu-onnxruntime")
    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path / "tables"))
    none = choose_estimator(device, space, estimator, SearchConfig(predictor="none"), tmp_path, False)
    assert none.kind == "table" and none.estimator is estimator
    nothing = choose_estimator(device, space, estimator, SearchConfig(predictor_networks=0), tmp_path, False)
    assert nothing.kind == "table" and "predictor_networks is 0" in nothing.note
    foreign = predictor.with_rows([], [])
    foreign.meta.device = "pixel-9"
    path = foreign.save(tmp_path / "foreign.json")
    with pytest.raises(HwnasError, match="another device or runtime .*'pixel-9'"):
        choose_estimator(device, space, estimator, SearchConfig(predictor=str(path)), tmp_path, False)
    mine = predictor.with_rows([], [])
    mine.meta.device = device.name
    mine.save(default_predictor_path(device.name, space))
    chosen = choose_estimator(device, space, estimator, SearchConfig(), tmp_path, False)
    assert chosen.kind == "calibrated" and chosen.path == str(default_predictor_path(device.name, space))
    arch = space.random_arch(random.Random(0))
    assert chosen.estimator.latency_ms(arch) == pytest.approx(predictor.latency_ms(arch))


def test_paired_search_end_to_end(tmp_path, monkeypatch):
    """A real search on the tiny space that builds its predictor from measured networks and gives a paired verdict."""
    from hwnas.search.run import run_search

    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path / "tables"))
    config = SearchConfig(device="cpu-onnxruntime", space="tiny", resolution=32, warmup_epochs=1, search_epochs=1,
                          train_epochs=1, max_per_split=128, predictor_networks=10, closed_loop_steps=3,
                          paired={"pairs": 10}, retry_pause_s=0.0, out=str(tmp_path / "run"))
    result = run_search(config, progress=False)
    assert result["latency_model"]["kind"] == "calibrated" and result["latency_model"]["rows"] >= 10
    assert result["measured"]["source"] == "final (paired)" and result["measured"]["ratio"] > 0
    assert result["measured_ms"] == pytest.approx(result["measured"]["ratio"] * result["measured"]["reference_ms"])
    assert Path(result["files"]["predictor"]).is_file()
