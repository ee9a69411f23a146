"""An ONNX graph as the splitter reads it: static shapes, constants, attributes, inputs and outputs.

ORT folds whatever is computed from constants and static shapes (``Shape``, ``Size`` and arithmetic on them), so
such tensors count as constants here. Shapes that ONNX shape inference leaves open (e.g. Slices with computed
bounds) come from one unoptimized ORT run of the model with those tensors as extra outputs.
"""

from __future__ import annotations

from typing import Any

from hwnas.errors import HwnasError


class OnnxGraph:
    """Shapes, constants, attributes and graph inputs/outputs of a shape-inferred ``onnx.ModelProto``."""

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
