"""Few-shot transfer predictor: CSV reading, the fit against a brute-force additive reference, the file round
trip and the estimator interface (one-hot expectation, gradient)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from hwnas.errors import HwnasError
from hwnas.latency.predictors import load_predictor, predictor_kinds
from hwnas.latency.predictors.csvdata import latency_columns, read_measurements, read_prior
from hwnas.latency.predictors.transfer import (TransferPredictor, _accuracy_figures, fit_prior_tables, fit_transfer,
                                               fit_transfer_tables)
from hwnas.spaces import get_space

REAL = Path(__file__).parent / "fixtures" / "fbnet_latency" / "fbnet_latency_300.csv"
SPACE = get_space("fbnet-cifar100")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _arch_text(seed: int = 0) -> str:
    return " ".join(random.Random(seed).choice(layer.names) for layer in SPACE.layers)


GOOD = _arch_text(1)
UNKNOWN_OP = "k7_e9 " + GOOD.split(" ", 1)[1]  # layer 0 gets an op no layer has


@pytest.mark.parametrize("lines, column, expected", [
    (["arch_id,arch,dev", f"0,{GOOD},1.5", f"1,{UNKNOWN_OP},2"], "dev",
     ["data row 2", "layer 0 has no op 'k7_e9'", "k3_e1 k3_e1_g2"]),
    (["arch,dev", f"{GOOD},1.5", "k3_e1 k3_e3,2.0"], "dev", ["data row 2", "2 op names, expected 22"]),
    (["arch,dev", f"{GOOD},fast"], "dev", ["data row 1", "'fast' is not a number"]),
    (["arch,dev", f"{GOOD},1", f"{GOOD},1", f"{GOOD},-3"], "dev", ["data row 3", "'-3'", "positive finite"]),
    (["arch,dev", f"{GOOD},0"], "dev", ["data row 1", "positive finite"]),
    (["arch,dev", f"{GOOD},inf"], "dev", ["data row 1", "'inf'", "positive finite"]),
    (["arch,dev", f"{GOOD},nan"], "dev", ["data row 1", "'nan'"]),
    (["arch,dev", f"{GOOD},1.0"], "pixel3", ["no latency column 'pixel3'", "present: dev"]),
    (["net,dev", f"{GOOD},1.0"], "dev", ["no 'arch' column", "columns present: net, dev"]),
    ([], "dev", ["empty file"]),
    (["arch,dev"], "dev", ["empty file", "data rows"]),
    (["arch,dev", f"{GOOD},1.0,7"], "dev", ["data row 1", "3 fields, expected 2"]),
])
def test_csv_errors_name_file_and_row(tmp_path: Path, lines: list[str], column: str, expected: list[str]) -> None:
    path = _write(tmp_path / "bad.csv", lines)
    with pytest.raises(HwnasError) as info:
        read_measurements(path, SPACE, column)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for part in expected:
        assert part in message, message


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(HwnasError, match="no such measurements file"):
        read_prior(tmp_path / "none.csv", SPACE)


def test_read_real_fixture() -> None:
    archs, latencies = read_measurements(REAL, SPACE, "pixel3")
    assert len(archs) == 300 and latencies.shape == (300,) and np.all(latencies > 0)
    assert all(SPACE.validate(a) is a for a in archs)
    prior_archs, prior = read_prior(REAL, SPACE, exclude=["pixel3"])
    assert prior_archs == archs
    assert len(prior) == 12 and "pixel3" not in prior and "arch_id" not in prior
    assert set(latency_columns(REAL)) == {*prior, "pixel3"}


# -- synthetic devices with known additive tables -------------------------------------------------------------
def _synthetic(n: int, seed: int) -> tuple[list, dict[str, np.ndarray], dict[str, tuple[float, list[list[float]]]]]:
    rng = np.random.default_rng(seed)
    tables = {}
    for d in range(3):
        tables[f"dev{d}"] = (float(rng.uniform(2, 5)), [list(rng.uniform(0.05, 1.0, len(layer.names)))
                                                         for layer in SPACE.layers])
    py_rng = random.Random(seed)
    archs = [SPACE.random_arch(py_rng) for _ in range(n)]
    return archs, {d: np.array([_brute_force(t, a) for a in archs]) for d, t in tables.items()}, tables


def _brute_force(table: tuple[float, list[list[float]]], arch) -> float:
    """Independent reference: fixed part plus the chosen candidate's cost of every layer, summed by hand."""
    fixed, costs = table
    total = fixed
    for layer, choice, row in zip(SPACE.layers, arch.choices, costs):
        total += row[layer.names.index(choice)]
    return total


