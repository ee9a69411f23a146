"""ONNX artifact: one self-contained static-shape file with BatchNorm folded, checked, with provenance metadata.

Conversion goes through :func:`hwnas.runtimes.converters.to_onnx` (the path latency tables are measured
through); this module adds the checks an exported network must pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from torch import nn

from hwnas.errors import HwnasError
from hwnas.io import first_line
from hwnas.runtimes import converters


def export_onnx(module: nn.Module, input_shape: Sequence[int], path: Path, *, opset: int, input_name: str,
                output_name: str, metadata: Mapping[str, str]) -> Path:
    """Write ``path`` and check it (see :func:`check_onnx`)."""
    converters.to_onnx(module, input_shape, path, opset=opset, input_name=input_name, output_name=output_name,
                       metadata=metadata)
    check_onnx(path, input_shape, opset, input_name, output_name)
    return Path(path)


def check_onnx(path: Path, input_shape: Sequence[int], opset: int, input_name: str, output_name: str) -> None:
    """``onnx.checker`` passes; no BatchNormalization node; the opset, the static input shape, the tensor names
    are as asked; every initializer is stored inside the file. Raises :class:`HwnasError` naming what is wrong."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise HwnasError(f"{path}: onnx.checker: {first_line(error)}") from None
    batch_norms = [node.name or node.op_type for node in model.graph.node if node.op_type == "BatchNormalization"]
    if batch_norms:
        raise HwnasError(f"{path}: {len(batch_norms)} BatchNormalization node(s) were not folded ({batch_norms[0]})")
    default_opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if default_opset != [opset]:
        raise HwnasError(f"{path}: opset {default_opset} instead of {opset}")
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if [i.name for i in inputs] != [input_name] or [o.name for o in model.graph.output] != [output_name]:
        raise HwnasError(f"{path}: tensors are {[i.name for i in inputs]} -> {[o.name for o in model.graph.output]}, "
                         f"expected [{input_name!r}] -> [{output_name!r}]")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if dims != list(input_shape):
        raise HwnasError(f"{path}: input shape {dims} is not the static {list(input_shape)}")
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise HwnasError(f"{path}: weights stored outside the file ({external[0]}); expected one self-contained file")
