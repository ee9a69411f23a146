"""TensorRT (trtexec command line, availability, engine build where a GPU exists) and the adb runtime.

The benchmark_model fixtures are real outputs of TFLite/LiteRT's tool; tests/fixtures/benchmark_model/SOURCES.md
names the repository each one comes from. The adb runtime is tested with a fake command runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.devices import load_device
from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.runtimes import RuntimeConfig, get_runtime
from hwnas.runtimes.adb_rt import AdbOptions, AdbRuntime, CommandResult
from hwnas.runtimes.benchmark_model import parse_benchmark_model_output
from hwnas.export.tensorrt_export import trtexec_command
from hwnas.runtimes import converters
from hwnas.runtimes.tensorrt_rt import NOT_INSTALLED, TensorRTRuntime

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


# --- TensorRT -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "present", "absent"),
    [
        ("fp32", [], ["--fp16", "--int8", "--best"]),
        ("fp16", ["--fp16"], ["--int8", "--best"]),
        ("int8", ["--int8", "--fp16"], ["--best"]),
    ],
)
def test_trtexec_command(precision: str, present: list[str], absent: list[str]) -> None:
    command = trtexec_command("net.onnx", Path("out/net.engine"), precision, warmup_ms=500, iterations=200)
    assert command[:3] == ["trtexec", "--onnx=net.onnx", "--saveEngine=out/net.engine"]
    for flag in ["--warmUp=500", "--iterations=200", "--duration=0", "--memPoolSize=workspace:1024", *present]:
        assert flag in command
    for flag in [*absent, "--useCudaGraph"]:
        assert flag not in command
    assert len(command) == len(set(command))


def test_trtexec_command_options() -> None:
    command = trtexec_command(
        "a.onnx", "a.engine", "fp16", duration_s=5, workspace_mib=None, use_cuda_graph=True,
        no_data_transfers=False, export_times="times.json", extra=["--verbose"],
    )
    assert "--useCudaGraph" in command and "--duration=5" in command and "--exportTimes=times.json" in command
    assert not any(flag.startswith("--memPoolSize") for flag in command) and "--noDataTransfers" not in command
    assert command[-1] == "--verbose"
    with pytest.raises(HwnasError, match="precision must be one of fp32, fp16, int8"):
        trtexec_command("a.onnx", "a.engine", "bf16")
    with pytest.raises(HwnasError, match="iterations must be a non-negative integer"):
        trtexec_command("a.onnx", "a.engine", iterations=-1)


def _tensorrt_usable() -> str | None:
    """None where an engine can be built here, else why not."""
    return TensorRTRuntime.unavailable_reason(RuntimeConfig(device="cuda"))


def test_tensorrt_unavailable_reason_is_one_line(tmp_path: Path) -> None:
    config = RuntimeConfig(device="cuda", precision="fp16")
    reason = TensorRTRuntime.unavailable_reason(config)
    if reason is None:
        pytest.skip("TensorRT and a CUDA GPU are available here")
    assert "\n" not in reason and reason
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert reason == NOT_INSTALLED
        assert "pip install 'hwnas[tensorrt]'" in reason
    with pytest.raises(RuntimeUnavailable) as info:
        get_runtime("tensorrt", config, tmp_path)
    assert str(info.value) == reason


def test_tensorrt_runtime_reads_the_shipped_profile(tmp_path: Path) -> None:
    runtime = TensorRTRuntime(load_device("cuda-tensorrt").runtime_config(), tmp_path)  # no GPU needed to configure
    assert (runtime.workspace_mib, runtime.optimization_level) == (1024, 3)
    with pytest.raises(HwnasError, match="unknown option"):
        TensorRTRuntime(RuntimeConfig(device="cuda", options={"workspace": 1}), tmp_path)
    with pytest.raises(HwnasError, match=r"option 'optimization_level': expected an integer in 0\.\.5, got 9"):
        TensorRTRuntime(RuntimeConfig(device="cuda", options={"optimization_level": 9}), tmp_path)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_build_and_timing(precision: str, tmp_path: Path) -> None:
    reason = _tensorrt_usable()
    if reason is not None:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {reason}")
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval()
    runtime = get_runtime("tensorrt", RuntimeConfig(device="cuda", precision=precision), tmp_path)
    model = runtime.prepare(module, (1, 3, 16, 16), "tiny")
    assert (tmp_path / "tiny.engine").is_file()
    times = model.time_runs(5)
    assert len(times) == 5 and all(0 < t < 1 for t in times)
    inputs = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(inputs)).numpy()
    tolerance = 1e-2 if precision == "fp16" else 1e-4
    np.testing.assert_allclose(model.infer(inputs).reshape(expected.shape), expected, atol=tolerance)
    description = runtime.describe()
    assert description["precision"] == precision and description["tensorrt"]
    model.close()


# --- benchmark_model output ------------------------------------------------------------------------------------

FIXTURE_EXPECTATIONS = {
    "tf2.4_android_xiaomi_mi11_yolov5s.txt": dict(
        warmup=None, timed_count=50, timed_first_us=249042.0, avg_us=249684.0, std_us=1442.0, init_us=16242.0,
        first_inference_us=360262.0, warmup_avg_us=304586.0, memory={"init_mb": 4.92969, "overall_mb": 138.809},
    ),
    "tf2.8_riscv64_qemu_mobilenet_v1_op_profiling.txt": dict(
        warmup={"count": 1, "curr_us": 3512391.0}, timed_count=50, timed_first_us=2990275.0, avg_us=2.95034e6,
        std_us=109798.0, init_us=17187.0, first_inference_us=3512391.0, warmup_avg_us=3512391.0,
        memory={"init_mb": 4.21094, "overall_mb": 46.0859},
    ),
    "litert_2025_linux_x86_blaze_face.txt": dict(
        warmup={"count": 526, "first_us": 2125.0, "curr_us": 969.0, "min_us": 910.0, "max_us": 2125.0,
                "avg_us": 949.861, "std_us": 68.0, "p5_us": 915.0, "median_us": 939.0, "p95_us": 990.0},
        timed_count=1054, timed_first_us=1015.0, avg_us=947.132, std_us=23.0, init_us=5757.0,
        first_inference_us=2125.0, warmup_avg_us=949.861, memory={"init_mb": 4.06, "overall_mb": 7.07},
    ),
}


def test_every_fixture_has_expectations_and_a_source() -> None:
    files = sorted(path.name for path in FIXTURES.glob("*.txt"))
    assert files == sorted(FIXTURE_EXPECTATIONS) and len(files) >= 2
    sources = (FIXTURES / "SOURCES.md").read_text()
    assert all(f"`{name}`" in sources for name in files)


@pytest.mark.parametrize("name", sorted(FIXTURE_EXPECTATIONS))
def test_parse_real_benchmark_model_output(name: str) -> None:
    expected = FIXTURE_EXPECTATIONS[name]
    parsed = parse_benchmark_model_output((FIXTURES / name).read_text())
    assert parsed["warmup"] == expected["warmup"]
    timed = parsed["timed"]
    assert (timed["count"], timed["first_us"], timed["std_us"]) == (
        expected["timed_count"], expected["timed_first_us"], expected["std_us"]
    )
    assert timed["avg_us"] == pytest.approx(expected["avg_us"])
    assert parsed["inference_avg_us"] == pytest.approx(expected["avg_us"])
    assert timed["min_us"] <= parsed["inference_avg_us"] <= timed["max_us"]
    for key in ("init_us", "first_inference_us", "warmup_avg_us"):
        assert parsed[key] == pytest.approx(expected[key]), key
    assert parsed["memory"] == expected["memory"]


def test_parse_tolerates_logcat_prefixes() -> None:
    text = (FIXTURES / "tf2.4_android_xiaomi_mi11_yolov5s.txt").read_text()
    prefixed = "\n".join(f"08-17 21:47:49.138 29423 29423 I tflite  : {line}" for line in text.splitlines())
    assert parse_benchmark_model_output(prefixed) == parse_benchmark_model_output(text)


def test_parse_tflite1_summary_format() -> None:
    text = (
        "Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
        "count=3 first=1200 curr=1000 min=990 max=1200 avg=1063.3 std=95\n\n"
        "Running benchmark for at least 50 iterations and at least 1 seconds\n"
        "count=50 first=1010 curr=1001 min=980 max=1100 avg=1002.5 std=20\n\n"
        "Average inference timings in us: Warmup: 1063.3, Init: 2500, no stats: 1002.5\n"
    )
    parsed = parse_benchmark_model_output(text)
    assert (parsed["init_us"], parsed["inference_avg_us"], parsed["warmup_avg_us"]) == (2500.0, 1002.5, 1063.3)
    assert parsed["warmup"]["count"] == 3 and parsed["memory"] == {}


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "empty output"),
        ("hello world\nno numbers here\n", "output starts: 'hello world'"),
        ("Loaded model /data/local/tmp/m.tflite\nERROR: Node number 3 (CONV_2D) failed to prepare.\n"
         "Benchmarking failed.\n", "ERROR: Node number 3"),
    ],
)
def test_parse_rejects_text_without_timings(text: str, hint: str) -> None:
    with pytest.raises(HwnasError) as info:
        parse_benchmark_model_output(text)
    message = str(info.value)
    assert "\n" not in message and message.startswith("benchmark_model output has no timing lines") and hint in message


# --- adb runtime with a fake adb -----------------------------------------------------------------------------


class FakeAdb:
    """Answers adb command lines like a phone with ``benchmark_model`` would, and records them."""

    def __init__(
        self, devices: str = "R5CT1234\tdevice\n", benchmark_output: str = "", fail_on: str = "", tool: bool = True
    ) -> None:
        self.devices = devices
        self.tool = tool
        self.benchmark_output = benchmark_output
        self.fail_on = fail_on
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        assert argv[0] == "adb" and timeout_s > 0
        joined = " ".join(argv)
        if self.fail_on and self.fail_on in joined:
            return CommandResult(tuple(argv), 1, "", "adb: error: failed\n")
        if argv[1:] == ["devices"]:
            return CommandResult(tuple(argv), 0, "List of devices attached\n" + self.devices + "\n", "")
        if "test -x" in joined:
            return CommandResult(tuple(argv), 0, "ok\n" if self.tool else "", "")
        if "benchmark_model" in joined:  # benchmark_model logs to stderr; adb keeps the streams apart
            return CommandResult(tuple(argv), 0, "", self.benchmark_output)
        if "getprop" in joined:
            return CommandResult(tuple(argv), 0, "Google\nPixel 7\ngs201\ngoogle/panther/panther:14/AP1A\n", "")
        return CommandResult(tuple(argv), 0, "", "")


def _phone_config(**options: object) -> RuntimeConfig:
    return RuntimeConfig(threads=4, device="android", options={"serial": "R5CT1234", **options})


@pytest.mark.parametrize(
    ("devices", "serial", "expected"),
    [
        ("R5CT1234\tdevice\n", "", None),
        ("R5CT1234\tdevice\n", "R5CT1234", None),
        ("", "", "no phone ready in `adb devices` (listed: none)"),
        ("R5CT1234\tunauthorized\n", "", "listed: R5CT1234 (unauthorized)"),
        ("A1\tdevice\nB2\tdevice\n", "", "several phones attached (A1, B2): set options.serial"),
        ("A1\tdevice\nB2\tdevice\n", "B2", None),
        ("A1\tdevice\n", "R5CT1234", "phone 'R5CT1234' is not ready in `adb devices` (listed: A1 (device))"),
    ],
)
def test_adb_unavailable_reason_with_fake_adb(devices: str, serial: str, expected: str | None) -> None:
    config = RuntimeConfig(device="android", options={"serial": serial})
    reason = AdbRuntime.unavailable_reason(config, runner=FakeAdb(devices=devices))
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and "\n" not in reason and expected in reason


def test_adb_unavailable_without_benchmark_model_on_the_phone() -> None:
    fake = FakeAdb(tool=False)
    reason = AdbRuntime.unavailable_reason(_phone_config(), runner=fake)
    assert reason is not None and "\n" not in reason
    assert reason.startswith("benchmark_model is not executable on the phone at /data/local/tmp/benchmark_model")
    assert fake.calls[-1] == ["adb", "-s", "R5CT1234", "shell", "test -x /data/local/tmp/benchmark_model && echo ok"]


def test_adb_unavailable_here_is_one_line(tmp_path: Path) -> None:
    config = load_device("android-litert").runtime_config()
    reason = AdbRuntime.unavailable_reason(config)
    if reason is None:
        pytest.skip("a phone is attached to this machine")
    assert "\n" not in reason
    with pytest.raises(RuntimeUnavailable):
        get_runtime("adb", config, tmp_path)


def test_adb_prepare_file_pushes_and_times(tmp_path: Path) -> None:
    output = (FIXTURES / "litert_2025_linux_x86_blaze_face.txt").read_text()
    fake = FakeAdb(benchmark_output=output)
    runtime = AdbRuntime(_phone_config(warmup_runs=5), tmp_path, runner=fake)
    local = tmp_path / "net.tflite"
    local.write_bytes(b"TFL3")
    model = runtime.prepare_file(local)
    assert fake.calls == [
        ["adb", "-s", "R5CT1234", "shell", "mkdir -p /data/local/tmp/hwnas"],
        ["adb", "-s", "R5CT1234", "push", str(local), "/data/local/tmp/hwnas/net.tflite"],
    ]
    times = model.time_runs(7)
    assert times == [pytest.approx(947.132e-6)] * 7
    shell = fake.calls[-1]
    assert shell[:4] == ["adb", "-s", "R5CT1234", "shell"] and len(shell) == 5
    assert shell[4].split() == [
        "/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/hwnas/net.tflite", "--num_threads=4",
        "--use_xnnpack=true", "--warmup_runs=5", "--warmup_min_secs=0.5", "--num_runs=7", "--min_secs=0",
        "--max_secs=150",
    ]
    assert model.last_result is not None and model.last_result["timed"]["count"] == 1054
    model.close()
    assert fake.calls[-1][-1] == "rm -f /data/local/tmp/hwnas/net.tflite"


def test_adb_prepare_converts_then_pushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_to_tflite(module: nn.Module, input_shape: Sequence[int], path: Path, **kwargs: object) -> Path:
        Path(path).write_bytes(b"TFL3")
        return Path(path)

    monkeypatch.setattr(converters, "to_tflite", fake_to_tflite)
    fake = FakeAdb()
    model = AdbRuntime(RuntimeConfig(device="android"), tmp_path, runner=fake).prepare(nn.ReLU(), (1, 3, 8, 8), "relu")
    assert (tmp_path / "relu.tflite").is_file()
    assert fake.calls[-1] == ["adb", "push", str(tmp_path / "relu.tflite"), "/data/local/tmp/hwnas/relu.tflite"]
    assert model.remote_path == "/data/local/tmp/hwnas/relu.tflite"


def test_adb_failures_are_one_line(tmp_path: Path) -> None:
    local = tmp_path / "net.tflite"
    local.write_bytes(b"TFL3")
    runtime = AdbRuntime(_phone_config(), tmp_path, runner=FakeAdb(fail_on="push"))
    with pytest.raises(HwnasError, match=r"^`adb -s R5CT1234 push .*` failed \(exit 1\): adb: error: failed$"):
        runtime.prepare_file(local)
    runtime = AdbRuntime(_phone_config(), tmp_path, runner=FakeAdb(benchmark_output="Benchmarking failed.\n"))
    model = runtime.prepare_file(local)
    with pytest.raises(HwnasError, match="no timing lines"):
        model.time_runs(3)
    with pytest.raises(HwnasError, match="runs .tflite files"):
        runtime.prepare_file(tmp_path / "net.onnx")


def test_adb_options_and_precision_are_checked(tmp_path: Path) -> None:
    assert AdbOptions.from_config(load_device("android-litert").runtime_config()).warmup_runs == 5
    with pytest.raises(HwnasError, match="unknown option 'num_thread'"):
        AdbRuntime(_phone_config(num_thread=4), tmp_path, runner=FakeAdb())
    with pytest.raises(HwnasError, match="option 'warmup_runs': expected int"):
        AdbRuntime(_phone_config(warmup_runs=2.5), tmp_path, runner=FakeAdb())
    with pytest.raises(HwnasError, match="precision 'int8' is not supported"):
        AdbRuntime(RuntimeConfig(device="android", precision="int8"), tmp_path, runner=FakeAdb())


def test_adb_describe_reads_the_phone(tmp_path: Path) -> None:
    description = AdbRuntime(_phone_config(), tmp_path, runner=FakeAdb()).describe()
    assert description["phone"]["ro.product.model"] == "Pixel 7"
    assert description["serial"] == "R5CT1234" and description["threads"] == 4
