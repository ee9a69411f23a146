"""Numerical verification: run each artifact in its runtime on the images PyTorch sees and compare outputs.

ONNX runs in onnxruntime (CPU), TFLite in the LiteRT interpreter (CPU, XNNPACK), a TensorRT engine on its GPU,
always here and with one thread, whatever device the latency is measured on. Reported per artifact:
``max_abs_diff`` and ``mean_abs_diff`` of the outputs, ``top1_agreement`` (share of images whose argmax class
is the same) and ``within_bounds`` against :class:`~hwnas.export.config.Bounds` for the precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.export.config import Bounds
from hwnas.runtimes import PreparedModel, RuntimeConfig, get_runtime


@dataclass(frozen=True)
class Verification:
    """How an artifact's outputs differ from PyTorch's on ``samples`` images."""

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    output_scale: float
    bound_unit: float
    within_bounds: bool
    samples: int
    bounds: Bounds

    def to_dict(self) -> dict[str, Any]:
        mean_limit = None if self.bounds.mean_abs is None else self.bounds.mean_abs * self.bound_unit
        return {"max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "top1_agreement": self.top1_agreement, "output_scale": self.output_scale,
                "max_abs_diff_limit": self.bounds.max_abs * self.bound_unit,
                "mean_abs_diff_limit": mean_limit,
                "min_top1_agreement": self.bounds.min_top1, "within_bounds": self.within_bounds,
                "samples": self.samples, "bounds": self.bounds.to_dict()}


def torch_outputs(module: nn.Module, batches: Sequence[np.ndarray], chunk: int = 32) -> np.ndarray:
    """The reference: the eval-mode PyTorch module on the images of all batches, ``chunk`` at a time (eval mode is
    per image, so how they are batched does not matter beyond float rounding)."""
    module.eval()
    images = np.concatenate(batches)
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(np.ascontiguousarray(images[i:i + chunk]))).numpy()
                               for i in range(0, len(images), chunk)])


def artifact_outputs(model: PreparedModel, batches: Sequence[np.ndarray]) -> np.ndarray:
    """The artifact on each NCHW batch (the runtime handles NHWC layout and int8 (de)quantization)."""
    return np.concatenate([np.asarray(model.infer(b), dtype=np.float32) for b in batches])


def compare(reference: np.ndarray, outputs: np.ndarray, bounds: Bounds) -> Verification:
    """Differences of ``outputs`` from ``reference`` (both ``(images, classes)``) and whether they are in bounds."""
    reference = reference.reshape(len(reference), -1).astype(np.float64)
    outputs = outputs.reshape(len(outputs), -1).astype(np.float64)
    if reference.shape != outputs.shape:
        raise ValueError(f"output shapes differ: PyTorch {reference.shape}, artifact {outputs.shape}")
    diff = np.abs(outputs - reference)
    scale = float(np.abs(reference).max())
    # an image with a NaN/inf output on either side agrees with nothing (argmax of all-NaN rows is 0 on both sides)
    finite_rows = np.isfinite(outputs).all(axis=1) & np.isfinite(reference).all(axis=1)
    top1 = float(np.mean((outputs.argmax(axis=1) == reference.argmax(axis=1)) & finite_rows))
    unit = bounds.unit(scale)
    max_abs, mean_abs = float(diff.max()), float(diff.mean())
    within = bool(finite_rows.all() and math.isfinite(scale) and max_abs <= bounds.max_abs * unit
                  and top1 >= bounds.min_top1 and (bounds.mean_abs is None or mean_abs <= bounds.mean_abs * unit))
    return Verification(max_abs, mean_abs, top1, scale, unit, within, len(reference), bounds)


def open_artifact(fmt: str, path: Path, input_shape: Sequence[int], workdir: Path) -> PreparedModel:
    """Load an artifact in the runtime that verifies it (see the module docstring)."""
    if fmt == "onnx":
        return get_runtime("onnxruntime", RuntimeConfig(threads=1), workdir).prepare_file(path)
    if fmt == "tflite":
        return get_runtime("litert", RuntimeConfig(threads=1, options={"xnnpack": True}), workdir).prepare_file(path)
    if fmt == "tensorrt":
        from hwnas.runtimes.tensorrt_rt import TensorRTPreparedModel

        return TensorRTPreparedModel(path, input_shape)
    raise ValueError(f"no verification runtime for format {fmt!r}")


def verify_artifact(fmt: str, path: Path, input_shape: Sequence[int], reference: np.ndarray,
                    batches: Sequence[np.ndarray], bounds: Bounds, workdir: Path) -> Verification:
    """Run the artifact on ``batches`` and compare with ``reference`` (PyTorch's outputs on the same batches)."""
    model = open_artifact(fmt, path, input_shape, workdir)
    try:
        return compare(reference, artifact_outputs(model, batches), bounds)
    finally:
        model.close()
