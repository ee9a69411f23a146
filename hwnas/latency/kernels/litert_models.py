"""Single-operator ``.tflite`` files, written directly with the flatbuffer schema's object API.

A kernel record becomes one LiteRT operator with random fp32 weights and NHWC tensors (milliseconds per file;
litert-torch is never called per kernel). A conv reads its unpadded input with ``SAME`` padding when its output
has the ``SAME`` size (how the splitter records a ``PAD`` that XNNPACK folds into the next convolution), else
``VALID``. Every tensor that is not a weight is a graph input, so the runtime feeds it random data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.kernels.record import Kernel

FUSED_ACTS = ("none", "RELU", "RELU_N1_TO_1", "RELU6", "TANH")  # ActivationFunctionType a conv/add/mul may fuse
UNARY_OPS = ("HARD_SWISH", "LOGISTIC", "RELU", "RELU6", "RELU_N1_TO_1", "TANH", "ELU", "GELU", "LEAKY_RELU", "EXP",
             "NEG", "SQRT", "ABS")
CONST_OPS = {"ADD_CONST": "ADD", "MUL_CONST": "MUL", "SUB_CONST": "SUB", "DIV_CONST": "DIV"}


def schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


@dataclass
class _Builder:
    """Tensors, buffers and the one operator of a single-operator model."""

    tensors: list[Any] = field(default_factory=list)
    buffers: list[Any] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.buffers.append(schema().BufferT())  # buffer 0: the empty sentinel

    def tensor(self, shape: list[int], data: np.ndarray | None = None, name: str = "") -> int:
        s = schema()
        buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            buffer = len(self.buffers) - 1
        tensor = s.TensorT()
        tensor.shape = np.asarray(shape, dtype=np.int32)
        tensor.type = s.TensorType.INT32 if data is not None and data.dtype == np.int32 else s.TensorType.FLOAT32
        tensor.buffer, tensor.name = buffer, name or f"t{len(self.tensors)}"
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def input(self, shape: list[int]) -> int:
        index = self.tensor(shape)
        self.inputs.append(index)
        return index

    def weight(self, shape: list[int], rng: np.random.Generator) -> int:
        return self.tensor(shape, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    def const_int(self, values: list[int] | list[list[int]]) -> int:
        data = np.asarray(values, dtype=np.int32)
        return self.tensor(list(data.shape), data)

    def serialize(self, op_name: str, ins: list[int], outs: list[int], options_type: int = 0,
                  options: Any = None) -> bytes:
        import flatbuffers

        s = schema()
        code = s.OperatorCodeT()
        code.builtinCode = getattr(s.BuiltinOperator, op_name)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)  # 127: PLACEHOLDER_FOR_GREATER_OP_CODES
        code.version = 1
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, ins, outs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        graph = s.SubGraphT()
        graph.tensors, graph.inputs, graph.outputs, graph.operators = self.tensors, self.inputs, outs, [op]
        graph.name = "main"
        model = s.ModelT()
        model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [graph], self.buffers
        model.description = "hwnas single kernel"
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _nhwc(c: int, h: int, w: int) -> list[int]:
    return [1, h, w, c]


def _act_code(act: str) -> int:
    if act not in FUSED_ACTS:
        raise HwnasError(f"kernel: act {act!r} cannot be fused into a LiteRT op (expected one of {FUSED_ACTS})")
    return 0 if act == "none" else getattr(schema().ActivationFunctionType, act)


def _padding(k: Kernel) -> int:
    """``SAME`` when the output has SAME's size (a folded PAD or a converter's SAME), else ``VALID``."""
    same = -(-k.hin // max(k.s, 1)) == k.hout and -(-k.win // max(k.s, 1)) == k.wout
    return schema().Padding.SAME if same else schema().Padding.VALID


def _conv(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    x = b.input(_nhwc(k.cin, k.hin, k.win))
    out = b.tensor(_nhwc(k.cout, k.hout, k.wout))
    bias = b.weight([k.cout], rng)
    if k.type == "dwconv":
        options = s.DepthwiseConv2DOptionsT()
        options.depthMultiplier = k.cout // max(k.cin, 1)
        weight = b.weight([1, k.k, k.k, k.cout], rng)
        name, options_type = "DEPTHWISE_CONV_2D", s.BuiltinOptions.DepthwiseConv2DOptions
    else:
        options = s.Conv2DOptionsT()
        weight = b.weight([k.cout, k.k, k.k, k.cin // max(k.g, 1)], rng)
        name, options_type = "CONV_2D", s.BuiltinOptions.Conv2DOptions
    options.padding, options.strideH, options.strideW = _padding(k), k.s, k.s
    options.fusedActivationFunction = _act_code(k.act)
    return b.serialize(name, [x, weight, bias], [out], options_type, options)


def _pool(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    x, out = b.input(_nhwc(k.cin, k.hin, k.win)), b.tensor(_nhwc(k.cout, k.hout, k.wout))
    options = s.Pool2DOptionsT()
    options.padding, options.strideH, options.strideW = _padding(k), k.s, k.s
    options.filterHeight = options.filterWidth = k.k
    options.fusedActivationFunction = _act_code(k.act)
    name = "MAX_POOL_2D" if "MAX" in k.op else "AVERAGE_POOL_2D"
    return b.serialize(name, [x], [out], s.BuiltinOptions.Pool2DOptions, options)


def _gpool(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    x, axes = b.input(_nhwc(k.cin, k.hin, k.win)), b.const_int([1, 2])
    out = b.tensor([1, 1, 1, k.cout])
    options = s.ReducerOptionsT()
    options.keepDims = True
    op = k.op.removeprefix("tfl.")  # MEAN; SUM where the converter reduces a 1x1 map (its mean is its sum)
    return b.serialize(op if op in ("MEAN", "SUM") else "MEAN", [x, axes], [out], s.BuiltinOptions.ReducerOptions,
                       options)


def _gemm(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    x, out = b.input([1, k.cin]), b.tensor([1, k.cout])
    weight, bias = b.weight([k.cout, k.cin], rng), b.weight([k.cout], rng)
    options = s.FullyConnectedOptionsT()
    options.fusedActivationFunction = _act_code(k.act)
    return b.serialize("FULLY_CONNECTED", [x, weight, bias], [out], s.BuiltinOptions.FullyConnectedOptions, options)


def _binary(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    name = k.op.removeprefix("tfl.")
    x = b.input(_nhwc(k.cin, k.hin, k.win))
    y = b.input([1, 1, 1, k.cin] if k.bcast else _nhwc(k.cin, k.hin, k.win))
    out = b.tensor(_nhwc(k.cout, k.hout, k.wout))
    options_class = {"ADD": "AddOptionsT", "MUL": "MulOptionsT", "SUB": "SubOptionsT", "DIV": "DivOptionsT"}
    if name not in options_class:
        raise HwnasError(f"kernel: op {k.op!r} is not a LiteRT binary op (expected tfl.ADD/MUL/SUB/DIV)")
    options = getattr(s, options_class[name])()
    options.fusedActivationFunction = _act_code(k.act)
    return b.serialize(name, [x, y], [out], getattr(s.BuiltinOptions, options_class[name][:-1]), options)


def _act(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    x, out = b.input(_nhwc(k.cin, k.hin, k.win)), b.tensor(_nhwc(k.cout, k.hout, k.wout))
    if k.act in CONST_OPS:  # an elementwise op with a constant scalar (hardsigmoid's x / 6)
        name = CONST_OPS[k.act]
        options = getattr(s, name.capitalize() + "OptionsT")()
        return b.serialize(name, [x, b.weight([], rng)], [out], getattr(s.BuiltinOptions, name.capitalize() +
                                                                        "Options"), options)
    if k.act not in UNARY_OPS:
        raise HwnasError(f"kernel: act {k.act!r} is not a LiteRT activation op (expected one of {UNARY_OPS})")
    return b.serialize(k.act, [x], [out])


def _concat(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    n = max(k.n, 1)
    parts = [k.cin // n + (1 if i < k.cin % n else 0) for i in range(n)]
    ins = [b.input(_nhwc(c, k.hin, k.win)) for c in parts]
    out = b.tensor(_nhwc(k.cout, k.hout, k.wout))
    options = s.ConcatenationOptionsT()
    options.axis = 3
    return b.serialize("CONCATENATION", ins, [out], s.BuiltinOptions.ConcatenationOptions, options)


def _split(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    """``SPLIT`` into ``n`` equal channel parts, or one ``STRIDED_SLICE``/``SLICE`` of ``cout`` channels."""
    s = schema()
    name = k.op.removeprefix("tfl.")
    if name == "SPLIT":
        axis, x = b.const_int([3]), b.input(_nhwc(k.cin, k.hin, k.win))
        outs = [b.tensor(_nhwc(k.cin // k.n, k.hout, k.wout)) for _ in range(k.n)]
        options = s.SplitOptionsT()
        options.numSplits = k.n
        return b.serialize("SPLIT", [axis, x], outs, s.BuiltinOptions.SplitOptions, options)
    x, out = b.input(_nhwc(k.cin, k.hin, k.win)), b.tensor(_nhwc(k.cout, k.hout, k.wout))
    begin = b.const_int([0, 0, 0, k.cin - k.cout])
    if name == "SLICE":
        size = b.const_int([1, k.hout, k.wout, k.cout])
        return b.serialize("SLICE", [x, begin, size], [out], s.BuiltinOptions.SliceOptions, s.SliceOptionsT())
    end, strides = b.const_int([1, k.hout, k.wout, k.cin]), b.const_int([1, 1, 1, 1])
    return b.serialize("STRIDED_SLICE", [x, begin, end, strides], [out], s.BuiltinOptions.StridedSliceOptions,
                       s.StridedSliceOptionsT())


def _transpose(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    """Rank 5: a channel shuffle's ``[1, 2, C/2, H, W]`` with axes 1 and 2 swapped; else NHWC -> NCHW."""
    s = schema()
    if k.n == 5:
        x, out = b.input([1, 2, k.cin // 2, k.hin, k.win]), b.tensor([1, k.cin // 2, 2, k.hin, k.win])
        perm = b.const_int([0, 2, 1, 3, 4])
    else:
        x, out = b.input(_nhwc(k.cin, k.hin, k.win)), b.tensor([1, k.cin, k.hin, k.win])
        perm = b.const_int([0, 3, 1, 2])
    return b.serialize("TRANSPOSE", [x, perm], [out], s.BuiltinOptions.TransposeOptions, s.TransposeOptionsT())


def _pad(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    s = schema()
    x, out = b.input(_nhwc(k.cin, k.hin, k.win)), b.tensor(_nhwc(k.cout, k.hout, k.wout))
    dh, dw = k.hout - k.hin, k.wout - k.win
    pads = b.const_int([[0, 0], [dh // 2, dh - dh // 2], [dw // 2, dw - dw // 2], [0, k.cout - k.cin]])
    if k.op == "tfl.PADV2":  # a max pool's -inf padding: not folded by XNNPACK
        value = b.tensor([], np.asarray(-3.4e38, dtype=np.float32))
        return b.serialize("PADV2", [x, pads, value], [out], s.BuiltinOptions.PadV2Options, s.PadV2OptionsT())
    return b.serialize("PAD", [x, pads], [out], s.BuiltinOptions.PadOptions, s.PadOptionsT())


def _reshape(b: _Builder, k: Kernel, rng: np.random.Generator) -> bytes:
    x, out = b.input(_nhwc(k.cin, k.hin, k.win)), b.tensor([1, k.cout * k.hout * k.wout])
    return b.serialize("RESHAPE", [x, b.const_int([1, k.cout * k.hout * k.wout])], [out])


_WRITERS = {"conv": _conv, "pwconv": _conv, "dwconv": _conv, "gconv": _conv, "pool": _pool, "gpool": _gpool,
            "gemm": _gemm, "add": _binary, "mul": _binary, "act": _act, "concat": _concat, "split": _split,
            "transpose": _transpose, "pad": _pad, "reshape": _reshape}


def kernel_tflite(kernel: Kernel, seed: int = 0) -> bytes:
    """The bytes of a ``.tflite`` model that runs ``kernel`` as one LiteRT operator (one-line error otherwise)."""
    writer = _WRITERS.get(kernel.type)
    if writer is None:
        raise HwnasError(f"kernel {kernel.key}: no single-operator LiteRT model for type {kernel.type!r} "
                         f"(expected one of {', '.join(_WRITERS)})")
    return writer(_Builder(), kernel, np.random.default_rng(seed))


def write_kernel_tflite(kernel: Kernel, directory: Path, seed: int = 0) -> Path:
    """:func:`kernel_tflite` written to ``directory/<hash>.tflite``."""
    import hashlib

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"kernel-{hashlib.sha1(kernel.key.encode()).hexdigest()[:16]}.tflite"
    path.write_bytes(kernel_tflite(kernel, seed))
    return path
