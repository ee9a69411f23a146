"""ORT's level-1/2 graph rewrites, replayed on an :class:`OnnxGraph` before the NCHWc layout.

In ORT's order: constant folding (shape arithmetic on static shapes costs nothing; ``Identity``/``Dropout``
vanish), Conv + BatchNormalization folded into the Conv, ``x * Sigmoid(x)`` (SiLU/swish) -> ``QuickGelu``,
Conv + Relu/Clip/Sigmoid/Tanh/LeakyRelu/HardSigmoid/HardSwish -> one conv with an activation when the conv's
output has no other reader, a ``HardSwish`` with no conv to fuse into -> ``HardSigmoid`` + ``Mul``, and the
Slices of one tensor -> one ``Split``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hwnas.errors import HwnasError
from hwnas.latency.kernels.onnx_graph import OnnxGraph

CONV_ACTS = ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish")  # level-2 Conv+act fusion
_FREE_OPS = ("Identity", "Dropout")


@dataclass
class FusedNode:
    """A node after level-1/2 fusions: op, data inputs, one output (Split: several), attributes.

    A Conv's attributes carry its ``weight`` shape and fused ``act`` (``none`` when none is fused).
    """

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]


@dataclass
class FusedGraph:
    """The fused nodes in execution order and the number of readers of each tensor (a graph output counts one)."""

    nodes: list[FusedNode]
    consumers: dict[str, int]


def fuse(graph: OnnxGraph) -> FusedGraph:
    """Level-1/2 rewrites: constant folding, Conv+BN, SiLU -> QuickGelu, Conv+activation, Slices -> Split."""
    return _Fuser(graph).run()


def _count_consumers(nodes: list[Any], graph_outputs: list[str]) -> dict[str, int]:
    consumers: dict[str, int] = {}
    for node in nodes:
        for name in set(node.input):
            consumers[name] = consumers.get(name, 0) + 1
    for name in graph_outputs:
        consumers[name] = consumers.get(name, 0) + 1
    return consumers


class _Fuser:
    """One pass over the live nodes; each becomes a fused node, or folds into one made earlier, or vanishes."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.live = [n for n in graph.nodes if not all(o in graph.const for o in n.output)]
        self.consumers = _count_consumers(self.live, graph.outputs)
        self.alias: dict[str, str] = {}  # output of a vanished node -> the tensor it passes on
        self.nodes: list[FusedNode] = []
        self.producer: dict[str, FusedNode] = {}
        self.sigmoid_input: dict[str, str] = {}  # Sigmoid output -> its input (for SiLU)
        self.split_of: dict[str, FusedNode] = {}  # sliced tensor -> the Split its Slices became

    def run(self) -> FusedGraph:
        for node in self.live:
            fused = self._rewrite(node)
            if fused is not None:
                self._add(fused)
        return FusedGraph(self.nodes, self.consumers)

    def _add(self, fused: FusedNode) -> None:
        self.nodes.append(fused)
        for name in fused.outputs:
            self.producer[name] = fused

    def _data_inputs(self, node: Any) -> list[str]:
        return [self.alias.get(i, i) for i in node.input if i and i not in self.graph.const]

    def _rewrite(self, node: Any) -> FusedNode | None:
        """The fused node ``node`` becomes, or None when it folds into an earlier one or vanishes."""
        attrs = dict(self.graph.attrs[id(node)])
        op, ins, out = node.op_type, self._data_inputs(node), node.output[0]
        if op in _FREE_OPS:
            self.alias[out] = ins[0]
            return None
        if op == "Conv":
            return self._conv(node, ins, out, attrs)
        if op == "BatchNormalization" and self._reads_fusable_conv(ins):
            return self._fold_into_conv(ins[0], out)
        if op == "Sigmoid" and self.consumers.get(out) == 1 and self._only_consumer_is_silu(node):
            self.sigmoid_input[out] = ins[0]
            return None
        if op == "Mul" and len(ins) == 2 and any(self.sigmoid_input.get(a) == b for a, b in (ins, ins[::-1])):
            return self._quick_gelu(ins, out)
        if op in CONV_ACTS and self._reads_fusable_conv(ins):
            return self._fold_into_conv(ins[0], out, act=op)
        if op == "HardSwish":
            return self._hard_swish(ins, out)
        if op == "Slice" and ins:
            return self._slice(ins, out, attrs)
        return FusedNode(op, ins, list(node.output), attrs)

    def _conv(self, node: Any, ins: list[str], out: str, attrs: dict[str, Any]) -> FusedNode:
        weight = node.input[1]
        if weight not in self.graph.shapes:
            raise HwnasError(f"{self.graph.source}: Conv {node.name!r} has no constant weights")
        attrs["weight"] = self.graph.shapes[weight]
        attrs["act"] = "none"
        return FusedNode("Conv", ins[:1], [out], attrs)

    def _reads_fusable_conv(self, ins: list[str]) -> bool:
        """The first input comes from a Conv with no fused activation and no other reader."""
        if not ins or ins[0] not in self.producer:
            return False
        conv = self.producer[ins[0]]
        return conv.op == "Conv" and conv.attrs["act"] == "none" and self.consumers.get(ins[0]) == 1

    def _fold_into_conv(self, conv_output: str, out: str, act: str | None = None) -> None:
        conv = self.producer.pop(conv_output)
        if act is not None:
            conv.attrs["act"] = act
        conv.outputs = [out]
        self.producer[out] = conv
        return None

    def _only_consumer_is_silu(self, sigmoid: Any) -> bool:
        x, out = sigmoid.input[0], sigmoid.output[0]
        users = [n for n in self.live if out in n.input]
        return len(users) == 1 and users[0].op_type == "Mul" and set(users[0].input) == {x, out}

    def _quick_gelu(self, ins: list[str], out: str) -> FusedNode:
        x = ins[0] if self.sigmoid_input.get(ins[1]) == ins[0] else ins[1]
        self.consumers[x] = self.consumers.get(x, 0) - 1  # the Sigmoid's read is gone
        return FusedNode("QuickGelu", [x], [out], {})

    def _hard_swish(self, ins: list[str], out: str) -> FusedNode:
        """HardSwish(x) with no conv to fuse into runs as x * HardSigmoid(x)."""
        gate = out + "#hsig"
        self.graph.shapes[gate] = self.graph.shape(ins[0])
        self._add(FusedNode("HardSigmoid", ins, [gate], {}))
        self.consumers[gate] = 1
        self.consumers[ins[0]] = self.consumers.get(ins[0], 0) + 1
        return FusedNode("Mul", [ins[0], gate], [out], {})

    def _slice(self, ins: list[str], out: str, attrs: dict[str, Any]) -> FusedNode | None:
        """The first Slice of a tensor becomes a Split; later Slices of it add outputs to that Split."""
        split = self.split_of.get(ins[0])
        if split is not None:
            split.outputs.append(out)
            self.producer[out] = split
            self.consumers[ins[0]] = self.consumers.get(ins[0], 0) - 1
            return None
        split = FusedNode("Split", ins[:1], [out], attrs)
        self.split_of[ins[0]] = split
        return split
