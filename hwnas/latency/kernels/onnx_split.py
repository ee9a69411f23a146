"""Split an ONNX graph into the kernels ONNX Runtime's CPU execution provider runs with all optimizations on.

The splitter replays ORT's own graph rewrites on the (shape-inferred) ONNX graph, in ORT's order:

1. constant folding: shape arithmetic (``Shape``/``Gather``/``Div``/... on static shapes) costs nothing;
   ``Identity``/``Dropout`` vanish; Conv + BatchNormalization fold into the Conv.
2. level-2 fusions: ``x * Sigmoid(x)`` (SiLU/swish) -> ``QuickGelu``; Conv + Relu/Clip/Sigmoid/Tanh/LeakyRelu/
   HardSigmoid/HardSwish -> one conv with an activation when the conv's output has no other use; a
   ``HardSwish`` with no conv to fuse into runs as ``HardSigmoid`` + ``Mul``; Slices of one tensor -> ``Split``.
3. the NCHWc layout transformer (x86 with AVX2/AVX-512, block ``B`` = 8/16 floats): a group-1 conv runs
   blocked when ``cin < B`` (reads NCHW directly) or ``cin % 4 == 0``; a depthwise conv when ``c % 4 == 0``
   (channels are zero-padded up to ``B``); Max/AveragePool when ``c % B == 0``; GlobalAverage/MaxPool when
   its input is already blocked and ``c % B == 0``; Add/Mul of two blocked tensors of one shape, and Concat of
   blocked inputs whose channels are multiples of ``B``. An Add whose input is a single-use blocked conv without
   activation is fused into that conv (its ``Sum`` input), and a Relu/Sigmoid/Tanh after such a conv (or
   conv + Add) is fused too; other Relu/Sigmoid/Tanh/QuickGelu run on the blocked tensor. Every blocked
   tensor that something reads in NCHW gets one ``ReorderOutput``; every NCHW tensor that a blocked op reads
   gets one ``ReorderInput``. ReduceMean, broadcast Mul (SE scaling), Gemm, Reshape, Transpose, Split run NCHW.

The result was checked against the optimized graph that ORT 1.32 writes (``optimized_model_filepath``) for the
zoo networks and ProxylessNAS architectures (tests/test_kernels.py). Each kernel is a frozen :class:`Kernel`
with one canonical key, e.g. ``dwconv-op:nchwc.Conv-in:72x56x56-out:72x28x28-k:5-s:2-g:72-act:Relu-sum:0-n:1-b:0``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from hwnas.errors import HwnasError

KERNEL_TYPES = ("conv", "pwconv", "dwconv", "gconv", "pool", "gpool", "gemm", "act", "add", "mul", "concat", "split",
                "transpose", "reshape", "reorder_in", "reorder_out", "other")
ALIGNMENT = 4  # a blocked conv needs cin (group 1) or c (depthwise) to be a multiple of this (ORT 1.32 pads the rest)
CONV_ACTS = ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish")  # level-2 Conv+act fusion
BLOCKED_ACTS = ("Relu", "Sigmoid", "Tanh", "QuickGelu")  # run on a blocked tensor
BLOCKED_FUSED_ACTS = ("Relu", "Sigmoid", "Tanh")  # fused into a blocked conv by the NCHWc transformer
_FREE_OPS = ("Identity", "Dropout")
_KEY = re.compile(r"(?P<type>[a-z_]+)-op:(?P<op>[A-Za-z.]+)-in:(?P<cin>\d+)x(?P<hin>\d+)x(?P<win>\d+)"
                  r"-out:(?P<cout>\d+)x(?P<hout>\d+)x(?P<wout>\d+)-k:(?P<k>\d+)-s:(?P<s>\d+)-g:(?P<g>\d+)"
                  r"-act:(?P<act>[A-Za-z]+)-sum:(?P<sum>\d)-n:(?P<n>\d+)-b:(?P<bcast>\d)")


def nchwc_block_size() -> int:
    """MLAS's NCHWc block: 16 floats with AVX-512F, 8 with AVX2, else 1 (no blocked layout)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8 if " avx2" in flags else 1


