"""ONNX Runtime on the CPU, or on a CUDA GPU through its CUDA or TensorRT execution provider (core runtime).

Sessions run with ``intra_op_num_threads=threads``, ``inter_op_num_threads=1`` and sequential execution, so
``threads`` means what it means for the other runtimes. Inputs and outputs are bound once with an
``IOBinding`` on the session's device, so a timed run is the inference alone (no numpy conversion, no
host<->device copy). ``Run`` synchronizes its execution provider before returning, so ``perf_counter`` times
GPU runs correctly.

Options: ``graph_optimization`` ("disable", "basic", "extended", "all"; default "all"), ``provider`` on CUDA
("cuda" default, or "tensorrt"). Precision: ``fp32``; ``fp16`` with the TensorRT provider only.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.io import first_line
from hwnas.runtimes import converters
from hwnas.runtimes.base import PreparedModel, Runtime, RuntimeConfig, time_calls

_GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                 "all": "ORT_ENABLE_ALL"}
_CUDA_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int32)": np.int32,
                "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


class OnnxRuntime(Runtime):
    """Models exported with :func:`hwnas.runtimes.converters.to_onnx` (or existing ``.onnx`` files)."""

    name = "onnxruntime"
    extra = ""
    default_options = MappingProxyType({"graph_optimization": "all", "provider": "cuda"})

    def _resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The typed options of the base class, with ``graph_optimization`` and ``provider`` among their choices."""
        resolved = super()._resolve_options(options)
        for name, choices in (("graph_optimization", _GRAPH_LEVELS), ("provider", _CUDA_PROVIDERS)):
            if resolved[name] not in choices:
                raise HwnasError(f"onnxruntime runtime: option {name!r} must be one of {', '.join(choices)}, "
                                 f"got {resolved[name]!r}")
        return resolved

    @classmethod
    def unavailable_reason(cls, config: RuntimeConfig) -> str | None:
        """One line when onnxruntime, the execution provider or the precision is missing here."""
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed: pip install onnxruntime (onnxruntime-gpu on a CUDA machine)"
        if config.device not in ("cpu", "cuda"):
            return f"the onnxruntime runtime runs on device cpu or cuda, not {config.device!r}"
        provider = _provider(config)
        available = onnxruntime.get_available_providers()
        if provider not in available:
            needs = "onnxruntime-gpu and TensorRT" if provider == "TensorrtExecutionProvider" else "onnxruntime-gpu"
            return (f"onnxruntime has no {provider} here (installed: {', '.join(available)}); "
                    f"install {needs} on a CUDA machine")
        allowed = ("fp32", "fp16") if provider == "TensorrtExecutionProvider" else ("fp32",)
        if config.precision not in allowed:
            return f"onnxruntime with {provider} supports precision {' or '.join(allowed)}, not {config.precision!r}"
        return None

    def prepare(self, module: nn.Module, input_shape: Sequence[int], name: str) -> OnnxPreparedModel:
        """Export (or reuse) ``workdir/<name>.<digest>.onnx`` and open a session on it."""
        return self.prepare_file(converters.cached_onnx(module, input_shape, self.workdir, name))

    def prepare_file(self, path: Path) -> OnnxPreparedModel:
        """Open a session on an existing ``.onnx`` file; dynamic input dimensions are set to 1."""
        path = self._model_file(path, ".onnx")
        return OnnxPreparedModel(path, self._session(path), self.config.device)

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   _GRAPH_LEVELS[self.options["graph_optimization"]])
        options.log_severity_level = 3  # errors only: no "removing initializer" chatter
        provider = _provider(self.config)
        providers: list[Any] = [provider]
        if provider == "TensorrtExecutionProvider":
            trt_options = {"trt_fp16_enable": self.config.precision == "fp16",
                           "trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.workdir / "trt-cache")}
            providers = [(provider, trt_options), "CUDAExecutionProvider"]
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise HwnasError(f"{path}: onnxruntime cannot load it: {first_line(error)}") from error
        if provider not in session.get_providers():
            raise RuntimeUnavailable(f"onnxruntime could not start {provider} (CUDA/cuDNN/TensorRT libraries missing "
                                     f"or mismatched?); the session fell back to {', '.join(session.get_providers())}")
        return session

    def describe(self) -> dict[str, Any]:
        import onnx
        import onnxruntime
        import torch

        versions = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__}
        provider = self.options["provider"] if self.config.device == "cuda" else "cpu"
        return self._description(versions, {**self.options, "provider": provider})


class OnnxPreparedModel(PreparedModel):
    """An inference session with fixed inputs and outputs bound once on its device."""

    def __init__(self, path: Path, session: Any, device: str) -> None:
        import onnxruntime as ort

        self.path, self.session = path, session
        self.device = "cuda" if device == "cuda" else "cpu"
        rng = np.random.default_rng(0)
        self.binding = session.io_binding()
        self.inputs: list[tuple[str, type]] = []
        self.input_values: list[Any] = []  # the bound OrtValues (a benchmark may rewrite them in place)
        for node in session.get_inputs():
            if node.type not in _NUMPY_TYPES:
                raise HwnasError(f"{path}: input {node.name!r} has unsupported type {node.type}")
            shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in node.shape]
            data = rng.standard_normal(shape).astype(_NUMPY_TYPES[node.type])
            self.input_values.append(ort.OrtValue.ortvalue_from_numpy(data, self.device, 0))
            self.binding.bind_ortvalue_input(node.name, self.input_values[-1])
            self.inputs.append((node.name, _NUMPY_TYPES[node.type]))
        for node in session.get_outputs():
            self.binding.bind_output(node.name, self.device)
        self.session.run_with_iobinding(self.binding)
        for node, value in zip(session.get_outputs(), self.binding.get_outputs(), strict=True):
            self.binding.bind_ortvalue_output(node.name, value)  # reuse these buffers: no allocation per run

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def time_runs(self, n: int) -> list[float]:
        return time_calls(self.session.run_with_iobinding, n, self.binding)

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        if len(self.inputs) != 1:
            raise HwnasError(f"{self.path}: infer() needs a model with one input, this one has {len(self.inputs)}")
        (name, dtype), = self.inputs
        return np.asarray(self.session.run(None, {name: np.asarray(inputs, dtype=dtype)})[0])

    def close(self) -> None:
        self.binding = self.session = None


def _provider(config: RuntimeConfig) -> str:
    if config.device != "cuda":
        return "CPUExecutionProvider"
    return _CUDA_PROVIDERS.get(config.options.get("provider", "cuda"), "CUDAExecutionProvider")
