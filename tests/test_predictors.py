"""Paired measurement, measurement sets and the calibrated predictor, each against an independent reference."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import scipy.stats
import pytest
import torch

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors import PredictorMeta, load_predictor
from hwnas.latency.predictors.calibrated import fit_calibrated
from hwnas.latency.predictors.features import OP_FEATURES, Caches, FeatureCache, op_features
from hwnas.latency.sets import MeasurementSet, sample_stratified
from hwnas.latency.table import LatencyTable
from hwnas.runtimes.base import PreparedModel
from hwnas.runtimes.paired import PairedProtocol, measure_paired
from hwnas.spaces import get_space

FAST = PairedProtocol(pairs=8, warmup_runs=1, warmup_s=0.0, min_turn_s=0.0, noise_threshold=0.05, max_remeasure=1)


class DriftingModel(PreparedModel):
    """Every run takes ``base_s`` times the machine's current slowness, which both models of a pair share."""

    def __init__(self, base_s: float, clock: list[float], drift: float = 1.0) -> None:
        self.base_s, self.clock, self.drift, self.requests = base_s, clock, drift, []

    def run(self) -> None:
        raise AssertionError("only time_runs is called")

    def time_runs(self, n: int) -> list[float]:
        self.requests.append(n)
        self.clock[0] *= self.drift  # the machine gets slower with every call
        return [self.base_s * self.clock[0]] * n


def test_paired_ratio_survives_a_drifting_machine():
    clock = [1.0]
    reference = DriftingModel(0.002, clock, drift=1.02)
    nets = {"a": DriftingModel(0.003, clock, drift=1.02), "b": DriftingModel(0.001, clock, drift=1.02)}
    stats = measure_paired(nets, reference, FAST)
    # Plain medians drift by far more than the ratio's error: 1.02 per call over 8 pairs.
    # the ratio's only error: the drift between a side's timed run and the other's, two calls (its warm run, its
    # timed run) apart with warm turns
    assert stats["a"].ratio == pytest.approx(1.5 / 1.02**2) and stats["b"].ratio == pytest.approx(0.5 / 1.02**2)
    assert stats["b"].network.median_ms / (0.001 * 1e3) > 1.3  # the raw median did drift
    assert stats["a"].network.n == FAST.pairs * (1 + stats["a"].remeasured)


def test_paired_turns_batch_small_kernels_and_flag_disagreeing_halves():
    clock = [1.0]
    reference = DriftingModel(1e-3, clock)
    tiny = DriftingModel(1e-6, clock)
    protocol = PairedProtocol(pairs=4, warmup_runs=1, warmup_s=0.0, min_turn_s=1e-4, max_turn_runs=50)
    measure_paired({"tiny": tiny}, reference, protocol)
    assert max(tiny.requests) == 50  # a capped batch per turn
    # the reference: one timed run per turn, after 5 ms of untimed runs (turn_warmup_s); requests[0] is the warm-up
    assert set(reference.requests[2::2]) == {1} and set(reference.requests[1::2]) == {5}

    class Jump(DriftingModel):
        def time_runs(self, n: int) -> list[float]:
            self.requests.append(n)
            # slower after its first half: a warm-up call, then two calls a turn (its warm run, its timed run)
            return [self.base_s * (1.0 if len(self.requests) <= 9 else 2.0)] * n

    jumpy = Jump(1e-3, [1.0])
    stats = measure_paired({"j": jumpy}, DriftingModel(1e-3, [1.0]), PairedProtocol(pairs=8, warmup_runs=1,
                                                                                     warmup_s=0.0, max_remeasure=1,
                                                                                     precision=0))
    assert stats["j"].noisy and stats["j"].remeasured == 1


