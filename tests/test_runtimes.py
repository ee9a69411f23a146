"""Runtimes, converters and fingerprints on a small conv+BN+ReLU6 module, against PyTorch as the reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.runtimes import RuntimeConfig, converters, get_runtime, runtime_class
from hwnas.runtimes.base import resolve_options
from hwnas.runtimes.fingerprint import fingerprint_differences, full_fingerprint, machine_fingerprint
from hwnas.runtimes.protocol import Protocol, measure, measure_overhead

SHAPE = (1, 8, 12, 12)
CPU_RUNTIMES = ["torch", "onnxruntime", "litert"]
FILE_RUNTIMES = ["onnxruntime", "litert"]  # the torch runtime writes no model file
HAS_LITERT = all(importlib.util.find_spec(name) is not None for name in ("ai_edge_litert", "litert_torch"))
NO_LITERT = "LiteRT not installed: pip install 'hwnas[tflite]' (ai-edge-litert, litert-torch)"
QUICK = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=5, min_time_s=0.0, max_runs=5, rounds=2)


def conv_bn_relu6(seed: int = 0) -> nn.Module:
    """A conv+BN+ReLU6 block with non-trivial BatchNorm statistics, so that folding mistakes show."""
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
    bn = module[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-0.5, 0.5)
    return module.eval()


def reference(module: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(inputs)).numpy()


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)


@pytest.fixture(scope="module", params=CPU_RUNTIMES)
def prepared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(runtime, module, prepared model) per CPU runtime, converted once for the whole module."""
    if request.param == "litert" and not HAS_LITERT:
        pytest.skip(NO_LITERT)
    runtime = get_runtime(request.param, RuntimeConfig(threads=1), tmp_path_factory.mktemp(request.param))
    module = conv_bn_relu6()
    model = runtime.prepare(module, SHAPE, "conv-in:12x12x8-out:12x12x16-k:3")
    yield runtime, module, model
    model.close()


def test_infer_matches_torch(prepared, inputs: np.ndarray) -> None:
    _, module, model = prepared
    output = model.infer(inputs)
    assert output.shape == (1, 16, 12, 12)
    np.testing.assert_allclose(output, reference(module, inputs), atol=1e-4, rtol=0)


def test_time_runs(prepared) -> None:
    times = prepared[2].time_runs(5)
    assert len(times) == 5 and all(isinstance(t, float) and t > 0 for t in times)
    prepared[2].run()


@pytest.mark.parametrize("prepared", FILE_RUNTIMES, indirect=True)
def test_prepare_file_round_trip(prepared, inputs: np.ndarray) -> None:
    runtime, module, model = prepared
    again = runtime.prepare_file(model.path)
    try:
        np.testing.assert_allclose(again.infer(inputs), reference(module, inputs), atol=1e-4, rtol=0)
    finally:
        again.close()
    with pytest.raises(HwnasError, match="model file not found"):
        runtime.prepare_file(model.path.with_name("missing" + model.path.suffix))
    with pytest.raises(HwnasError, match="got '.pt'"):
        runtime.prepare_file(model.path.with_suffix(".pt"))


def test_describe(prepared) -> None:
    runtime = prepared[0]
    info = runtime.describe()
    assert set(info) == {"runtime", "versions", "threads", "device", "precision", "options"}
    assert info["runtime"] == runtime.name and info["threads"] == 1 and info["device"] == "cpu"
    assert info["versions"] and all(isinstance(v, str) for v in info["versions"].values())
    assert full_fingerprint(runtime)["runtime"] == info


def test_measure_and_overhead(prepared) -> None:
    runtime, _, model = prepared
    stats = measure({"op": model}, QUICK)["op"]
    overhead = measure_overhead(runtime, QUICK)
    assert stats.n == 10 and stats.median_ms > 0
    assert 0 < overhead.median_ms < 1.0  # a single tiny ReLU: the per-call cost only


