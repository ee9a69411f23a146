"""``hwnas export``: every space to ONNX and TFLite with fp32 verification, int8 and fp16 TFLite, loading the
artifacts from a separate process, the TensorRT path without TensorRT, sources and one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.export import ExportConfig, export_model, load_source
from hwnas.export.config import DEFAULT_BOUNDS
from hwnas.export.metadata import read_onnx_metadata, read_tflite_metadata
from hwnas.export.tensorrt_export import write_trtexec_script
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.table import LatencyTable
from hwnas.search.run_report import save_model
from hwnas.spaces import get_space, space_names

HAS_LITERT = all(importlib.util.find_spec(n) is not None for n in ("ai_edge_litert", "litert_torch"))
NO_LITERT = "LiteRT not installed: pip install 'hwnas[tflite]' (ai-edge-litert, litert-torch)"
QUICK = {"warmup_runs": 1, "warmup_s": 0.0, "min_runs": 3, "min_time_s": 0.0, "max_runs": 3, "rounds": 1,
         "max_remeasure": 0}
FAST = ExportConfig(verify_samples=20, calibration_batches=2, calibration_batch_size=16, protocol_overrides=QUICK)
RESOLUTION = 32  # the smallest resolution every registered space allows


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def fast(**overrides: object) -> ExportConfig:
    from dataclasses import replace

    return replace(FAST, **overrides)


def arch_file(folder: Path, space_name: str, seed: int = 0) -> Path:
    space = get_space(space_name, RESOLUTION)
    return space.random_arch(random.Random(seed)).save(folder / f"{space_name}.json")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder like ``hwnas search`` writes, with a tiny network trained for a few steps on digits."""
    from hwnas.data import load_dataset

    folder = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several threads on a busy 2-core machine are 10-100x slower for this tiny net
    torch.manual_seed(0)
    data = load_dataset(None, RESOLUTION, 0)
    space = get_space("tiny", RESOLUTION, data.num_classes)
    arch = space.random_arch(random.Random(3))
    net = space.build(arch)
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    images, labels = data.split("train")
    net.train()
    for _ in range(2):
        for start in range(0, len(labels), 64):
            loss = torch.nn.functional.cross_entropy(net(images[start:start + 64]), labels[start:start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    torch.set_num_threads(threads)
    arch.save(folder / "arch.json")
    config = {"data": None, "seed": 0, "arch_fraction": 0.2, "test_fraction": 0.2, "max_per_split": None}
    save_model(folder / "model.pt", net, arch, config,
               {"accuracy": 0.9, "classes": data.classes, "mean": list(data.mean), "std": list(data.std)})
    (folder / "report.json").write_text(json.dumps({"arch": arch.to_dict(), "target_ms": 0.5, "device": "cpu-litert",
                                                    "estimated_ms": 0.4, "config": config}))
    return folder


# -- every space: ONNX + TFLite fp32 ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=space_names())
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not HAS_LITERT:
        pytest.skip(NO_LITERT)
    folder = tmp_path_factory.mktemp(request.param)
    result = export_model(arch_file(folder, request.param), folder / "out", FAST)
    return {"space": request.param, "folder": folder, "result": result}


def test_fp32_export_verifies(exported: dict) -> None:
    result = exported["result"]
    for fmt in ("onnx", "tflite"):
        assert Path(result["files"][fmt]).is_file()
        assert result["within_bounds"][fmt] is True, result["verification"][fmt]
        assert result["max_abs_diff"][fmt] <= 1e-4 * max(1.0, result["verification"][fmt]["output_scale"])
        assert result["measured_ms"][fmt] > 0
        estimated, note = result["estimated_ms"][fmt], result["estimates"][fmt].get("note") or ""
        # random 1000-class architecture: a shipped table may exist but lacks its classifier, or none exists
        assert (estimated is None and ("no latency table" in note or "lacks 1 of the ops" in note
                                       and "--num-classes 1000" in note)) or estimated > 0
    on_disk = json.loads(Path(result["files"]["report"]).read_text())
    assert on_disk["max_abs_diff"] == result["max_abs_diff"] and on_disk["devices"] == {
        "onnx": "cpu-onnxruntime", "tflite": "cpu-litert"}


def test_onnx_is_static_folded_and_carries_the_architecture(exported: dict) -> None:
    result = exported["result"]
    model = onnx.load(result["files"]["onnx"])
    onnx.checker.check_model(model)
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,) = model.graph.input
    assert inp.name == "input" and [o.name for o in model.graph.output] == ["logits"]
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, RESOLUTION, RESOLUTION]
    meta = read_onnx_metadata(Path(result["files"]["onnx"]))
    assert json.loads(meta["hwnas.arch"]) == result["source"]["arch"] and meta["hwnas.version"]
    assert json.loads(read_tflite_metadata(Path(result["files"]["tflite"]))["hwnas.arch"]) == result["source"]["arch"]


_CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
onnx_path, tflite_path, x_path = sys.argv[1:4]
x = np.load(x_path)
session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
y_onnx = session.run(None, {session.get_inputs()[0].name: x})[0]
interpreter = Interpreter(model_path=tflite_path)
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
interpreter.set_tensor(detail["index"], x if list(detail["shape"]) == list(x.shape) else x.transpose(0, 2, 3, 1).copy())
interpreter.invoke()
y_tflite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
print(json.dumps({"onnx": y_onnx.tolist(), "tflite": y_tflite.tolist(),
                  "hwnas_imported": any(m.split(".")[0] == "hwnas" for m in sys.modules)}))
"""


def test_artifacts_load_in_a_plain_separate_process(exported: dict, tmp_path: Path) -> None:
    """onnxruntime and ai_edge_litert alone (no hwnas import) load and run the files, matching PyTorch."""
    result = exported["result"]
    source = load_source(result["source"]["path"])
    x = np.random.default_rng(0).standard_normal((1, 3, RESOLUTION, RESOLUTION)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    child = subprocess.run([sys.executable, "-c", _CHILD, result["files"]["onnx"], result["files"]["tflite"],
                            str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert child.returncode == 0, child.stderr[-2000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["hwnas_imported"] is False
    with torch.no_grad():
        expected = source.module(torch.from_numpy(x)).numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    for fmt in ("onnx", "tflite"):
        assert np.abs(np.asarray(out[fmt]) - expected).max() <= 1e-4 * scale


# -- quantized TFLite --------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_LITERT, reason=NO_LITERT)
def test_int8_tflite_of_a_trained_tiny_run_meets_its_bound(trained_run: Path, tmp_path: Path) -> None:
    result = export_model(trained_run, tmp_path, fast(formats=("tflite",), precision="int8", nhwc=True))
    io = result["tflite_io"]
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8" and "scale" in io["input"]
    assert io["input"]["shape"] == [1, RESOLUTION, RESOLUTION, 3] and result["input_layout"]["tflite"] == "NHWC"
    check = result["verification"]["tflite"]
    bounds = DEFAULT_BOUNDS["int8"]
    assert check["within_bounds"] is True, check
    assert check["top1_agreement"] >= bounds.min_top1
    assert check["max_abs_diff"] <= bounds.max_abs * check["output_scale"]
    assert result["target_ms"] == 0.5 and result["source"]["trained"] is True
    meta = read_tflite_metadata(Path(result["files"]["tflite"]))
    assert meta["hwnas.precision"] == "int8" and "mean" in json.loads(meta["hwnas.normalization"])
    assert result["data"]["calibration_images"] == 32


@pytest.mark.skipif(not HAS_LITERT, reason=NO_LITERT)
def test_fp16_tflite_halves_the_weights_and_meets_its_bound(trained_run: Path, tmp_path: Path) -> None:
    result = export_model(trained_run / "model.pt", tmp_path, fast(formats=("tflite",), precision="fp16"))
    assert result["within_bounds"]["tflite"] is True, result["verification"]["tflite"]
    assert result["tflite_io"]["input"]["dtype"] == "float32"
    assert result["source"]["kind"] == "model" and result["target_ms"] is None


# -- ONNX details, estimate, batch -------------------------------------------------------------------------
def test_batch_opset_and_table_estimate(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table under HWNAS_TABLES gives the estimate TableEstimator gives; batch > 1 has no batch-1 estimate."""
    source = load_source(trained_run)
    space = source.space
    entries = {}
    for spec in space.all_specs():
        ms = 0.01 + spec.macs() / 1e8
        entries[spec.key()] = {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 1}
    tables = tmp_path / "tables"
    table = LatencyTable(device=load_device("cpu-onnxruntime").to_dict(), space=space.name,
                         resolution=space.resolution, num_classes=space.num_classes, fingerprint={}, protocol={},
                         entries=entries, overhead={"median_ms": 0.005, "p10_ms": 0.005, "p90_ms": 0.005,
                                                    "mean_ms": 0.005, "std_ms": 0.0, "n": 1})
    table.save(tables / f"cpu-onnxruntime__{space.name}__{space.resolution}.json")
    monkeypatch.setenv("HWNAS_TABLES", str(tables))
    result = export_model(trained_run, tmp_path / "b1", fast(formats=("onnx",), opset=13))
    assert result["estimated_ms"]["onnx"] == pytest.approx(TableEstimator(table, space).latency_ms(source.arch))
    assert read_onnx_metadata(Path(result["files"]["onnx"]))["hwnas.normalization"]
    model = onnx.load(result["files"]["onnx"])
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    result = export_model(trained_run, tmp_path / "b4", fast(formats=("onnx",), batch=4, measure=False))
    assert result["input_shape"] == [4, 3, RESOLUTION, RESOLUTION] and result["within_bounds"]["onnx"] is True
    assert result["estimated_ms"]["onnx"] is None and "batch 4" in result["estimates"]["onnx"]["note"]
    assert result["measured_ms"]["onnx"] is None and result["data"]["verification_images"] == 20