def test_paired_protocol_rejects_bad_fields():
    with pytest.raises(HwnasError, match="--protocol: field 'pairs' must be at least 4"):
        PairedProtocol.from_dict({"pairs": 2}, "--protocol")
    with pytest.raises(HwnasError, match="unknown field 'rounds'"):
        PairedProtocol.from_dict({"rounds": 3}, "--protocol")


def test_stratified_sample_spans_the_range_and_is_reproducible():
    space = get_space("proxyless", 64)
    archs = sample_stratified(space, 20, seed=3)
    assert archs == sample_stratified(space, 20, seed=3) and len({a.choices for a in archs}) == 20
    macs = [sum(s.macs() for s in space.arch_specs(a) if not s.is_free) for a in archs]
    rng = random.Random(0)
    uniform = [sum(s.macs() for s in space.arch_specs(space.random_arch(rng)) if not s.is_free) for _ in range(200)]
    assert (max(macs) - min(macs)) > 1.5 * (max(uniform) - min(uniform))  # uniform choices stay in the middle


def test_features_match_the_op_specs_and_the_built_modules():
    space = get_space("proxyless", 64)
    caches = Caches(l2=64 * 1024, l3=1 << 20)
    cache = FeatureCache(space, caches, None)
    arch = space.random_arch(random.Random(1))
    summed = cache.summed(arch)
    specs = [s for s in space.arch_specs(arch) if not s.is_free]
    column = {name: summed[i] for i, name in enumerate(OP_FEATURES)}
    assert column["dense_mmacs"] + column["dw_mmacs"] == pytest.approx(sum(s.macs() for s in specs) / 1e6)
    params = sum(p.numel() for p in space.build(arch).parameters())
    assert column["weight_mb"] == pytest.approx(params * 4 / 1e6)  # BatchNorm affine terms included on both sides
    assert column["ops"] == len(specs)
    big = max(specs, key=lambda s: s.params())
    assert op_features(big, caches, None)[OP_FEATURES.index("weight_over_l2_mb")] == pytest.approx(
        max(0, big.params() * 4 - caches.l2) / 1e6)


def test_table_split_features_partition_the_table_latency_by_kernel_and_expansion():
    space = get_space("proxyless", 64)
    estimator = TableEstimator(_table(space), space, "once")
    cache = FeatureCache(space, Caches(l2=1 << 20, l3=32 << 20), estimator)
    arch = space.random_arch(random.Random(2))
    column = dict(zip(OP_FEATURES, cache.summed(arch)))
    specs = [s for s in space.arch_specs(arch) if not s.is_free]
    for k in (3, 5, 7):  # independent reference: the table's op latencies summed by hand
        by_hand = sum(estimator.op_ms(s) for s in specs if getattr(s, "k", 1) == k)
        assert column[f"table_k{k}_ms"] == pytest.approx(by_hand)
    mbconv = [s for s in specs if hasattr(s, "e")]
    assert column["table_e_low_ms"] == pytest.approx(sum(estimator.op_ms(s) for s in mbconv if s.e <= 3))
    assert column["table_e_high_ms"] == pytest.approx(sum(estimator.op_ms(s) for s in mbconv if s.e >= 4))
    assert column["table_e_low_ms"] + column["table_e_high_ms"] <= column["table_ms"] + 1e-9
    assert column["table_e_high_ms"] > 0 and column["table_k3_ms"] > 0


def _table(space):
    return LatencyTable.load(f"latency_tables/cpu-onnxruntime__proxyless__{space.resolution}.json")


def test_predictor_on_a_table_alone_reproduces_the_table(tmp_path):
    table = LatencyTable.load("latency_tables/cpu-onnxruntime__proxyless__32.json")
    space = get_space("proxyless", 32, table.num_classes)
    estimator = TableEstimator(table, space)
    predictor = fit_calibrated(space, [], [], table=table, meta=PredictorMeta(device="cpu-onnxruntime"))
    rng = random.Random(0)
    for _ in range(20):
        arch = space.random_arch(rng)
        assert predictor.latency_ms(arch) == pytest.approx(estimator.latency_ms(arch), rel=1e-12)


