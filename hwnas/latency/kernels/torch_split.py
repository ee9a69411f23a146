"""The kernels PyTorch eager mode runs: the aten operators one forward pass dispatches, and an ONNX graph node by node.

:func:`split_module` runs the module once in eval mode under ``torch.inference_mode`` (what ``TorchRuntime`` runs)
inside a ``TorchDispatchMode`` that records each aten operator with its tensors. Under inference mode the mode sees
the operators the module calls (``aten.conv2d``, ``aten.batch_norm``, ``aten.linear``, ``aten.relu_``, ...), the same
list ``torch.profiler`` gives as its top-level events. Eager fuses nothing: a BatchNorm is its own ``norm`` kernel and
an activation its own ``act`` kernel. An operator whose outputs alias its input's storage (view, transpose, flatten,
chunk, eval-mode dropout, a reshape that needs no copy) is a free alias; a reshape/contiguous/clone that copies
(channel shuffle) is a ``copy`` kernel.

:func:`split_onnx_eager` reads an ``.onnx`` file as eager would run its graph: one kernel per node, no fusion
(a graph exported in eval mode already has each BatchNorm folded into its conv).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hwnas.errors import HwnasError
from hwnas.latency.kernels.record import Kernel

CONV_OPS = frozenset({"conv2d", "convolution", "_convolution"})
NORM_OPS = frozenset({"batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training", "layer_norm",
                      "group_norm", "instance_norm"})
# aten activation (in-place variants end in "_") -> the act name the features know (ONNX spelling)
ACT_NAMES = {"relu": "Relu", "relu6": "Clip", "hardtanh": "Clip", "clamp": "Clip", "sigmoid": "Sigmoid",
             "hardsigmoid": "HardSigmoid", "hardswish": "HardSwish", "silu": "Silu", "gelu": "Gelu", "tanh": "Tanh",
             "leaky_relu": "LeakyRelu", "elu": "Elu", "mish": "Mish"}
ELEMENTWISE = {"add": "add", "sub": "add", "mul": "mul", "div": "mul"}
GEMM_OPS = frozenset({"linear", "addmm", "mm", "matmul", "bmm"})
POOL_OPS = frozenset({"max_pool2d", "avg_pool2d", "max_pool2d_with_indices"})
SPLIT_OPS = frozenset({"split", "chunk", "split_with_sizes", "unbind", "tensor_split", "narrow", "slice", "select"})
COPY_OPS = frozenset({"reshape", "contiguous", "clone", "flatten", "_unsafe_view", "permute", "transpose"})
PAD_OPS = frozenset({"pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d"})


def chw(shape: Sequence[int]) -> tuple[int, int, int]:
    """A tensor's logical (channels, height, width): NCHW for rank 4 (and 5-D views: the middle dims are channels),
    a 2-D tensor as C x 1 x 1."""
    shape = tuple(int(d) for d in shape)
    if len(shape) >= 4:
        return math.prod(shape[1:-2]), shape[-2], shape[-1]
    if len(shape) == 3:
        return shape[1], shape[2], 1
    if len(shape) == 2:
        return shape[1], 1, 1
    return (shape[0] if shape else 1), 1, 1


class KernelRecorder(TorchDispatchMode):
    """Records one :class:`Kernel` per aten operator dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: list[Kernel] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        out = func(*args, **(kwargs or {}))
        self.kernels.append(aten_kernel(func.overloadpacket.__name__, list(args), out))
        return out


def split_module(module: torch.nn.Module, input_shape: Sequence[int], channels_last: bool = False) -> list[Kernel]:
    """The kernels eager mode runs for one forward pass of ``module`` (eval mode, inference mode, as TorchRuntime)."""
    from hwnas.runtimes.converters import example_input

    modes = {sub: sub.training for sub in module.modules()}
    x = example_input(input_shape)
    if channels_last and x.ndim == 4:
        import copy

        module = copy.deepcopy(module).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    module.eval()
    try:
        with torch.inference_mode(), KernelRecorder() as recorder:
            module(x)
    finally:
        for sub, training in modes.items():
            sub.training = training
    return recorder.kernels


