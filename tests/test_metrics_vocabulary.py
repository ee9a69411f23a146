"""One metrics vocabulary, shares in percent (``hwnas.latency.metrics``): what hwnas returns and prints, and what it
reads back from files written when shares were fractions (predictors' ``meta.training``, sets' ``noise``,
``validation.json``): 0.79 is read as 79%, never as 0.79%. Figures are checked against counts made here from the
files' raw numbers."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.latency.metrics import figures_in_percent
from hwnas.latency.predictors import load_predictor
from hwnas.latency.sets import MeasurementSet

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "latency_tables"
STEM = "cpu-onnxruntime__proxyless__64"
# the figures of one model as the old vocabulary stored them (shares as fractions) and as today's says them
OLD = {"n": 80, "acc5": 0.79, "acc10": 0.95, "kendall": 0.9, "spearman": 0.95, "mape": 3.1, "rmse": 0.02,
       "bias_pct": -0.5}
NEW = {"n": 80, "within5_pct": 79.0, "within10_pct": 95.0, "kendall": 0.9, "spearman": 0.95, "mape": 3.1,
       "rmse_ms": 0.02, "bias_pct": -0.5}


def _shares(figures: dict) -> tuple[float, float]:
    """A stored figure set's +-5% / +-10% shares in percent, read by hand: fractions under the old names."""
    if "within5_pct" in figures:
        return figures["within5_pct"], figures["within10_pct"]
    return 100 * figures["acc5"], 100 * figures["acc10"]


# -- predictor files ----------------------------------------------------------------------------------------------
def test_a_predictor_file_of_before_reads_in_percent_and_saves_in_todays_names(tmp_path: Path) -> None:
    raw = json.loads((SHIPPED / "predictors" / f"{STEM}__calibrated.json").read_text())
    raw["meta"]["training"]["cv"] = {"linear": dict(OLD)}
    raw["meta"]["training"]["held_out"] = {"mape": 3.0, "acc10": 0.8, "spearman": 0.9}  # a transfer fit's record
    old_file = tmp_path / "old.json"
    old_file.write_text(json.dumps(raw))
    training = load_predictor(old_file).meta.training
    assert training["cv"]["linear"] == pytest.approx(NEW) and set(training["cv"]["linear"]) == set(NEW)
    assert training["held_out"] == pytest.approx({"mape": 3.0, "within10_pct": 80.0, "spearman": 0.9})
    resaved = load_predictor(old_file).save(tmp_path / "new.json")
    stored = json.loads(resaved.read_text())["meta"]["training"]
    assert stored["cv"]["linear"] == pytest.approx(NEW) and "acc5" not in stored["cv"]["linear"]
    assert load_predictor(resaved).meta.training["cv"] == stored["cv"]  # today's names: read as they are, not x100


@pytest.mark.parametrize("path", sorted((SHIPPED / "predictors").glob("*__calibrated.json")), ids=lambda p: p.stem)
def test_shipped_predictors_cv_in_percent(path: Path) -> None:
    raw_cv = json.loads(path.read_text())["meta"]["training"]["cv"]
    cv = load_predictor(path).meta.training["cv"]
    assert set(cv) == set(raw_cv)
    for name, figures in cv.items():
        assert (figures["within5_pct"], figures["within10_pct"]) == pytest.approx(_shares(raw_cv[name]))
        assert 0 <= figures["within5_pct"] <= figures["within10_pct"] <= 100
        assert figures["mape"] == raw_cv[name]["mape"]  # already a percentage: unchanged


# -- measurement sets ---------------------------------------------------------------------------------------------
def test_a_shipped_set_noise_is_recomputed_in_percent() -> None:
    """The noise floor comes from the rows, in percent, equal to the shares the file stored and to a count made here
    from the raw ratios (repeat against first measurement)."""
    path = SHIPPED / "sets" / f"{STEM}__test.json"
    raw = json.loads(path.read_text())
    first = {row["id"]: row["ratio"] for row in raw["rows"]}
    again = {row["id"]: row["ratio"] for row in raw["repeats"]}
    rel = np.array([again[i] / first[i] - 1 for i in raw["repeat_ids"]])
    by_hand = (100 * np.mean(np.abs(rel) <= 0.05), 100 * np.mean(np.abs(rel) <= 0.10))
    noise = MeasurementSet.load(path).noise()
    assert noise is not None and noise["n"] == len(rel) == 20
    paired = noise["paired"]
    assert (paired["within5_pct"], paired["within10_pct"]) == pytest.approx(by_hand)
    assert (paired["within5_pct"], paired["within10_pct"]) == pytest.approx(_shares(raw["noise"]["paired"]))
    assert paired["within5_pct"] == pytest.approx(95.0)  # 19 of the 20 re-measured networks


# -- predictor eval, CLI ------------------------------------------------------------------------------------------
def test_predictor_eval_prints_and_returns_percent(capsys) -> None:
    """Shipped predictor on its shipped held-out set: the shares in the JSON and the printed line are percentages
    of the networks counted here (predictions moved to the set's reference level)."""
    predictor_path = SHIPPED / "predictors" / f"{STEM}__calibrated.json"
    set_path = SHIPPED / "sets" / f"{STEM}__test.json"
    argv = ["predictor", "eval", "--predictor", str(predictor_path), "--set", str(set_path)]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    predictor, held = load_predictor(predictor_path), MeasurementSet.load(set_path)
    measured = held.latencies_ms()
    predicted = np.array([predictor.predict(a).ms * held.reference_ms / predictor.reference_ms for a in held.archs()])
    rel = np.abs(predicted - measured) / measured
    within5, within10 = 100 * np.mean(rel <= 0.05), 100 * np.mean(rel <= 0.10)
    assert (result["within5_pct"], result["within10_pct"]) == pytest.approx((within5, within10))
    assert result["noise"]["paired"]["within5_pct"] == pytest.approx(95.0)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"±5% {within5:5.1f}%  ±10% {within10:5.1f}%" in text.splitlines()[0]
    assert "re-measured: ±5%  95.0%" in text


# -- tools/tables_report.py on validation.json files --------------------------------------------------------------
def _tables_report(logdir: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location("tables_report", ROOT / "tools" / "tables_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tables_report"] = module
    try:
        spec.loader.exec_module(module)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            module.main(logdir)
    finally:
        sys.modules.pop("tables_report", None)
    return [line for line in out.getvalue().splitlines() if "proxyless@224 |" in line]


def test_tables_report_reads_a_validation_of_before_in_percent(tmp_path: Path) -> None:
    old = {"within_5pct": 0.6, "within_10pct": 0.82, "rmse_ms": 1.311, "kendall_tau": 0.628, "mean_bias_pct": -2.1,
           "mape_pct": 4.0, "n": 50}
    rows = [{"measured_ms": 11.1}, {"measured_ms": 21.72}]
    for name, metrics in (("old", old), ("new", figures_in_percent(old))):
        folder = tmp_path / f"validate-{name}"
        folder.mkdir()
        report = {"device": f"dev-{name}", "space": "proxyless", "resolution": 224, "metrics": {"once": metrics},
                  "rows": rows}
        (folder / "validation.json").write_text(json.dumps(report))
    lines = _tables_report(tmp_path)
    row = "proxyless@224 | 50 | once | 60% | 82% | 1.311 | 0.628 | -2.1% | 11.10–21.72 |"  # as docs/latency_tables.md
    assert lines == [f"| dev-new {row}", f"| dev-old {row}"]