def _synthetic(space, table, n, seed):
    """A device whose networks run 1.3x the table sum plus 0.02 ms per MB of weights over L2."""
    rng = random.Random(seed)
    estimator = TableEstimator(table, space)
    archs = sample_stratified(space, n, seed=seed, proxy=estimator)
    spill = [sum(max(0, s.params() * 4 - (1 << 20)) for s in space.arch_specs(a) if not s.is_free) / 1e6 for a in archs]
    y = [1.3 * estimator.latency_ms(a) + 0.02 * w for a, w in zip(archs, spill)]
    return archs, np.array(y) * np.array([1 + rng.uniform(-0.005, 0.005) for _ in y])


def test_calibration_recovers_a_scaled_device_and_round_trips(tmp_path):
    table = LatencyTable.load("latency_tables/cpu-onnxruntime__proxyless__32.json")
    space = get_space("proxyless", 32, table.num_classes)
    archs, y = _synthetic(space, table, 40, seed=0)
    meta = PredictorMeta(device="cpu-onnxruntime", fingerprint={"machine": {"caches": {"L2": 1 << 20, "L3": 1 << 25}}},
                         reference_ms=1.0)
    predictor = fit_calibrated(space, archs, y, table=table, meta=meta, residual="linear")
    test_archs, test_y = _synthetic(space, table, 20, seed=9)
    errors = [abs(predictor.latency_ms(a) / t - 1) for a, t in zip(test_archs, test_y)]
    assert max(errors) < 0.03
    path = predictor.save(tmp_path / "p.json")
    loaded = load_predictor(path)
    assert [loaded.latency_ms(a) for a in test_archs] == [predictor.latency_ms(a) for a in test_archs]
    with_trees = fit_calibrated(space, archs, y, table=table, meta=meta, residual="xgb")
    again = load_predictor(with_trees.save(tmp_path / "q.json"))
    assert again.selected == "xgb" and [again.latency_ms(a) for a in test_archs] == [
        with_trees.latency_ms(a) for a in test_archs]
    assert "xgb" in with_trees.meta.training["cv"] and "linear" in with_trees.meta.training["cv"]


@pytest.mark.parametrize("residual", ["linear", "xgb"])
def test_expected_latency_is_exact_for_one_hot_and_its_gradient_matches_finite_differences(residual):
    table = LatencyTable.load("latency_tables/cpu-onnxruntime__proxyless__32.json")
    space = get_space("proxyless", 32, table.num_classes)
    archs, y = _synthetic(space, table, 40, seed=1)
    predictor = fit_calibrated(space, archs, y, table=table, meta=PredictorMeta(), residual=residual)
    arch = archs[5]
    one_hot = [torch.tensor([float(n == c) for n in layer.names], dtype=torch.float64)
               for layer, c in zip(space.layers, arch.choices)]
    assert float(predictor.expected_latency_ms(one_hot)) == pytest.approx(predictor.latency_ms(arch), rel=1e-12)
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(len(layer.names), generator=gen, dtype=torch.float64, requires_grad=True)
              for layer in space.layers]
    value = predictor.expected_latency_ms([torch.softmax(t, 0) for t in logits])
    value.backward()
    value = value.detach()
    eps = 1e-6
    for layer_index in (0, 7):
        for i in range(len(space.layers[layer_index].names)):
            bumped = [t.detach().clone() for t in logits]
            bumped[layer_index][i] += eps
            up = float(predictor.expected_latency_ms([torch.softmax(t, 0) for t in bumped]))
            assert (up - float(value)) / eps == pytest.approx(float(logits[layer_index].grad[i]), rel=1e-4, abs=1e-9)


