"""LiteRT with XNNPACK as a kernel backend: the ``.tflite`` file's operators as XNNPACK runs them
(:mod:`.litert_split`), single-operator ``.tflite`` files written directly (:mod:`.litert_models`), neighbours that
keep the op, the fused activation and what decides the padding."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Sequence

from hwnas.errors import HwnasError
from hwnas.latency.kernels.backends import KernelBackend, prepare_and_remove, register_backend
from hwnas.latency.kernels.onnx_backend import align, elementwise_neighbour, gemm_neighbour
from hwnas.latency.kernels.record import Kernel
from hwnas.runtimes.base import PreparedModel, Runtime

_CONV_ACTS = ("none", "RELU", "RELU6")


@register_backend
class LiteRTKernels(KernelBackend):
    name = "litert"
    file_suffixes = (".tflite", ".onnx")  # an .onnx file is split as hwnas's LiteRT conversion of it would run
    free_types = ("reshape",)

    def split_file(self, path: Path, block: int) -> list[Kernel]:
        path = Path(path)
        if path.suffix == ".onnx":
            from hwnas.latency.kernels.litert_onnx import split_onnx_as_litert

            return split_onnx_as_litert(path, block)
        if path.suffix != ".tflite":
            raise HwnasError(f"{path}: the litert kernel splitter reads .tflite or .onnx files, not {path.suffix!r}")
        from hwnas.latency.kernels.litert_split import split_tflite

        return split_tflite(path)

    def split_network(self, module: Any, input_shape: Sequence[int], directory: Path, name: str,
                      block: int) -> list[Kernel]:
        from hwnas.runtimes.converters import cached_tflite

        return self.split_file(cached_tflite(module, input_shape, directory, name, channel_last_io=True), block)

    def prepare_network(self, runtime: Runtime, module: Any, input_shape: Sequence[int], directory: Path,
                        name: str) -> tuple[PreparedModel, str]:
        from hwnas.runtimes.converters import cached_tflite

        path = cached_tflite(module, input_shape, directory, name, channel_last_io=True)
        return runtime.prepare_file(path), path.name

    def prepare_kernel(self, runtime: Runtime, kernel: Kernel, directory: Path, block: int) -> PreparedModel:
        from hwnas.latency.kernels.litert_models import write_kernel_tflite

        return prepare_and_remove(runtime, write_kernel_tflite(kernel, directory))

    def neighbour(self, kernel: Kernel, rng: random.Random, block: int, h: int, c_in: int,
                  c_out: int) -> dict[str, Any] | None:
        if kernel.type in ("conv", "pwconv", "dwconv", "gconv"):
            return _conv_neighbour(kernel, rng, h, c_in, c_out)
        return _other_neighbour(kernel, h, c_in, rng)


def _conv_neighbour(k: Kernel, rng: random.Random, h: int, c_in: int, c_out: int) -> dict[str, Any]:
    """A conv's new fields: stride, kernel size (not of a 1x1) and fused activation redrawn; SAME-size output."""
    s = k.s if rng.random() < 0.7 else rng.choice((1, 2))
    size = k.k if (k.type == "pwconv" or rng.random() < 0.6) else rng.choice((3, 5, 7))
    act = k.act if rng.random() < 0.6 else rng.choice(_CONV_ACTS)
    if k.type == "dwconv":
        c_in = c_out = g = c_in
    elif k.type == "gconv":
        g = k.g
        c_in, c_out = align(c_in, g), align(c_out, g)
    else:
        g = 1
        c_in = k.cin if k.cin <= 4 else c_in  # a stem conv keeps its RGB input
    return {"hin": h, "cin": c_in, "cout": c_out, "k": size, "s": s, "g": g, "act": act, "hout": math.ceil(h / s),
            "sum": 0}


def _other_neighbour(k: Kernel, h: int, c_in: int, rng: random.Random) -> dict[str, Any] | None:
    """The new sizes of a kernel other than a conv (None for a type that is not sampled)."""
    if k.type == "pool":  # VALID after the PADV2 a max pool reads (LiteRT's convention), as the record had it
        h = max(h, k.k)
        return {"hin": h, "cin": c_in, "cout": c_in, "hout": (h - k.k) // k.s + 1}
    if k.type == "gpool":  # a SUM reduces a 1x1 map (the converter's mean of one value), and stays one
        return {"hin": 1 if k.op == "tfl.SUM" else h, "cin": c_in, "cout": c_in, "hout": 1}
    if k.type == "gemm":
        return gemm_neighbour(k, rng)
    if k.type == "concat":
        part = align(max(c_in // k.n, 1), 2)
        return {"hin": h, "cin": part * k.n, "cout": part * k.n, "hout": h}
    if k.type == "split":
        c = align(c_in, 2)
        return {"hin": h, "cin": c, "cout": c if k.op.endswith("SPLIT") else c // 2, "hout": h}
    if k.type == "transpose":
        c = align(c_in, 2)
        return {"hin": h, "cin": c, "cout": c, "hout": h}
    if k.type == "pad":
        return {"hin": h, "cin": c_in, "cout": c_in, "hout": h + (k.hout - k.hin)}
    if k.type in ("act", "add", "mul"):
        return elementwise_neighbour(k, h, c_in)
    return None
