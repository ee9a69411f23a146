"""TFLite artifact through litert-torch (no TensorFlow): fp32, fp16 weights, or full-integer int8.

* ``fp32``: :func:`hwnas.runtimes.converters.to_tflite`, the converter latency tables are measured through.
* ``fp16``: the fp32 file with every conv/fully-connected weight cast to float16 by ai-edge-quantizer's
  ``float_casting`` algorithm (weight-only: a DEQUANTIZE op feeds fp32 compute; half the weight bytes).
* ``int8``: PyTorch 2 export (PT2E) post-training quantization with litert-torch's ``PT2EQuantizer``:
  per-channel symmetric int8 weights, per-tensor affine int8 activations whose ranges a ``HistogramObserver``
  picks on calibration batches, then ``litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=...))``
  lowers the Q/DQ graph to integer TFLite kernels. The model's input and output tensors are int8 too (their
  scale and zero point are in the file): what an integer-only accelerator needs. Chosen over ai-edge-quantizer's
  ``static_wi8_ai8`` recipe on the fp32 file, whose calibration keeps a moving average of per-batch min/max
  and so clipped the logits of trained networks (several times larger errors; ``docs/export.md``).

With ``nhwc`` the input (and any rank >= 3 output) is channel-last (``litert_torch.to_channel_last_io``).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.io import first_line, write_bytes_atomic
from hwnas.runtimes import converters


def export_tflite(module: nn.Module, input_shape: Sequence[int], path: Path, *, precision: str, nhwc: bool,
                  calibration: Iterable[np.ndarray] = ()) -> Path:
    """Write ``path`` at ``precision``; ``calibration`` (NCHW float32 batches) is used for int8 only."""
    path = Path(path)
    if precision == "fp32":
        return converters.to_tflite(module, input_shape, path, channel_last_io=nhwc)
    if precision == "fp16":
        with tempfile.TemporaryDirectory(prefix="hwnas-fp16-") as tmp:
            fp32 = converters.to_tflite(module, input_shape, Path(tmp) / "fp32.tflite", channel_last_io=nhwc)
            return cast_weights_fp16(fp32, path)
    if precision == "int8":
        return quantize_int8(module, input_shape, path, nhwc=nhwc, calibration=calibration)
    raise HwnasError(f"tflite: precision must be fp32, fp16 or int8, got {precision!r}")


def cast_weights_fp16(fp32_path: Path, path: Path) -> Path:
    """Copy of a float ``.tflite`` with conv/fully-connected weights stored as float16."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    quant = quantizer.Quantizer(str(fp32_path))
    quant.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
    with converters.silenced_native_output():
        result = quant.quantize(enable_progress_report=False)
    write_bytes_atomic(path, bytes(result.quantized_model))
    return path


def quantize_int8(module: nn.Module, input_shape: Sequence[int], path: Path, *, nhwc: bool,
                  calibration: Iterable[np.ndarray]) -> Path:
    """Full-integer int8 ``.tflite`` by PT2E post-training quantization (see the module docstring)."""
    batches = [np.asarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise HwnasError("tflite int8: post-training quantization needs calibration batches, got none")
    try:
        with converters.silenced_native_output():
            import litert_torch
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as error:
        raise RuntimeUnavailable(f"int8 TFLite export needs litert-torch (and torchao): pip install 'hwnas[tflite]' "
                                 f"({first_line(error)})") from error

    example = converters.example_input(input_shape)
    model = module.eval()
    if nhwc:
        model = litert_torch.to_channel_last_io(module, args=[0]).eval()
        example = _nhwc(example)
        batches = [_nhwc(b) for b in batches]
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    try:
        with converters.silenced_native_output():
            graph, batch_size = _export_for_calibration(model, example)
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for chunk in _chunks(batches, batch_size):
                    prepared(torch.from_numpy(chunk))
            quantized = convert_pt2e(prepared, fold_quantize=False)
            edge = litert_torch.convert(quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
            with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
                edge.export(str(Path(tmp) / "int8.tflite"))
                write_bytes_atomic(path, (Path(tmp) / "int8.tflite").read_bytes())
    except HwnasError:
        raise
    except Exception as error:  # torch.export, PT2E and the converter raise many types
        raise HwnasError(f"{path}: int8 quantization failed: {type(error).__name__}: "
                         f"{first_line(error)}") from error
    return path


def tflite_io(path: Path) -> dict[str, Any]:
    """Shape, dtype and (for integer tensors) scale/zero point of the model's input and output."""
    from ai_edge_litert.interpreter import Interpreter

    with converters.silenced_native_output():
        interpreter = Interpreter(model_path=str(path))

    def describe(detail: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {"name": detail["name"], "shape": [int(d) for d in detail["shape"]],
                                "dtype": np.dtype(detail["dtype"]).name}
        if np.issubdtype(np.dtype(detail["dtype"]), np.integer):
            scale, zero_point = detail["quantization"]
            info.update(scale=float(scale), zero_point=int(zero_point))
        return info

    return {"input": describe(interpreter.get_input_details()[0]),
            "output": describe(interpreter.get_output_details()[0])}


def _export_for_calibration(model: nn.Module, example: torch.Tensor) -> tuple[Any, int | None]:
    """The ``torch.export`` graph to insert observers into.

    Strict (TorchDynamo) export first: it records each node's source module/function (``source_fn_stack``),
    which the quantizer's pattern matching needs; without it the residual adds are not annotated and stay float
    between DEQUANTIZE/QUANTIZE ops (slower than fp32 on XNNPACK). A dynamic batch lets calibration run whole
    batches (observers cost per call, not per image); a graph that specialises on the batch size is
    calibrated at the export batch instead.
    """
    batch = torch.export.Dim("batch", min=1, max=4096)
    pair = torch.cat([example, example])
    attempts = [((pair,), {"dynamic_shapes": ({0: batch},)}, None), ((example,), {}, int(example.shape[0]))]
    for strict in (True, False):
        for args, kwargs, batch_size in attempts:
            with contextlib.suppress(Exception):
                return torch.export.export(model, args, strict=strict, **kwargs).module(), batch_size
    return torch.export.export(model, (example,)).module(), int(example.shape[0])  # raises the real error


def _chunks(batches: list[np.ndarray], size: int | None) -> Iterable[np.ndarray]:
    """The batches as they are (dynamic batch), or cut into whole batches of ``size`` (static batch)."""
    for batch in batches:
        if size is None:
            yield np.ascontiguousarray(batch)
            continue
        for start in range(0, len(batch) - size + 1, size):
            yield np.ascontiguousarray(batch[start:start + size])


def _nhwc(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.permute(0, *range(2, batch.ndim), 1).contiguous()
    return np.ascontiguousarray(np.transpose(batch, (0, *range(2, batch.ndim), 1)))
