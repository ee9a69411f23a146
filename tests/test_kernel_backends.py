"""Kernel predictors of LiteRT and torch: a tiny real build of each from the CLI, what `hwnas predict` then reads,
and the one-line refusals of the parts a backend does not have.

The builds are real (paired measurements on this machine) at the size of tests/test_kernel_build.py's tiny build.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.kernel import KernelPredictor
from hwnas.latency.predictors.kernel_build import KernelBuildConfig
from hwnas.latency.predictors.locate import user_predictor_path
from hwnas.spaces import get_space
from test_kernel_build import tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def tiny_space_config() -> KernelBuildConfig:
    """tests/test_kernel_build.py's tiny build with seeds and calibration networks from the ``tiny`` space: a
    ProxylessNAS network takes litert-torch ~18 s to convert here, a tiny one ~6 s."""
    config = tiny_config()
    return dataclasses.replace(config, sample=dataclasses.replace(config.sample, space="tiny"),
                               calibration_space="tiny")


def _build(device: str, monkeypatch: pytest.MonkeyPatch, cache: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    monkeypatch.setattr(KernelBuildConfig, "quick", classmethod(lambda cls: tiny_space_config()))
    monkeypatch.setattr("hwnas.locations.cache_dir", lambda: cache)
    # a smaller generic reference (a tiny network, not ProxylessNAS at 128): converted and run in a fraction
    monkeypatch.setattr("hwnas.latency.reference.GENERIC_REFERENCE", ("tiny", 32, 10))
    assert main(["predictor", "build", "--kind", "kernel", "--device", device, "--quick", "--quiet", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _predict(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["predict", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_litert_build_predicts_tflite_and_onnx_files_alike(monkeypatch, cache: Path, capsys) -> None:
    """A LiteRT kernel predictor built from the CLI predicts a `.tflite` file from its own operators, and the
    `.onnx` of the same network (split as its conversion runs) to the same latency, kernel for kernel."""
    from hwnas.runtimes.converters import cached_onnx, cached_tflite

    result = _build("cpu-litert", monkeypatch, cache, capsys)
    out = user_predictor_path("cpu-litert", "kernel")
    predictor = load_predictor(out)
    assert isinstance(predictor, KernelPredictor) and predictor.backend == "litert"
    assert result["kernels"] >= 15 and result["networks"] == 2
    from hwnas.latency.predictors.kernel_build import calibration_networks

    module, shape = calibration_networks(tiny_space_config())["tiny-cal0-32"]  # converted by the build already
    networks = cache / "kernel-build" / "cpu-litert" / "networks"
    tflite = cached_tflite(module, shape, networks, "tiny-cal0-32")
    assert len(list(networks.glob("tiny-cal0-32.*.tflite"))) == 1  # the build's own file: nothing converted
    onnx_file = cached_onnx(module, shape, cache / "files", "net")
    by_tflite = _predict(["--device", "cpu-litert", str(tflite)], capsys)
    by_onnx = _predict(["--device", "cpu-litert", str(onnx_file)], capsys)
    assert by_tflite["predictor"] == str(out) and by_tflite["latency_ms"] > 0
    assert [t["key"] for t in by_tflite["kernels"]] == [t["key"] for t in by_onnx["kernels"]]
    assert by_onnx["latency_ms"] == pytest.approx(by_tflite["latency_ms"], rel=1e-12)
    assert any(t["op"] == "tfl.DEPTHWISE_CONV_2D" for t in by_tflite["kernels"])
    with pytest.raises(HwnasError, match="cannot aim a search"):
        predictor.for_space(get_space("proxyless", 32))


def test_torch_build_predicts_a_module_as_eager_runs_it(monkeypatch, cache: Path, capsys) -> None:
    """A torch kernel predictor predicts a module from the aten operators eager dispatches (its BatchNorms
    included), and an architecture exactly as the module built from it."""
    result = _build("cpu-torch", monkeypatch, cache, capsys)
    predictor = load_predictor(user_predictor_path("cpu-torch", "kernel"))
    assert isinstance(predictor, KernelPredictor) and predictor.backend == "torch" and result["kernels"] >= 15
    space = get_space("proxyless", 32)
    arch = space.random_arch(__import__("random").Random(4))
    by_module = predictor.predict(space.build(arch), input_shape=space.input_shape)
    assert predictor.predict(arch).ms == pytest.approx(by_module.ms, rel=1e-12) and by_module.ms > 0
    ops = {t["op"] for t in by_module.terms}
    assert "aten.batch_norm" in ops and any(op.startswith("aten.conv") for op in ops)


def test_a_predictor_refuses_another_runtimes_files_in_one_line(tmp_path: Path, capsys) -> None:
    """The shipped ONNX Runtime kernel predictor is given a `.tflite` file: one line naming the file and what it
    reads; a predictor file naming an unknown backend: one line naming the field."""
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"TFL3")
    assert main(["predict", "--device", "cpu-onnxruntime", str(tflite)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hwnas: error")]
    assert errors == [f"hwnas: error: {tflite}: a kernel predictor of onnxruntime reads .onnx files (what that "
                      "runtime loads)"]
    shipped = Path(__file__).resolve().parents[1] / "latency_tables" / "predictors" / "cpu-onnxruntime__kernel.json"
    data = json.loads(shipped.read_text())
    data["model"]["backend"] = "tvm"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match="field 'model.backend': expected one of onnxruntime, litert, torch"):
        load_predictor(bad)
