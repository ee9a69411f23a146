"""TensorRT artifact: an engine built from the exported ONNX with the TensorRT Python API, plus ``trtexec.sh``.

The engine is built by :func:`hwnas.runtimes.tensorrt_rt.build_engine` (the builder the TensorRT runtime times
with), int8 with an entropy calibrator (:func:`make_int8_calibrator`) over the calibration batches. The exact
``trtexec`` command (:func:`trtexec_command`) that builds and times the same engine is written next to it, runnable
from the output folder on any machine with TensorRT.
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
from hwnas.errors import HwnasError
from hwnas.runtimes.tensorrt_rt import DEFAULT_WORKSPACE_MIB, PRECISIONS, TensorRTRuntime


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


def trtexec_command(
    onnx_path: Path | str,
    engine_path: Path | str,
    precision: str = "fp32",
    *,
    warmup_ms: int = 200,
    iterations: int = 100,
    duration_s: int = 0,
    workspace_mib: int | None = DEFAULT_WORKSPACE_MIB,
    use_cuda_graph: bool = False,
    no_data_transfers: bool = True,
    export_times: Path | str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``trtexec`` (TensorRT 10) command line that builds ``engine_path`` from ``onnx_path`` and times it.

    ``trtexec`` runs at least ``iterations`` inferences *and* at least ``duration_s`` seconds after a ``warmup_ms``
    warm-up; ``duration_s=0`` makes ``iterations`` the count. ``no_data_transfers`` times GPU compute without
    host<->device copies (what the TensorRT runtime times too); ``use_cuda_graph`` captures the
    inference in a CUDA graph (lower launch overhead, not what our Python runtime measures).
    ``export_times`` writes every inference's timing to a JSON file. ``int8`` adds ``--fp16`` as the Python
    builder does; without ``--calib`` in ``extra``, trtexec uses placeholder scales (latency only).
    """
    if precision not in PRECISIONS:
        raise HwnasError(f"trtexec: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for label, value in (("warmup_ms", warmup_ms), ("iterations", iterations), ("duration_s", duration_s)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise HwnasError(f"trtexec: {label} must be a non-negative integer, got {value!r}")
    command = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    command += {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[precision]
    if workspace_mib is not None:
        command.append(f"--memPoolSize=workspace:{workspace_mib}")
    command += [f"--warmUp={warmup_ms}", f"--iterations={iterations}", f"--duration={duration_s}", "--useSpinWait"]
    if no_data_transfers:
        command.append("--noDataTransfers")
    if use_cuda_graph:
        command.append("--useCudaGraph")
    if export_times is not None:
        command.append(f"--exportTimes={export_times}")
    return command + list(extra)


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
    from hwnas.runtimes.tensorrt_rt import build_engine

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


def make_int8_calibrator(batches: Sequence[np.ndarray], cache_path: Path | None = None) -> Any:
    """An entropy calibrator (``IInt8EntropyCalibrator2``) over NCHW float32 batches of the model's one input.

    Deprecated by TensorRT 10.1 (use Q/DQ nodes instead) but still honoured by the builder. The calibration
    cache, when ``cache_path`` is given, is read before and written after calibration. Needs ``tensorrt`` and CUDA.
    """
    import tensorrt as trt
    import torch

    if not batches:
        raise HwnasError("int8 calibration needs at least one batch")
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise HwnasError(f"TensorRT {trt.__version__} has no int8 calibrators: use an ONNX model with Q/DQ nodes")
    arrays = [np.ascontiguousarray(batch, dtype=np.float32) for batch in batches]

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._pending = iter(arrays)
            self._device_batch: torch.Tensor | None = None  # kept alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return int(arrays[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._pending, None)
            if batch is None:
                return None
            self._device_batch = torch.from_numpy(batch).cuda()
            return [int(self._device_batch.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                cache_path.write_bytes(bytes(cache))

    return _EntropyCalibrator()


def _rebatch(batches: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Calibration images cut into whole batches of the engine's static batch size."""
    if not len(batches):
        return []
    images = np.concatenate([np.asarray(b, dtype=np.float32) for b in batches])
    return [images[i:i + size] for i in range(0, len(images) - size + 1, size)]
