"""Issue 16 (the second sweep): the search config's ranges, the target against the space's latency range, the
fastest architecture's estimate, and export's device, NaN weights and int8 bound."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.export import ExportConfig, export_model, summary_text
from hwnas.export.config import DEFAULT_BOUNDS
from hwnas.export.verify import compare
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors.base import PredictorMeta
from hwnas.latency.predictors.calibrated import fit_calibrated
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.search.aim import Choice, aim_target
from hwnas.search.decode import fastest_arch, latency_range, slowest_arch
from hwnas.search.run import SearchConfig, run_search
from hwnas.search.run_config import _rules
from hwnas.search.run_report import save_model
from hwnas.spaces import get_space
from tests.test_search_run import QUICK, tables  # noqa: F401 (tables: the fixture)

ROOT = Path(__file__).resolve().parents[1]


# -- every field of SearchConfig has its range -------------------------------------------------------------
def test_every_search_config_field_has_exactly_one_rule() -> None:
    names = [name for name, _, _ in _rules()]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(SearchConfig))
    assert len(names) == len(set(names)) == 68
    SearchConfig()  # the defaults pass their own rules


BAD = [("arch_lr", -1), ("weight_lr", -1), ("momentum", -5), ("arch_eps", -1), ("arch_betas", [2, 3]),
       ("label_smoothing", 2), ("grad_clip", -1), ("grad_clip", 0), ("target_ms", float("inf")),
       ("target_ms", float("nan")), ("weight_decay", float("nan")), ("train_lr", 0), ("momentum", 1.0),
       ("mnas_baseline_momentum", 1.0), ("mnas_entropy_weight", -0.1), ("closed_loop_weight", float("inf")),
       ("retry_pause_s", float("nan")), ("target_fraction", 1.5), ("arch_fraction", 0), ("seed", -1),
       ("resolution", 0), ("device_threads", 10**9), ("predictor", ""), ("loss_params", {"lam": float("inf")}),
       ("loss_params", {"bogus": 1}), ("reward_params", {"w": float("nan")}), ("protocol", {"rounds": -1}),
       ("paired", {"pairs": float("nan")}), ("space", "nope"), ("max_per_split", 0), ("num_threads", 0),
       ("max_memory_mb", 0), ("max_memory_mb", float("inf")), ("max_params_mb", -1)]


@pytest.mark.parametrize("name, value", BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_out_of_range_fields_are_refused_in_one_line(name: str, value: Any) -> None:
    with pytest.raises(HwnasError) as error:
        SearchConfig().with_overrides({name: value}, "command line --set")
    message = str(error.value)
    assert message.startswith(f"command line --set: field {name!r}") and "\n" not in message


def test_in_range_values_are_accepted() -> None:
    config = SearchConfig().with_overrides({"grad_clip": None, "arch_betas": [0.0, 0.999], "label_smoothing": 0.1,
                                            "momentum": 0.0, "arch_eps": 1e-8, "loss_params": {"lam": 0.2},
                                            "protocol": {"rounds": 1}, "target_ms": 0.3})
    assert config.grad_clip is None and config.target_ms == 0.3


@pytest.mark.parametrize("content, expected", [(b'{"weight_lr": NaN}', "field 'weight_lr'"),
                                               (b'{"momentum": 0.9, \xff\xfe}', "not a UTF-8 text file"),
                                               (b"momentum = 0.9", "invalid JSON"),
                                               (b'{"arch_betas": [0.9, Infinity]}', "field 'arch_betas'")])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(HwnasError) as error:
        SearchConfig.from_file(path)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)


@pytest.mark.parametrize("flags", [["--set", "arch_lr=-1"], ["--set", "grad_clip=-1"], ["--target-ms", "inf"],
                                   ["--target-ms", "-2"], ["--set", "label_smoothing=2"], ["--config", "CONFIG"]])
def test_search_refuses_bad_settings_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     flags: list[str]) -> None:
    config = tmp_path / "bad.json"
    config.write_bytes(b'{"weight_lr": NaN}')
    flags = [str(config) if f == "CONFIG" else f for f in flags]
    quick = ["--device", "cpu-torch", "--space", "tiny", "--epochs", "0", "--warmup-epochs", "0",
             "--train-epochs", "0", "--set", "measure=false", "--set", "predictor=none", "--quiet"]
    assert main(["search", *quick, *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


# -- the target against the space's latency range ----------------------------------------------------------
def _table_choice() -> tuple[Any, Choice, TableEstimator]:
    space = get_space("tiny", 32, 10)
    table = TableEstimator(LatencyTable.load(default_table_path("cpu-torch", "tiny", 32)), space)
    return space, Choice(table, "table", None, "test"), table


def test_a_target_below_the_fastest_is_refused_and_above_the_slowest_is_noted(
        tables: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    space, choice, table = _table_choice()
    fastest, slowest = (table.latency_ms(a(space, table)) for a in (fastest_arch, slowest_arch))
    with pytest.raises(HwnasError, match=r"below the fastest architecture of tiny@32 \(est\. .* ms by the latency"):
        aim_target(space, choice, table, SearchConfig(target_ms=fastest * 0.9))
    assert aim_target(space, choice, table, SearchConfig(target_ms=fastest)) == (fastest, fastest, slowest)
    capsys.readouterr()
    assert aim_target(space, choice, table, SearchConfig(target_ms=slowest * 1.05))[0] == slowest * 1.05
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is above the slowest architecture of the space" in err[0]


def test_the_run_reports_a_target_above_the_slowest(tables: Path, tmp_path: Path,  # noqa: F811
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    space, _, table = _table_choice()
    slowest = table.latency_ms(slowest_arch(space, table))
    config = SearchConfig().with_overrides({**QUICK, "out": str(tmp_path / "run"), "target_ms": slowest * 1.1,
                                            "measure": False, "closed_loop_steps": 0})
    result = run_search(config, progress=False)
    assert f"(est. {slowest:.4g} ms): every architecture meets it" in result["target_note"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["target_note"] == result["target_note"] and report["fastest_ms"] > 0
    assert "above the slowest architecture" in capsys.readouterr().err


# -- the fastest architecture's estimate is never <= 0 -----------------------------------------------------
@pytest.fixture(scope="module")
def extrapolating_predictor() -> tuple[Any, Any, TableEstimator]:
    """The calibrated predictor fitted on 24 of the shipped cpu-litert proxyless@32 measurements (random sample,
    seed 5), as a search builds one from 24 networks: its ridge correction puts the fastest architecture at
    about -0.06 ms (the fastest network it was fitted on took 0.21 ms)."""
    space = get_space("proxyless", 32, 10)
    data = json.loads((ROOT / "latency_tables/sets/cpu-litert__proxyless__32__train.json").read_text())
    table = LatencyTable.load(ROOT / "latency_tables/cpu-litert__proxyless__32.json")
    rows = random.Random(5).sample(data["rows"], 24)
    meta = PredictorMeta(device="cpu-litert", fingerprint=data["fingerprint"],
                         reference_ms=data["reference"]["median_ms"])
    predictor = fit_calibrated(space, [space.arch(r["arch"].split()) for r in rows], [r["latency_ms"] for r in rows],
                               table=table, meta=meta, seed=5)
    return space, predictor, TableEstimator(table, space)


def test_a_negative_fastest_estimate_falls_back_to_the_table(extrapolating_predictor: tuple) -> None:
    space, predictor, table = extrapolating_predictor
    fastest = fastest_arch(space, predictor)
    assert predictor.latency_ms(fastest) <= 0  # the cause: the correction extrapolates below zero
    span = latency_range(space, predictor, table)
    assert span.fastest_ms == pytest.approx(table.latency_ms(fastest)) and span.fastest_ms > 0
    assert "a latency is never <= 0" in span.note and span.slowest_ms > span.fastest_ms
    with pytest.raises(HwnasError, match="a latency is never <= 0"):
        latency_range(space, predictor)  # no table to fall back on: refused, never a negative figure
    choice = Choice(predictor, "calibrated", None, "built from 24 networks measured now")
    target, fastest_ms, _ = aim_target(space, choice, table, SearchConfig(target_ms=None))
    assert fastest_ms == span.fastest_ms and target > fastest_ms and "latency table's" in choice.note


# -- export: the run's device, NaN weights, bounds ---------------------------------------------------------
def _tiny_run(folder: Path, device: str, nan: bool = False) -> Path:
    """A run folder as ``hwnas search`` writes it (untrained tiny network; NaN in one weight when ``nan``)."""
    space = get_space("tiny", 32, 10)
    arch = space.random_arch(random.Random(0))
    torch.manual_seed(0)
    net = space.build(arch).eval()
    if nan:
        with torch.no_grad():
            next(p for p in net.parameters() if p.dim() > 1)[0].fill_(float("nan"))
    config = {"data": None, "seed": 0, "arch_fraction": 0.2, "test_fraction": 0.2, "max_per_split": 64}
    save_model(folder / "model.pt", net, arch, config, {"mean": [0.5] * 3, "std": [0.25] * 3})
    arch.save(folder / "arch.json")
    (folder / "report.json").write_text(json.dumps({"target_ms": 0.5, "device": device, "config": config}))
    return folder


def _user_device(name: str) -> None:
    """A user device file (``$HWNAS_DATA/devices``): ONNX Runtime, one thread, under its own name."""
    from hwnas.devices import user_devices_dir

    folder = user_devices_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(f'name = "{name}"\nbackend = "onnxruntime"\ndevice = "cpu"\nthreads = 1\n'
                                         'precision = "fp32"\n')


FAST = ExportConfig(formats=("onnx",), verify_samples=16, protocol_overrides={"rounds": 1, "min_time_s": 0.0,
                                                                              "min_runs": 3, "warmup_s": 0.0})


def test_export_measures_on_the_runs_device(tmp_path: Path) -> None:
    _user_device("my-ort")
    result = export_model(_tiny_run(tmp_path, "my-ort"), tmp_path / "out", FAST)
    assert result["devices"] == {"onnx": "my-ort"} and result["latency"]["onnx"]["median_ms"] > 0
    assert result["target_device"] == "my-ort" and not [n for n in result["notes"] if "do not compare" in n]
    assert "on my-ort" in summary_text(result) and "target 0.500 ms on my-ort" in summary_text(result)


def test_export_says_when_the_figure_is_from_another_device(tmp_path: Path) -> None:
    result = export_model(_tiny_run(tmp_path, "cuda-tensorrt"), tmp_path / "out",
                          dataclasses.replace(FAST, measure=False))
    assert result["devices"] == {"onnx": "cpu-onnxruntime"}
    assert any(n.startswith("onnx: measured on cpu-onnxruntime, but the target 0.500 ms is for cuda-tensorrt")
               for n in result["notes"])
    assert "target 0.500 ms on cuda-tensorrt" in summary_text(result)


def test_export_refuses_nan_weights_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _tiny_run(tmp_path, "cpu-onnxruntime", nan=True)
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NaN or inf" in err and "model.pt" in err
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_a_nan_difference_is_never_within_bounds() -> None:
    reference = np.array([[1.0, 2.0, 0.5], [3.0, 0.1, 0.2]])
    both_nan = compare(np.full_like(reference, np.nan), np.full_like(reference, np.nan), DEFAULT_BOUNDS["fp32"])
    assert not both_nan.within_bounds and both_nan.top1_agreement == 0.0  # argmax of NaN rows agreed before
    one_row = reference.copy()
    one_row[1, 0] = np.nan
    check = compare(reference, one_row, DEFAULT_BOUNDS["int8"])
    assert not check.within_bounds and check.top1_agreement == 0.5


def test_int8_bound_refuses_half_the_logit_scale() -> None:
    """An int8 file off by 0.49 of the logit scale on one image is not "ok" (the bound was 0.5 of the scale)."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(256, 10)) * 4
    reference[np.arange(256), rng.integers(0, 10, 256)] += 12  # clear winners: agreement stays 1.0
    outputs = reference + rng.normal(size=reference.shape) * 0.01
    scale = float(np.abs(reference).max())
    outputs[0, 0] += 0.49 * scale
    check = compare(reference, outputs, DEFAULT_BOUNDS["int8"])
    assert check.top1_agreement == 1.0 and not check.within_bounds
    outputs[0, 0] -= 0.49 * scale
    assert compare(reference, outputs, DEFAULT_BOUNDS["int8"]).within_bounds
