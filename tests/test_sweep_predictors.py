"""Issue 16, the predictor and estimate paths: each bad input one line and exit 2 before any work, the README's
few-shot example fitted and evaluated, and no answer built on a corrupt value or a fitting artefact."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.latency.predictors.kernel import GROUPS, _fit_correction, _network_ratio
from hwnas.latency.table import tables_dir
from hwnas.spaces import get_space

REAL = Path(__file__).parent / "fixtures" / "fbnet_latency" / "fbnet_latency_300.csv"


@pytest.fixture
def fewshot(tmp_path: Path) -> Path:
    """The README's few-shot files from real FBNet rows: new.csv (20 networks of pixel3 as ``dev``), others.csv
    (the other devices, all rows) and held.csv (pixel3's rows 200.., held out)."""
    rows = list(csv.reader(REAL.open()))
    at = rows[0].index("pixel3")
    for name, picked in (("new.csv", rows[1:21]), ("held.csv", rows[200:])):
        with (tmp_path / name).open("w", newline="") as handle:
            csv.writer(handle).writerows([["arch", "dev"], *[[r[1], r[at]] for r in picked]])
    with (tmp_path / "others.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([[c for i, c in enumerate(r) if i != at] for r in rows])
    return tmp_path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    return captured.err


def test_readme_fewshot_fit_then_eval(fewshot: Path, capsys) -> None:
    t = str(fewshot / "t.json")
    code, fitted = _run(["predictor", "fit", "--space", "fbnet-cifar100", "--kind", "transfer", "--measurements",
                         str(fewshot / "new.csv"), "--column", "dev", "--prior", str(fewshot / "others.csv"),
                         "--out", t], capsys)
    assert code == 0 and fitted["kind"] == "transfer" and fitted["n"] == 20
    code, figures = _run(["predictor", "eval", "--predictor", t, "--measurements", str(fewshot / "held.csv"),
                          "--column", "dev", "--plot", str(fewshot / "e.svg")], capsys)
    assert code == 0 and figures["n"] == 101 and figures["spearman"] > 0.7 and "table" not in figures
    assert (fewshot / "e.svg").read_text().lstrip().startswith("<?xml")


def test_fit_from_csv_without_kind(fewshot: Path, capsys) -> None:
    """--prior names the transfer kind; a CSV alone fits the documented per-layer calibrated predictor."""
    common = ["predictor", "fit", "--space", "fbnet-cifar100", "--measurements", str(fewshot / "new.csv"),
              "--column", "dev"]
    code, fitted = _run([*common, "--prior", str(fewshot / "others.csv"), "--out", str(fewshot / "t.json")], capsys)
    assert code == 0 and fitted["kind"] == "transfer"
    code, fitted = _run([*common, "--residual", "linear", "--out", str(fewshot / "c.json")], capsys)
    assert code == 0 and fitted["kind"] == "calibrated" and fitted["n"] == 20
    assert fitted["training"]["sources"] == [f"{fewshot / 'new.csv'}:dev"]


@pytest.mark.parametrize("extra, message", [
    ([], "no measurements"),
    (["--kind", "transfer"], "no measurements"),
    (["--kind", "calibrated", "--measurements", "x.csv", "--column", "c", "--prior", "p.csv"], "--kind transfer"),
    (["--kind", "transfer", "--measurements", "x.csv", "--column", "c"], "needs --prior"),
])
def test_fit_refused_before_reading(extra, message, tmp_path, capsys) -> None:
    table = tables_dir() / "cpu-onnxruntime__proxyless__32.json"
    err = _error(["predictor", "fit", "--space", "proxyless", "--table", str(table), *extra,
                  "--out", str(tmp_path / "p.json")], capsys)
    assert message in err and not (tmp_path / "p.json").exists()


def test_eval_plot_suffix_checked_before_loading(tmp_path, capsys) -> None:
    err = _error(["predictor", "eval", "--predictor", str(tmp_path / "absent.json"), "--measurements", "x.csv",
                  "--column", "dev", "--plot", str(tmp_path / "out.txt")], capsys)
    assert "--plot" in err and ".png" in err and "absent.json" not in err


def test_predictor_with_nan_refused_at_load(fewshot: Path, capsys) -> None:
    t = fewshot / "t.json"
    assert main(["predictor", "fit", "--space", "fbnet-cifar100", "--measurements", str(fewshot / "new.csv"),
                 "--column", "dev", "--prior", str(fewshot / "others.csv"), "--out", str(t)]) == 0
    data = json.loads(t.read_text())
    data["model"]["layer_costs_ms"][2][1] = float("nan")
    t.write_text(json.dumps(data))  # Python writes the NaN token, as a hand edit could
    err = _error(["predictor", "eval", "--predictor", str(t), "--measurements", str(fewshot / "held.csv"),
                  "--column", "dev"], capsys)
    assert str(t) in err and "model.layer_costs_ms[2][1]" in err and "nan" in err


def test_kernel_predictor_eval_on_csv_is_one_line(fewshot: Path, capsys) -> None:
    kernel = tables_dir() / "predictors" / "cpu-onnxruntime__kernel.json"
    err = _error(["predictor", "eval", "--predictor", str(kernel), "--measurements", str(fewshot / "held.csv"),
                  "--column", "dev"], capsys)
    assert "kernel" in err and "--set" in err


@pytest.mark.parametrize("content", [b"", b"\x08\x07", b"not a model"])
def test_predict_refuses_a_file_that_is_not_onnx(content, tmp_path, capsys) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(content)
    err = _error(["predict", "--device", "cpu-onnxruntime", "--predictor", str(tmp_path / "absent.json"),
                  str(model)], capsys)
    assert str(model) in err and "ONNX model" in err


def test_estimate_refuses_an_implausible_entry(tmp_path, capsys) -> None:
    data = json.loads((tables_dir() / "cpu-onnxruntime__proxyless__32.json").read_text())
    key = next(iter(data["entries"]))
    data["entries"][key]["median_ms"] = 1.7e308
    table = tmp_path / "t.json"
    table.write_text(json.dumps(data))
    space = get_space("proxyless", 32, data["num_classes"])
    arch = space.random_arch(random.Random(0)).save(tmp_path / "a.json")
    err = _error(["estimate", "--table", str(table), str(arch)], capsys)
    assert all(part in err for part in (str(table), key, "median_ms", "1.7e+308", "1e+06"))


def _kernels(conv: float, memory: float) -> tuple[list[SimpleNamespace], dict[int, float]]:
    kernels = [SimpleNamespace(type="conv"), SimpleNamespace(type="add")]
    return kernels, {id(kernels[0]): conv, id(kernels[1]): memory}


def test_kernel_correction_has_no_overhead_artefact() -> None:
    """Networks whose latency bends below the kernel sum (as the shipped calibration networks do): a free intercept
    fitted them with 0.33 reference units of 'overhead'; the fit now goes through the measured overhead at zero."""
    overhead, costs = 0.001, {}
    networks = []
    for size in np.linspace(0.6, 7.0, 12):
        kernels, scripted = _kernels(0.9 * size, 0.1 * size)
        costs.update(scripted)
        networks.append((kernels, overhead + 1.2 * size ** 0.8))
    stub = SimpleNamespace(overhead_ratio=overhead,
                           kernel_costs=lambda ks: np.array([costs[id(k)] for k in ks]))
    correction = _fit_correction(stub, networks, ridge=0.01)
    assert correction["intercept"] == 0.0 and correction["fit_abs_error_max"] < 0.01
    tiny = 0.004  # a one-conv model: its true ratio is 0.001 + 1.2 * 0.004 ** 0.8 ~ 0.0152
    predicted = overhead + _network_ratio(sum(a * tiny / len(GROUPS) for a in correction["coef"]), correction)
    assert predicted == pytest.approx(overhead + 1.2 * tiny ** 0.8, rel=0.25)


def test_shipped_kernel_overhead_is_a_run_not_a_network(tmp_path, capsys) -> None:
    """The shipped predictor's fixed term is about a run() (2 us), and a model of no kernels gets a note."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    code, result = _run(["predict", "--device", "cpu-onnxruntime", str(model)], capsys)
    assert code == 0 and 0 < result["overhead_ms"] < 0.02 and result["kernels"] == []
    assert result["latency_ms"] == pytest.approx(result["overhead_ms"]) and "overhead" in result["note"]


def test_shipped_tables_pass_the_plausibility_check() -> None:
    from hwnas.latency.table import LatencyTable

    for path in sorted(tables_dir().glob("*.json")):
        LatencyTable.load(path)


def test_copy_of_shipped_predictor_loads(tmp_path) -> None:
    from hwnas.latency.predictors import load_predictor

    for path in sorted((tables_dir() / "predictors").glob("*__*.json")):
        if not path.name.endswith(".measurements.json"):
            load_predictor(shutil.copy(path, tmp_path / path.name))
