"""Parameter bytes and peak activation bytes of any ``.onnx`` file, by a liveness walk over its graph.

The walk follows the rules of :mod:`hwnas.spaces.footprint` (what a deployment runtime runs), so a network built
from op specs gets the same figures either way:

* parameters: the floating-point initializers and ``Constant`` values, and each ``Identity`` copy of one (the
  exporter stores equal tensors once and links the copies by ``Identity``);
* activations: every other tensor, sized by ``onnx.shape_inference`` (by one onnxruntime run where a shape is
  computed at run time). A tensor computed from constants alone (or from a ``Shape``, static here) is a constant.
  ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze`` and ``Identity`` alias their input (no new buffer); an
  elementwise op (an activation, ``Add``, ``Mul``, ...) writes in place over an input of its output's size whose
  last reader it is (an activation after a conv is fused into it; a residual add or an SE gate multiply reuses
  a dying input), as LiteRT's arena planner and onnxruntime's allocation planner do;
* liveness, in node order: a buffer is alive from the node that makes it to its last reader, a graph input from
  the start, a graph output to the end; the peak is the largest sum of live buffers at any node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError

ALIAS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
SHAPE_OPS = frozenset({"Shape", "Size"})  # of a static-shape tensor: constants
IN_PLACE_OPS = frozenset({"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "LeakyRelu", "Elu",
                          "Selu", "PRelu", "Softplus", "Gelu", "Mish", "Add", "Sub", "Mul", "Div"})


@dataclass
class _Buffer:
    size: int
    born: int
    dies: int = -1
    tensors: set[str] = field(default_factory=set)


def onnx_footprint(path: Path) -> Any:
    """A :class:`hwnas.spaces.footprint.Footprint` of the model in ``path`` (batch as the file's input shape)."""
    import onnx

    from hwnas.spaces.footprint import Footprint

    if not Path(path).is_file():
        raise HwnasError(f"{path}: no such ONNX file")
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True, data_prop=True)
    except Exception as error:  # onnx raises DecodeError, InferenceError, ... on a broken file
        raise HwnasError(f"{path}: not a readable ONNX model with inferable shapes: {error}") from None
    graph = model.graph
    sizes = _tensor_bytes(graph)
    constants = _constant_tensors(graph)
    missing = [name for node in graph.node for name in node.output if name and name not in sizes | constants]
    if missing:  # shapes computed at run time (a chunk's Slice bounds): one run of the model gives them
        sizes.update(_run_sizes(model, missing))
    params = sum(sizes.get(name, 0) for name in constants if _is_parameter(*constants[name]))
    return Footprint(params, _peak_bytes(graph, sizes, set(constants)))


def _tensor_bytes(graph: Any) -> dict[str, int]:
    """Bytes of every tensor whose shape and type are known (values, inputs, outputs, initializers)."""
    import onnx
    from onnx import helper

    sizes: dict[str, int] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if None in dims or not tensor_type.HasField("shape"):
            continue
        sizes[info.name] = _product(dims) * helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
    for init in graph.initializer:
        sizes[init.name] = _product(init.dims) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = node.attribute[0].t
            sizes[node.output[0]] = _product(value.dims) * helper.tensor_dtype_to_np_dtype(value.data_type).itemsize
    return sizes


def _run_sizes(model: Any, names: list[str]) -> dict[str, int]:
    """Bytes of ``names`` from one onnxruntime run on zeros, each exposed as a graph output."""
    import numpy as np
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], _NP_TYPES.get(i.type, np.float32))
             for i in session.get_inputs()}
    values = session.run(names, feeds)
    return {name: int(np.asarray(value).nbytes) for name, value in zip(names, values)}


_NP_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
             "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def _constant_tensors(graph: Any) -> dict[str, tuple[int, int]]:
    """Constant tensor names -> (element type, rank): initializers, Constant outputs, outputs of constants alone
    (type 0 for those, except an ``Identity`` copy, which keeps its source's)."""
    constants = {init.name: (init.data_type, len(init.dims)) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = node.attribute[0].t
            constants[node.output[0]] = (value.data_type, len(value.dims))
        elif node.op_type in SHAPE_OPS or (node.input and all(not name or name in constants for name in node.input)):
            for name in node.output:
                constants[name] = constants[node.input[0]] if node.op_type == "Identity" else (0, 0)
    return constants


def _is_parameter(data_type: int, rank: int) -> bool:
    """Whether a constant counts as a parameter: a floating-point tensor of rank >= 1 (shape constants are
    int64; scalars such as a Clip's bounds are attributes of the kernel a runtime runs)."""
    import onnx

    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    return rank >= 1 and data_type in floats


def _peak_bytes(graph: Any, sizes: dict[str, int], constants: set[str]) -> int:
    buffers = _live_buffers(graph, sizes, constants)
    steps = max(len(graph.node), 1)
    return max(sum(b.size for b in buffers if b.born <= step <= b.dies) for step in range(steps))


def _live_buffers(graph: Any, sizes: dict[str, int], constants: set[str]) -> list[_Buffer]:
    """The activation buffers with the node index that makes each and the last that reads it."""
    owner: dict[str, _Buffer] = {}
    for info in graph.input:
        if info.name not in constants:
            owner[info.name] = _new_buffer(info.name, sizes, born=0)
    last_use = _last_uses(graph, constants)
    for step, node in enumerate(graph.node):
        inputs = [name for name in node.input if name and name not in constants]
        for name in inputs:
            owner[name].dies = max(owner[name].dies, step)
        for position, name in enumerate(node.output):
            if not name or name in constants:
                continue
            if position == 0 and node.op_type in ALIAS_OPS and inputs and node.input[0] == inputs[0]:
                shared: _Buffer | None = owner[inputs[0]]
            elif position == 0 and node.op_type in IN_PLACE_OPS:
                shared = next((owner[i] for i in inputs if sizes.get(name) == owner[i].size
                               and all(last_use[t] <= step for t in owner[i].tensors)), None)
            else:
                shared = None
            if shared is None:
                owner[name] = _new_buffer(name, sizes, born=step)
            else:
                owner[name] = shared
                shared.tensors.add(name)
    last = len(graph.node) - 1
    for info in graph.output:
        owner[info.name].dies = last
    unique = {id(b): b for b in owner.values()}
    for buffer in unique.values():
        buffer.dies = max(buffer.dies, buffer.born)
    return list(unique.values())


def _new_buffer(name: str, sizes: dict[str, int], born: int) -> _Buffer:
    if name not in sizes:
        raise HwnasError(f"onnx memory: tensor {name!r} has no inferred static shape; expected a static-shape model")
    return _Buffer(sizes[name], born, tensors={name})


def _last_uses(graph: Any, constants: set[str]) -> dict[str, int]:
    """Tensor -> index of the last node that reads it (past the end for a graph output)."""
    uses: dict[str, int] = {}
    for step, node in enumerate(graph.node):
        uses.update({name: step for name in node.input if name and name not in constants})
    uses.update({info.name: len(graph.node) for info in graph.output})
    return uses


def _product(dims: Any) -> int:
    total = 1
    for dim in dims:
        total *= int(dim)
    return total