def test_predictor_files_refuse_corrupt_foreign_and_stale_content(tmp_path):
    table = LatencyTable.load("latency_tables/cpu-onnxruntime__proxyless__32.json")
    space = get_space("proxyless", 32, table.num_classes)
    path = fit_calibrated(space, [], [], table=table, meta=PredictorMeta()).save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    cases = {
        "pickle": (b"\x80\x04\x95", "not UTF-8 JSON"),
        "truncated": (path.read_bytes()[:50], "not valid JSON"),
        "schema": (json.dumps({**data, "schema": "other/1"}).encode(), "field 'schema'"),
        "kind": (json.dumps({**data, "kind": "magic"}).encode(), "field 'kind'"),
        "stale": (json.dumps({**data, "meta": {**data["meta"], "features": ["old"]}}).encode(), "stale predictor"),
        "coef": (json.dumps({**data, "model": {**data["model"], "linear": {**data["model"]["linear"],
                                                                         "coef": [1.0]}}}).encode(), "coefficients"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.json"
        bad.write_bytes(content)
        with pytest.raises(HwnasError, match=message) as error:
            load_predictor(bad)
        assert "\n" not in str(error.value) and str(bad) in str(error.value)


def test_measure_cli_keys_then_fit_and_eval(tmp_path, capsys):
    out = tmp_path / "set.json"
    argv = ["measure", "--device", "cpu-onnxruntime", "--space", "tiny", "--n", "12", "--repeat", "4", "--out",
            str(out), "--quiet", "--protocol", "pairs=8", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"rows", "measured", "reused", "reference_ms", "noise"} <= set(result)
    assert result["rows"] == 12 and result["measured"] == 12 and result["reference_ms"] > 0
    assert set(result["noise"]) >= {"n", "paired", "raw"} and result["noise"]["n"] == 4
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["reused"] == 12
    mset = MeasurementSet.load(out)
    assert np.allclose(mset.latencies_ms(), [mset.rows[i].paired.ratio * mset.reference_ms for i in sorted(mset.rows)])
    assert main(["predictor", "fit", "--space", "tiny", "--set", str(out), "--out", str(tmp_path / "p.json"),
                 "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["out"] == str(tmp_path / "p.json") and fitted["n"] == 12
    held = tmp_path / "held.json"  # held-out networks: another seed's sample, measured the same way
    assert main([*argv[:argv.index("--n")], "--n", "6", "--seed", "7", "--repeat", "0", "--out", str(held), "--quiet",
                 "--protocol", "pairs=8", "--json"]) == 0
    capsys.readouterr()
    assert main(["predictor", "eval", "--predictor", str(tmp_path / "p.json"), "--set", str(held), "--plot",
                 str(tmp_path / "e.png"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    # the figures again, computed here from the files alone: the prediction moved to the held-out set's reference
    predictor, heldset = load_predictor(tmp_path / "p.json"), MeasurementSet.load(held)
    measured = heldset.latencies_ms()
    predicted = np.array([predictor.predict(a).ms * heldset.reference_ms / predictor.reference_ms
                          for a in heldset.archs()])
    error = np.abs(predicted - measured) / measured
    assert figures["n"] == 6
    assert figures["mape"] == pytest.approx(100 * error.mean())
    assert figures["within10_pct"] == pytest.approx(100 * np.mean(error <= 0.10))  # shares in percent
    assert figures["within5_pct"] == pytest.approx(100 * np.mean(error <= 0.05))
    assert figures["spearman"] == pytest.approx(scipy.stats.spearmanr(predicted, measured).statistic)
    assert (tmp_path / "e.png").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["predictor", "eval", "--predictor", "nope.json", "--set", "x.json"], "nope.json: no such predictor file"),
    (["predictor", "fit", "--space", "tiny", "--set", "nope.json", "--out", "p.json"],
     "nope.json: no such measurement"),
    (["predictor", "fit", "--space", "tiny", "--measurements", "x.csv", "--out", "p.json"], "needs --column"),
    (["predictor", "fit", "--space", "tiny", "--kind", "kernel", "--out", "p.json"],
     "hwnas predictor build --kind kernel"),
    (["measure", "--device", "cpu-onnxruntime", "--space", "tiny", "--n", "0", "--out", "s.json"],
     "expected an integer >= 1"),
])
def test_predictor_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--json"]) == 2
    captured = capsys.readouterr()
    assert message in json.loads(captured.out)["error"] and captured.err.count("\n") == 1


def _rows(path):
    try:
        return {r["id"]: r for r in json.loads(path.read_text())["rows"]}
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def test_killed_measure_resumes_with_no_row_lost(tmp_path):
    out = tmp_path / "set.json"
    cmd = [sys.executable, "-m", "hwnas.cli", "measure", "--device", "cpu-torch", "--space", "tiny", "--n", "10",
           "--repeat", "0", "--chunk", "1", "--out", str(out), "--quiet", "--protocol", "pairs=30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_rows(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _rows(out)
    assert 2 <= len(before) < 10, "the kill should land mid-run"
    result = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(result.stdout)
    after = _rows(out)
    assert summary["rows"] == 10 == len(after) and summary["reused"] == len(before)
    for i, row in before.items():
        assert after[i]["paired"] == row["paired"] and after[i]["measured_at"] == row["measured_at"]


def test_a_table_profiled_in_pairs_is_brought_to_its_quiet_reference_level(tmp_path):
    """Two ops measured in chunks whose reference ran 1.0 and 1.5 ms: the second chunk was 1.5x slow, so its op
    is scaled back by 1/1.5 to the table's quiet level; a table without references reads as before."""
    stats = {"median_ms": 3.0, "p10_ms": 3.0, "p90_ms": 3.0, "mean_ms": 3.0, "std_ms": 0.0, "n": 5}
    table = LatencyTable(device={"name": "d"}, space="tiny", resolution=32, num_classes=10, fingerprint={},
                         protocol={},
                         entries={"a": {**stats, "reference_ms": 1.0}, "b": {**stats, "reference_ms": 1.5}},
                         reference={"arch": "k3_e3", "median_ms": 1.0})
    table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(tmp_path / "t.json")
    assert loaded.median_ms("a") == 3.0 and loaded.median_ms("b") == pytest.approx(2.0)
    loaded.reference = None
    assert loaded.median_ms("b") == 3.0
    bad = json.loads((tmp_path / "t.json").read_text())
    bad["entries"]["a"]["reference_ms"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(HwnasError, match="entry 'a': field 'reference_ms'"):
        LatencyTable.load(tmp_path / "bad.json")


def test_predict_an_architecture_with_the_devices_calibrated_predictor(tmp_path, monkeypatch, capsys):
    table = LatencyTable.load("latency_tables/cpu-onnxruntime__proxyless__32.json")
    space = get_space("proxyless", 32, table.num_classes)
    archs, y = _synthetic(space, table, 30, seed=2)
    predictor = fit_calibrated(space, archs, y, table=table, meta=PredictorMeta(device="cpu-onnxruntime"),
                               residual="xgb")
    monkeypatch.setenv("HWNAS_TABLES", str(tmp_path))
    predictor.save(tmp_path / "predictors" / "cpu-onnxruntime__proxyless__32__calibrated.json")
    arch = space.random_arch(random.Random(4))
    arch.save(tmp_path / "arch.json")
    assert main(["predict", "--device", "cpu-onnxruntime", str(tmp_path / "arch.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "calibrated" and result["latency_ms"] == pytest.approx(predictor.latency_ms(arch))
    assert sum(k["ms"] for k in result["kernels"]) == pytest.approx(result["latency_ms"], rel=1e-9)
    assert main(["predict", "--device", "cpu-torch", str(tmp_path / "arch.json"), "--json"]) == 2
    assert "cpu-torch" in json.loads(capsys.readouterr().out)["error"]
