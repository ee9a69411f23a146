"""The public Python API (``hwnas.api``, reached as ``hwnas.NAME``): the README's example run as written, the
arguments checked before any work with one line naming the function and the parameter, and the typed results read
against the files the run and the export wrote."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import hwnas
from hwnas.errors import HwnasError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETS = ROOT / "latency_tables" / "sets"
TRAIN_SET = SETS / "cpu-onnxruntime__proxyless__32__train.json"


def readme_example() -> str:
    """The ```python block under "## Python API" in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Python API")
    end = text.find("\n## ", start + 1)
    block = re.search(r"```python\n(.*?)```", text[start:end if end != -1 else None], re.S)
    assert block, "README: no ```python block under '## Python API'"
    return block.group(1)


# -- the README's example ---------------------------------------------------------------------------------------------
def test_readme_example_uses_the_api_it_documents() -> None:
    code = readme_example()
    compile(code, "README.md", "exec")
    for name in ("load_device", "get_space", "profile", "measure", "fit_predictor", "load_predictor", "search",
                 "export"):
        assert f"hwnas.{name}(" in code, name


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HWNAS_DATA", str(data))
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    for name in ("HWNAS_TABLES", "HWNAS_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(work)
    scope: dict[str, Any] = {}
    exec(compile(readme_example(), "README.md (Python API)", "exec"), scope)
    result, report = scope["result"], scope["report"]
    assert isinstance(result, hwnas.SearchResult) and isinstance(report, hwnas.ExportReport)
    written = json.loads((work / "runs" / "api" / "report.json").read_text())
    assert result.arch == hwnas.Architecture.from_dict(written["arch"]) == report.arch
    assert (result.target_ms, result.measured_ms, result.accuracy) == (written["target_ms"], written["measured_ms"],
                                                                        written["accuracy"])
    assert result.latency_model["kind"] == "calibrated" and result.measured_ms is not None and result.accuracy > 0.5
    assert report.files["onnx"] is not None and report.files["onnx"].is_file() and report.within_bounds["onnx"]
    assert sorted(p.name for p in work.iterdir()) == ["heldout.json", "predictor.json", "runs", "tiny16.json",
                                                      "train.json"]
    assert not data.exists() or not any(data.rglob("*.json")), "the example leaves the user's data folder alone"
    assert len(capsys.readouterr().out.splitlines()) >= 4 + 5 + 2


# -- import hwnas ------------------------------------------------------------------------------------------------------
def test_import_hwnas_is_cheap_and_complete() -> None:
    code = "import sys, hwnas; print(sorted(m for m in ('torch', 'numpy', 'typing') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert hwnas.__version__ and "__version__" in hwnas.__all__
    assert set(hwnas.__all__) == {"__version__", *hwnas._LAZY, *hwnas._CALLABLE_PACKAGES}
    for name in hwnas.__all__:
        assert getattr(hwnas, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hwnas.nope  # noqa: B018


def test_search_and_export_are_callable_packages() -> None:
    import hwnas.search.closed_loop as loop  # the package's modules import as before
    from hwnas.api import export, search

    assert loop.__name__ == "hwnas.search.closed_loop" and hwnas.export.pipeline.__name__ == "hwnas.export.pipeline"
    assert callable(hwnas.search) and callable(hwnas.export)
    assert inspect.signature(hwnas.search) == inspect.signature(search)
    assert inspect.signature(hwnas.export) == inspect.signature(export)
    with pytest.raises(HwnasError, match=r"^search: device: "):
        hwnas.search(device=3)


# -- arguments ---------------------------------------------------------------------------------------------------------
def _cases(tmp: Path) -> list[tuple[Callable[[], Any], str]]:
    device = hwnas.load_device("cpu-onnxruntime")
    space = hwnas.get_space("tiny", 16)
    out = tmp / "set.json"
    edited = dataclasses.replace(device, protocol={"rounds": 1})
    return [
        (lambda: hwnas.load_device(3), "load_device: name_or_path: expected a DeviceProfile"),
        (lambda: hwnas.load_device("cpu-onnxruntime", threads=0), "load_device: threads: expected an int >= 1"),
        (lambda: hwnas.get_space(5), "get_space: name: expected a space name"),
        (lambda: hwnas.get_space("tiny", "16"), "get_space: resolution: expected an int >= 1, got '16'"),
        (lambda: hwnas.get_space("tiny", 16, num_classes=True), "get_space: num_classes: expected an int"),
        (lambda: hwnas.profile(device, "tiny"), "profile: space: expected a SearchSpace"),
        (lambda: hwnas.profile(device, space, protocol={"bogus": 1}), "profile: protocol: unknown field 'bogus'"),
        (lambda: hwnas.profile(device, space, chunk=0), "profile: chunk: expected an int >= 1"),
        (lambda: hwnas.measure(device, space, out=out, n=0), "measure: n: expected an int >= 1"),
        (lambda: hwnas.measure(device, space, out=out, protocol={"pairs": 2}), "measure: protocol: field 'pairs'"),
        (lambda: hwnas.measure(device, space, out=None), "measure: out: expected a path"),
        (lambda: hwnas.fit_predictor(42), "fit_predictor: measurements: expected a MeasurementSet"),
        (lambda: hwnas.fit_predictor([]), "fit_predictor: measurements: expected a MeasurementSet"),
        (lambda: hwnas.fit_predictor(TRAIN_SET, kind="kernel"),
         "fit_predictor: kind: a kernel predictor does not learn from measured networks"),
        (lambda: hwnas.fit_predictor(TRAIN_SET, kind="bogus"), "fit_predictor: kind: expected one of"),
        (lambda: hwnas.fit_predictor(TRAIN_SET, kind="transfer"), "fit_predictor: prior: kind='transfer' needs"),
        (lambda: hwnas.fit_predictor(TRAIN_SET, prior="p.csv"), "fit_predictor: prior: other devices'"),
        (lambda: hwnas.fit_predictor(tmp / "none.json"), "fit_predictor: measurements: "),
        (lambda: hwnas.fit_predictor(TRAIN_SET, column="dev"), "fit_predictor: column: names a CSV's"),
        (lambda: hwnas.fit_predictor(ROOT / "tests/fixtures/fbnet_latency/fbnet_latency_300.csv"),
         "fit_predictor: column: expected the CSV's latency column"),
        (lambda: hwnas.load_predictor("no-such__kernel"), "load_predictor: name_or_path: no predictor file"),
        (lambda: hwnas.load_predictor(None), "load_predictor: name_or_path: expected a path"),
        (lambda: hwnas.search(device=3), "search: device: expected a DeviceProfile"),
        (lambda: hwnas.search(device=edited),
         "search: device: the DeviceProfile 'cpu-onnxruntime' was made or changed in code"),
        (lambda: hwnas.search(space=3), "search: space: expected a space name"),
        (lambda: hwnas.search(space=space, resolution=32), "search: resolution: 32 differs from the space's 16"),
        (lambda: hwnas.search(bogus=1), "search: unexpected keyword argument 'bogus'"),
        (lambda: hwnas.search(out=_foreign(tmp)), "search: out "),
        (lambda: hwnas.search(config=3), "search: config: expected a SearchConfig"),
        (lambda: hwnas.search(config={"search_epochs": -1}), "search: config: field 'search_epochs'"),
        (lambda: hwnas.search(latency_model=3), "search: latency_model: expected a predictor"),
        (lambda: hwnas.search(latency_model="cpu-onnxruntime__proxyless__32__calibrated", predictor="none"),
         "search: latency_model: given together with predictor='none'"),
        (lambda: hwnas.export(3, tmp / "x"), "export: source: expected a SearchResult"),
        (lambda: hwnas.export(tmp, tmp / "x", formats="onnx,bogus"), "export: formats: expected one of"),
        (lambda: hwnas.export(tmp, tmp / "x", formats=[]), "export: formats: expected a non-empty list"),
        (lambda: hwnas.export(tmp, tmp / "x", precision="fp64"), "export: precision: expected one of"),
        (lambda: hwnas.export(tmp, tmp / "x", bogus=1), "export: unexpected keyword argument 'bogus'"),
    ]


def _foreign(tmp: Path) -> Path:
    """A folder holding the user's own ``arch.json``: not a run folder, so a search refuses it."""
    (tmp / "mine").mkdir(exist_ok=True)
    (tmp / "mine" / "arch.json").write_text("{}")
    return tmp / "mine"


def test_arguments_are_checked_in_one_line_naming_the_parameter(tmp_path: Path) -> None:
    from hwnas.api._checks import for_python

    for call, expected in _cases(tmp_path):
        with pytest.raises(HwnasError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(expected), (expected, message)
        assert "\n" not in message and for_python(message) == message, message  # no flags, but in a quoted command
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["arch.json", "mine"], "nothing else written"


# -- predictors --------------------------------------------------------------------------------------------------------
def test_fit_predictor_takes_set_objects_and_leaves_them_as_they_were(tmp_path: Path) -> None:
    from hwnas.latency.sets import MeasurementSet

    path = shutil.copy(TRAIN_SET, tmp_path / "train.json")
    before = Path(path).read_bytes()
    mset = MeasurementSet.load(path)
    content = mset.to_dict()
    from_object = hwnas.fit_predictor(mset, residual="linear")
    from_path = hwnas.fit_predictor(str(path), residual="linear")
    assert isinstance(from_object, hwnas.Predictor) and from_object.kind == "calibrated"
    assert Path(path).read_bytes() == before and mset.to_dict() == content
    archs = mset.archs()[:5]
    assert [from_object.predict(a).ms for a in archs] == [from_path.predict(a).ms for a in archs]
    assert from_object.meta.training["sources"] == [str(path)]
    mset.rows.pop(min(mset.rows))  # changed in memory, not saved: fitting would read stale rows from the file
    with pytest.raises(HwnasError, match=r"^fit_predictor: measurements: the MeasurementSet differs from its file"):
        hwnas.fit_predictor(mset)


def test_load_predictor_finds_names_in_the_users_folder_first(tmp_path: Path) -> None:
    from hwnas.latency.table import tables_dir, user_tables_dir

    name = "cpu-onnxruntime__proxyless__32__calibrated"
    shipped = tables_dir() / "predictors" / f"{name}.json"
    assert hwnas.load_predictor(name).path == shipped
    names = hwnas.predictor_names()
    assert name in names and "cpu-onnxruntime__kernel" in names
    assert "cpu-onnxruntime__kernel.measurements" not in names  # the data beside it is not a predictor
    mine = user_tables_dir() / "predictors" / f"{name}.json"
    mine.parent.mkdir(parents=True)
    shutil.copy(shipped, mine)
    for given in (name, f"{name}.json"):
        assert hwnas.load_predictor(given).path == mine
    assert hwnas.load_predictor(shipped).path == shipped  # a path is that file


# -- results -----------------------------------------------------------------------------------------------------------
def test_export_report_reads_the_export_it_describes(tmp_path: Path) -> None:
    space = hwnas.get_space("tiny", 16, num_classes=10)
    arch = space.arch(("k3_e3", "zero", "k5_e3", "k3_e6"))
    report = hwnas.export(arch, tmp_path / "export", formats="onnx", measure=False, verify_samples=16)
    written = json.loads((tmp_path / "export" / "export.json").read_text())
    assert report.arch == arch and report.trained is False and report.out == tmp_path / "export"
    assert report.files == {"onnx": tmp_path / "export" / "model.onnx", "report": tmp_path / "export" / "export.json"}
    assert hwnas.Architecture.load(tmp_path / "export" / "arch.json") == arch  # the source it was exported from
    assert report.within_bounds == written["within_bounds"] == {"onnx": True}
    assert report.measured_ms == {"onnx": None} and report.target_ms is None and report.accuracy is None
    assert report.notes == tuple(written["notes"]) and report.raw == written
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.out = tmp_path  # type: ignore[misc]


def test_search_result_lifts_the_summary_keys_the_run_returns() -> None:
    from hwnas.api.results import SearchResult
    from hwnas.search.run_report import SUMMARY_KEYS

    lifted = [f.name for f in dataclasses.fields(SearchResult) if f.name != "summary"]
    assert set(lifted) <= set(SUMMARY_KEYS) | {"out", "files"}, "a field no run summary has"
    summary = {key: None for key in SUMMARY_KEYS}
    summary.update(arch={"space": "tiny", "resolution": 16, "choices": ["k3_e3", "zero", "k5_e3", "k3_e6"],
                         "num_classes": 10}, arch_human="tiny", device="cpu-onnxruntime", space="tiny", resolution=16,
                   target_ms=0.5, estimated_ms=0.45, measured_ms=0.4, accuracy=0.75,
                   latency_model={"kind": "table"}, out="runs/x", files={"arch": "runs/x/arch.json"})
    result = SearchResult.from_summary(summary)
    assert result.arch == hwnas.Architecture("tiny", 16, ("k3_e3", "zero", "k5_e3", "k3_e6"), 10)
    assert result.out == Path("runs/x") and result.files == {"arch": Path("runs/x/arch.json")}
    assert result.measured_over_target == pytest.approx(0.8) and result.summary == summary
    assert "summary" not in repr(result)


def test_errors_from_the_layers_below_name_parameters_not_flags(tmp_path: Path) -> None:
    from hwnas.api._checks import for_python

    assert for_python("--target-ms 0.1: run `hwnas profile --device d --out x`; pass another --out") == (
        "target_ms 0.1: run `hwnas profile --device d --out x`; pass another out")
    space = hwnas.get_space("tiny", 16, num_classes=10)
    arch = space.arch(("k3_e3", "zero", "k5_e3", "k3_e6"))
    with pytest.raises(HwnasError) as caught:  # the export pipeline words this one for the CLI: "--opset: ..."
        hwnas.export(arch, tmp_path / "export", formats="onnx", measure=False, opset=3)
    message = str(caught.value)
    assert message.startswith("opset: expected") and "--" not in message, message
