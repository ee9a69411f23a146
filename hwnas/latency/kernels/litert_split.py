"""Split a ``.tflite`` file into the kernels LiteRT runs with XNNPACK, in execution order.

Each operator of the main subgraph is one kernel (tensors are NHWC; records hold C, H, W), except:
a zero ``PAD`` over H, W read only by a ``CONV_2D``/``DEPTHWISE_CONV_2D`` is folded by XNNPACK into that
convolution (XNNPACK's subgraph fusion "fuse Constant Pad into [Depthwise] Convolution 2D"), so the conv is
recorded reading the unpadded input (its output then has ``SAME``'s size, which the single-kernel model uses);
``RESHAPE``/``SQUEEZE``/``EXPAND_DIMS`` are free aliases (type ``reshape``).

Mapping: CONV_2D -> pwconv (1x1) / conv / gconv (grouped), DEPTHWISE_CONV_2D -> dwconv, FULLY_CONNECTED ->
gemm, ADD/SUB -> add, MUL/DIV -> mul (``bcast`` when the second operand is 1x1 over H, W and the first is not;
a constant scalar operand -> act ``MUL_CONST``...), MEAN (SUM over a 1x1 map) -> gpool, MAX/AVERAGE_POOL_2D ->
pool, unary activations -> act, CONCATENATION -> concat, SPLIT/SLICE/STRIDED_SLICE -> split, TRANSPOSE ->
transpose, unfolded PAD/PADV2 -> pad, anything else -> other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.kernels.litert_models import UNARY_OPS, schema
from hwnas.latency.kernels.record import Kernel

FREE_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
_ACT_NAMES = {0: "none", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_TYPE_OF = {"ADD": "add", "SUB": "add", "MUL": "mul", "DIV": "mul", "MEAN": "gpool", "SUM": "gpool",
            "MAX_POOL_2D": "pool", "AVERAGE_POOL_2D": "pool", "FULLY_CONNECTED": "gemm", "CONCATENATION": "concat",
            "SPLIT": "split", "SPLIT_V": "split", "SLICE": "split", "STRIDED_SLICE": "split", "TRANSPOSE": "transpose",
            "PAD": "pad", "PADV2": "pad", **{op: "act" for op in UNARY_OPS}, **{op: "reshape" for op in FREE_OPS}}


def read_tflite(path: Path) -> Any:
    """The ``ModelT`` of ``path`` (one line when it is missing or not a TFLite flatbuffer)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise HwnasError(f"{path}: cannot read the model file ({error.strerror})") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise HwnasError(f"{path}: not a .tflite model (no TFL3 flatbuffer identifier)")
    return schema().ModelT.InitFromPackedBuf(data, 0)


def op_names(model: Any) -> list[str]:
    """The builtin operator name of each operator of the main subgraph, in execution order."""
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names.get(codes[op.opcodeIndex], "CUSTOM") for op in model.subgraphs[0].operators]


def split_tflite(path: Path) -> list[Kernel]:
    """The kernels LiteRT + XNNPACK runs for the ``.tflite`` file at ``path``, in execution order."""
    return _Splitter(read_tflite(path), str(path)).run()


def chw(shape: Any) -> tuple[int, int, int]:
    """Channels, height, width of an NHWC tensor (rank 2: C x 1 x 1; rank 3: [1, L, C] as C x L x 1)."""
    dims = [int(d) for d in shape][1:] or [1]
    if len(dims) >= 3:
        return int(np.prod(dims[2:])), dims[0], dims[1]
    if len(dims) == 2:
        return dims[1], dims[0], 1
    return dims[0], 1, 1


