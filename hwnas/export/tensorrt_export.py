"""TensorRT artifact: an engine built from the exported ONNX with the TensorRT Python API, plus ``trtexec.sh``.

The engine is built by :func:`hwnas.runtimes.tensorrt_rt.build_engine` (the builder the TensorRT runtime times
with), int8 with an entropy calibrator over the calibration batches. The exact ``trtexec`` command that builds
and times the same engine is written next to it, runnable from the output folder on any machine with TensorRT.
Where TensorRT or a CUDA GPU is missing, no engine is built: the ONNX file and the command are still written
and the result says so.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import hwnas
from hwnas.devices import DeviceProfile
from hwnas.runtimes.tensorrt_rt import DEFAULT_WORKSPACE_MIB, TensorRTRuntime, trtexec_command


@dataclass
class TensorRTResult:
    """What the TensorRT export did; ``engine`` is None when none was built (``note`` says why)."""

    onnx: Path
    trtexec: Path
    command: list[str]
    engine: Path | None
    note: str

    @property
    def built(self) -> bool:
        return self.engine is not None

    def to_dict(self) -> dict[str, Any]:
        return {"engine_built": self.built, "engine": str(self.engine) if self.engine else None,
                "onnx": str(self.onnx), "trtexec": str(self.trtexec), "command": shlex.join(self.command),
                "note": self.note}


def write_trtexec_script(onnx_path: Path, engine_path: Path, script_path: Path, precision: str,
                         workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                         calibration_cache: Path | None = None) -> list[str]:
    """Write ``script_path``: a POSIX shell script that runs ``trtexec`` from its own folder (file names are
    relative to it, so the folder can be copied to the GPU machine). Returns the command.

    For int8, ``calibration_cache`` (written by an engine build here) is passed as ``--calib``; without it
    trtexec uses placeholder scales, which the script says.
    """
    extra = [f"--calib={calibration_cache.name}"] if precision == "int8" and calibration_cache else []
    command = trtexec_command(onnx_path.name, engine_path.name, precision, workspace_mib=workspace_mib, extra=extra)
    lines = [
        "#!/bin/sh",
        f"# Build {engine_path.name} ({precision}) from {onnx_path.name} with TensorRT's trtexec and time it.",
        f"# Written by hwnas {hwnas.__version__} export; run it on the machine with the target NVIDIA GPU.",
    ]
    if precision == "int8" and not extra:
        lines.append("# No --calib cache: trtexec uses placeholder int8 scales (latency is right, outputs are not).")
    lines += ["set -e", 'cd "$(dirname "$0")"', shlex.join(command), ""]
    script_path.write_text("\n".join(lines))
    script_path.chmod(0o755)
    return command


def export_tensorrt(onnx_path: Path, engine_path: Path, script_path: Path, precision: str,
                    input_shape: Sequence[int], device: DeviceProfile,
                    calibration: Sequence[np.ndarray] = ()) -> TensorRTResult:
    """Write ``trtexec.sh`` and, where TensorRT and a CUDA GPU are available, build ``engine_path``."""
    config = device.runtime_config()
    reason = TensorRTRuntime.unavailable_reason(config)
    workspace_mib = int(config.options.get("workspace_mib", DEFAULT_WORKSPACE_MIB))
    command = write_trtexec_script(onnx_path, engine_path, script_path, precision, workspace_mib)
    if reason is not None:
        note = (f"no TensorRT engine built: {reason}; wrote {onnx_path.name} and {script_path.name} "
                f"(run `sh {script_path}` where TensorRT is installed)")
        return TensorRTResult(onnx_path, script_path, command, None, note)
    from hwnas.runtimes.tensorrt_rt import build_engine, make_int8_calibrator

    runtime = TensorRTRuntime(config, engine_path.parent)
    calibrator = None
    if precision == "int8":
        batches = _rebatch(calibration, int(input_shape[0]))
        calibrator = make_int8_calibrator(batches, engine_path.with_suffix(".calib")) if batches else None
    build_engine(onnx_path, engine_path, precision, input_shape=input_shape, workspace_mib=runtime.workspace_mib,
                 optimization_level=runtime.optimization_level, calibrator=calibrator)
    cache = engine_path.with_suffix(".calib")
    if calibrator is not None and cache.is_file():
        command = write_trtexec_script(onnx_path, engine_path, script_path, precision, workspace_mib, cache)
    how = "entropy-calibrated" if calibrator is not None else "uncalibrated (placeholder ranges)"
    note = f"TensorRT engine built ({precision}{', ' + how if precision == 'int8' else ''})"
    return TensorRTResult(onnx_path, script_path, command, engine_path, note)


def _rebatch(batches: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Calibration images cut into whole batches of the engine's static batch size."""
    if not len(batches):
        return []
    images = np.concatenate([np.asarray(b, dtype=np.float32) for b in batches])
    return [images[i:i + size] for i in range(0, len(images) - size + 1, size)]
