"""LiteRT (TensorFlow Lite) on the host CPU, with XNNPACK as on a phone's CPU (extra ``tflite``).

Modules are converted with :func:`hwnas.runtimes.converters.cached_tflite` (fp32, NHWC input and output, so an
isolated op has no layout transposes) and run by ``ai_edge_litert.interpreter.Interpreter`` with
``num_threads=threads``. Existing ``.tflite`` files (quantized ones too) load with :meth:`prepare_file`.

Options: ``xnnpack`` (bool, default true): XNNPACK is LiteRT's default CPU delegate; false runs the builtin
kernels only (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``). Precision: ops are converted in ``fp32``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Sequence

import numpy as np
from torch import nn

from hwnas.errors import HwnasError
from hwnas.io import first_line
from hwnas.runtimes import converters
from hwnas.runtimes.base import PreparedModel, Runtime, RuntimeConfig, time_calls

NOT_INSTALLED = "LiteRT is not installed: pip install 'hwnas[tflite]' (ai-edge-litert, litert-torch)"


class LiteRTRuntime(Runtime):
    """LiteRT's Python interpreter; conversion results are cached in ``workdir`` by name and content hash."""

    name = "litert"
    extra = "tflite"
    default_options = MappingProxyType({"xnnpack": True})

    @classmethod
    def unavailable_reason(cls, config: RuntimeConfig) -> str | None:
        """One line when ``ai_edge_litert`` does not import or the device is not this host's CPU."""
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            return NOT_INSTALLED
        if config.device != "cpu":
            hint = " (a phone is measured by the adb runtime)" if config.device == "android" else ""
            return f"the litert runtime runs on this machine's cpu, not device {config.device!r}{hint}"
        return None

    def prepare(self, module: nn.Module, input_shape: Sequence[int], name: str) -> LiteRTPreparedModel:
        """Convert (or reuse) ``workdir/<name>.<digest>.tflite`` with NHWC I/O and load it."""
        if self.config.precision != "fp32":
            raise HwnasError(f"litert runtime: ops are converted in fp32 only, not {self.config.precision!r}; "
                             "load an already quantized .tflite file with prepare_file")
        path = converters.cached_tflite(module, input_shape, self.workdir, name, channel_last_io=True)
        return LiteRTPreparedModel(path, self._interpreter(path), channel_last=True)

    def prepare_file(self, path: Path) -> LiteRTPreparedModel:
        """Load an existing ``.tflite`` file; its input layout is guessed for :meth:`LiteRTPreparedModel.infer`."""
        path = self._model_file(path, ".tflite")
        return LiteRTPreparedModel(path, self._interpreter(path), channel_last=None)

    def _interpreter(self, path: Path) -> Any:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if self.options["xnnpack"] else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with converters.silenced_native_output():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                interpreter = Interpreter(model_path=str(path), num_threads=self.config.threads,
                                          experimental_op_resolver_type=resolver)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise HwnasError(f"{path}: LiteRT cannot load it: {first_line(error)}") from error
        return interpreter

    def describe(self) -> dict[str, Any]:
        versions = {}
        for distribution in ("ai-edge-litert", "litert-torch"):
            try:
                versions[distribution] = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                versions[distribution] = None
        return self._description(versions)


class LiteRTPreparedModel(PreparedModel):
    """An interpreter with fixed random inputs set once.

    Args:
        channel_last: whether the model takes NHWC input (True for converted ops); None guesses from the
            file's input shape in :meth:`infer`.
    """

    def __init__(self, path: Path, interpreter: Any, channel_last: bool | None) -> None:
        self.path, self.interpreter, self.channel_last = path, interpreter, channel_last
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            dtype = np.dtype(detail["dtype"])
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                data = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(dtype)
            else:
                data = rng.standard_normal(detail["shape"]).astype(dtype)
            interpreter.set_tensor(detail["index"], data)

    def run(self) -> None:
        self.interpreter.invoke()

    def time_runs(self, n: int) -> list[float]:
        return time_calls(self.interpreter.invoke, n)

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run on NCHW ``inputs``: transposed to NHWC for a channel-last model, (de)quantized for an int8 one."""
        (detail,) = self._single_input()
        inputs = np.asarray(inputs, dtype=np.float32)
        nhwc = self._is_channel_last(tuple(inputs.shape), tuple(detail["shape"]))
        if nhwc:
            inputs = inputs.transpose(0, *range(2, inputs.ndim), 1)
        self.interpreter.set_tensor(detail["index"], _quantize(inputs, detail))
        self.interpreter.invoke()
        out_detail = self.interpreter.get_output_details()[0]
        output = _dequantize(self.interpreter.get_tensor(out_detail["index"]), out_detail)
        if nhwc and output.ndim >= 3:
            output = output.transpose(0, output.ndim - 1, *range(1, output.ndim - 1))
        return np.ascontiguousarray(output)

    def _single_input(self) -> list[dict[str, Any]]:
        details = self.interpreter.get_input_details()
        if len(details) != 1:
            raise HwnasError(f"{self.path}: infer() needs a model with one input, this one has {len(details)}")
        return details

    def _is_channel_last(self, nchw: tuple[int, ...], model_shape: tuple[int, ...]) -> bool:
        if len(nchw) < 3:
            return False
        nhwc = (nchw[0], *nchw[2:], nchw[1])
        if self.channel_last is not None:
            return self.channel_last
        if model_shape not in (nchw, nhwc):
            raise HwnasError(f"{self.path}: input shape {list(model_shape)} matches neither NCHW {list(nchw)} "
                             f"nor its NHWC layout")
        return model_shape == nhwc  # ambiguous when both match (e.g. 1x8x8x8): LiteRT's convention is NHWC

    def close(self) -> None:
        self.interpreter = None


def _quantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / (scale or 1.0)) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * (scale or 1.0)).astype(np.float32)