@pytest.mark.parametrize("prepared", FILE_RUNTIMES, indirect=True)
def test_prepare_reuses_converted_file(prepared, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, module, model = prepared
    mtime = model.path.stat().st_mtime_ns
    conversions: list[Path] = []
    for converter in ("to_onnx", "to_tflite"):  # a reuse converts nothing: no call reaches a converter
        monkeypatch.setattr(converters, converter, lambda module, shape, path, **kwargs: conversions.append(path))
    again = runtime.prepare(module, SHAPE, "conv-in:12x12x8-out:12x12x16-k:3")
    assert conversions == []
    assert again.path == model.path and model.path.stat().st_mtime_ns == mtime
    again.close()


def test_onnx_folds_batchnorm_and_keeps_metadata(tmp_path: Path, inputs: np.ndarray) -> None:
    module = conv_bn_relu6().train()  # exported in eval mode anyway; the caller's modes are restored
    running_mean = module[1].running_mean.clone()
    path = converters.to_onnx(module, SHAPE, tmp_path / "op.onnx", metadata={"key": "conv", "table": "t.json"})
    assert module.training and module[1].training and torch.equal(module[1].running_mean, running_mean)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert "BatchNormalization" not in [node.op_type for node in model.graph.node]
    assert {p.key: p.value for p in model.metadata_props} == {"key": "conv", "table": "t.json"}
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(SHAPE) and model.graph.input[0].name == "input"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.data"))


def test_cached_onnx_by_name_and_content(tmp_path: Path) -> None:
    first = converters.cached_onnx(conv_bn_relu6(0), SHAPE, tmp_path, "conv:a")
    assert converters.cached_onnx(conv_bn_relu6(0), SHAPE, tmp_path, "conv:a") == first
    changed = converters.cached_onnx(conv_bn_relu6(1), SHAPE, tmp_path, "conv:a")  # new weights: new file
    assert changed != first and changed.exists() and not first.exists()  # the stale version is removed
    assert converters.module_digest(conv_bn_relu6(0), SHAPE) != converters.module_digest(conv_bn_relu6(0), (1, 8, 6, 6))


@pytest.mark.parametrize("prepared", ["litert"], indirect=True)
def test_tflite_is_channel_last_without_transposes(prepared) -> None:
    _, _, model = prepared
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    builtin_kernels = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # no DELEGATE node hiding the ops
    interpreter = Interpreter(str(model.path), experimental_op_resolver_type=builtin_kernels)
    interpreter.allocate_tensors()
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 12, 12, 8]
    assert list(interpreter.get_output_details()[0]["shape"]) == [1, 12, 12, 16]
    assert [op["op_name"] for op in interpreter._get_ops_details()] == ["CONV_2D"]  # BN and ReLU6 fused


@pytest.mark.parametrize("prepared", ["litert"], indirect=True)
def test_litert_without_xnnpack(prepared, inputs: np.ndarray) -> None:
    runtime, module, model = prepared
    builtin = get_runtime("litert", RuntimeConfig(options={"xnnpack": False}), runtime.workdir)
    reference_kernels = builtin.prepare_file(model.path)
    np.testing.assert_allclose(reference_kernels.infer(inputs), reference(module, inputs), atol=1e-4, rtol=0)
    assert builtin.describe()["options"] == {"xnnpack": False}


