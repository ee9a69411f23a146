"""Single-kernel torch modules: one small ``nn.Module`` per :class:`Kernel` that dispatches exactly that aten operator.

TorchRuntime feeds one input, so a kernel's other tensor operands (a conv's weight, the second operand of an add,
the other inputs of a cat) are buffers. Recorded with :class:`.torch_split.KernelRecorder`, the module's only
kernel that is not a free alias has the kernel's key (a channel-shuffle copy also dispatches its free view and
transpose, as in the network). Building a module takes well under a millisecond of Python plus its buffers.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.kernels.record import Kernel

# extra scalar arguments of activations whose defaults differ from what networks use (ReLU6 as hardtanh(0, 6))
_ACT_ARGS: dict[str, tuple[Any, ...]] = {"hardtanh": (0.0, 6.0), "clamp": (0.0, 6.0), "leaky_relu": (0.01,)}
_CONV_TYPES = ("conv", "pwconv", "dwconv", "gconv")


class OpModule(nn.Module):
    """``fn(x, *operands)``: one aten operator on the input, its other tensor operands held as buffers."""

    def __init__(self, fn: Callable[..., Any], *operands: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.operand_names = [f"operand{i}" for i in range(len(operands))]
        for name, tensor in zip(self.operand_names, operands):
            self.register_buffer(name, tensor)

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x, *(getattr(self, name) for name in self.operand_names))


def kernel_module(kernel: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    """The module running ``kernel`` alone and its input shape (one-line error for an op hwnas cannot build)."""
    k = kernel
    aten = k.op.removeprefix("aten.")
    image = (1, k.cin, k.hin, k.win)
    if not k.op.startswith("aten."):
        raise _unsupported(k)
    if k.type in _CONV_TYPES:
        return _conv_module(k, aten), image
    if k.type == "gemm":
        return _gemm_module(k, aten), (k.hin, k.cin)
    if k.type in ("add", "mul"):
        shape = (1, k.cin, 1, 1) if k.bcast else _input_shape(k)
        # ones / zeros: an in-place add_/mul_ run thousands of times leaves the input unchanged
        operand = torch.ones(shape) if k.type == "mul" else torch.zeros(shape)
        return OpModule(_aten(aten, "Tensor"), operand), _input_shape(k)
    if k.type == "act":
        args = _ACT_ARGS.get(aten.rstrip("_"), ())
        fn = _aten(aten)
        return OpModule(lambda x: fn(x, *args)), _input_shape(k)
    builder = _BUILDERS.get((k.type, aten))
    if builder is None:
        raise _unsupported(k)
    return builder(k)


def _input_shape(k: Kernel) -> tuple[int, ...]:
    """NCHW (a C x 1 x 1 kernel from a 2-D tensor runs on (1, C, 1, 1): the same elements, the same key)."""
    return (1, k.cin, k.hin, k.win)


def _unsupported(k: Kernel) -> HwnasError:
    return HwnasError(f"kernel {k.key}: no single-kernel torch module for type {k.type!r} op {k.op!r}")


def _aten(name: str, overload: str = "default") -> Callable[..., Any]:
    packet = getattr(torch.ops.aten, name, None)
    if packet is None or not hasattr(packet, overload):
        raise HwnasError(f"aten op {name!r}.{overload}: not in this torch {torch.__version__}")
    return getattr(packet, overload)


def padding_for(size_in: int, size_out: int, k: int, s: int) -> int:
    """The symmetric padding that turns ``size_in`` into ``size_out`` with kernel ``k`` and stride ``s``."""
    for pad in sorted(range(k), key=lambda p: abs(p - k // 2)):
        if (size_in + 2 * pad - k) // s + 1 == size_out:
            return pad
    raise HwnasError(f"no padding gives output {size_out} from input {size_in} with kernel {k}, stride {s}")


def _conv_module(k: Kernel, aten: str) -> OpModule:
    pad = padding_for(k.hin, k.hout, k.k, k.s)
    if k.cin % k.g or k.cout % k.g:
        raise HwnasError(f"kernel {k.key}: channels {k.cin}->{k.cout} not divisible by groups {k.g}")
    weight = torch.randn(k.cout, k.cin // k.g, k.k, k.k) * (1.0 / (k.cin // k.g * k.k * k.k)) ** 0.5
    stride, padding, groups = [k.s, k.s], [pad, pad], k.g
    if aten == "conv2d":
        return OpModule(lambda x, w: torch.nn.functional.conv2d(x, w, None, stride, padding, 1, groups), weight)
    if aten == "convolution":
        fn = _aten("convolution")
        return OpModule(lambda x, w: fn(x, w, None, stride, padding, [1, 1], False, [0, 0], groups), weight)
    raise _unsupported(k)


def _gemm_module(k: Kernel, aten: str) -> OpModule:
    weight, bias = torch.randn(k.cout, k.cin) * k.cin ** -0.5, torch.zeros(k.cout)
    if aten == "linear":
        return OpModule(torch.nn.functional.linear, weight, bias)
    if aten == "addmm":
        fn = _aten("addmm")
        return OpModule(lambda x, b, w: fn(b, x, w), bias, weight.t().contiguous())
    if aten in ("mm", "matmul"):
        fn = _aten(aten)
        return OpModule(fn, weight.t().contiguous())
    raise _unsupported(k)


def _norm(k: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    c = k.cin
    fn = _aten("batch_norm")
    return (OpModule(lambda x, w, b, m, v: fn(x, w, b, m, v, False, 0.1, 1e-5, True), torch.ones(c), torch.zeros(c),
                     torch.zeros(c), torch.ones(c)), _input_shape(k))


def _pool(k: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    aten = k.op.removeprefix("aten.")
    pad = padding_for(k.hin, k.hout, k.k, k.s)
    if pad > k.k // 2:
        raise HwnasError(f"kernel {k.key}: a pool's padding must be at most half its kernel")
    fn, size, stride = _aten(aten), [k.k, k.k], [k.s, k.s]
    return OpModule(lambda x: fn(x, size, stride, [pad, pad])), _input_shape(k)


def _mean(k: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    fn = _aten("mean", "dim")
    return OpModule(lambda x: fn(x, [2, 3], True)), _input_shape(k)


def _adaptive(k: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    fn = _aten(k.op.removeprefix("aten."))
    return OpModule(lambda x: fn(x, [1, 1])), _input_shape(k)


def _concat(k: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    """``cat`` of the input and ``n - 1`` buffers along channels (the input takes the remainder)."""
    if k.n < 2 or k.cin < k.n:
        raise HwnasError(f"kernel {k.key}: a concat needs n >= 2 inputs of at least one channel each")
    part = k.cin // k.n
    others = [torch.randn(1, part, k.hin, k.win) for _ in range(k.n - 1)]
    fn = _aten("cat")
    return OpModule(lambda x, *rest: fn([x, *rest], 1), *others), (1, k.cin - part * (k.n - 1), k.hin, k.win)


def _copy(k: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    """A channel shuffle's copy: view (1, 2, C/2, H, W), transpose (free aliases), then the copying op."""
    if k.cin % 2:
        raise HwnasError(f"kernel {k.key}: a channel-shuffle copy needs an even channel count")
    c, h, w = k.cin, k.hin, k.win
    aten = k.op.removeprefix("aten.")
    if aten == "reshape":
        def fn(x: torch.Tensor) -> torch.Tensor:
            return x.view(1, 2, c // 2, h, w).transpose(1, 2).reshape(1, c, h, w)
    elif aten in ("contiguous", "clone"):
        def fn(x: torch.Tensor) -> torch.Tensor:
            return getattr(x.view(1, 2, c // 2, h, w).transpose(1, 2), aten)()
    else:
        raise _unsupported(k)
    return OpModule(fn), _input_shape(k)


def _pad(k: Kernel) -> tuple[OpModule, tuple[int, ...]]:
    total = k.hout - k.hin
    if total < 0:
        raise HwnasError(f"kernel {k.key}: a pad cannot shrink {k.hin} to {k.hout}")
    pads = [total // 2, total - total // 2] * 2
    fn = _aten(k.op.removeprefix("aten."))
    return OpModule(lambda x: fn(x, pads)), _input_shape(k)


_BUILDERS: dict[tuple[str, str], Callable[[Kernel], tuple[OpModule, tuple[int, ...]]]] = {
    ("norm", "batch_norm"): _norm, ("pool", "max_pool2d"): _pool, ("pool", "avg_pool2d"): _pool,
    ("gpool", "mean"): _mean, ("gpool", "adaptive_avg_pool2d"): _adaptive, ("gpool", "adaptive_max_pool2d"): _adaptive,
    ("concat", "cat"): _concat, ("copy", "reshape"): _copy, ("copy", "contiguous"): _copy, ("copy", "clone"): _copy,
    ("pad", "constant_pad_nd"): _pad, ("pad", "pad"): _pad,
}