def padded(channels: int, block: int) -> int:
    return -(-channels // block) * block


@dataclass(frozen=True)
class Kernel:
    """One kernel ORT runs: its type, the ORT op it runs as, logical NCHW shapes and hyper-parameters.

    Attributes:
        type: one of :data:`KERNEL_TYPES` (``conv`` kxk group 1, ``pwconv`` 1x1 group 1, ``dwconv`` depthwise,
            ``gconv`` other grouped conv, ``pool``, ``gpool`` global pooling or ReduceMean over H, W, ...).
        op: the ORT op: ``nchwc.`` prefixed for ORT's blocked-layout ops (``nchwc.Conv``, ``nchwc.MaxPool``),
            ``blocked.`` prefixed for a standard op that runs on a blocked tensor (``blocked.QuickGelu``,
            ``blocked.Add``), else the op (``FusedConv``, ``ReduceMean``, ``ReorderInput``, ...).
        cin, hin, win / cout, hout, wout: logical input / output channels and spatial size (2-D tensors: C x 1 x 1).
        k, s, g: kernel size, stride, groups (convs and pools).
        act: fused (or, for ``act`` kernels, the) activation; ``none`` when there is none.
        sum: 1 when a residual Add is fused into the conv.
        n: inputs of a Concat, outputs of a Split, rank of a Transpose, else 1.
        bcast: 1 when an Add/Mul broadcasts its second operand over H x W (SE scaling).
    """

    type: str
    op: str
    cin: int
    hin: int
    win: int
    cout: int
    hout: int
    wout: int
    k: int = 0
    s: int = 1
    g: int = 1
    act: str = "none"
    sum: int = 0
    n: int = 1
    bcast: int = 0

    def __post_init__(self) -> None:
        if self.type not in KERNEL_TYPES:
            raise HwnasError(f"kernel: type must be one of {', '.join(KERNEL_TYPES)}, got {self.type!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise HwnasError(f"kernel: field {f.name!r} must be a non-negative int, got {value!r}")

    @property
    def key(self) -> str:
        return (f"{self.type}-op:{self.op}-in:{self.cin}x{self.hin}x{self.win}-out:{self.cout}x{self.hout}x{self.wout}"
                f"-k:{self.k}-s:{self.s}-g:{self.g}-act:{self.act}-sum:{self.sum}-n:{self.n}-b:{self.bcast}")

    @property
    def blocked(self) -> bool:
        return self.op.startswith(("nchwc.", "blocked.")) or self.type == "reorder_in"

    @property
    def macs(self) -> int:
        """Multiply-accumulates (convs, Gemm), else the number of output elements."""
        if self.type in ("conv", "pwconv", "dwconv", "gconv"):
            return self.cout * self.hout * self.wout * (self.cin // max(self.g, 1)) * self.k * self.k
        if self.type == "gemm":
            return self.cin * self.cout
        if self.type == "pool":
            return self.cout * self.hout * self.wout * self.k * self.k
        return self.cout * self.hout * self.wout

    @property
    def input_elements(self) -> int:
        extra = self.cout * self.hout * self.wout if self.sum else 0
        second = (self.cin if self.bcast else self.cin * self.hin * self.win) if self.type in ("add", "mul") else 0
        return self.cin * self.hin * self.win + extra + second

    @property
    def output_elements(self) -> int:
        return self.cout * self.hout * self.wout

    @property
    def weight_elements(self) -> int:
        if self.type in ("conv", "pwconv", "dwconv", "gconv"):
            return self.cout * (self.cin // max(self.g, 1)) * self.k * self.k + self.cout
        if self.type == "gemm":
            return self.cin * self.cout + self.cout
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "op": self.op, "input": [self.cin, self.hin, self.win],
                "output": [self.cout, self.hout, self.wout], "k": self.k, "s": self.s, "g": self.g, "act": self.act,
                "sum": self.sum}


def kernel_from_key(key: str) -> Kernel:
    """Parse :attr:`Kernel.key` back into the record (one-line error on a malformed key)."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise HwnasError(f"kernel key {key!r}: malformed (expected e.g. "
                         "'pwconv-op:nchwc.Conv-in:32x56x56-out:64x56x56-k:1-s:1-g:1-act:Relu-sum:0-n:1-b:0')")
    values: dict[str, Any] = match.groupdict()
    for name in values:
        if name not in ("type", "op", "act"):
            values[name] = int(values[name])
    return Kernel(**values)


def conv_type(k: int, g: int, cin: int, cout: int) -> str:
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


# -- the graph -------------------------------------------------------------------------------------------
@dataclass
class _Unit:
    """A node after level-1/2 fusions: op, data inputs, one output (Split: several), attributes."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]


@dataclass
class _Blocked:
    """A tensor available in the blocked layout: the kernel that made it and the output's original uses."""

    kernel: dict[str, Any]
    channels: int
    uses: int


def split_onnx(path: str | Path, block: int | None = None) -> list[Kernel]:
    """The kernels ORT (CPU EP, all optimizations) runs for the ``.onnx`` file at ``path``, in execution order."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise HwnasError(f"{path}: not a readable ONNX model ({exc.__class__.__name__})") from None
    return split_model(model, block, str(path))


def split_model(model: Any, block: int | None = None, source: str = "model") -> list[Kernel]:
    """:func:`split_onnx` on a loaded ``onnx.ModelProto`` (batch dimensions are set to 1)."""
    import onnx

    block = nchwc_block_size() if block is None else block
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and others
        raise HwnasError(f"{source}: ONNX shape inference failed ({exc.__class__.__name__})") from None
    graph = _Graph(model, source)
    units = graph.fuse()
    return _Layout(graph, units, block).run()


class _Graph:
    """Shapes, constants and producers/consumers of an ONNX graph, and its level-1/2 fusions."""

    def __init__(self, model: Any, source: str) -> None:
        import onnx
        from onnx import numpy_helper

        self.source = source
        self.shapes: dict[str, tuple[int, ...]] = {}
        for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                self.shapes[value.name] = tuple(int(d.dim_value) for d in dims)
        self.values: dict[str, Any] = {}
        for init in model.graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
            self.shapes[init.name] = tuple(init.dims)
        self.const = set(self.values)
        self.nodes = list(model.graph.node)
        for node in self.nodes:
            if node.op_type == "Constant":
                self.const.update(node.output)
            elif node.op_type in ("Shape", "Size") or all(not i or i in self.const for i in node.input):
                self.const.update(node.output)  # folded by ORT (static shapes)
        self.inputs = [v.name for v in model.graph.input if v.name not in self.values]
        self.outputs = [v.name for v in model.graph.output]
        self.attrs = {id(node): {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                      for node in self.nodes}
        missing = [o for n in self.nodes for o in n.output if o and o not in self.const and o not in self.shapes]
        if missing:
            self.shapes.update(_run_shapes(model, missing, source))


    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise HwnasError(f"{self.source}: no static shape for tensor {name!r} (export with static input shapes)")
        return self.shapes[name]

    def fuse(self) -> list[_Unit]:
        """Level-1/2 rewrites: constant folding, Conv+BN, SiLU -> QuickGelu, Conv+activation, Slices -> Split."""
        alias: dict[str, str] = {}
        units: list[_Unit] = []
        live = [n for n in self.nodes if not all(o in self.const for o in n.output)]

        def data(node: Any) -> list[str]:
            return [alias.get(i, i) for i in node.input if i and i not in self.const]

        consumers: dict[str, int] = {}
        for node in live:
            for name in set(node.input):
                consumers[name] = consumers.get(name, 0) + 1
        for name in self.outputs:
            consumers[name] = consumers.get(name, 0) + 1
        producer: dict[str, _Unit] = {}
        sigmoid_of: dict[str, str] = {}  # Sigmoid output -> its input (for SiLU)
        slices: dict[str, _Unit] = {}
        for node in live:
            attrs = dict(self.attrs[id(node)])
            op, ins, out = node.op_type, data(node), node.output[0]
            if op in _FREE_OPS:
                alias[out] = ins[0]
                continue
            if op == "Conv":
                weight = node.input[1]
                if weight not in self.shapes:
                    raise HwnasError(f"{self.source}: Conv {node.name!r} has no constant weights")
                attrs["weight"] = self.shapes[weight]
                attrs["act"] = "none"
                unit = _Unit("Conv", ins[:1], [out], attrs)
            elif op == "BatchNormalization" and ins and ins[0] in producer and producer[ins[0]].op == "Conv" \
                    and producer[ins[0]].attrs["act"] == "none" and consumers.get(ins[0]) == 1:
                conv = producer.pop(ins[0])
                conv.outputs = [out]
                producer[out] = conv
                continue
            elif op == "Sigmoid" and consumers.get(out) == 1 and self._only_consumer_is_silu(node, live):
                sigmoid_of[out] = ins[0]
                continue
            elif op == "Mul" and len(ins) == 2 and any(sigmoid_of.get(a) == b for a, b in (ins, ins[::-1])):
                x = ins[0] if sigmoid_of.get(ins[1]) == ins[0] else ins[1]
                consumers[x] = consumers.get(x, 0) - 1  # the Sigmoid's read is gone
                unit = _Unit("QuickGelu", [x], [out], {})
            elif op in CONV_ACTS and ins and ins[0] in producer and producer[ins[0]].op == "Conv" \
                    and producer[ins[0]].attrs["act"] == "none" and consumers.get(ins[0]) == 1:
                conv = producer.pop(ins[0])
                conv.attrs["act"] = op
                conv.outputs = [out]
                producer[out] = conv
                continue
            elif op == "HardSwish":
                hsig = _Unit("HardSigmoid", ins, [out + "#hsig"], {})
                self.shapes[out + "#hsig"] = self.shape(ins[0])
                units.append(hsig)
                producer[out + "#hsig"] = hsig
                consumers[out + "#hsig"] = 1
                consumers[ins[0]] = consumers.get(ins[0], 0) + 1
                unit = _Unit("Mul", [ins[0], out + "#hsig"], [out], {})
            elif op == "Slice" and ins:
                if ins[0] in slices:
                    slices[ins[0]].outputs.append(out)
                    producer[out] = slices[ins[0]]
                    consumers[ins[0]] = consumers.get(ins[0], 0) - 1
                    continue
                unit = _Unit("Split", ins[:1], [out], attrs)
                slices[ins[0]] = unit
            else:
                unit = _Unit(op, ins, list(node.output), attrs)
            units.append(unit)
            for name in unit.outputs:
                producer[name] = unit
        self.consumers = consumers
        return units

    def _only_consumer_is_silu(self, sigmoid: Any, live: list[Any]) -> bool:
        x, out = sigmoid.input[0], sigmoid.output[0]
        users = [n for n in live if out in n.input]
        return len(users) == 1 and users[0].op_type == "Mul" and set(users[0].input) == {x, out}


def _run_shapes(model: Any, names: list[str], source: str) -> dict[str, tuple[int, ...]]:
    """Shapes ONNX shape inference left open (e.g. Slices with computed bounds): run the model once in ORT
    (no optimizations) with those tensors as extra outputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {}
        for value in session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in value.shape]
            feeds[value.name] = np.zeros(shape, dtype=np.int64 if "int64" in value.type else np.float32)
        outputs = session.run([o.name for o in probe.graph.output], feeds)
    except Exception as exc:  # onnxruntime raises its own types
        raise HwnasError(f"{source}: cannot infer the shapes of {len(names)} tensors ({exc.__class__.__name__})") \
            from None
    return {o.name: tuple(int(d) for d in np.shape(value)) for o, value in zip(probe.graph.output, outputs)}


class _Layout:
    """Replays ORT's NCHWc transformer over the fused units and emits the kernels."""

    def __init__(self, graph: _Graph, units: list[_Unit], block: int) -> None:
        self.graph, self.units, self.block = graph, units, block
        self.uses = dict(graph.consumers)
        self.kernels: list[dict[str, Any]] = []
        self.blocked: dict[str, _Blocked] = {}
        self.nchw: set[str] = set(graph.inputs)
        self.reordered_in: set[str] = set()

    def run(self) -> list[Kernel]:
        for unit in self.units:
            handler = getattr(self, f"_unit_{unit.op}", None)
            if handler is None or not handler(unit):
                self._nchw_unit(unit)
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
        self.blocked[name] = _Blocked(kernel, self._chw(name)[0], self.uses.get(name, 0))

    def _nchw_unit(self, unit: _Unit) -> None:
        for name in unit.inputs:
            self._need_nchw(name)
        op = unit.op
        out = unit.outputs[0]
        src = unit.inputs[0] if unit.inputs else out
        if op == "Conv":
            kernel = self._conv_fields(unit)
            self._emit(kernel.pop("type"), "FusedConv" if unit.attrs["act"] != "none" else "Conv", src, out,
                       **kernel)
        elif op in ("MaxPool", "AveragePool"):
            self._emit("pool", op, src, out, **self._pool_fields(unit))
        elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"):
            self._emit("gpool", op, src, out)
        elif op in ("Gemm", "MatMul"):
            self._emit("gemm", op, src, out)
        elif op in ("Add", "Mul", "Sub", "Div"):
            bcast = int(len(unit.inputs) == 2 and self._chw(unit.inputs[1])[1:] != self._chw(unit.inputs[0])[1:])
            type_ = "add" if op in ("Add", "Sub") else "mul"
            if len(unit.inputs) < 2:  # a constant operand (e.g. x * 0.5): elementwise
                self._emit("act", op, src, out)
            else:
                self._emit(type_, op, src, out, bcast=bcast)
        elif op == "Concat":
            self._emit("concat", op, src, out, n=len(unit.inputs))
            self.kernels[-1]["cin"] = sum(self._chw(i)[0] for i in unit.inputs)
        elif op == "Split":
            self._emit("split", op, src, src, n=len(unit.outputs))
        elif op == "Transpose":
            self._emit("transpose", op, src, out, n=len(self.graph.shape(src)))
        elif op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            self._emit("reshape", op, src, out)
        elif op in ("Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "QuickGelu", "Softmax", "Exp",
                    "Neg", "Sqrt", "Erf", "BatchNormalization"):
            self._emit("act", op, src, out, act=op)
        else:
            self._emit("other", op, src, out)
        self.nchw.update(unit.outputs)

    def _conv_fields(self, unit: _Unit) -> dict[str, Any]:
        cout, cin_per_group, kh, _ = unit.attrs["weight"]
        g = int(unit.attrs.get("group", 1))
        cin = cin_per_group * g
        strides = unit.attrs.get("strides", [1, 1])
        return {"type": conv_type(kh, g, cin, cout), "k": int(kh), "s": int(strides[0]), "g": g,
                "act": unit.attrs["act"]}

    def _pool_fields(self, unit: _Unit) -> dict[str, Any]:
        kernel_shape = unit.attrs.get("kernel_shape", [1, 1])
        strides = unit.attrs.get("strides", [1, 1])
        return {"k": int(kernel_shape[0]), "s": int(strides[0])}

    # -- the NCHWc transformer's cases --------------------------------------------------------------------
    def _unit_Conv(self, unit: _Unit) -> bool:
        cout, cin_per_group, _, _ = unit.attrs["weight"]
        g = int(unit.attrs.get("group", 1))
        x = unit.inputs[0]
        blocked, reads_nchw = conv_runs_blocked(cin_per_group * g, cout, g, x in self.blocked, self.block)
        if not blocked:
            return False
        if reads_nchw:
            self._need_nchw(x)
        else:
            self._need_blocked(x)
        fields = self._conv_fields(unit)
        kernel = self._emit(fields.pop("type"), "nchwc.Conv", x, unit.outputs[0], **fields)
        self._make_blocked(unit.outputs[0], kernel)
        return True

    def _unit_MaxPool(self, unit: _Unit) -> bool:
        x = unit.inputs[0]
        if self.block <= 1 or self._chw(x)[0] % self.block:
            return False
        self._need_blocked(x)
        kernel = self._emit("pool", f"nchwc.{unit.op}", x, unit.outputs[0], **self._pool_fields(unit))
        self._make_blocked(unit.outputs[0], kernel)
        return True

    _unit_AveragePool = _unit_MaxPool

    def _unit_GlobalAveragePool(self, unit: _Unit) -> bool:
        x = unit.inputs[0]
        if x not in self.blocked or self._chw(x)[0] % self.block:
            return False
        kernel = self._emit("gpool", f"nchwc.{unit.op}", x, unit.outputs[0])
        self._make_blocked(unit.outputs[0], kernel)
        return True

    _unit_GlobalMaxPool = _unit_GlobalAveragePool

    def _unit_Add(self, unit: _Unit) -> bool:
        if len(unit.inputs) != 2 or not all(i in self.blocked for i in unit.inputs):
            return False
        a, b = (self.blocked[i] for i in unit.inputs)
        if a.channels != b.channels or self.graph.shape(unit.inputs[0]) != self.graph.shape(unit.inputs[1]):
            return False
        out = unit.outputs[0]
        if unit.op == "Add":
            for candidate in (a, b):
                conv = candidate.kernel
                if conv["op"] == "nchwc.Conv" and not conv.get("sum") and candidate.uses == 1 \
                        and conv.get("act", "none") == "none":
                    conv["sum"] = 1
                    self.blocked[out] = _Blocked(conv, candidate.channels, self.uses.get(out, 0))
                    return True
        kernel = self._emit("add" if unit.op == "Add" else "mul", f"blocked.{unit.op}", unit.inputs[0], out)
        self._make_blocked(out, kernel)
        return True

    _unit_Mul = _unit_Add

    def _unit_Concat(self, unit: _Unit) -> bool:
        if int(unit.attrs.get("axis", 1)) != 1 or not all(
                i in self.blocked and self.blocked[i].channels % self.block == 0 for i in unit.inputs):
            return False
        kernel = self._emit("concat", "blocked.Concat", unit.inputs[0], unit.outputs[0], n=len(unit.inputs))
        kernel["cin"] = sum(self._chw(i)[0] for i in unit.inputs)
        self._make_blocked(unit.outputs[0], kernel)
        return True

    def _activation(self, unit: _Unit) -> bool:
        x = unit.inputs[0]
        if x not in self.blocked:
            return False
        source = self.blocked[x]
        conv = source.kernel
        out = unit.outputs[0]
        if unit.op in BLOCKED_FUSED_ACTS and conv["op"] == "nchwc.Conv" and source.uses == 1 \
                and conv.get("act", "none") == "none":
            conv["act"] = unit.op
            self.blocked[out] = _Blocked(conv, source.channels, self.uses.get(out, 0))
            return True
        kernel = self._emit("act", f"blocked.{unit.op}", x, out, act=unit.op)
        self._make_blocked(out, kernel)
        return True

    _unit_Relu = _unit_Sigmoid = _unit_Tanh = _unit_QuickGelu = _activation


def count_by_op(kernels: Iterable[Kernel]) -> dict[str, int]:
    """How many kernels of each ORT op (``nchwc.Conv``, ``ReorderInput``, ...): what ORT's optimized graph lists."""
    counts: dict[str, int] = {}
    for kernel in kernels:
        op = kernel.op.removeprefix("blocked.")
        counts[op] = counts.get(op, 0) + 1
    return counts