class _Splitter:
    def __init__(self, model: Any, source: str) -> None:
        self.model, self.source = model, source
        self.graph = model.subgraphs[0]
        self.names = op_names(model)
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(self.graph.operators):
            for t in set(op.inputs):
                if t >= 0:
                    self.consumers.setdefault(int(t), []).append(i)
        self.folded_pad: dict[int, int] = {}  # padded tensor -> unpadded input, for PADs folded into a conv

    def const(self, tensor: int) -> bool:
        data = self.model.buffers[self.graph.tensors[tensor].buffer].data
        return data is not None and len(data) > 0

    def shape(self, tensor: int) -> list[int]:
        return [int(d) for d in self.graph.tensors[tensor].shape]

    def run(self) -> list[Kernel]:
        kernels = []
        for i, (name, op) in enumerate(zip(self.names, self.graph.operators)):
            if name in ("PAD", "PADV2") and self._folds(i, op):
                self.folded_pad[int(op.outputs[0])] = int(op.inputs[0])
                continue
            kernels.append(self._kernel(name, op))
        return kernels

    def _folds(self, index: int, op: Any) -> bool:
        """A zero, spatial-only PAD whose one reader is a convolution: XNNPACK folds it into that conv."""
        readers = self.consumers.get(int(op.outputs[0]), [])
        if len(readers) != 1 or self.names[readers[0]] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            return False
        if len(op.inputs) > 2 and not self._zero(int(op.inputs[2])):
            return False
        pads = self._const_array(int(op.inputs[1])).reshape(-1, 2)
        return len(pads) == 4 and not pads[0].any() and not pads[3].any()

    def _zero(self, tensor: int) -> bool:
        return self.const(tensor) and not np.frombuffer(self.model.buffers[self.graph.tensors[tensor].buffer]
                                                        .data.tobytes(), dtype=np.float32).any()

    def _const_array(self, tensor: int) -> np.ndarray:
        if not self.const(tensor):
            raise HwnasError(f"{self.source}: tensor {tensor} must be constant (static padding/axes)")
        data = self.model.buffers[self.graph.tensors[tensor].buffer].data
        return np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=np.int32)

    def _kernel(self, name: str, op: Any) -> Kernel:
        ins = [int(t) for t in op.inputs if t >= 0]
        data = [t for t in ins if not self.const(t)] or ins[:1]
        src, dst = self.folded_pad.get(data[0], data[0]), int(op.outputs[0])
        (cin, hin, win), (cout, hout, wout) = chw(self.shape(src)), chw(self.shape(dst))
        fields: dict[str, Any] = {"type": _TYPE_OF.get(name, "other"), "op": f"tfl.{name}", "cin": cin, "hin": hin,
                                  "win": win, "cout": cout, "hout": hout, "wout": wout}
        options = op.builtinOptions
        act = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
        fields["act"] = _ACT_NAMES.get(act, str(act))
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            fields.update(self._conv(name, ins, cin, options))
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            fields.update(k=options.filterHeight, s=options.strideH)
        elif name in ("ADD", "SUB", "MUL", "DIV"):
            fields.update(self._binary(name, ins, data))
        elif fields["type"] == "act":
            fields["act"] = name
        elif name == "CONCATENATION":
            fields.update(n=len(data), cin=sum(chw(self.shape(t))[0] for t in data))
        elif name in ("SPLIT", "SPLIT_V"):
            fields.update(n=len(op.outputs), cout=cin)
        elif name == "TRANSPOSE":
            fields.update(self._transpose(src, self._const_array(ins[1])))
        return Kernel(**fields)

    def _conv(self, name: str, ins: list[int], cin: int, options: Any) -> dict[str, Any]:
        weight = self.shape(ins[1])
        k, s = weight[1], options.strideH
        if name == "DEPTHWISE_CONV_2D":
            return {"type": "dwconv", "k": k, "s": s, "g": cin}
        groups = max(cin // max(weight[3], 1), 1)
        type_ = "gconv" if groups > 1 else "pwconv" if k == 1 else "conv"
        return {"type": type_, "k": k, "s": s, "g": groups}

    def _binary(self, name: str, ins: list[int], data: list[int]) -> dict[str, Any]:
        if len(data) < 2:  # a constant operand: x * c, x + c
            return {"type": "act", "act": f"{name}_CONST"}
        first, second = chw(self.shape(data[0])), chw(self.shape(data[1]))
        return {"bcast": int(second[1:] == (1, 1) and first[1:] != (1, 1))}

    def _transpose(self, src: int, perm: np.ndarray) -> dict[str, Any]:
        return transpose_fields(self.shape(src), [int(p) for p in perm])


def transpose_fields(dims: list[int], perm: list[int]) -> dict[str, Any]:
    """Logical C, H, W of a layout transpose (NHWC <-> NCHW, or a channel shuffle's ``[1, g, C/g, H, W]``)."""
    if len(dims) == 5:
        c, h, w = dims[1] * dims[2], dims[3], dims[4]
    elif len(dims) != 4 or list(perm) != [0, 2, 3, 1]:
        c, h, w = chw(dims)
    else:  # NCHW -> NHWC: the input is [1, C, H, W]
        c, h, w = dims[1], dims[2], dims[3]
    return {"cin": c, "hin": h, "win": w, "cout": c, "hout": h, "wout": w, "n": len(dims)}