def _target_table(tables: dict) -> tuple[float, list[list[float]]]:
    """The new device: 0.7 x dev0 + 1.8 x dev2 + 1.25 ms (a positive combination of the priors)."""
    (f0, c0), (f2, c2) = tables["dev0"], tables["dev2"]
    return 0.7 * f0 + 1.8 * f2 + 1.25, [[0.7 * a + 1.8 * b for a, b in zip(r0, r2)] for r0, r2 in zip(c0, c2)]


@pytest.fixture(scope="module")
def synthetic_fit() -> tuple[TransferPredictor, tuple[float, list[list[float]]], list]:
    prior_archs, prior, tables = _synthetic(400, seed=1)
    target = _target_table(tables)
    rng = random.Random(2)
    archs = [SPACE.random_arch(rng) for _ in range(12)]
    latencies = np.array([_brute_force(target, a) for a in archs])
    predictor = fit_transfer(SPACE, prior_archs, prior, archs, latencies, device="synthetic", seed=0)
    test = [SPACE.random_arch(rng) for _ in range(50)]
    return predictor, target, test


def test_transfer_reproduces_positive_combination(synthetic_fit) -> None:
    predictor, target, test = synthetic_fit
    for arch in test:
        assert predictor.latency_ms(arch) == pytest.approx(_brute_force(target, arch), rel=1e-7)
    training = predictor.meta.training
    assert training["n"] == 12 and training["prior_devices"] == ["dev0", "dev1", "dev2"]
    assert training["prior_networks"] == 400 and training["cross_validation"] == "leave-one-out"
    assert training["held_out"]["mape"] < 1e-6 and set(training["held_out"]) == {"mape", "within10_pct", "spearman"}
    weights = training["weights_per_ms"]
    assert weights["dev0"] == pytest.approx(0.7, rel=1e-6) and weights["dev2"] == pytest.approx(1.8, rel=1e-6)
    assert weights["dev1"] == pytest.approx(0.0, abs=1e-8)
    costs = predictor.layer_costs_ms()
    assert [len(row) for row in costs] == [len(layer.names) for layer in SPACE.layers]
    assert all(min(row) == 0.0 for row in costs)  # canonical: each layer's cheapest candidate costs 0


def test_prior_tables_recover_additive_devices() -> None:
    archs, prior, tables = _synthetic(400, seed=3)
    fitted = fit_prior_tables(SPACE, archs, prior)
    rng = random.Random(4)
    for arch in (SPACE.random_arch(rng) for _ in range(20)):
        index = np.array([[layer.names.index(c) for layer, c in zip(SPACE.layers, arch.choices)]])
        for device, table in tables.items():
            assert fitted[device].predict(index)[0] == pytest.approx(_brute_force(table, arch), rel=1e-8)


def test_save_load_round_trip(synthetic_fit, tmp_path: Path) -> None:
    predictor, _, test = synthetic_fit
    path = predictor.save(tmp_path / "transfer.json")
    assert "transfer" in predictor_kinds()
    loaded = load_predictor(path)
    assert isinstance(loaded, TransferPredictor) and loaded.kind == "transfer"
    assert loaded.meta.training == predictor.meta.training and loaded.meta.device == "synthetic"
    assert loaded.layer_costs_ms() == predictor.layer_costs_ms() and loaded.fixed_ms() == predictor.fixed_ms()
    assert [loaded.latency_ms(a) for a in test] == [predictor.latency_ms(a) for a in test]


