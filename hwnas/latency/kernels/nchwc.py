"""ORT's NCHWc layout transformer, replayed over the fused nodes: which kernels run blocked, and the reorders.

On x86 with AVX2/AVX-512 (block ``B`` = 8/16 floats): a group-1 conv runs blocked when ``cin < B`` (reads NCHW
directly) or ``cin % 4 == 0``; a depthwise conv when ``c % 4 == 0`` (channels are zero-padded up to ``B``);
Max/AveragePool when ``c % B == 0``; GlobalAverage/MaxPool when its input is already blocked and ``c % B == 0``;
Add/Mul of two blocked tensors of one shape, and Concat of blocked inputs whose channels are multiples of ``B``.
An Add whose input is a single-use blocked conv without activation is fused into that conv (its ``Sum`` input),
and a Relu/Sigmoid/Tanh after such a conv (or conv + Add) is fused too; other Relu/Sigmoid/Tanh/QuickGelu run on
the blocked tensor. Every blocked tensor that something reads in NCHW gets one ``ReorderOutput``; every NCHW
tensor that a blocked op reads gets one ``ReorderInput``. ReduceMean, broadcast Mul (SE scaling), Gemm, Reshape,
Transpose, Split run NCHW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hwnas.latency.kernels.fusion import FusedGraph, FusedNode
from hwnas.latency.kernels.onnx_graph import OnnxGraph
from hwnas.latency.kernels.record import ALIGNMENT, Kernel

BLOCKED_FUSED_ACTS = ("Relu", "Sigmoid", "Tanh")  # fused into a blocked conv by the NCHWc transformer


def conv_type(k: int, g: int, cin: int, cout: int) -> str:
    """``pwconv`` (1x1) or ``conv`` for group 1, ``dwconv`` for depthwise, else ``gconv``."""
    if g == 1:
        return "pwconv" if k == 1 else "conv"
    return "dwconv" if g == cin == cout else "gconv"


def conv_runs_blocked(cin: int, cout: int, g: int, input_blocked: bool, block: int) -> tuple[bool, bool]:
    """(runs on the blocked layout, reads its input in NCHW) for a conv, per ORT's NCHWc transformer."""
    if block <= 1:
        return False, True
    if g > 1:
        if g == cin == cout:
            return cout % ALIGNMENT == 0, False
        return (cin // g) % block == 0 and (cout // g) % block == 0, False
    if cin < block:
        return True, True
    return cin % ALIGNMENT == 0, False


@dataclass
class _BlockedTensor:
    """A tensor available in the blocked layout: the kernel that made it and the output's original uses."""

    kernel: dict[str, Any]
    channels: int
    uses: int


class NchwcLayout:
    """Replays ORT's NCHWc transformer over the fused nodes and emits the kernels."""

    def __init__(self, graph: OnnxGraph, fused: FusedGraph, block: int) -> None:
        self.graph, self.nodes, self.block = graph, fused.nodes, block
        self.uses = dict(fused.consumers)
        self.kernels: list[dict[str, Any]] = []
        self.blocked: dict[str, _BlockedTensor] = {}
        self.nchw: set[str] = set(graph.inputs)
        self.reordered_in: set[str] = set()

    def run(self) -> list[Kernel]:
        """The kernels in execution order: each node runs blocked when its ``_blocked_<op>`` case accepts it,
        else in NCHW."""
        for node in self.nodes:
            handler = getattr(self, f"_blocked_{node.op}", None)
            if handler is None or not handler(node):
                self._nchw_node(node)
        for name in self.graph.outputs:
            self._need_nchw(name)
        return [Kernel(**{k: v for k, v in kernel.items() if not k.startswith("_")}) for kernel in self.kernels]

    # -- helpers --------------------------------------------------------------------------------------------
    def _chw(self, name: str) -> tuple[int, int, int]:
        shape = self.graph.shape(name)
        if len(shape) == 4:
            return shape[1], shape[2], shape[3]
        if len(shape) <= 1:
            return (shape[0] if shape else 1), 1, 1
        return int(math.prod(shape[1:])), 1, 1

    def _emit(self, type_: str, op: str, src: str, dst: str, **fields: Any) -> dict[str, Any]:
        cin, hin, win = self._chw(src)
        cout, hout, wout = self._chw(dst)
        kernel = {"type": type_, "op": op, "cin": cin, "hin": hin, "win": win, "cout": cout, "hout": hout,
                  "wout": wout, **fields}
        self.kernels.append(kernel)
        return kernel

    def _need_nchw(self, name: str) -> None:
        """Read ``name`` in NCHW: one ReorderOutput per blocked tensor that something reads in NCHW."""
        if name in self.nchw or name not in self.blocked:
            return
        self._emit("reorder_out", "ReorderOutput", name, name)
        self.nchw.add(name)

    def _need_blocked(self, name: str) -> None:
        """Read ``name`` blocked: consume its blocked form, or insert one ReorderInput per NCHW tensor."""
        if name in self.blocked:
            return
        if name not in self.reordered_in:
            self._emit("reorder_in", "ReorderInput", name, name)
            self.reordered_in.add(name)

    def _make_blocked(self, name: str, kernel: dict[str, Any]) -> None:
        self.blocked[name] = _BlockedTensor(kernel, self._chw(name)[0], self.uses.get(name, 0))

    def _nchw_node(self, node: FusedNode) -> None:
        """The node's kernel in NCHW (a blocked input is read through its ReorderOutput)."""
        for name in node.inputs:
            self._need_nchw(name)
        op = node.op
        out = node.outputs[0]
        src = node.inputs[0] if node.inputs else out
        if op == "Conv":
            kernel = self._conv_fields(node)
            self._emit(kernel.pop("type"), "FusedConv" if node.attrs["act"] != "none" else "Conv", src, out,
                       **kernel)
        elif op in ("MaxPool", "AveragePool"):
            self._emit("pool", op, src, out, **self._pool_fields(node))
        elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"):
            self._emit("gpool", op, src, out)
        elif op in ("Gemm", "MatMul"):
            self._emit("gemm", op, src, out)
        elif op in ("Add", "Mul", "Sub", "Div"):
            bcast = int(len(node.inputs) == 2 and self._chw(node.inputs[1])[1:] != self._chw(node.inputs[0])[1:])
            type_ = "add" if op in ("Add", "Sub") else "mul"
            if len(node.inputs) < 2:  # a constant operand (e.g. x * 0.5): elementwise
                self._emit("act", op, src, out)
            else:
                self._emit(type_, op, src, out, bcast=bcast)
        elif op == "Concat":
            self._emit("concat", op, src, out, n=len(node.inputs))
            self.kernels[-1]["cin"] = sum(self._chw(i)[0] for i in node.inputs)
        elif op == "Split":
            self._emit("split", op, src, src, n=len(node.outputs))
        elif op == "Transpose":
            self._emit("transpose", op, src, out, n=len(self.graph.shape(src)))
        elif op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            self._emit("reshape", op, src, out)
        elif op in ("Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "QuickGelu", "Softmax", "Exp",
                    "Neg", "Sqrt", "Erf", "BatchNormalization"):
            self._emit("act", op, src, out, act=op)
        else:
            self._emit("other", op, src, out)
        self.nchw.update(node.outputs)

    def _conv_fields(self, node: FusedNode) -> dict[str, Any]:
        cout, cin_per_group, kh, _ = node.attrs["weight"]
        g = int(node.attrs.get("group", 1))
        cin = cin_per_group * g
        strides = node.attrs.get("strides", [1, 1])
        return {"type": conv_type(kh, g, cin, cout), "k": int(kh), "s": int(strides[0]), "g": g,
                "act": node.attrs["act"]}

    def _pool_fields(self, node: FusedNode) -> dict[str, Any]:
        kernel_shape = node.attrs.get("kernel_shape", [1, 1])
        strides = node.attrs.get("strides", [1, 1])
        return {"k": int(kernel_shape[0]), "s": int(strides[0])}

    # -- the NCHWc transformer's cases --------------------------------------------------------------------
    def _blocked_Conv(self, node: FusedNode) -> bool:
        cout, cin_per_group, _, _ = node.attrs["weight"]
        g = int(node.attrs.get("group", 1))
        x = node.inputs[0]
        blocked, reads_nchw = conv_runs_blocked(cin_per_group * g, cout, g, x in self.blocked, self.block)
        if not blocked:
            return False
        if reads_nchw:
            self._need_nchw(x)
        else:
            self._need_blocked(x)
        fields = self._conv_fields(node)
        kernel = self._emit(fields.pop("type"), "nchwc.Conv", x, node.outputs[0], **fields)
        self._make_blocked(node.outputs[0], kernel)
        return True

    def _blocked_MaxPool(self, node: FusedNode) -> bool:
        x = node.inputs[0]
        if self.block <= 1 or self._chw(x)[0] % self.block:
            return False
        self._need_blocked(x)
        kernel = self._emit("pool", f"nchwc.{node.op}", x, node.outputs[0], **self._pool_fields(node))
        self._make_blocked(node.outputs[0], kernel)
        return True

    _blocked_AveragePool = _blocked_MaxPool

    def _blocked_GlobalAveragePool(self, node: FusedNode) -> bool:
        x = node.inputs[0]
        if x not in self.blocked or self._chw(x)[0] % self.block:
            return False
        kernel = self._emit("gpool", f"nchwc.{node.op}", x, node.outputs[0])
        self._make_blocked(node.outputs[0], kernel)
        return True

    _blocked_GlobalMaxPool = _blocked_GlobalAveragePool

    def _blocked_Add(self, node: FusedNode) -> bool:
        if len(node.inputs) != 2 or not all(i in self.blocked for i in node.inputs):
            return False
        a, b = (self.blocked[i] for i in node.inputs)
        if a.channels != b.channels or self.graph.shape(node.inputs[0]) != self.graph.shape(node.inputs[1]):
            return False
        out = node.outputs[0]
        if node.op == "Add":
            for candidate in (a, b):
                conv = candidate.kernel
                if conv["op"] == "nchwc.Conv" and not conv.get("sum") and candidate.uses == 1 \
                        and conv.get("act", "none") == "none":
                    conv["sum"] = 1
                    self.blocked[out] = _BlockedTensor(conv, candidate.channels, self.uses.get(out, 0))
                    return True
        kernel = self._emit("add" if node.op == "Add" else "mul", f"blocked.{node.op}", node.inputs[0], out)
        self._make_blocked(out, kernel)
        return True

    _blocked_Mul = _blocked_Add

    def _blocked_Concat(self, node: FusedNode) -> bool:
        if int(node.attrs.get("axis", 1)) != 1 or not all(
                i in self.blocked and self.blocked[i].channels % self.block == 0 for i in node.inputs):
            return False
        kernel = self._emit("concat", "blocked.Concat", node.inputs[0], node.outputs[0], n=len(node.inputs))
        kernel["cin"] = sum(self._chw(i)[0] for i in node.inputs)
        self._make_blocked(node.outputs[0], kernel)
        return True

    def _activation(self, node: FusedNode) -> bool:
        x = node.inputs[0]
        if x not in self.blocked:
            return False
        source = self.blocked[x]
        conv = source.kernel
        out = node.outputs[0]
        if node.op in BLOCKED_FUSED_ACTS and conv["op"] == "nchwc.Conv" and source.uses == 1 \
                and conv.get("act", "none") == "none":
            conv["act"] = node.op
            self.blocked[out] = _BlockedTensor(conv, source.channels, self.uses.get(out, 0))
            return True
        kernel = self._emit("act", f"blocked.{node.op}", x, out, act=node.op)
        self._make_blocked(out, kernel)
        return True

    _blocked_Relu = _blocked_Sigmoid = _blocked_Tanh = _blocked_QuickGelu = _activation  # these run on a blocked tensor
