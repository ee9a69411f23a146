"""The search with every predictor kind (issue 17, item 1): calibrated, transfer and kernel predictors, each a real
search on the tiny space, and latency model objects given to ``run_search(latency_model=...)`` (the Python API).

What the closed loop and the verdict do follows from the model's capabilities: a calibrated predictor fitted on
measurement sets refits in the loop and measures paired (its refitted file lands in the run folder); a transfer
predictor fitted on sets cannot refit, so the loop steps its target, measuring paired at its reference level; the
kernel predictor's estimator of a space has no reference level of the space, so its loop and verdict are end to end.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterator

import pytest

from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.fit import build_predictor
from hwnas.latency.sets import MeasureConfig, MeasurementSet, measure_set
from hwnas.latency.table import LatencyTable, table_name
from hwnas.search.run import SearchConfig, run_search
from hwnas.search.run_report import SUMMARY_KEYS
from hwnas.spaces import Architecture, get_space
from tests.test_search_run import QUICK, write_synthetic_table

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cpu-onnxruntime"  # the device of the shipped kernel predictor
KERNEL = ROOT / "latency_tables" / "predictors" / f"{DEVICE}__kernel.json"
SEARCH = {**QUICK, "device": DEVICE, "warmup_epochs": 0, "max_per_split": 128, "closed_loop_steps": 2,
          "paired": {"pairs": 6}, "final_attempts": 1}
REPORT_KEYS = {"arch", "arch_human", "target_ms", "estimated_ms", "measured_ms", "measured", "measurement",
               "closed_loop", "latency_model", "accuracy", "config", "files", "history"}


def load_arch(result: dict[str, Any]) -> Architecture:
    return Architecture.from_dict(result["arch"])


def _set(device: Any, space: Any, path: Path) -> MeasurementSet:
    """12 networks of ``space`` measured paired on ``device`` (the same 12 on every device: same seed, no proxy)."""
    measure_set(device, space, path, MeasureConfig(n=12, seed=0, repeat=0, protocol={"pairs": 6}, progress=False))
    return MeasurementSet.load(path)


def _write_prior(path: Path, sets: dict[str, MeasurementSet]) -> Path:
    """Other devices' measurements of the same networks as a transfer prior CSV (``arch`` and one ms column per
    device, as :func:`hwnas.latency.predictors.csvdata.read_prior` reads)."""
    columns = {name: {" ".join(a.choices): mset.rows[i].paired.ratio * mset.reference_ms
                      for i, a in zip(sorted(mset.rows), mset.archs())} for name, mset in sets.items()}
    archs = sorted(set.intersection(*(set(c) for c in columns.values())))
    assert len(archs) >= 10
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", *columns])
        for arch in archs:
            writer.writerow([arch, *(f"{columns[name][arch]:.6g}" for name in columns)])
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A synthetic table of the tiny space for the device (so no op is profiled), the device's measurement set, the
    calibrated and transfer predictors fitted on it (the transfer one with a prior measured now on two other
    devices: cpu-torch, and ONNX Runtime with basic graph optimizations only), saved."""
    folder = tmp_path_factory.mktemp("kinds")
    patch = pytest.MonkeyPatch()
    patch.setenv("HWNAS_TABLES", str(folder / "tables"))
    patch.setenv("HWNAS_DATA", str(folder / "data"))
    try:
        table = write_synthetic_table(folder / "tables" / table_name(DEVICE, "tiny", 32), device=DEVICE)
        space = get_space("tiny", 32, 10)
        target = _set(load_device(DEVICE), space, folder / "target.json")
        basic = dataclasses.replace(load_device(DEVICE), name=f"{DEVICE}-basic",
                                    options={"graph_optimization": "basic"})
        prior = _write_prior(folder / "prior.csv", {d.name: _set(d, space, folder / f"{d.name}.json")
                                                    for d in (load_device("cpu-torch"), basic)})
        calibrated = build_predictor(space=space, kind="calibrated", sets=[target.path])
        transfer = build_predictor(space=space, kind="transfer", sets=[target.path], prior=prior)
        yield {"folder": folder, "space": space, "table": table, "target": target,
               "calibrated": calibrated.save(folder / "calibrated.json"),
               "transfer": transfer.save(folder / "transfer.json")}
    finally:
        patch.undo()


