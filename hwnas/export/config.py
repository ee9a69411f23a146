"""Options of ``hwnas export`` and the numerical bounds every exported artifact is checked against.

Bounds, with ``scale = max |y_torch|`` over the verification images (logits), chosen from measurements of
trained networks of every space (tiny, fbnet-cifar100, proxyless, fbnet at 32x32, proxyless at 64x64; digits,
359 test images; ``docs/export.md`` has the table):

* ``fp32``: ``max |y - y_torch| <= 1e-4 * max(1, scale)`` (1e-4 absolute for logits up to 1). Measured:
  at most 4.3e-5 absolute (1.5e-6 of the scale) for ONNX Runtime and LiteRT.
* ``fp16`` (TFLite fp16 weights, fp32 compute): ``max <= 0.01 * scale`` and top-1 agreement >= 0.98.
  Measured: 0.0009-0.0017 of the scale, agreement 1.0.
* ``int8`` (full-integer PTQ): ``max <= 0.35 * scale``, ``mean <= 0.02 * scale`` and agreement >= 0.93.
  Measured: max 0.035-0.23, mean 0.006-0.010 of the scale, agreement 0.969-0.997. Each bound is about 1.5-2x the
  worst figure measured: the max is a tail statistic (one image's worst logit) and gets 1.5x (it was 0.5x the
  scale, which passed a file off by half the logit range on some image); the mean 2x; 0.93 agreement is ~3.5
  binomial standard deviations below the worst measured, at 256 images. On random-weight networks (nearly tied
  logits) agreement can be lower: int8 checks of an architecture JSON are indicative only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

FORMATS = ("onnx", "tflite", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
# The device profile each format is measured on unless --device names one whose backend consumes it.
DEFAULT_DEVICES: Mapping[str, str] = MappingProxyType(
    {"onnx": "cpu-onnxruntime", "tflite": "cpu-litert", "tensorrt": "cuda-tensorrt"}
)
# Which artifact a device's backend loads.
BACKEND_FORMATS: Mapping[str, str] = MappingProxyType(
    {"onnxruntime": "onnx", "litert": "tflite", "adb": "tflite", "tensorrt": "tensorrt"}
)


@dataclass(frozen=True)
class Bounds:
    """When an artifact's outputs count as matching PyTorch's.

    Attributes:
        max_abs: bound on ``max |y - y_torch|``, times ``max(1, scale)`` when ``relative_to_unit`` else ``scale``.
        mean_abs: bound on ``mean |y - y_torch|``, scaled the same way (None: not checked).
        relative_to_unit: scale the bounds by ``max(1, scale)`` (fp32) instead of ``scale`` (quantized formats).
        min_top1: least top-1 agreement (fraction of inputs whose argmax class is the same).
    """

    max_abs: float
    mean_abs: float | None = None
    relative_to_unit: bool = False
    min_top1: float = 0.0

    def unit(self, scale: float) -> float:
        """What the bounds are multiplied by for outputs of magnitude ``scale``."""
        return max(1.0, scale) if self.relative_to_unit else scale

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "mean_abs": self.mean_abs,
                "relative_to": "max(1, scale)" if self.relative_to_unit else "scale", "min_top1": self.min_top1}


DEFAULT_BOUNDS: Mapping[str, Bounds] = MappingProxyType({
    "fp32": Bounds(1e-4, relative_to_unit=True),
    "fp16": Bounds(0.01, min_top1=0.98),
    "int8": Bounds(0.35, mean_abs=0.02, min_top1=0.93),
})


@dataclass(frozen=True)
class ExportConfig:
    """Everything ``hwnas export`` can be told; the CLI and ``tools/export_report.py`` only fill this in.

    Attributes:
        formats: artifacts to write, from :data:`FORMATS`.
        precision: ``fp32``, ``fp16`` or ``int8``; applies to TFLite and TensorRT (ONNX is always fp32, the
            precision TensorRT builds from).
        device: device profile (name or path) to measure the format its backend loads on; other formats use
            :data:`DEFAULT_DEVICES`.
        batch: static batch size of the exported input.
        opset: ONNX opset.
        nhwc: TFLite input (and rank >= 3 outputs) channel-last, as on-device pipelines feed images.
        data: data set for calibration and verification (None: the run's, else the embedded digits).
        seed: seeds random weights of an architecture JSON and the data split of a non-run source.
        calibration_batches, calibration_batch_size: int8 calibration data (a few batches of the train split).
        verify_samples: test-split images the artifacts are compared on (rounded down to whole batches).
        measure: time each artifact on its device profile.
        torch_threads: PyTorch intra-op threads while exporting (reference outputs, calibration, conversion);
            1 is reproducible and avoids the 10-100x slowdown of oversubscribed OpenMP threads on a busy CPU.
        protocol_overrides: fields of the measurement protocol to change (after the device profile's).
        bounds: per precision, see :class:`Bounds`.
        random_weights: export a run folder that has no ``model.pt`` with random (seeded) weights instead of
            refusing it.
        stem: file name stem of the artifacts in the output folder.
        input_name, output_name: tensor names in the ONNX graph.
    """

    formats: tuple[str, ...] = ("onnx", "tflite")
    precision: str = "fp32"
    device: str | None = None
    batch: int = 1
    opset: int = 17
    nhwc: bool = False
    data: str | None = None
    seed: int = 0
    calibration_batches: int = 4
    calibration_batch_size: int = 32
    verify_samples: int = 256
    measure: bool = True
    torch_threads: int = 1
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    bounds: Mapping[str, Bounds] = field(default_factory=lambda: dict(DEFAULT_BOUNDS))
    random_weights: bool = False
    stem: str = "model"
    input_name: str = "input"
    output_name: str = "logits"


def artifact_names(config: ExportConfig) -> dict[str, str]:
    """File names inside the output folder, per artifact."""
    p = config.precision
    return {"onnx": f"{config.stem}.onnx", "tflite": f"{config.stem}_{p}.tflite",
            "tensorrt": f"{config.stem}_{p}.engine", "trtexec": "trtexec.sh", "report": "export.json"}


def out_path(out_dir: Path, config: ExportConfig, artifact: str) -> Path:
    return Path(out_dir) / artifact_names(config)[artifact]