@pytest.mark.skipif(not HAS_LITERT, reason=NO_LITERT)
def test_litert_conversion_is_quiet_and_failures_are_one_line(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    converters.to_tflite(nn.ReLU(), (1, 8, 1, 1), tmp_path / "relu.tflite")
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")

    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x  # torch.export cannot trace a data-dependent branch

    with pytest.raises(HwnasError) as error:
        converters.to_tflite(DataDependent(), (1, 8, 2, 2), tmp_path / "bad.tflite")
    message = str(error.value)
    assert "\n" not in message and "bad.tflite" in message and "DataDependent" in message
    assert (tmp_path / "bad.tflite.log").exists() and not (tmp_path / "bad.tflite").exists()


def test_tflite_converter_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` raise ImportError
    with pytest.raises(RuntimeUnavailable, match=r"pip install 'hwnas\[tflite\]'"):
        converters.to_tflite(nn.ReLU(), (1, 8, 1, 1), tmp_path / "relu.tflite")


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("torch", RuntimeConfig(device="cuda")),
        ("onnxruntime", RuntimeConfig(device="cuda")),
        ("onnxruntime", RuntimeConfig(device="cuda", options={"provider": "tensorrt"})),
    ],
    ids=["torch-cuda", "onnxruntime-cuda", "onnxruntime-tensorrt"],
)
def test_gpu_paths_unavailable_here(name: str, config: RuntimeConfig, tmp_path: Path) -> None:
    cls = runtime_class(name)
    if cls.unavailable_reason(config) is None:
        pytest.skip(f"{name} on {config.device} is available here; the GPU test below covers it")
    reason = cls.unavailable_reason(config)
    assert reason and "\n" not in reason
    with pytest.raises(RuntimeUnavailable, match="CUDA|cuda"):
        get_runtime(name, config, tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with a CUDA build of torch")
@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_gpu_infer_and_time(name: str, tmp_path: Path, inputs: np.ndarray) -> None:
    config = RuntimeConfig(device="cuda")
    reason = runtime_class(name).unavailable_reason(config)
    if reason is not None:
        pytest.skip(reason)
    module = conv_bn_relu6()
    model = get_runtime(name, config, tmp_path).prepare(module, SHAPE, "conv")
    np.testing.assert_allclose(model.infer(inputs), reference(module, inputs), atol=1e-3, rtol=1e-3)
    assert all(t > 0 for t in model.time_runs(5))
    model.close()


def test_runtime_errors(tmp_path: Path) -> None:
    assert runtime_class("torch").extra == "" and runtime_class("onnxruntime").extra == ""
    assert runtime_class("litert").extra == "tflite"
    with pytest.raises(HwnasError, match="unknown option 'chanels_last'"):
        get_runtime("torch", RuntimeConfig(options={"chanels_last": True}), tmp_path)
    with pytest.raises(HwnasError, match="'graph_optimization' must be one of"):
        get_runtime("onnxruntime", RuntimeConfig(options={"graph_optimization": "max"}), tmp_path)
    with pytest.raises(RuntimeUnavailable, match="adb runtime"):
        get_runtime("litert", RuntimeConfig(device="android"), tmp_path)
    with pytest.raises(RuntimeUnavailable, match="precision"):
        get_runtime("torch", RuntimeConfig(precision="int8"), tmp_path)


def test_torch_channels_last_and_threads(tmp_path: Path, inputs: np.ndarray) -> None:
    runtime = get_runtime("torch", RuntimeConfig(threads=2, options={"channels_last": True}), tmp_path)
    module = conv_bn_relu6()
    model = runtime.prepare(module, SHAPE, "conv")
    np.testing.assert_allclose(model.infer(inputs), reference(module, inputs), atol=1e-4, rtol=0)
    model.time_runs(1)
    assert torch.get_num_threads() == 2
    assert next(module.parameters()).device.type == "cpu" and module[0].weight.is_contiguous()  # caller's untouched


def test_machine_fingerprint_fields() -> None:
    machine = machine_fingerprint()
    assert {"cpu_model", "logical_cores", "system", "kernel", "arch", "python", "numpy", "torch", "gpu"} <= set(machine)
    assert machine["cpu_model"] and machine["logical_cores"] >= 1


def test_fingerprint_differences() -> None:
    stored = {
        "machine": {**machine_fingerprint(), "kernel": "5.15", "python": "3.11.1"},
        "runtime": {"runtime": "onnxruntime", "versions": {"onnxruntime": "1.17.0", "onnx": "1.15.0"}, "threads": 1,
                    "device": "cpu", "precision": "fp32", "options": {"graph_optimization": "all"}},
    }
    current = {"machine": {**stored["machine"], "kernel": "6.1", "python": "3.11.9", "numpy": "9.9"},
               "runtime": {**stored["runtime"]}}
    assert fingerprint_differences(stored, current) == []  # kernel/python/numpy do not identify the machine
    current["machine"]["cpu_model"] = "Some Other CPU"
    current["runtime"]["versions"] = {"onnxruntime": "1.20.0", "onnx": "1.15.0"}
    differences = fingerprint_differences(stored, current)
    assert len(differences) == 2
    assert differences[0].startswith("machine.cpu_model:") and "Some Other CPU" in differences[0]
    assert differences[1] == "runtime.versions.onnxruntime: '1.17.0' -> '1.20.0'"
    assert fingerprint_differences({"machine": stored["machine"]}, {"machine": stored["machine"]}) == []
    threads = {**stored, "runtime": {**stored["runtime"], "threads": 4}}
    assert fingerprint_differences(stored, threads) == ["runtime.threads: 1 -> 4"]


def test_resolve_options() -> None:
    assert resolve_options("litert", {}, {"xnnpack": True}) == {"xnnpack": True}
    with pytest.raises(HwnasError, match="option 'xnnpack' must be a bool"):
        resolve_options("litert", {"xnnpack": "yes"}, {"xnnpack": True})
