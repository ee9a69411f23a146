"""PyTorch eager mode on the CPU as a kernel backend: the aten operators one forward pass dispatches
(:mod:`.torch_split`), single kernels as small modules (:mod:`.torch_models`), neighbours that keep the op.

Eager fuses nothing and pads no channels, so a neighbour only keeps its shapes consistent (a depthwise conv stays
depthwise, an SE scaling keeps its C x 1 x 1 operand, a concat its n inputs).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from hwnas.latency.kernels.backends import KernelBackend, register_backend
from hwnas.latency.kernels.onnx_backend import align, elementwise_neighbour, gemm_neighbour
from hwnas.latency.kernels.record import Kernel
from hwnas.runtimes.base import PreparedModel, Runtime

_CONV_TYPES = ("conv", "pwconv", "dwconv", "gconv")
# an in-place activation run thousands of times on the same input: values it leaves unchanged (hardswish_, silu_ and
# leaky_relu_ would otherwise drive negative inputs through denormals to zero, which times differently)
_FIXED_POINT = 20.0


@register_backend
class TorchKernels(KernelBackend):
    name = "torch"
    file_suffixes = (".onnx",)
    free_types = ("reshape", "split")

    def split_file(self, path: Path, block: int) -> list[Kernel]:
        from hwnas.latency.kernels.torch_split import split_onnx_eager

        return split_onnx_eager(path)

    def split_network(self, module: Any, input_shape: Sequence[int], directory: Path, name: str,
                      block: int) -> list[Kernel]:
        from hwnas.latency.kernels.torch_split import split_module

        return split_module(module, input_shape)

    def prepare_network(self, runtime: Runtime, module: Any, input_shape: Sequence[int], directory: Path,
                        name: str) -> tuple[PreparedModel, str]:
        return runtime.prepare(module, input_shape, name), name

    def prepare_kernel(self, runtime: Runtime, kernel: Kernel, directory: Path, block: int) -> PreparedModel:
        import torch

        from hwnas.latency.kernels.torch_models import kernel_module

        module, shape = kernel_module(kernel)
        model = runtime.prepare(module, shape, kernel.key)
        if kernel.op.endswith("_") and torch.is_tensor(getattr(model, "input", None)):
            with torch.no_grad():
                model.input.abs_().add_(_FIXED_POINT)
        return model

    def neighbour(self, kernel: Kernel, rng: random.Random, block: int, h: int, c_in: int,
                  c_out: int) -> dict[str, Any] | None:
        if kernel.type in _CONV_TYPES:
            return _conv_neighbour(kernel, rng, h, c_in, c_out)
        return _other_neighbour(kernel, rng, h, c_in)


def _conv_neighbour(k: Kernel, rng: random.Random, h: int, c_in: int, c_out: int) -> dict[str, Any]:
    """A conv's new fields: stride and kernel size redrawn (a 1x1 stays 1x1, a kxk stays kxk), groups kept the
    conv's kind (depthwise: cin == cout == g; grouped: the same g), 'same' padding: hout = ceil(h / s)."""
    s = k.s if rng.random() < 0.7 else rng.choice((1, 2))
    size = k.k if (k.type == "pwconv" or rng.random() < 0.6) else rng.choice((3, 5, 7))
    g = 1
    if k.type == "dwconv":
        c_in = c_out = g = c_in
    elif k.type == "gconv":
        g = k.g
        c_in, c_out = align(c_in, g), align(c_out, g)
    elif k.cin <= 4:
        c_in = k.cin  # an RGB stem stays an RGB stem
    return {"hin": h, "cin": c_in, "cout": c_out, "k": size, "s": s, "g": g, "hout": -(-h // s)}


def _other_neighbour(k: Kernel, rng: random.Random, h: int, c_in: int) -> dict[str, Any] | None:
    """The new sizes of a kernel other than a conv (None for free aliases and types that are not sampled)."""
    if k.type == "pool":
        pad = k.k // 2
        h = max(h, k.k - 2 * pad)
        return {"hin": h, "cin": c_in, "cout": c_in, "hout": (h + 2 * pad - k.k) // k.s + 1}
    if k.type == "gpool":
        return {"hin": h, "cin": c_in, "cout": c_in, "hout": 1}
    if k.type == "gemm":
        return gemm_neighbour(k, rng)
    if k.type == "concat":
        part = max(c_in // k.n, 1)
        return {"hin": h, "cin": part * k.n, "cout": part * k.n, "hout": h}
    if k.type == "copy":
        c = align(c_in, 2)
        return {"hin": h, "cin": c, "cout": c, "hout": h}
    if k.type in ("act", "add", "mul", "norm"):
        return elementwise_neighbour(k, h, c_in)
    return None