def test_cli_json_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = arch_file(tmp_path, "tiny")
    code = main(["export", str(source), "--format", "onnx", "--out", str(tmp_path / "out"), "--json",
                 "--protocol", "rounds=1", "--protocol", "min_time_s=0"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("files", "max_abs_diff", "measured_ms", "estimated_ms", "mean_abs_diff", "top1_agreement",
                "within_bounds", "target_ms", "notes"):
        assert key in result
    assert set(result["max_abs_diff"]) == {"onnx"} and result["measured_ms"]["onnx"] > 0


# -- TensorRT ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision,flags", [("fp32", []), ("fp16", ["--fp16"]), ("int8", ["--int8", "--fp16"])])
def test_trtexec_script(tmp_path: Path, precision: str, flags: list[str]) -> None:
    script = tmp_path / "trtexec.sh"
    command = write_trtexec_script(tmp_path / "model.onnx", tmp_path / f"model_{precision}.engine", script, precision)
    text = script.read_text()
    assert command[:3] == ["trtexec", "--onnx=model.onnx", f"--saveEngine=model_{precision}.engine"]
    assert [c for c in command if c in ("--fp16", "--int8")] == flags
    assert text.startswith("#!/bin/sh\n") and 'cd "$(dirname "$0")"' in text and " ".join(command) in text
    assert ("placeholder int8 scales" in text) == (precision == "int8")
    assert script.stat().st_mode & 0o100


def test_trtexec_script_passes_an_int8_calibration_cache(tmp_path: Path) -> None:
    command = write_trtexec_script(tmp_path / "model.onnx", tmp_path / "model_int8.engine", tmp_path / "trtexec.sh",
                                   "int8", calibration_cache=tmp_path / "model_int8.calib")
    assert "--calib=model_int8.calib" in command and "placeholder" not in (tmp_path / "trtexec.sh").read_text()


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed: the engine is built (next test)")
def test_tensorrt_without_tensorrt_writes_onnx_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = arch_file(tmp_path, "tiny")
    out = tmp_path / "out"
    assert main(["export", str(source), "--format", "tensorrt", "--precision", "fp16", "--out", str(out),
                 "--allow-missing"]) == 0
    text = capsys.readouterr().out
    assert "no TensorRT engine built" in text
    report = json.loads((out / "export.json").read_text())
    assert report["files"]["tensorrt"] is None and report["measured_ms"] == {"tensorrt": None}
    assert report["tensorrt"]["engine_built"] is False
    assert report["tensorrt"]["note"].startswith("no TensorRT engine built: TensorRT ")
    assert any(n.startswith("no TensorRT engine built") for n in report["notes"])
    assert (out / "model.onnx").is_file() and report["within_bounds"]["onnx"] is True
    assert "--saveEngine=model_fp16.engine --fp16" in (out / "trtexec.sh").read_text()
    assert report["max_abs_diff"]["tensorrt"] is None and not (out / "model_fp16.engine").exists()


@pytest.mark.skipif(not _tensorrt_importable(), reason="TensorRT (and a CUDA GPU) not available: "
                    "pip install 'hwnas[tensorrt]' on a machine with an NVIDIA GPU")
def test_tensorrt_engine_build(tmp_path: Path) -> None:
    result = export_model(arch_file(tmp_path, "tiny"), tmp_path / "out", fast(formats=("tensorrt",),
                                                                                   precision="fp16"))
    assert result["tensorrt"]["engine_built"] is True and Path(result["files"]["tensorrt"]).is_file()
    assert result["within_bounds"]["tensorrt"] is True and result["measured_ms"]["tensorrt"] > 0


# -- refusals ----------------------------------------------------------------------------------------------
def _bad_sources(folder: Path) -> dict[str, Path]:
    (folder / "empty").mkdir()
    (folder / "table.json").write_text(json.dumps({"schema": "hwnas.latency_table/1", "entries": {}}))
    (folder / "broken.json").write_text("{not json")
    (folder / "model.onnx").write_bytes(b"\x08\x07")
    (folder / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(1)}, folder / "other.pt")
    return {name: folder / name for name in ("missing", "empty", "table.json", "broken.json", "model.onnx",
                                             "garbage.pt", "other.pt")}


@pytest.mark.parametrize("name", ["missing", "empty", "table.json", "broken.json", "model.onnx", "garbage.pt",
                                  "other.pt"])
def test_bad_source_is_one_line(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bad_sources(tmp_path)[name]
    with pytest.raises(HwnasError) as info:
        load_source(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert main(["export", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: ") and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,message", [
    (["--format", "onnx,foo"], "--format"),
    (["--format", "onnx", "--device", "cpu-torch"], "--device cpu-torch"),
    (["--format", "onnx", "--device", "cpu-litert"], "not among --format onnx"),
    (["--batch", "0"], "batch"),
])
def test_bad_options_are_one_line(tmp_path: Path, flags: list[str], message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    source = arch_file(tmp_path, "tiny")
    assert main(["export", str(source), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
