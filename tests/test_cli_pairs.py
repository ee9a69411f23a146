"""Issue 17's acceptance: {`predictor fit`, `predictor eval`, `predict`, `search`} x {calibrated, transfer, kernel}
through the real CLI (``hwnas.cli.main``), on networks measured here and now.

One module-scoped fixture measures, on this machine, the tiny space at 16x16: a quick latency table and a set of
eight networks of cpu-onnxruntime (the calibrated and transfer predictors' training data), four more networks of it
held out (what every kind is evaluated on), and twelve networks of two other local devices (cpu-torch, and ONNX
Runtime without graph optimizations) written as a CSV with ``write_measurements_csv``: the transfer predictor's
prior. The kernel predictor is the shipped one of cpu-onnxruntime. Where a pair has no meaning (fitting a kernel
predictor from measured networks) the CLI answers one line, argued in docs/predictors.md ("Which predictor where").
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.csvdata import read_prior, write_measurements_csv
from hwnas.latency.predictors.locate import user_predictor_path
from hwnas.latency.sets import MeasurementSet
from hwnas.latency.table import tables_dir
from hwnas.spaces import Architecture, get_space

DEVICE, SPACE, RESOLUTION = "cpu-onnxruntime", "tiny", 16
KINDS = ("calibrated", "transfer", "kernel")
QUICK_TABLE = ["--protocol", "rounds=1", "--protocol", "min_time_s=0.005", "--protocol", "warmup_s=0",
               "--protocol", "min_runs=5", "--protocol", "warmup_runs=1"]
QUICK_PAIRS = ["--protocol", "pairs=8", "--protocol", "warmup_runs=1", "--protocol", "warmup_s=0"]
PLAIN_ORT = 'name = "ort-plain"\nbackend = "onnxruntime"\nthreads = 1\n\n[options]\ngraph_optimization = "disable"\n'
SEARCH = {"device": DEVICE, "space": SPACE, "resolution": RESOLUTION, "warmup_epochs": 1, "search_epochs": 1,
          "train_epochs": 1, "max_per_split": 64, "num_threads": 1, "retry_pause_s": 0.0, "predictor_networks": 0,
          "closed_loop_steps": 1, "protocol": {"rounds": 1, "min_runs": 3, "min_time_s": 0.0, "warmup_runs": 1,
                                               "warmup_s": 0.0}}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> dict[str, Any]:
    """``hwnas ARGV --json``: its one JSON object (exit 0 asserted)."""
    code = main([*argv, "--json"])
    out = capsys.readouterr().out if capsys is not None else ""
    assert code == 0, out
    return json.loads(out) if capsys is not None else {}


def _one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``hwnas ARGV`` refused: exit 2 and one line on stderr, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The table, sets and prior CSV described in the module docstring, and the calibrated and transfer predictors
    fitted from them by `hwnas predictor fit` (the fit tests check these files)."""
    root = tmp_path_factory.mktemp("pairs")
    files = {"data": root / "data", "train": root / "train.json", "held": root / "held.json",
             "prior": root / "prior.csv", "calibrated": root / "calibrated.json", "transfer": root / "transfer.json",
             "kernel": tables_dir() / "predictors" / f"{DEVICE}__kernel.json"}
    (root / "ort-plain.toml").write_text(PLAIN_ORT)
    space = ["--space", SPACE, "--resolution", str(RESOLUTION)]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HWNAS_DATA", str(files["data"]))
        _cli(["profile", "--device", DEVICE, *space, "--quiet", *QUICK_TABLE])
        for name, n, seed in (("train", 8, 0), ("held", 4, 1)):
            _cli(["measure", "--device", DEVICE, *space, "--n", str(n), "--seed", str(seed), "--repeat", "0",
                  "--out", str(files[name]), "--quiet", *QUICK_PAIRS])
        prior = {}
        for device in ("cpu-torch", str(root / "ort-plain.toml")):
            path = root / f"{Path(device).stem}.json"
            _cli(["measure", "--device", device, *space, "--n", "12", "--repeat", "0", "--out", str(path),
                  "--quiet", *QUICK_PAIRS])
            prior[Path(device).stem] = MeasurementSet.load(path)
        archs = prior["cpu-torch"].archs()
        assert prior["ort-plain"].archs() == archs  # the same sample (no table of theirs: stratified by MACs)
        write_measurements_csv(files["prior"], archs, {name: _latencies(mset) for name, mset in prior.items()})
        for kind in ("calibrated", "transfer"):
            extra = ["--prior", str(files["prior"])] if kind == "transfer" else []
            _cli(["predictor", "fit", *space, "--kind", kind, "--set", str(files["train"]), *extra,
                  "--out", str(files[kind])])
    return files


def _latencies(mset: MeasurementSet) -> np.ndarray:
    """A set's latencies (ms) read from its rows by hand: paired ratio x the set's reference level."""
    return np.array([mset.rows[i].paired.ratio * mset.reference_ms for i in sorted(mset.rows)])