def _tensors(value: Any) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _int(value: Any, default: int) -> int:
    """The first element of an int or int list argument (square kernels and strides)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else default
    return default if value is None else int(value)


def _arg(args: list[Any], index: int, default: Any = None) -> Any:
    return args[index] if len(args) > index else default


def _aliases(out: Any, inputs: list[torch.Tensor]) -> bool:
    """True when every output shares the storage of an input (a view: no work, no memory)."""
    outs = _tensors(out)
    storages = {t.untyped_storage().data_ptr() for t in inputs}
    return bool(outs) and all(o.untyped_storage().data_ptr() in storages for o in outs)


def _kernel(type_: str, op: str, inp: Sequence[int], out: Sequence[int], **fields: Any) -> Kernel:
    (cin, hin, win), (cout, hout, wout) = chw(inp), chw(out)
    return Kernel(type_, f"aten.{op}", cin, hin, win, cout, hout, wout, **fields)


def aten_kernel(op: str, args: list[Any], out: Any) -> Kernel:
    """The kernel of one dispatched aten operator ``op`` (the overload packet's name) given its args and output."""
    inputs = _tensors(args)
    first = inputs[0] if inputs else None
    result = _tensors(out)
    out_shape = tuple(result[0].shape) if result else ()
    in_shape = tuple(first.shape) if first is not None else ()
    base = op.rstrip("_")
    if base in CONV_OPS:
        return _conv_kernel(op, args, out_shape)
    if base in NORM_OPS:
        return _kernel("norm", op, in_shape, out_shape)
    if base in ACT_NAMES:
        return _kernel("act", op, in_shape, out_shape, act=ACT_NAMES[base])
    if base in ELEMENTWISE and len(inputs) >= 2 and first is not None:
        return _elementwise_kernel(ELEMENTWISE[base], op, inputs[0], inputs[1], out_shape)
    if base in GEMM_OPS:
        return _gemm_kernel(op, args, out_shape)
    if base in POOL_OPS:
        size = _int(_arg(args, 1), 1)
        return _kernel("pool", op, in_shape, out_shape, k=size, s=_int(_arg(args, 2), size) or size)
    if base == "mean" and sorted(d % len(in_shape) for d in _arg(args, 1, []) or []) == [2, 3]:
        return _kernel("gpool", op, in_shape, out_shape)
    if base in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        return _kernel("gpool" if out_shape[-2:] == (1, 1) else "pool", op, in_shape, out_shape)
    if base in ("cat", "concat", "stack"):
        channels = sum(chw(t.shape)[0] for t in _tensors(args[0]))
        _, hin, win = chw(in_shape)
        cout, hout, wout = chw(out_shape)
        return Kernel("concat", f"aten.{op}", channels, hin, win, cout, hout, wout, n=len(_tensors(args[0])))
    if base in PAD_OPS:
        return _kernel("pad", op, in_shape, out_shape)
    if _aliases(out, inputs):
        return _kernel("split" if base in SPLIT_OPS else "reshape", op, in_shape, out_shape, n=max(len(result), 1))
    return _kernel("copy" if base in COPY_OPS else "other", op, in_shape, out_shape)


def _conv_kernel(op: str, args: list[Any], out_shape: Sequence[int]) -> Kernel:
    x, weight = args[0], args[1]
    groups_index = 8 if op.rstrip("_") in ("convolution", "_convolution") else 6
    cin, hin, win = chw(x.shape)
    cout, hout, wout = chw(out_shape)
    groups = int(_arg(args, groups_index, 1) or 1)
    size = int(weight.shape[-1])
    return Kernel(conv_type(cin, cout, size, groups), f"aten.{op}", cin, hin, win, cout, hout, wout, k=size,
                  s=_int(_arg(args, 3), 1), g=groups)


def conv_type(cin: int, cout: int, size: int, groups: int) -> str:
    """pwconv (1x1), conv (kxk), dwconv (one group per channel), gconv (other groups)."""
    if groups == 1:
        return "pwconv" if size == 1 else "conv"
    return "dwconv" if groups == cin == cout else "gconv"


def _elementwise_kernel(type_: str, op: str, a: torch.Tensor, b: torch.Tensor, out_shape: Sequence[int]) -> Kernel:
    """An add/mul; bcast=1 when one operand is a C x 1 x 1 vector scaling a C x H x W map (SE)."""
    ca, ha, wa = chw(a.shape)
    cb, hb, wb = chw(b.shape)
    if ha * wa < hb * wb:
        (ca, ha, wa), (hb, wb) = (cb, hb, wb), (ha, wa)
    bcast = int(hb * wb == 1 < ha * wa)
    cout, hout, wout = chw(out_shape)
    return Kernel(type_, f"aten.{op}", ca, ha, wa, cout, hout, wout, bcast=bcast)


def _gemm_kernel(op: str, args: list[Any], out_shape: Sequence[int]) -> Kernel:
    """A fully connected layer: ``cin`` inputs, ``cout`` outputs, ``hin`` = ``hout`` rows (1 for one image)."""
    mats = _tensors(args)
    x = mats[1] if op == "addmm" else mats[0]
    cin = int(x.shape[-1])
    cout = int(out_shape[-1]) if out_shape else 1
    rows = max(1, x.numel() // max(cin, 1))
    return Kernel("gemm", f"aten.{op}", cin, rows, 1, cout, rows, 1)


# -- an ONNX graph as eager would run it --------------------------------------------------------------------
# ONNX op -> (kernel type, aten op eager runs for it, act name)
_ONNX_SIMPLE = {
    "BatchNormalization": ("norm", "batch_norm", "none"), "Relu": ("act", "relu", "Relu"),
    "Clip": ("act", "hardtanh", "Clip"), "HardSigmoid": ("act", "hardsigmoid", "HardSigmoid"),
    "HardSwish": ("act", "hardswish", "HardSwish"), "Sigmoid": ("act", "sigmoid", "Sigmoid"),
    "Tanh": ("act", "tanh", "Tanh"), "LeakyRelu": ("act", "leaky_relu", "LeakyRelu"), "Elu": ("act", "elu", "Elu"),
    "Gelu": ("act", "gelu", "Gelu"), "GlobalAveragePool": ("gpool", "adaptive_avg_pool2d", "none"),
    "GlobalMaxPool": ("gpool", "adaptive_max_pool2d", "none"), "Pad": ("pad", "pad", "none"),
    "Identity": ("reshape", "alias", "none"), "Dropout": ("reshape", "dropout", "none"),
    "Squeeze": ("reshape", "squeeze", "none"), "Unsqueeze": ("reshape", "unsqueeze", "none"),
    "Transpose": ("reshape", "transpose", "none"), "Split": ("split", "split", "none"),
    "Slice": ("split", "slice", "none"),
}


def split_onnx_eager(path: str | Path) -> list[Kernel]:
    """The kernels eager mode would run for the ``.onnx`` graph at ``path``: one per node that is not folded from
    constants, in graph order (a Reshape/Flatten of a Transpose's output copies: channel shuffle)."""
    from hwnas.latency.kernels.onnx_split import read_onnx, static_graph

    path = Path(path)
    if path.suffix != ".onnx":
        raise HwnasError(f"{path}: the torch kernel splitter reads .onnx files, not {path.suffix or 'no suffix'!r}")
    graph = static_graph(read_onnx(path), str(path))
    producers = {out: node.op_type for node in graph.nodes for out in node.output}
    kernels = []
    for node in graph.nodes:
        if node.op_type == "Constant" or all(not o or o in graph.const for o in node.output):
            continue  # folded from constants and static shapes: eager holds them as buffers
        kernels.append(_onnx_kernel(graph, node, producers))
    return kernels


def _onnx_kernel(graph: Any, node: Any, producers: dict[str, str]) -> Kernel:
    """One ONNX node as the aten kernel eager runs for it."""
    op = node.op_type
    data = [name for name in node.input if name and name not in graph.const]
    inputs = [graph.shape(name) for name in (data or node.input[:1])]
    out_shape = graph.shape(node.output[0])
    attrs = graph.attrs[id(node)]
    if op == "Conv":
        return _onnx_conv(graph, node, attrs, inputs[0], out_shape)
    if op in ("Add", "Sub", "Mul", "Div"):
        if len(inputs) < 2:  # a constant operand: eager holds it as a buffer
            inputs.append(graph.shape(next(n for n in node.input if n in graph.const)))
        a, b = (torch.empty(shape, device="meta") for shape in inputs[:2])
        return _elementwise_kernel(ELEMENTWISE[op.lower()], op.lower(), a, b, out_shape)
    if op in ("Gemm", "MatMul"):
        cin, rows = int(inputs[0][-1]), max(1, math.prod(inputs[0]) // max(int(inputs[0][-1]), 1))
        return Kernel("gemm", "aten.linear" if op == "Gemm" else "aten.matmul", cin, rows, 1, int(out_shape[-1]),
                      rows, 1)
    if op in ("MaxPool", "AveragePool"):
        size = int(attrs["kernel_shape"][0])
        return _kernel("pool", "max_pool2d" if op == "MaxPool" else "avg_pool2d", inputs[0], out_shape, k=size,
                       s=int(attrs.get("strides", [1])[0]))
    if op == "ReduceMean":
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in graph.values:
            axes = graph.values[node.input[1]].tolist()  # opset 18: axes as an input
        spatial = sorted(int(a) % len(inputs[0]) for a in axes or ()) == [2, 3]
        return _kernel("gpool" if spatial else "other", "mean", inputs[0], out_shape)
    if op == "Concat":
        cout, hout, wout = chw(out_shape)
        _, hin, win = chw(inputs[0])
        return Kernel("concat", "aten.cat", sum(chw(s)[0] for s in inputs), hin, win, cout, hout, wout,
                      n=len(inputs))
    if op in ("Reshape", "Flatten"):
        copies = producers.get(node.input[0]) == "Transpose"  # a transposed view: reshape copies it
        return _kernel("copy" if copies else "reshape", "reshape" if op == "Reshape" else "flatten", inputs[0],
                       out_shape)
    if op in _ONNX_SIMPLE:
        type_, aten, act = _ONNX_SIMPLE[op]
        return _kernel(type_, aten, inputs[0], out_shape, act=act, n=len(node.output) if type_ == "split" else 1)
    cin, hin, win = chw(inputs[0])
    cout, hout, wout = chw(out_shape)
    return Kernel("other", f"onnx.{op}", cin, hin, win, cout, hout, wout)


def _onnx_conv(graph: Any, node: Any, attrs: dict[str, Any], in_shape: Sequence[int],
               out_shape: Sequence[int]) -> Kernel:
    weight = graph.shape(node.input[1])
    groups, size = int(attrs.get("group", 1)), int(weight[-1])
    type_ = conv_type(chw(in_shape)[0], int(weight[0]), size, groups)
    return _kernel(type_, "conv2d", in_shape, out_shape, k=size, s=int(attrs.get("strides", [1])[0]), g=groups)