def test_corrupt_model_is_one_line(synthetic_fit, tmp_path: Path) -> None:
    import json

    predictor, _, _ = synthetic_fit
    data = predictor.to_dict()
    data["model"]["layer_costs_ms"] = data["model"]["layer_costs_ms"][:-1]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match=r"model\.layer_costs_ms.*22 layers") as info:
        load_predictor(path)
    assert "\n" not in str(info.value)


def test_expected_latency_one_hot_and_gradient(synthetic_fit) -> None:
    predictor, _, test = synthetic_fit
    for arch in test[:5]:
        probs = [torch.tensor([1.0 if name == choice else 0.0 for name in layer.names], dtype=torch.float64)
                 for layer, choice in zip(SPACE.layers, arch.choices)]
        assert predictor.expected_latency_ms(probs).item() == pytest.approx(predictor.latency_ms(arch), rel=1e-12)
    torch.manual_seed(0)
    logits = [torch.randn(len(layer.names), dtype=torch.float64, requires_grad=True) for layer in SPACE.layers]
    probs = [torch.softmax(x, dim=0) for x in logits]
    predictor.expected_latency_ms(probs).backward()
    # reference: finite differences of E[LAT] = fixed + sum_l sum_i p_li T_li in every logit of layer 3
    step = 1e-6
    for i in range(len(SPACE.layers[3].names)):
        shifted = [x.detach().clone() for x in logits]
        shifted[3][i] += step
        plus = predictor.expected_latency_ms([torch.softmax(x, dim=0) for x in shifted]).item()
        shifted[3][i] -= 2 * step
        minus = predictor.expected_latency_ms([torch.softmax(x, dim=0) for x in shifted]).item()
        assert logits[3].grad[i].item() == pytest.approx((plus - minus) / (2 * step), abs=1e-6)


def test_transfer_on_real_rows_ranks_additive_device() -> None:
    """pixel3 in this data is exactly additive per layer: 10 of its networks and the other devices' tables rank the
    90 remaining networks well (0.83 here; the tables fitted on only 200 rows for 177 free parameters are noisy,
    with 4,000 rows the same fit reaches 0.99: benchmarks/bench_fewshot.py)."""
    archs, prior = read_prior(REAL, SPACE, exclude=["pixel3"])
    _, pixel3 = read_measurements(REAL, SPACE, "pixel3")
    tables = fit_prior_tables(SPACE, archs[:200], {d: v[:200] for d, v in prior.items()})
    table, record = fit_transfer_tables(SPACE, tables, archs[200:210], pixel3[200:210])
    index = np.array([[layer.names.index(c) for layer, c in zip(SPACE.layers, a.choices)] for a in archs[210:]])
    assert spearmanr(table.predict(index), pixel3[210:])[0] > 0.75
    assert record["n"] == 10 and len(record["prior_devices"]) == 12


def test_held_out_figures_in_the_metrics_vocabulary() -> None:
    """MAPE in percent and the +-10% share in percent as ``within10_pct``, as ``metrics.agreement`` and ``predictor
    eval`` report them (hand-computed: relative errors +5%, -20%, 0: two of three within 10%; Spearman of ranks
    (2, 1, 3) against (1.5, 1.5, 3) is sqrt(3)/2)."""
    figures = _accuracy_figures(np.array([1.05, 0.8, 2.0]), np.array([1.0, 1.0, 2.0]))
    assert figures == pytest.approx({"mape": 25 / 3, "within10_pct": 200 / 3, "spearman": math.sqrt(3) / 2})


def test_too_few_networks() -> None:
    archs, prior, _ = _synthetic(50, seed=5)
    with pytest.raises(HwnasError, match="at least 3"):
        fit_transfer(SPACE, archs, prior, archs[:2], np.array([1.0, 2.0]))