@pytest.fixture
def tables(fitted: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HWNAS_TABLES", str(fitted["folder"] / "tables"))
    return fitted["folder"] / "tables"


def _config(out: Path, **overrides: Any) -> SearchConfig:
    return SearchConfig().with_overrides({**SEARCH, "out": str(out), **overrides})


def _check_report(result: dict[str, Any], out: Path, kind: str, path: Path) -> dict[str, Any]:
    """The summary keeps its keys, the report its usual ones, and both say which latency model the run used."""
    assert set(result) == {*SUMMARY_KEYS, "out", "files"}
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    for model in (result["latency_model"], report["latency_model"]):
        assert model["kind"] == kind and model["path"] == str(path)
    assert result["measured_ms"] is not None and result["measured_ms"] > 0
    assert len(result["closed_loop"]) >= 1
    return report


def test_search_with_a_calibrated_predictor_refits_and_measures_paired(tables: Path, fitted: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_search(_config(out, predictor=str(fitted["calibrated"])), progress=False)
    _check_report(result, out, "calibrated", fitted["calibrated"])
    assert result["measured"]["source"] == "final (paired)" and result["measured"]["ratio"] > 0
    refitted = load_predictor(result["files"]["predictor"])  # refitted with the loop's rows (the last may be
    added = refitted.rows[len(load_predictor(fitted["calibrated"]).rows):]  # accepted without a refit)
    assert len(added) in (len(result["closed_loop"]), len(result["closed_loop"]) - 1)
    assert all(row.source == "closed loop" for row in added)
    assert result["latency_model"]["rows"] == len(refitted.rows)
    assert all("ratio" in step["measured"] for step in result["closed_loop"])  # the loop measured paired


def test_search_with_a_transfer_predictor_steps_its_target_measuring_paired(tables: Path, fitted: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    transfer = load_predictor(fitted["transfer"])
    assert not transfer.supports_refit and transfer.reference_ms == pytest.approx(fitted["target"].reference_ms)
    result = run_search(_config(out, predictor=str(fitted["transfer"])), progress=False)
    _check_report(result, out, "transfer", fitted["transfer"])
    assert "predictor" not in result["files"] and not (out / "predictor.json").exists()  # nothing was refitted
    assert all("ratio" in step["measured"] for step in result["closed_loop"])  # the loop measured paired
    assert result["measured"]["source"] == "final (paired)"
    assert result["estimated_ms"] == pytest.approx(transfer.latency_ms(load_arch(result)))


def test_search_with_the_kernel_predictor_measures_end_to_end(tables: Path, fitted: dict[str, Any],
                                                              tmp_path: Path) -> None:
    kernel = load_predictor(KERNEL)
    try:
        estimator = kernel.for_space(fitted["space"])
    except HwnasError as exc:  # before the kernel kind's estimator of a space exists
        pytest.skip(f"the kernel predictor has no estimator of a space yet: {exc}")
    assert estimator.reference_ms is None
    out = tmp_path / "run"
    result = run_search(_config(out, predictor=str(KERNEL)), progress=False)
    _check_report(result, out, "kernel", KERNEL)
    assert "predictor" not in result["files"]
    assert all("ratio" not in step["measured"] for step in result["closed_loop"])  # end to end, in ms
    assert "ratio" not in result["measured"] and result["measured"]["source"] != "final (paired)"
    assert result["estimated_ms"] == pytest.approx(estimator.latency_ms(load_arch(result)))


@pytest.mark.parametrize("what", ["predictor", "space predictor", "table"])
def test_run_search_takes_a_latency_model_object(tables: Path, fitted: dict[str, Any], tmp_path: Path,
                                                 what: str) -> None:
    """The Python API hands an object, not a file: it is used as given (measure off: no loop, no verdict)."""
    space = fitted["space"]
    model = {"predictor": lambda: load_predictor(fitted["transfer"]),  # its estimator comes from for_space
             "space predictor": lambda: load_predictor(KERNEL).for_space(space),  # an estimator already
             "table": lambda: TableEstimator(LatencyTable.load(fitted["table"].path), space)}[what]()
    out = tmp_path / "run"
    result = run_search(_config(out, measure=False, closed_loop_steps=0), progress=False, latency_model=model)
    assert set(result) == {*SUMMARY_KEYS, "out", "files"}
    assert result["latency_model"]["kind"] == {"predictor": "transfer", "space predictor": "kernel"}.get(what, what)
    assert result["latency_model"]["note"] == "given (latency_model)"
    assert result["estimated_ms"] == pytest.approx(model.latency_ms(load_arch(result)))


@pytest.mark.parametrize("model, message", [
    ("cpu-onnxruntime__proxyless__32__calibrated.json",
     r"^latency_model: a calibrated predictor of proxyless@32/\d+ classes, not of tiny@32/10 classes$"),
    ("table of another device", r"^latency_model: a table of device 'cpu-torch', the search is on 'cpu-onnxruntime'$"),
    ("not a model", r"^latency_model: expected a Predictor, a SpacePredictor or a LatencyEstimator .*got str$"),
])
def test_a_latency_model_object_that_does_not_fit_is_one_line(tables: Path, fitted: dict[str, Any],
                                                              tmp_path: Path, model: str, message: str) -> None:
    space = fitted["space"]
    if model.endswith(".json"):
        given: Any = load_predictor(ROOT / "latency_tables" / "predictors" / model)
    elif model == "table of another device":
        given = TableEstimator(write_synthetic_table(tmp_path / "other.json", device="cpu-torch"), space)
    else:
        given = model
    with pytest.raises(HwnasError, match=message):
        run_search(_config(tmp_path / "run", measure=False, closed_loop_steps=0), progress=False,
                   latency_model=given)
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("kind", ["calibrated", "transfer", "kernel"])
def test_every_kind_aims_the_sampling_strategy_too(tables: Path, fitted: dict[str, Any], tmp_path: Path,
                                                   kind: str) -> None:
    """mnas (REINFORCE, the reward reads each sampled architecture's latency from the model) with every kind; the
    device is not measured here (the closed loop and verdict are the other tests')."""
    path = KERNEL if kind == "kernel" else fitted[kind]
    out = tmp_path / "run"
    result = run_search(_config(out, predictor=str(path), strategy="mnas", measure=False), progress=False)
    assert result["latency_model"]["kind"] == kind and result["measured_ms"] is None
    estimator = load_predictor(path).for_space(fitted["space"])
    assert result["estimated_ms"] == pytest.approx(estimator.latency_ms(load_arch(result)))
    history = json.loads((out / "report.json").read_text())["history"]
    assert history and all(math.isfinite(epoch["expected_latency_ms"]) for epoch in history)
