"""TensorRT on an NVIDIA GPU: ONNX -> serialized engine (``workdir/<name>.engine``) -> execution context.

Built with the TensorRT 10 Python API (``Builder``, ``OnnxParser``, ``build_serialized_network``); inference uses
torch CUDA tensors as the engine's I/O buffers (``set_tensor_address``) and ``execute_async_v3`` on a torch CUDA
stream; :meth:`TensorRTPreparedModel.time_runs` times each inference with CUDA events. ``tensorrt`` is imported
only inside functions, so this module imports cleanly where TensorRT is missing.

Precision: ``fp32``; ``fp16`` (``BuilderFlag.FP16``: TensorRT may pick fp16 kernels); ``int8`` (``BuilderFlag.INT8``
plus ``FP16`` so that layers without int8 kernels fall back to fp16). TensorRT 10.1 deprecates implicit int8
calibration in favour of explicit quantization (Q/DQ nodes in the ONNX); :func:`build_engine` still takes an
entropy calibrator (export's :func:`hwnas.export.tensorrt_export.make_int8_calibrator`) for models without Q/DQ
nodes. Without a calibrator, int8 engines get placeholder dynamic ranges (as ``trtexec --int8`` does): their
latency is representative, their outputs are not.

Options (``[options]`` of the device profile): ``workspace_mib`` (builder workspace pool, default 1024),
``optimization_level`` (builder optimization level 0..5, TensorRT's default 3).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from hwnas.errors import HwnasError
from hwnas.runtimes.base import PreparedModel, Runtime, RuntimeConfig

PRECISIONS = ("fp32", "fp16", "int8")
NOT_INSTALLED = (
    "TensorRT is not installed: pip install 'hwnas[tensorrt]' on a machine with an NVIDIA GPU "
    "(its libraries are not on PyPI for this platform)"
)
DEFAULT_WORKSPACE_MIB = 1024
PLACEHOLDER_DYNAMIC_RANGE = 4.0  # |activation| bound used for int8 engines built without calibration data


class TensorRTRuntime(Runtime):
    """Engines built from ONNX with the TensorRT Python API, run on the first CUDA GPU."""

    name = "tensorrt"
    extra = "tensorrt"
    default_options = MappingProxyType({"workspace_mib": DEFAULT_WORKSPACE_MIB, "optimization_level": None})

    def __init__(self, config: RuntimeConfig, workdir: Path) -> None:
        super().__init__(config, workdir)
        if config.precision not in PRECISIONS:
            raise HwnasError(f"tensorrt runtime: precision must be one of {', '.join(PRECISIONS)}")
        self.workspace_mib: int = self.options["workspace_mib"]
        self.optimization_level: int | None = self.options["optimization_level"]

    def _resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Integers in range: ``workspace_mib`` 1..2**20, ``optimization_level`` 0..5 (None: TensorRT's own)."""
        unknown = set(options) - set(self.default_options)
        if unknown:
            raise HwnasError(f"tensorrt runtime: unknown option(s) {', '.join(sorted(unknown))} "
                             f"(expected {', '.join(self.default_options)})")
        level = options.get("optimization_level")
        return {"workspace_mib": _option_int(options, "workspace_mib", DEFAULT_WORKSPACE_MIB, 1, 1 << 20),
                "optimization_level": None if level is None else _option_int(options, "optimization_level", 3, 0, 5)}

    @classmethod
    def unavailable_reason(cls, config: RuntimeConfig) -> str | None:
        """One line when ``tensorrt`` does not import or torch sees no CUDA GPU."""
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return NOT_INSTALLED
        except Exception as exc:  # a broken install: missing shared libraries, driver mismatch
            detail = next(iter(str(exc).splitlines()), "")
            return f"TensorRT is installed but failed to import ({type(exc).__name__}: {detail})"
        import torch

        if not torch.cuda.is_available():
            return "TensorRT needs an NVIDIA GPU, and torch sees no CUDA device here"
        return None

    def prepare(self, module: nn.Module, input_shape: Sequence[int], name: str) -> TensorRTPreparedModel:
        """Export ``workdir/<name>.onnx``, build ``workdir/<name>.engine`` and load it."""
        from hwnas.runtimes import converters

        onnx_path = converters.to_onnx(module, input_shape, self.workdir / f"{name}.onnx")
        return self._build_and_load(Path(onnx_path), self.workdir / f"{name}.engine", input_shape)

    def prepare_file(self, path: Path) -> TensorRTPreparedModel:
        """Build an engine from an ``.onnx`` file, or load an ``.engine``/``.plan`` built for this GPU."""
        path = Path(path)
        if not path.is_file():
            raise HwnasError(f"{path}: model file not found")
        if path.suffix == ".onnx":
            return self._build_and_load(path, self.workdir / f"{path.stem}.engine", None)
        if path.suffix in (".engine", ".plan"):
            return TensorRTPreparedModel(path, None)
        raise HwnasError(f"{path}: the tensorrt runtime loads .onnx, .engine or .plan files, got {path.suffix!r}")

    def _build_and_load(
        self, onnx_path: Path, engine_path: Path, input_shape: Sequence[int] | None
    ) -> TensorRTPreparedModel:
        build_engine(
            onnx_path,
            engine_path,
            self.config.precision,
            input_shape=input_shape,
            workspace_mib=self.workspace_mib,
            optimization_level=self.optimization_level,
        )
        return TensorRTPreparedModel(engine_path, input_shape)

    def describe(self) -> dict[str, Any]:
        """TensorRT/CUDA versions and the GPU, with the builder settings, for the table fingerprint."""
        import tensorrt as trt
        import torch

        major, minor = torch.cuda.get_device_capability()
        return {
            "runtime": self.name,
            "tensorrt": trt.__version__,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(),
            "compute_capability": f"{major}.{minor}",
            "threads": self.config.threads,
            "precision": self.config.precision,
            "device": self.config.device,
            "workspace_mib": self.workspace_mib,
            "optimization_level": self.optimization_level,
            "options": dict(self.config.options),
        }


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str = "fp32",
    *,
    input_shape: Sequence[int] | None = None,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    optimization_level: int | None = None,
    calibrator: Any = None,
) -> Path:
    """Parse ``onnx_path``, build a serialized engine for ``precision`` and write it to ``engine_path``.

    Inputs with dynamic dimensions get one optimization profile fixed at ``input_shape`` (batch-1 timing).
    ``calibrator`` (an ``IInt8Calibrator``, e.g. export's ``make_int8_calibrator``) is used for ``int8`` only.
    """
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise HwnasError(f"tensorrt: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors))
        raise HwnasError(f"{onnx_path}: TensorRT could not parse the ONNX model: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not hasattr(trt.BuilderFlag, "INT8"):
            raise HwnasError(
                f"TensorRT {trt.__version__} has no implicit int8 mode: export an ONNX model with Q/DQ nodes instead"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator
        else:
            _set_placeholder_dynamic_ranges(trt, network)
    _add_static_profile(builder, network, config, input_shape, onnx_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HwnasError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see its log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    return engine_path


def _add_static_profile(
    builder: Any, network: Any, config: Any, input_shape: Sequence[int] | None, source: Path
) -> None:
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if not dynamic:
        return
    if input_shape is None:
        raise HwnasError(f"{source}: the ONNX model has dynamic input dimensions; give an input shape")
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        shape = tuple(int(d) for d in input_shape)
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)


def _set_placeholder_dynamic_ranges(trt: Any, network: Any) -> None:
    """Give every float tensor a fixed int8 range (timing-only engines, like ``trtexec --int8`` without ``--calib``).

    ``ITensor.dynamic_range`` is deprecated since TensorRT 10.1 together with implicit quantization.
    """
    if not hasattr(trt.ITensor, "dynamic_range"):
        raise HwnasError(f"TensorRT {trt.__version__} cannot set int8 ranges: give a calibrator or Q/DQ nodes")
    bound = PLACEHOLDER_DYNAMIC_RANGE
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    for tensor in tensors:
        if tensor.dtype in (trt.float32, trt.float16) and not tensor.dynamic_range:
            tensor.dynamic_range = (-bound, bound)


class TensorRTPreparedModel(PreparedModel):
    """A deserialized engine with an execution context and torch CUDA tensors bound as its I/O buffers."""

    def __init__(self, engine_path: Path, input_shape: Sequence[int] | None, seed: int = 0) -> None:
        import tensorrt as trt
        import torch

        self.engine_path = Path(engine_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise HwnasError(f"{self.engine_path}: TensorRT could not load the engine (built for another GPU/version?)")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        for name in self.input_names:
            if -1 in tuple(self._engine.get_tensor_shape(name)):
                if input_shape is None:
                    raise HwnasError(f"{self.engine_path}: input {name!r} has a dynamic shape; give an input shape")
                self._context.set_input_shape(name, tuple(int(d) for d in input_shape))
        generator = torch.Generator(device="cuda").manual_seed(seed)
        self._buffers: dict[str, torch.Tensor] = {}
        for name in names:  # outputs after inputs: their shapes are known once input shapes are set
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self._engine.get_tensor_dtype(name))
            if name in self.input_names and dtype.is_floating_point:
                tensor = torch.randn(shape, generator=generator, device="cuda", dtype=torch.float32).to(dtype)
            else:
                tensor = torch.zeros(shape, device="cuda", dtype=dtype)
            self._buffers[name] = tensor
            self._context.set_tensor_address(name, tensor.data_ptr())

    def run(self) -> None:
        """One inference, enqueued on the model's stream and waited for."""
        self._enqueue()
        self._stream.synchronize()

    def time_runs(self, n: int) -> list[float]:
        """Seconds per inference from CUDA events around each one, synchronizing after each.

        Each inference runs alone (as :meth:`run` does), so an interval includes the kernel launches TensorRT
        issues from the host while the GPU waits, but not the final host wake-up: batch-1 latency on the GPU.
        """
        import torch

        times = []
        for _ in range(n):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(self._stream)
            self._enqueue()
            end.record(self._stream)
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        return times

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run on NCHW float32 ``inputs`` (copied into the first input buffer); return the first output."""
        import torch

        buffer = self._buffers[self.input_names[0]]
        source = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        if tuple(source.shape) != tuple(buffer.shape):
            raise HwnasError(f"input shape {tuple(source.shape)} does not match the engine's {tuple(buffer.shape)}")
        with torch.cuda.stream(self._stream):
            buffer.copy_(source.to(device="cuda", dtype=buffer.dtype))
        self.run()
        return self._buffers[self.output_names[0]].float().cpu().numpy()

    def close(self) -> None:
        """Release the context, the engine and the buffers (in that order)."""
        for attribute in ("_context", "_engine", "_runtime"):
            if hasattr(self, attribute):
                delattr(self, attribute)
        self._buffers = {}

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise HwnasError(f"{self.engine_path}: TensorRT execute_async_v3 failed")


def _option_int(options: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HwnasError(f"tensorrt runtime: option {key!r}: expected an integer in {low}..{high}, got {value!r}")
    return value


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int8: torch.int8,
        trt.int32: torch.int32,
        trt.bool: torch.bool,
    }
    for name, torch_dtype in (("int64", torch.int64), ("bf16", torch.bfloat16), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_dtype
    if dtype not in table:
        raise HwnasError(f"tensorrt: unsupported I/O tensor type {dtype}")
    return table[dtype]


__all__ = [
    "NOT_INSTALLED",
    "TensorRTPreparedModel",
    "TensorRTRuntime",
    "build_engine",
]
