"""Split an ONNX graph into the kernels ONNX Runtime's CPU execution provider runs with all optimizations on.

The splitter replays ORT's own graph rewrites on the (shape-inferred) ONNX graph, in ORT's order, one module a step:

1. :mod:`.onnx_graph`: static shapes and constants; shape arithmetic on static shapes is folded and costs nothing.
2. :mod:`.fusion`: the level-1/2 rewrites (``Identity``/``Dropout`` vanish, Conv + BatchNormalization,
   SiLU -> ``QuickGelu``, Conv + activation, ``HardSwish`` -> ``HardSigmoid`` + ``Mul``, Slices -> ``Split``).
3. :mod:`.nchwc`: the NCHWc layout transformer (x86 with AVX2/AVX-512): which kernels run on the blocked layout,
   what fuses into a blocked conv, and the ``ReorderInput``/``ReorderOutput`` between the two layouts.

The result was checked against the optimized graph that ORT 1.32 writes (``optimized_model_filepath``) for the
zoo networks and ProxylessNAS architectures (tests/test_kernels.py). Each kernel is a frozen :class:`Kernel`
(:mod:`.record`) with one canonical key, e.g.
``dwconv-op:nchwc.Conv-in:72x56x56-out:72x28x28-k:5-s:2-g:72-act:Relu-sum:0-n:1-b:0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError
from hwnas.latency.kernels.fusion import fuse
from hwnas.latency.kernels.nchwc import NchwcLayout
from hwnas.latency.kernels.onnx_graph import OnnxGraph
from hwnas.latency.kernels.record import Kernel, nchwc_block_size


def split_onnx(path: str | Path, block: int | None = None) -> list[Kernel]:
    """The kernels ORT (CPU EP, all optimizations) runs for the ``.onnx`` file at ``path``, in execution order."""
    return split_model(read_onnx(path), block, str(path))


def read_onnx(path: str | Path) -> Any:
    """The ``onnx.ModelProto`` of ``path``; a missing, unreadable, empty or non-ONNX file raises one line."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise HwnasError(f"{path}: not a readable ONNX model ({exc.__class__.__name__})") from None
    if not model.ir_version or not model.graph.output:
        # protobuf parses an empty file (and some other bytes) as an empty message: a "model" of no graph,
        # which would be predicted as the runtime's overhead alone
        what = "an empty file" if path.stat().st_size == 0 else "no ONNX IR version or no graph output"
        raise HwnasError(f"{path}: not an ONNX model ({what})")
    return model


def split_model(model: Any, block: int | None = None, source: str = "model") -> list[Kernel]:
    """:func:`split_onnx` on a loaded ``onnx.ModelProto`` (batch dimensions are set to 1)."""
    block = nchwc_block_size() if block is None else block
    graph = static_graph(model, source)
    return NchwcLayout(graph, fuse(graph), block).run()


def static_graph(model: Any, source: str = "model") -> OnnxGraph:
    """The :class:`OnnxGraph` of ``model`` with batch dimensions set to 1 and ONNX shape inference run."""
    import onnx

    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and others
        raise HwnasError(f"{source}: ONNX shape inference failed ({exc.__class__.__name__})") from None
    return OnnxGraph(model, source)
