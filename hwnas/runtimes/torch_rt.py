"""PyTorch eager mode on the CPU or a CUDA GPU (the core runtime: no extra package).

CPU: ``torch.set_num_threads(threads)`` (process-wide; set again before every timed chunk so that two torch
runtimes with different thread counts measure what they say) and ``torch.inference_mode()``. CUDA: module and
input live on the GPU and each invocation is timed with CUDA events after a ``torch.cuda.synchronize()``.

Options: ``channels_last`` (bool, default false): NHWC memory format for module and input.
Precision: ``fp32``; ``fp16`` on CUDA only (the module and input are cast to half).
"""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.runtimes.base import PreparedModel, Runtime, RuntimeConfig, time_calls
from hwnas.runtimes.converters import example_input


class TorchRuntime(Runtime):
    """Eager PyTorch; the module is deep-copied so that the caller's module is never moved or cast."""

    name = "torch"
    extra = ""
    default_options = MappingProxyType({"channels_last": False})

    @classmethod
    def unavailable_reason(cls, config: RuntimeConfig) -> str | None:
        """One line when the device or precision cannot run here (no CUDA device, fp16 on a CPU, ...)."""
        if config.device not in ("cpu", "cuda"):
            return f"the torch runtime runs on device cpu or cuda, not {config.device!r}"
        if config.device == "cuda" and not torch.cuda.is_available():
            return (f"torch sees no CUDA device here (torch {torch.__version__}, built with CUDA "
                    f"{torch.version.cuda or 'none'}); run on a machine with an NVIDIA GPU and a CUDA build of torch")
        allowed = ("fp32", "fp16") if config.device == "cuda" else ("fp32",)
        if config.precision not in allowed:
            return (f"the torch runtime on {config.device} supports precision {' or '.join(allowed)}, "
                    f"not {config.precision!r}")
        return None

    def prepare(self, module: nn.Module, input_shape: Sequence[int], name: str) -> TorchPreparedModel:
        """Copy ``module`` in eval mode to the device (no file is written) with a fixed random input."""
        return TorchPreparedModel(module, input_shape, self.config, channels_last=self.options["channels_last"])

    def describe(self) -> dict[str, Any]:
        versions = {"torch": torch.__version__}
        if self.config.device == "cuda":
            versions |= {"cuda": torch.version.cuda, "cudnn": str(torch.backends.cudnn.version())}
        return self._description(versions)


class TorchPreparedModel(PreparedModel):
    """An eval-mode copy of a module on its device, with a fixed input."""

    def __init__(self, module: nn.Module, input_shape: Sequence[int], config: RuntimeConfig,
                 channels_last: bool = False) -> None:
        self.threads = config.threads
        self.cuda = config.device == "cuda"
        self.dtype = torch.float16 if config.precision == "fp16" else torch.float32
        self.memory_format = torch.channels_last if channels_last and len(input_shape) == 4 else torch.contiguous_format
        device = torch.device("cuda" if self.cuda else "cpu")
        self.module = copy.deepcopy(module).eval().to(device=device, dtype=self.dtype, memory_format=self.memory_format)
        self.input = self._to_device(example_input(input_shape))

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        device = "cuda" if self.cuda else "cpu"
        tensor = tensor.to(device=device, dtype=self.dtype)
        return tensor.contiguous(memory_format=self.memory_format) if tensor.ndim == 4 else tensor

    def run(self) -> None:
        with torch.inference_mode():
            self.module(self.input)
        if self.cuda:
            torch.cuda.synchronize()

    def time_runs(self, n: int) -> list[float]:
        """CPU: ``perf_counter`` around each call. CUDA: events around each call, read after one final sync."""
        torch.set_num_threads(self.threads)
        if not self.cuda:
            with torch.inference_mode():
                return time_calls(self.module, n, self.input)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        with torch.inference_mode():
            torch.cuda.synchronize()
            for start, end in events:
                start.record()
                self.module(self.input)
                end.record()
            torch.cuda.synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in events]

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            output = self.module(self._to_device(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))))
        output = output[0] if isinstance(output, (tuple, list)) else output
        return output.float().cpu().contiguous().numpy()

    def close(self) -> None:
        self.module, self.input = nn.Identity(), torch.empty(0)
        if self.cuda:
            torch.cuda.empty_cache()
