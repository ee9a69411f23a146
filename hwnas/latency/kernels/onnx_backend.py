"""ONNX Runtime's CPU execution provider as a kernel backend: its fusions and NCHWc layout (:mod:`.onnx_split`),
single kernels written as its optimized nodes (:mod:`.generators`), neighbours kept on their side of the blocked
layout's channel rule."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Sequence

from hwnas.latency.kernels.backends import KernelBackend, prepare_and_remove, register_backend
from hwnas.latency.kernels.record import ALIGNMENT, Kernel, nchwc_block_size
from hwnas.runtimes.base import PreparedModel, Runtime

# activations a sampled conv gets: a blocked conv may have none, a FusedConv (NCHW) has one of the others
_SAMPLED_CONV_ACTS = ("none", "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid")


@register_backend
class OnnxRuntimeKernels(KernelBackend):
    name = "onnxruntime"
    file_suffixes = (".onnx",)
    free_types = ("reshape",)

    def block(self) -> int:
        return nchwc_block_size()

    def split_file(self, path: Path, block: int) -> list[Kernel]:
        from hwnas.latency.kernels.onnx_split import split_onnx

        return split_onnx(path, block)

    def split_network(self, module: Any, input_shape: Sequence[int], directory: Path, name: str,
                      block: int) -> list[Kernel]:
        from hwnas.runtimes.converters import cached_onnx

        return self.split_file(cached_onnx(module, input_shape, directory, name), block)

    def prepare_network(self, runtime: Runtime, module: Any, input_shape: Sequence[int], directory: Path,
                        name: str) -> tuple[PreparedModel, str]:
        from hwnas.runtimes.converters import cached_onnx

        path = cached_onnx(module, input_shape, directory, name)
        return runtime.prepare_file(path), path.name

    def prepare_kernel(self, runtime: Runtime, kernel: Kernel, directory: Path, block: int) -> PreparedModel:
        from hwnas.latency.kernels.generators import write_kernel_model

        return prepare_and_remove(runtime, write_kernel_model(kernel, directory, block))

    def neighbour(self, kernel: Kernel, rng: random.Random, block: int, h: int, c_in: int,
                  c_out: int) -> dict[str, Any] | None:
        if kernel.type in ("conv", "pwconv", "dwconv", "gconv"):
            return _conv_neighbour(kernel, rng, block, h, c_in, c_out)
        return _other_neighbour(kernel, rng, block, h, c_in)


def _conv_neighbour(k: Kernel, rng: random.Random, block: int, h: int, c_in: int, c_out: int) -> dict[str, Any]:
    """A conv's new fields: stride, kernel size and activation redrawn, channels kept on the kernel's side of ORT's
    blocked-layout rule (aligned when it ran blocked, unaligned when it ran NCHW)."""
    blocked_op = k.op.startswith("nchwc.")
    s = k.s if rng.random() < 0.7 else rng.choice((1, 2))
    size = k.k if (k.type == "pwconv" or rng.random() < 0.6) else rng.choice((3, 5, 7))
    act = k.act if rng.random() < 0.6 else rng.choice(_SAMPLED_CONV_ACTS if blocked_op else _SAMPLED_CONV_ACTS[1:])
    if k.op == "Conv":
        act = "none"
    if k.type == "dwconv":
        c = align(c_in, ALIGNMENT) if blocked_op else _unaligned(c_in)
        c_in = c_out = g = c
    elif k.type == "gconv":
        g = k.g
        c_in, c_out = align(c_in, g * block), align(c_out, g * block)
    else:
        g = 1
        if k.cin < block:
            c_in = k.cin
        elif blocked_op:
            c_in = max(align(c_in, ALIGNMENT), block)
        else:
            c_in = _unaligned(c_in)
    return {"hin": h, "cin": c_in, "cout": c_out, "k": size, "s": s, "g": g, "act": act, "hout": math.ceil(h / s),
            "sum": k.sum if rng.random() < 0.8 else int(blocked_op and rng.random() < 0.3)}


def _other_neighbour(k: Kernel, rng: random.Random, block: int, h: int, c_in: int) -> dict[str, Any] | None:
    """The new sizes of a kernel other than a conv (None for a type that is not sampled)."""
    blocked_op = k.op.startswith("nchwc.")
    if k.type == "pool":
        c = align(c_in, block) if blocked_op else _unaligned(c_in)
        pad = k.k // 2
        return {"hin": h, "cin": c, "cout": c, "hout": max(1, (h + 2 * pad - k.k) // k.s + 1)}
    if k.type == "gpool":
        c = align(c_in, block) if blocked_op else c_in
        return {"hin": h, "cin": c, "cout": c, "hout": 1}
    if k.type == "gemm":
        return gemm_neighbour(k, rng)
    if k.type == "concat":
        part = align(max(c_in // k.n, 1), block if k.op.startswith("blocked.") else 2)
        return {"hin": h, "cin": part * k.n, "cout": part * k.n, "hout": h}
    if k.type in ("split", "transpose"):
        c = align(c_in, 2)
        return {"hin": h, "cin": c, "cout": c, "hout": h}
    if k.type == "reorder_in":
        c = align(c_in, ALIGNMENT)
        return {"hin": h, "cin": c, "cout": c, "hout": h}
    if k.type in ("reorder_out", "act", "add", "mul"):
        return elementwise_neighbour(k, h, c_in)
    return None


def gemm_neighbour(k: Kernel, rng: random.Random) -> dict[str, Any]:
    """A fully connected layer's new sizes (inputs and outputs 8..4096)."""
    return {"hin": 1, "cin": clamp(round(k.cin * 2 ** rng.uniform(-2, 2)), 8, 4096),
            "cout": clamp(round(k.cout * 2 ** rng.uniform(-2, 2)), 8, 4096), "hout": 1}


def elementwise_neighbour(k: Kernel, h: int, c_in: int) -> dict[str, Any]:
    """An elementwise kernel's new sizes (a 1x1 tensor stays 1x1: an SE block's vector)."""
    h = h if k.hin > 1 else 1
    return {"hin": h, "cin": c_in, "cout": c_in, "hout": h if k.hout > 1 else 1}


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def align(value: int, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _unaligned(value: int) -> int:
    """A channel count that is not a multiple of 4 (such convs stay NCHW)."""
    value = max(6, value)
    return value if value % ALIGNMENT else value + 2
