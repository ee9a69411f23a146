"""Split an ``.onnx`` file into the kernels its LiteRT conversion would run, without converting it.

hwnas converts a network for LiteRT with litert-torch and NHWC I/O (:func:`hwnas.runtimes.converters.to_tflite`);
:mod:`.litert_split` reads the resulting ``.tflite``. A user may hold only the ONNX export of the same module
(``torch.onnx``, eval mode: BatchNorm after a conv is already folded into it), so this module replays, on the
shape-inferred ONNX graph, what the converter and XNNPACK do, and gives the same keys as :mod:`.litert_split`.
The rules were derived by comparing the two splits of the same modules (the zoo networks, ProxylessNAS
architectures and a probe module holding the rarer patterns):

- layout: 4-D tensors are NHWC; a Reshape/Flatten/Transpose of a 4-D tensor runs in NCHW, with a rank-4
  ``TRANSPOSE`` into NCHW before it and one back to NHWC after it when a layout-sensitive op reads the result (a
  channel shuffle: ``TRANSPOSE`` 4, ``RESHAPE``, ``TRANSPOSE`` 5, ``RESHAPE``, ``TRANSPOSE`` 4); a transpose that
  moves only unit dimensions is a reshape; a flatten of a 1x1 map read only by Gemms vanishes (FULLY_CONNECTED
  flattens its input); other reshapes are free ``RESHAPE`` kernels.
- fused activations: Relu -> ``RELU``, Clip(0, 6) -> ``RELU6``, Clip(-1, 1) -> ``RELU_N1_TO_1`` fuse into a
  single-reader Conv, Gemm, Add, Sub, Mul or Div; Tanh, LeakyRelu, Sigmoid, HardSwish stay separate ops.
- HardSigmoid after a single-reader conv: the conv's bias takes the +3 and its act is ``RELU6``, then a ``MUL``
  by 1/6; ``Mul(HardSigmoid(x), x)`` is one ``HARD_SWISH``; SiLU is ``LOGISTIC`` + ``MUL``.
- a Mul/Div by a constant whose one reader is a Conv folds into that conv's weights; other constant operands
  give ``act`` kernels ``{ADD,SUB,MUL,DIV}_CONST``; a broadcast (1x1) operand of a binary op is its second.
- a BatchNormalization with no conv before it: ``SUB`` (mean) and ``MUL`` (scale) constants, ``ADD`` of a non-zero
  bias; MaxPool/AveragePool with padding: ``PADV2``/``PAD`` + a VALID pool; a strided conv's explicit PAD is
  folded by XNNPACK (the conv reads the unpadded input, as :mod:`.litert_split` records it); Split and Slice:
  one ``SLICE`` per output; GlobalAveragePool/ReduceMean: ``MEAN`` (``SUM`` over a 1x1 map: the
  converter's mean of one value); Gemm/MatMul: ``FULLY_CONNECTED``.

Not exact (not seen in the compared networks, so taken as the nearest observed rule): a zero PAD the converter
shares between two strided convs of one input (XNNPACK then cannot fold it), a HardSigmoid with no conv before
it (``ADD_CONST`` + ``MUL_CONST``), a pool whose padding equals SAME's (always ``PADV2`` + VALID here), the
converter's min-cut layout choice in graphs other than the NCHW islands above. An op with no known lowering
raises one line (convert the network to ``.tflite`` and split that instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.kernels.litert_split import chw, transpose_fields
from hwnas.latency.kernels.onnx_graph import OnnxGraph
from hwnas.latency.kernels.onnx_split import read_onnx, static_graph
from hwnas.latency.kernels.record import Kernel

_UNARY = {"Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH", "LeakyRelu": "LEAKY_RELU",
          "Elu": "ELU", "Gelu": "GELU", "Exp": "EXP", "Neg": "NEG", "Sqrt": "SQRT", "Abs": "ABS"}
_BINARY = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV"}
_LAYOUT_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")  # run on the NCHW tensor
_ALIASES = ("Identity", "Dropout")


def split_onnx_as_litert(path: str | Path, block: int = 1) -> list[Kernel]:
    """The kernels LiteRT + XNNPACK would run for the hwnas LiteRT conversion of the ``.onnx`` file at ``path``."""
    del block  # LiteRT has no blocked layout
    return _Replay(static_graph(read_onnx(path), str(path))).run()


class _Replay:
    """Walks the ONNX nodes in order, emitting the kernels of the TFLite ops each one lowers to."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.g = graph
        self._drop_aliases()
        self.constants = {n.output[0]: n for n in graph.nodes if n.op_type == "Constant"}
        self.readers: dict[str, list[Any]] = {}
        for node in graph.nodes:
            if self._const_node(node):
                continue
            for name in set(node.input):
                self.readers.setdefault(name, []).append(node)
        self.nchw: set[str] = set()  # 4-D tensors held in NCHW (inside a reshape/transpose island)
        self.to_nchw: set[str] = set()  # NHWC tensors already transposed to NCHW
        self.conv_input: dict[str, str] = {}  # padded tensor -> unpadded one, for a Pad folded into its conv
        self.done: set[int] = set()  # nodes absorbed by an earlier one (fused activations, folded constants)
        self.kernels: list[Kernel] = []

    def run(self) -> list[Kernel]:
        for node in self.g.nodes:
            if id(node) in self.done or self._const_node(node):
                continue
            self._node(node)
        return self.kernels

    def _drop_aliases(self) -> None:
        """Identity and Dropout (eval) nodes run nothing: their readers read their input instead."""
        alias = {n.output[0]: n.input[0] for n in self.g.nodes if n.op_type in _ALIASES and not self._const_node(n)}
        for name in list(alias):
            while alias[name] in alias:
                alias[name] = alias[alias[name]]
        self.g.nodes = [n for n in self.g.nodes if not (n.op_type in _ALIASES and n.output[0] in alias)]
        for node in self.g.nodes:
            for i, name in enumerate(node.input):
                if name in alias:
                    node.input[i] = alias[name]
        self.g.outputs = [alias.get(name, name) for name in self.g.outputs]

    # graph queries ---------------------------------------------------------------------------------------------
    def _const_node(self, node: Any) -> bool:
        return all(not o or o in self.g.const for o in node.output)

    def _sole_reader(self, name: str) -> Any | None:
        readers = self.readers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.g.outputs else None

    def _dims(self, name: str) -> list[int]:
        """The tensor's shape as the ``.tflite`` holds it: 4-D tensors NHWC unless inside an NCHW island."""
        dims = list(self.g.shape(name))
        if len(dims) == 4 and name not in self.nchw:
            return [dims[0], dims[2], dims[3], dims[1]]
        return dims

    def _data(self, node: Any) -> list[str]:
        return [i for i in node.input if i and i not in self.g.const]

    def _value(self, name: str) -> Any | None:
        """A constant's value: an initializer or a ``Constant`` node's tensor (None when computed)."""
        if name in self.g.values:
            return self.g.values[name]
        node = self.constants.get(name)
        if node is None or "value" not in self.g.attrs[id(node)]:
            return None
        from onnx import numpy_helper

        return numpy_helper.to_array(self.g.attrs[id(node)]["value"])

    def _scalar(self, name: str) -> float | None:
        value = self._value(name)
        return float(np.asarray(value).reshape(-1)[0]) if value is not None and np.asarray(value).size == 1 else None

    def _emit(self, type_: str, op: str, src: list[int], dst: list[int], **fields: Any) -> None:
        (cin, hin, win), (cout, hout, wout) = chw(src), chw(dst)
        self.kernels.append(Kernel(**{"type": type_, "op": f"tfl.{op}", "cin": cin, "hin": hin, "win": win,
                                      "cout": cout, "hout": hout, "wout": wout, **fields}))

    def _fused_act(self, out: str) -> str:
        """The activation a single reader of ``out`` fuses into its producer (that reader is then done)."""
        reader = self._sole_reader(out)
        if reader is None:
            return "none"
        act = None
        if reader.op_type == "Relu":
            act = "RELU"
        elif reader.op_type == "Clip":
            bounds = (self._clip_bound(reader, 1, "min"), self._clip_bound(reader, 2, "max"))
            act = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}.get(bounds)
        if act is None:
            return "none"
        self.done.add(id(reader))
        return act

    def _clip_bound(self, node: Any, index: int, attr: str) -> float | None:
        if len(node.input) > index and node.input[index]:
            return self._scalar(node.input[index])
        return self.g.attrs[id(node)].get(attr)

    # nodes -----------------------------------------------------------------------------------------------------
    def _node(self, node: Any) -> None:
        op = node.op_type
        handler = getattr(self, f"_op_{op}", None)
        if handler is not None:
            handler(node)
        elif op in _BINARY:
            self._binary(node)
        elif op in _UNARY:
            self._unary(node, _UNARY[op])
        elif op in _LAYOUT_OPS:
            self._layout(node)
        else:
            raise HwnasError(f"{self.g.source}: node {node.name or node.output[0]!r} ({op}) has no known LiteRT "
                             "lowering in the ONNX splitter (convert the network to .tflite and split that)")

    def _op_Conv(self, node: Any) -> None:
        x, out = self.conv_input.get(node.input[0], node.input[0]), node.output[0]
        weight = self.g.shape(node.input[1])
        groups = int(self.g.attrs[id(node)].get("group", 1))
        cin, size, stride = self._dims(x)[-1], int(weight[2]), int(self.g.attrs[id(node)].get("strides", [1])[0])
        if groups > 1 and groups == cin:
            type_, op = "dwconv", "DEPTHWISE_CONV_2D"
        else:
            type_, op = "gconv" if groups > 1 else "pwconv" if size == 1 else "conv", "CONV_2D"
        reader = self._sole_reader(out)
        hard_sigmoid = reader is not None and reader.op_type == "HardSigmoid"
        if hard_sigmoid:  # the conv's bias takes the +3, RELU6 fuses, the 1/6 stays a MUL
            self.done.add(id(reader))
        act = "RELU6" if hard_sigmoid else self._fused_act(out)
        self._emit(type_, op, self._dims(x), self._dims(out), k=size, s=stride, g=groups, act=act)
        if hard_sigmoid:
            self._emit("act", "MUL", self._dims(out), self._dims(out), act="MUL_CONST")

    def _op_HardSigmoid(self, node: Any) -> None:
        """HardSigmoid not after a conv: ``Mul(HardSigmoid(x), x)`` is one HARD_SWISH, else +3 (RELU6) and * 1/6."""
        x, out = node.input[0], node.output[0]
        reader = self._sole_reader(out)
        dims = self._dims(x)
        if reader is not None and reader.op_type == "Mul" and sorted(reader.input) == sorted([x, out]):
            self.done.add(id(reader))
            self._emit("act", "HARD_SWISH", dims, dims, act="HARD_SWISH")
            return
        self._emit("act", "ADD", dims, dims, act="ADD_CONST")
        self._emit("act", "MUL", dims, dims, act="MUL_CONST")

    def _unary(self, node: Any, op: str) -> None:
        dims = self._dims(node.input[0])
        self._emit("act", op, dims, dims, act=op)

    def _op_Clip(self, node: Any) -> None:
        bounds = (self._clip_bound(node, 1, "min"), self._clip_bound(node, 2, "max"))
        op = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}.get(bounds)
        if op is None:
            raise HwnasError(f"{self.g.source}: Clip{bounds} has no single LiteRT op (only Clip(0, 6), Clip(-1, 1))")
        self._unary(node, op)

    def _binary(self, node: Any) -> None:
        name, out, data = _BINARY[node.op_type], node.output[0], self._data(node)
        type_ = "add" if name in ("ADD", "SUB") else "mul"
        if len(data) < 2:  # a constant operand
            reader = self._sole_reader(out)
            if type_ == "mul" and reader is not None and reader.op_type == "Conv" and reader.input[0] == out:
                return  # folded into the next conv's weights
            self._fused_act(out)
            dims = self._dims(data[0])
            self._emit("act", name, dims, dims, act=f"{name}_CONST")
            return
        first, second = self._dims(data[0]), self._dims(data[1])
        if chw(first)[1:] == (1, 1) and chw(second)[1:] != (1, 1):
            first, second = second, first  # the broadcast operand goes second
        bcast = int(chw(second)[1:] == (1, 1) and chw(first)[1:] != (1, 1))
        self._emit(type_, name, first, self._dims(out), act=self._fused_act(out), bcast=bcast)

    def _op_BatchNormalization(self, node: Any) -> None:
        dims = self._dims(node.input[0])
        mean, bias = self._value(node.input[3]), self._value(node.input[2])
        if mean is None or np.any(mean):
            self._emit("act", "SUB", dims, dims, act="SUB_CONST")
        self._emit("act", "MUL", dims, dims, act="MUL_CONST")
        if bias is None or np.any(bias):
            self._emit("act", "ADD", dims, dims, act="ADD_CONST")

    def _op_Gemm(self, node: Any) -> None:
        out = node.output[0]
        self._emit("gemm", "FULLY_CONNECTED", self._dims(node.input[0]), self._dims(out), act=self._fused_act(out))

    _op_MatMul = _op_Gemm

    def _op_GlobalAveragePool(self, node: Any) -> None:
        src = self._dims(node.input[0])
        spatial = chw(src)[1] * chw(src)[2]
        # the converter writes the mean of a 1x1 map (which is its sum) as SUM
        self._emit("gpool", "SUM" if spatial == 1 else "MEAN", src, self._dims(node.output[0]))

    _op_ReduceMean = _op_GlobalAveragePool

    def _op_MaxPool(self, node: Any) -> None:
        """A padded pool reads a PADV2 (max, -inf) or PAD (average) and runs VALID."""
        attrs, x = self.g.attrs[id(node)], node.input[0]
        size, stride = int(attrs["kernel_shape"][0]), int(attrs.get("strides", [1])[0])
        src, pads = self._dims(x), [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        if any(pads):
            padded = [src[0], src[1] + pads[0] + pads[2], src[2] + pads[1] + pads[3], src[3]]
            self._emit("pad", "PADV2" if node.op_type == "MaxPool" else "PAD", src, padded)
            src = padded
        op = "MAX_POOL_2D" if node.op_type == "MaxPool" else "AVERAGE_POOL_2D"
        self._emit("pool", op, src, self._dims(node.output[0]), k=size, s=stride)

    _op_AveragePool = _op_MaxPool

    def _op_Concat(self, node: Any) -> None:
        data = self._data(node)
        dims = [self._dims(name) for name in data]
        self._emit("concat", "CONCATENATION", dims[0], self._dims(node.output[0]), n=len(data),
                   cin=sum(chw(d)[0] for d in dims))

    def _op_Slice(self, node: Any) -> None:
        for out in node.output:
            if out:
                self._emit("split", "SLICE", self._dims(node.input[0]), self._dims(out))

    _op_Split = _op_Slice

    def _op_Pad(self, node: Any) -> None:
        """A zero spatial pad read only by a conv folds into it (XNNPACK); any other pad is a kernel."""
        x, out = node.input[0], node.output[0]
        pads = np.asarray(self._value(node.input[1])).reshape(-1)
        value = self._scalar(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        reader = self._sole_reader(out)
        spatial = len(pads) == 8 and not pads[[0, 1, 4, 5]].any()
        if reader is not None and reader.op_type == "Conv" and spatial and not value:
            self.conv_input[out] = x
            return
        self._emit("pad", "PADV2" if value else "PAD", self._dims(x), self._dims(out))

    # layout: NCHW islands ----------------------------------------------------------------------------------------
    def _layout(self, node: Any) -> None:
        """Reshape/Flatten/Squeeze/Unsqueeze/Transpose: run on NCHW tensors, with layout transposes around them."""
        x, out = node.input[0], node.output[0]
        src = self._dims(x)
        if len(src) == 4 and x not in self.nchw:
            if src[1] * src[2] == 1 and all(r.op_type in ("Gemm", "MatMul") for r in self.readers.get(out, [])):
                return  # FULLY_CONNECTED flattens a 1x1 map itself
            if src[1] * src[2] > 1 and src[3] > 1:  # else the transpose moves unit dimensions only: a reshape
                if x not in self.to_nchw:
                    self.to_nchw.add(x)
                    self._emit("transpose", "TRANSPOSE", src, src, **transpose_fields(src, [0, 3, 1, 2]))
                src = list(self.g.shape(x))
        dst = list(self.g.shape(out))
        if node.op_type == "Transpose":
            perm = [int(p) for p in self.g.attrs[id(node)].get("perm", range(len(src))[::-1])]
            self._emit("transpose", "TRANSPOSE", src, dst, **transpose_fields(src, perm))
        else:
            self._emit("reshape", "RESHAPE", src, dst)
        if len(dst) == 4:
            self.nchw.add(out)
            readers = self.readers.get(out, [])
            if out in self.g.outputs or any(r.op_type not in _LAYOUT_OPS for r in readers):
                self.nchw.discard(out)
                if dst[2] * dst[3] > 1 and dst[1] > 1:
                    self._emit("transpose", "TRANSPOSE", dst, dst, **transpose_fields(dst, [0, 2, 3, 1]))

