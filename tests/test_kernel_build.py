"""`hwnas predictor build --kind kernel`: one-line refusals before anything is measured, a tiny real build that
`hwnas predict` then finds and uses, and a build killed with SIGKILL that resumes without measuring a kernel twice.

The builds are real (ONNX Runtime, paired measurements) at a tiny size: one ProxylessNAS network at 32 for seeds,
10 random neighbours, one adaptive round of 5, two calibration networks, 4 pairs per measurement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.latency.kernels.sample import SampleConfig
from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.kernel import KernelPredictor
from hwnas.latency.predictors.kernel_build import KernelBuildConfig, build_kernel_predictor
from hwnas.latency.predictors.locate import user_predictor_path

DEVICE = "cpu-onnxruntime"


def tiny_config() -> KernelBuildConfig:
    """A build of seconds (also imported by the killed subprocess)."""
    sample = SampleConfig(resolutions=(32,), proxyless_archs=1, zoo=(), initial_random=10, adaptive_rounds=1,
                          adaptive_batch=5, candidates=200, ensemble=2, pairs=4, noisy_passes=0, save_every=3)
    return KernelBuildConfig(sample=sample, calibration_resolutions=(32,), calibration_archs=2,
                             calibration_zoo_resolutions=(), network_pairs=4, network_passes=1, overhead_pairs=4,
                             precision=0)


def _one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda-onnxruntime"], "no kernel splitter for backend 'onnxruntime' on 'cuda'"),
    (["--device", "android-litert"], "no kernel splitter for backend 'adb' on 'android'"),
    (["--device", "no-such-device"], "unknown device 'no-such-device'"),
    (["--kind", "calibrated", "--device", DEVICE], "`hwnas predictor fit`"),
])
def test_build_refuses_in_one_line(flags: list[str], message: str, capsys) -> None:
    err = _one_line(["predictor", "build", *flags], capsys)
    assert message in err
    assert not user_predictor_path(DEVICE, "kernel").parent.exists()  # nothing measured, nothing written


def test_build_refuses_an_out_that_is_a_folder(tmp_path: Path, capsys) -> None:
    err = _one_line(["predictor", "build", "--kind", "kernel", "--device", DEVICE, "--out", str(tmp_path)], capsys)
    assert f"--out {tmp_path}: is a folder" in err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builds' cache folder (exported networks), shared by this module's builds."""
    return tmp_path_factory.mktemp("cache")


def test_quick_build_from_the_cli_is_what_predict_uses(monkeypatch, cache: Path, capsys) -> None:
    """`predictor build --quick` (made tiny here) writes the user's predictor and its measurements; `hwnas predict`
    of an ONNX file finds that predictor first and its terms add up to the total."""
    monkeypatch.setattr(KernelBuildConfig, "quick", classmethod(lambda cls: tiny_config()))
    monkeypatch.setattr("hwnas.locations.cache_dir", lambda: cache)
    assert main(["predictor", "build", "--kind", "kernel", "--device", DEVICE, "--quick", "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    out = user_predictor_path(DEVICE, "kernel")
    assert result["out"] == str(out) and result["measurements"] == str(out.with_name(f"{DEVICE}__kernel"
                                                                                       ".measurements.json"))
    stored = json.loads(Path(result["measurements"]).read_text())
    assert result["kernels"] == result["measured_now"] == len(stored["kernels"]) >= 15 and result["reused"] == 0
    assert result["networks"] == 2 and result["wall_s"] > 0
    predictor = load_predictor(out)
    assert isinstance(predictor, KernelPredictor) and predictor.meta.training["kernels"] == result["kernels"]

    onnx_file = sorted((cache / "kernel-build" / DEVICE / "networks").glob("proxyless-cal0-32.*.onnx"))[0]
    assert main(["predict", "--device", DEVICE, str(onnx_file), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["predictor"] == str(out) and predicted["kind"] == "kernel"
    assert predicted["latency_ms"] > 0 and len(predicted["kernels"]) > 10
    assert predicted["latency_ms"] == pytest.approx(sum(t["ms"] for t in predicted["kernels"])
                                                    + predicted["overhead_ms"], rel=1e-9)


def _kernels(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["kernels"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def test_killed_build_resumes_without_measuring_a_kernel_twice(cache: Path, tmp_path: Path) -> None:
    """kill -9 a build once its measurements file holds kernels; the same build again keeps every one of them as
    it was (not measured again), measures only the rest, and writes a complete predictor."""
    workdir = cache / "kernel-build" / DEVICE  # the CLI's, where the test above exported the networks
    out = tmp_path / "k.json"
    measurements = tmp_path / "k.measurements.json"
    script = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]); "
              "from test_kernel_build import tiny_config; from hwnas.devices import load_device; "
              "from hwnas.latency.predictors.kernel_build import build_kernel_predictor; "
              "build_kernel_predictor(load_device('cpu-onnxruntime'), Path(sys.argv[1]), Path(sys.argv[2]), "
              "tiny_config())")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out), str(workdir), str(Path(__file__).parent)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(_kernels(measurements)) < 9 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    before = _kernels(measurements)
    assert len(before) >= 9 and not out.exists(), f"the kill should land mid-build: {err.decode()[-500:]}"

    build = build_kernel_predictor(load_device(DEVICE), out, workdir, tiny_config())
    after = _kernels(measurements)
    assert build.reused == len(before) and build.measured_now == len(after) - len(before) > 0
    for key, entry in before.items():
        assert after[key] == entry  # the same ratio and reference median: measured once
    assert build.kernels == len(after) and build.networks == 2 == build.network_runs
    assert json.loads(measurements.read_text())["adaptive_rounds_done"] == 1
    predictor = load_predictor(out)
    assert predictor.meta.training["kernels"] == len(after)