@pytest.fixture
def data(measured: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The module's files, with its data folder (the profiled table) as this test's user data."""
    monkeypatch.setenv("HWNAS_DATA", str(measured["data"]))
    return measured


def _held(data: dict[str, Path]) -> tuple[list[Architecture], np.ndarray, float]:
    held = MeasurementSet.load(data["held"])
    return held.archs(), _latencies(held), float(held.reference_ms)


def _figures(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Eval's figures computed here with numpy: relative errors, MAPE and bias in %, shares within +-5/10% in %."""
    rel = (predicted - measured) / measured
    return {"mape": 100 * np.mean(np.abs(rel)), "bias_pct": 100 * np.mean(rel),
            "within5_pct": 100 * np.mean(np.abs(rel) <= 0.05), "within10_pct": 100 * np.mean(np.abs(rel) <= 0.10),
            "rmse_ms": np.sqrt(np.mean((predicted - measured) ** 2))}


# -- predictor fit ------------------------------------------------------------------------------------------------
def test_fit_calibrated_from_a_set_measured_here(data: dict[str, Path]) -> None:
    """The calibrated predictor is fitted on the set with the table profiled here (found in the user's folder), at
    the set's reference level, and predicts its training networks closely."""
    predictor = load_predictor(data["calibrated"])
    train = MeasurementSet.load(data["train"])
    assert (predictor.kind, predictor.meta.device, predictor.meta.space, predictor.meta.resolution) == (
        "calibrated", DEVICE, SPACE, RESOLUTION)
    assert predictor.meta.reference_ms == pytest.approx(train.reference_ms, rel=1e-12)
    table = data["data"] / "latency_tables" / f"{DEVICE}__{SPACE}__{RESOLUTION}.json"
    assert len(predictor.rows) == 8 and predictor.meta.training["table"] == str(table)
    predicted = np.array([predictor.predict(a).ms for a in train.archs()])
    assert _figures(predicted, _latencies(train))["mape"] < 25  # fitted on them: near, whatever the machine's noise


def test_fit_transfer_from_two_other_devices(data: dict[str, Path]) -> None:
    """The prior CSV reads back as written, and the transfer predictor is additive: its prediction is its fixed part
    plus one cost per layer, read from its file."""
    archs, prior = read_prior(data["prior"], get_space(SPACE, RESOLUTION))
    assert sorted(prior) == ["cpu-torch", "ort-plain"] and len(archs) == 12
    written = list(csv.reader(data["prior"].open()))
    assert written[0] == ["arch_id", "arch", "cpu-torch", "ort-plain"]
    assert float(written[1][2]) == prior["cpu-torch"][0]  # repr: the float round-trips exactly
    predictor = load_predictor(data["transfer"])
    model = json.loads(data["transfer"].read_text())["model"]
    assert predictor.meta.training["prior_networks"] == 12 and predictor.meta.device == DEVICE
    space = get_space(SPACE, RESOLUTION)
    for arch in MeasurementSet.load(data["held"]).archs():
        by_hand = model["fixed_ms"] + sum(model["layer_costs_ms"][layer.index][layer.names.index(choice)]
                                          for layer, choice in zip(space.layers, arch.choices))
        assert predictor.predict(arch).ms == pytest.approx(by_hand, rel=1e-12)


def test_fit_kernel_answers_one_line_naming_the_build(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    err = _one_line(["predictor", "fit", "--space", SPACE, "--resolution", str(RESOLUTION), "--kind", "kernel",
                     "--set", str(data["train"]), "--out", str(tmp_path / "k.json")], capsys)
    assert "hwnas predictor build --kind kernel --device" in err and "kernels measured" in err
    assert not (tmp_path / "k.json").exists()


# -- predictor eval -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_eval_on_a_held_out_set(kind: str, data: dict[str, Path], capsys) -> None:
    """Every kind on the four held-out networks, figures against numpy: a predictor of the space at the set's
    reference level (ratios compared), the kernel predictor (a generic reference network) in plain ms."""
    result = _cli(["predictor", "eval", "--predictor", str(data[kind]), "--set", str(data["held"])], capsys)
    predictor = load_predictor(data[kind])
    archs, measured, level = _held(data)
    scale = level / predictor.meta.reference_ms if kind != "kernel" else 1.0
    predicted = np.array([predictor.predict(a).ms for a in archs]) * scale
    assert result["n"] == 4
    for name, value in _figures(predicted, measured).items():
        assert result[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert ("table" in result) == (kind == "calibrated")  # the embedded table's own figures, calibrated only
    if kind == "calibrated":  # the table the file embeds, summed by hand and brought to the set's level
        table, space = json.loads(data[kind].read_text())["model"]["table"], get_space(SPACE, RESOLUTION)
        sums = np.array([sum(table["op_ms"][s.key()] for s in space.arch_specs(a) if not s.is_free) for a in archs])
        sums = (sums + table["overhead_ms"]) * level / table["reference_ms"]
        for name, value in _figures(sums, measured).items():
            assert result["table"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_eval_kernel_on_a_csv_needs_the_space(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A CSV names networks by op names: the kernel predictor, which knows no space, reads it with --space."""
    archs, measured, _ = _held(data)
    held_csv = write_measurements_csv(tmp_path / "held.csv", archs, {DEVICE: measured})
    common = ["predictor", "eval", "--predictor", str(data["kernel"]), "--measurements", str(held_csv),
              "--column", DEVICE]
    assert "--space" in _one_line(common, capsys)
    result = _cli([*common, "--space", SPACE, "--resolution", str(RESOLUTION)], capsys)
    predictor = load_predictor(data["kernel"])
    predicted = np.array([predictor.predict(a).ms for a in archs])
    assert result["mape"] == pytest.approx(_figures(predicted, measured)["mape"], rel=1e-9)
    err = _one_line(["predictor", "eval", "--predictor", str(data["calibrated"]), "--measurements", str(held_csv),
                     "--column", DEVICE, "--space", SPACE, "--resolution", "32"], capsys)
    assert "tiny@32" in err and "tiny@16" in err


# -- predict ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_predict_an_architecture(kind: str, data: dict[str, Path], tmp_path: Path, capsys) -> None:
    """Each kind on an architecture .json: its terms add up to its latency, the same as the predictor's own."""
    arch = MeasurementSet.load(data["held"]).archs()[0]
    path = arch.save(tmp_path / "arch.json")
    result = _cli(["predict", "--device", DEVICE, "--predictor", str(data[kind]), str(path)], capsys)
    expected = load_predictor(data[kind]).predict(arch)
    assert result["kind"] == kind and result["latency_ms"] == pytest.approx(expected.ms, rel=1e-12)
    total = sum(t["ms"] for t in result["kernels"]) + result["overhead_ms"]
    assert total == pytest.approx(result["latency_ms"], rel=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_an_onnx_model(kind: str, data: dict[str, Path], tmp_path: Path, capsys) -> None:
    """The kernel kind predicts an .onnx (its kernels); a predictor of a space answers the protocol's one line."""
    from hwnas.runtimes.converters import to_onnx

    space = get_space(SPACE, RESOLUTION)
    model = to_onnx(space.build(MeasurementSet.load(data["held"]).archs()[0]).eval(), space.input_shape,
                    tmp_path / "model.onnx")
    argv = ["predict", "--device", DEVICE, "--predictor", str(data[kind]), str(model)]
    if kind != "kernel":
        err = _one_line(argv, capsys)
        assert f"a {kind} predictor predicts architectures" in err and "kernel predictor" in err
        return
    result = _cli(argv, capsys)
    assert result["latency_ms"] == pytest.approx(load_predictor(data[kind]).predict(model).ms, rel=1e-12)
    assert {t["type"] for t in result["kernels"]} >= {"conv", "dwconv", "pwconv", "gemm"}


def test_predict_finds_the_users_predictor_first(data: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """No --predictor: the device's calibrated predictor of the space, else its transfer one, else the kernels;
    the user's folder is searched before the shipped one."""
    monkeypatch.setenv("HWNAS_DATA", str(tmp_path / "user"))
    space = get_space(SPACE, RESOLUTION)
    arch = MeasurementSet.load(data["held"]).archs()[0].save(tmp_path / "arch.json")
    found = []
    for kind in ("kernel", "transfer", "calibrated"):
        if kind != "kernel":
            destination = user_predictor_path(DEVICE, kind, space)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data[kind].read_bytes())
        found.append((_cli(["predict", "--device", DEVICE, str(arch)], capsys)["predictor"]))
    assert found == [str(data["kernel"]), *(str(user_predictor_path(DEVICE, k, space))
                                            for k in ("transfer", "calibrated"))]
    # a device with no predictor of any kind (cpu-torch has a shipped kernel predictor, which predicts any model)
    err = _one_line(["predict", "--device", "cuda-torch", str(arch)], capsys)
    assert "cuda-torch" in err and "hwnas predictor fit --space tiny --resolution 16" in err


# -- search -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_search_with_each_kind(kind: str, data: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A tiny search (one epoch per phase, one closed-loop step) aims with the predictor it is given."""
    config = tmp_path / "search.json"
    config.write_text(json.dumps(SEARCH))
    out = tmp_path / "run"
    result = _cli(["search", "--config", str(config), "--seed", "0", "--quiet", "--out", str(out),
                   "--predictor", str(data[kind])], capsys)
    report = json.loads((out / "report.json").read_text())
    assert report["latency_model"]["kind"] == kind and report["latency_model"]["path"] == str(data[kind])
    assert result["measured_ms"] > 0 and Architecture.from_dict(result["arch"]).space == SPACE
    assert len(report["closed_loop"]) == 1 and report["closed_loop"][0]["measured_ms"] > 0  # measured on the device
    if kind == "calibrated":  # refitted by the loop: its estimate is the refitted predictor's, the span the first's
        refitted = load_predictor(out / "predictor.json")
        assert report["estimated_ms"] == pytest.approx(refitted.predict(Architecture.from_dict(result["arch"])).ms)
    else:
        assert report["fastest_ms"] <= report["estimated_ms"] <= report["slowest_ms"]  # the predictor's own figures
