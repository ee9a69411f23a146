"""The single-kernel ONNX model of a :class:`Kernel`: exactly the node ORT runs for it, nothing around it.

Models are written with ``onnx.helper`` in the form of ORT's *optimized* graph (``com.microsoft.nchwc`` ops on
channel-padded blocked tensors, ``FusedConv``, ``QuickGelu``, ``ReorderInput``/``ReorderOutput``), so timing one
measures that kernel alone: exporting a plain Conv through torch would add the ReorderInput/ReorderOutput that
an isolated blocked conv needs but a network pays only at the edges of its blocked regions. ORT loads these
files like any other (tests/test_kernels.py checks that its optimized graph keeps exactly the one node).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.kernels.record import Kernel, nchwc_block_size, padded

OPSET = 17
_NCHWC = "com.microsoft.nchwc"
_MS = "com.microsoft"
_ACT_PARAMS = {"Clip": [0.0, 6.0], "HardSigmoid": [1.0 / 6.0, 0.5], "LeakyRelu": [0.01]}
FREE_TYPES = ("reshape",)  # an alias of its input inside a network: predicted 0 ms, never measured


def kernel_model(kernel: Kernel, block: int | None = None, seed: int = 0) -> Any:
    """An ``onnx.ModelProto`` whose only node is ``kernel`` (random weights from ``seed``)."""
    from onnx import TensorProto, helper

    block = nchwc_block_size() if block is None else block
    builder = _Builder(np.random.default_rng(seed))
    add_node = _NODE_BUILDERS.get(kernel.type)
    if add_node is None:
        raise HwnasError(f"kernel {kernel.key}: no single-kernel model for type {kernel.type!r}")
    outputs = add_node(builder, kernel, block) or ["y"]
    graph = helper.make_graph(builder.nodes, "kernel", builder.inputs,
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                              builder.initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(_MS, 1), helper.make_opsetid(_NCHWC, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="hwnas.kernels")
    model.ir_version = 8
    return model


def write_kernel_model(kernel: Kernel, directory: Path, block: int | None = None) -> Path:
    """Write the kernel's model as ``directory/<key>.onnx`` (reused when present)."""
    import onnx

    path = Path(directory) / f"{kernel.key.replace(':', '=')}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        onnx.save(kernel_model(kernel, block), str(tmp))
        tmp.replace(path)
    return path


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[Any] = []
        self.inputs: list[Any] = []
        self.initializers: list[Any] = []

    def input(self, shape: tuple[int, ...]) -> str:
        from onnx import TensorProto, helper

        name = f"x{len(self.inputs)}"
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def weight(self, shape: tuple[int, ...]) -> str:
        return self.constant((self.rng.standard_normal(shape) * 0.05).astype(np.float32))

    def constant(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"w{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], domain: str, outputs: list[str] | None = None, **attrs: Any) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs or ["y"], domain=domain or None, **attrs))


# -- the node of each kernel type (each returns its output names; None: the one output "y") ---------------------
def _conv(builder: _Builder, k: Kernel, block: int) -> None:
    attrs: dict[str, Any] = {"kernel_shape": [k.k, k.k], "strides": [k.s, k.s], "pads": _pads(k), "dilations": [1, 1]}
    if k.act != "none":
        attrs["activation"] = k.act
        if k.act in _ACT_PARAMS:
            attrs["activation_params"] = _ACT_PARAMS[k.act]
    if k.op == "nchwc.Conv":
        cout = padded(k.cout, block)
        if k.type == "dwconv":
            x = builder.input((1, cout, k.hin, k.win))
            weight, group = (cout, 1, k.k, k.k), cout
        elif k.g == 1 and k.cin < block:
            x = builder.input((1, k.cin, k.hin, k.win))
            weight, group = (cout, k.cin, k.k, k.k), 1
        else:
            x = builder.input((1, padded(k.cin, block), k.hin, k.win))
            weight, group = (cout, padded(k.cin, block) // k.g, k.k, k.k), k.g
        inputs = [x, builder.weight(weight), builder.weight((cout,))]
        if k.sum:
            inputs.append(builder.input((1, cout, k.hout, k.wout)))
        builder.node("Conv", inputs, _NCHWC, group=group, **attrs)
        return
    x = builder.input((1, k.cin, k.hin, k.win))
    inputs = [x, builder.weight((k.cout, k.cin // k.g, k.k, k.k)), builder.weight((k.cout,))]
    if k.op == "FusedConv":
        if k.sum:
            inputs.append(builder.input((1, k.cout, k.hout, k.wout)))
        builder.node("FusedConv", inputs, _MS, group=k.g, **attrs)
    else:
        attrs.pop("activation", None)
        attrs.pop("activation_params", None)
        builder.node("Conv", inputs, "", group=k.g, **attrs)


def _stored_channels(k: Kernel, block: int) -> int:
    """The input's channels as its tensor stores them: padded to the block for blocked and NCHWc ops."""
    return padded(k.cin, block) if k.op.startswith(("blocked.", "nchwc.")) else k.cin


def _op_and_domain(op: str) -> tuple[str, str]:
    """(op type, domain) of ``nchwc.<op>`` (ORT's blocked-layout op) or of a standard ONNX op."""
    return (op.removeprefix("nchwc."), _NCHWC) if op.startswith("nchwc.") else (op, "")


def _pool(builder: _Builder, k: Kernel, block: int) -> None:
    x = builder.input((1, _stored_channels(k, block), k.hin, k.win))
    op, domain = _op_and_domain(k.op.removeprefix("blocked."))
    builder.node(op, [x], domain, kernel_shape=[k.k, k.k], strides=[k.s, k.s], pads=_pads(k))


def _global_pool(builder: _Builder, k: Kernel, block: int) -> None:
    x = builder.input((1, _stored_channels(k, block), k.hin, k.win))
    op, domain = _op_and_domain(k.op.removeprefix("blocked."))
    if op in ("ReduceMean", "ReduceMax"):
        builder.node(op, [x], "", axes=[2, 3], keepdims=1)
    else:
        builder.node(op, [x], domain)


def _gemm(builder: _Builder, k: Kernel, block: int) -> None:
    x = builder.input((1, k.cin))
    if k.op == "MatMul":
        builder.node("MatMul", [x, builder.weight((k.cin, k.cout))], "")
    else:
        builder.node("Gemm", [x, builder.weight((k.cout, k.cin)), builder.weight((k.cout,))], "", transB=1)


def _unary(builder: _Builder, k: Kernel, block: int) -> None:
    x = builder.input((1, _stored_channels(k, block), k.hin, k.win))
    _activation(builder, k.op.removeprefix("blocked."), x)


def _binary(builder: _Builder, k: Kernel, block: int) -> None:
    channels = _stored_channels(k, block)
    a = builder.input((1, channels, k.hin, k.win))
    b = builder.input((1, channels, 1, 1) if k.bcast else (1, channels, k.hin, k.win))
    builder.node(k.op.removeprefix("blocked."), [a, b], "")


def _concat(builder: _Builder, k: Kernel, block: int) -> None:
    sizes = _parts(k.cin, k.n, block if k.op.startswith("blocked.") else 1)
    inputs = [builder.input((1, size, k.hin, k.win)) for size in sizes]
    builder.node("Concat", inputs, "", axis=1)


def _split(builder: _Builder, k: Kernel, block: int) -> list[str]:
    x = builder.input((1, k.cin, k.hin, k.win))
    sizes = _parts(k.cout, k.n, 1)
    split = builder.constant(np.asarray(sizes, dtype=np.int64))
    outputs = [f"y{i}" for i in range(len(sizes))]
    builder.node("Split", [x, split], "", outputs=outputs, axis=1)
    return outputs


def _transpose(builder: _Builder, k: Kernel, block: int) -> None:
    if k.n == 5:  # a channel shuffle: (n, groups, c / groups, h, w) -> (n, c / groups, groups, h, w)
        x = builder.input((1, 2, max(k.cin // 2, 1), k.hin, k.win))
        builder.node("Transpose", [x], "", perm=[0, 2, 1, 3, 4])
    else:
        x = builder.input((1, k.cin, k.hin, k.win))
        builder.node("Transpose", [x], "", perm=[0, 2, 3, 1])


def _reorder_input(builder: _Builder, k: Kernel, block: int) -> None:
    x = builder.input((1, k.cin, k.hin, k.win))
    builder.node("ReorderInput", [x], _NCHWC, channels_last=0)


def _reorder_output(builder: _Builder, k: Kernel, block: int) -> None:
    x = builder.input((1, padded(k.cin, block), k.hin, k.win))
    builder.node("ReorderOutput", [x], _NCHWC, channels=k.cout, channels_last=0)


def _activation(builder: _Builder, op: str, x: str) -> None:
    if op == "QuickGelu":
        builder.node("QuickGelu", [x], _MS, alpha=1.0)
    elif op == "Clip":
        low, high = (builder.constant(np.asarray(v, dtype=np.float32)) for v in _ACT_PARAMS["Clip"])
        builder.node("Clip", [x, low, high], "")
    elif op == "HardSigmoid":
        alpha, beta = _ACT_PARAMS["HardSigmoid"]
        builder.node("HardSigmoid", [x], "", alpha=alpha, beta=beta)
    elif op == "LeakyRelu":
        builder.node("LeakyRelu", [x], "", alpha=_ACT_PARAMS["LeakyRelu"][0])
    elif op in ("Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Sqrt", "Erf", "Softmax"):
        builder.node(op, [x], "")
    elif op in ("Add", "Mul", "Sub", "Div"):  # with a constant operand
        builder.node(op, [x, builder.constant(np.asarray(0.5, dtype=np.float32))], "")
    else:
        raise HwnasError(f"activation {op!r}: no single-kernel model")


_NODE_BUILDERS: dict[str, Callable[[_Builder, Kernel, int], list[str] | None]] = {
    "conv": _conv, "pwconv": _conv, "dwconv": _conv, "gconv": _conv, "pool": _pool, "gpool": _global_pool,
    "gemm": _gemm, "act": _unary, "add": _binary, "mul": _binary, "concat": _concat, "split": _split,
    "transpose": _transpose, "reorder_in": _reorder_input, "reorder_out": _reorder_output,
}


def _pads(k: Kernel) -> list[int]:
    """Symmetric-first padding that gives the kernel's output size."""
    pads = []
    for size_in, size_out in ((k.hin, k.hout), (k.win, k.wout)):
        total = max(0, (size_out - 1) * k.s + k.k - size_in)
        pads.append((total // 2, total - total // 2))
    return [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]


def _parts(total: int, n: int, multiple: int) -> list[int]:
    """``total`` channels in ``n`` parts (multiples of ``multiple``, the last takes the rest)."""
    n = max(n, 1)
    size = max(multiple, total // n // multiple * multiple)
    sizes = [size] * (n - 1)
    return [*sizes, max(total - sum(sizes), 1)]
