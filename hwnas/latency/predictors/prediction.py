"""What every predictor kind answers, and what it can be asked about.

``predictor.predict(model)`` takes any of the things a user holds: an :class:`~hwnas.spaces.Architecture` of a
search space, the path of an architecture ``.json``, of an ``.onnx`` or of a ``.tflite`` file, a loaded
``onnx.ModelProto``, or a torch module (with ``input_shape``). It answers a :class:`Prediction`: the latency and the
terms it is made of (one per searchable layer for a predictor of a space, one per kernel for the kernel predictor).
A kind that cannot read a kind of model says so in one line (:class:`~hwnas.errors.HwnasError`), never with a
traceback.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hwnas.errors import HwnasError
from hwnas.spaces import Architecture


@dataclass(frozen=True)
class Prediction:
    """One predicted latency.

    Attributes:
        ms: the predicted latency of one inference, in milliseconds (at the predictor's reference level).
        terms: what it is made of, in network order: ``{"type", "key", "ms"}`` per searchable layer (and the fixed
            part) for a predictor of a space, per kernel (with the kernel's shapes) for the kernel predictor.
        overhead_ms: the runtime's per-run fixed cost inside ``ms`` (0 where the kind does not separate it).
        kind: the predictor kind that answered.
    """

    ms: float
    terms: tuple[dict[str, Any], ...] = field(default=())
    overhead_ms: float = 0.0
    kind: str = ""

    def __float__(self) -> float:
        return float(self.ms)

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": float(self.ms), "overhead_ms": float(self.overhead_ms), "kind": self.kind,
                "terms": [dict(t) for t in self.terms]}


@dataclass(frozen=True)
class ModelInput:
    """A model to predict, normalized: an architecture, or an ONNX graph (read only when the kind reads ONNX), with
    the file or the torch module it came from (a kernel predictor of LiteRT or torch splits those itself)."""

    arch: Architecture | None
    onnx: Any | None
    source: str
    path: Path | None = None
    module: Any = None
    input_shape: tuple[int, ...] | None = None


def model_input(model: Any, *, input_shape: Sequence[int] | None = None, read_onnx: bool = True) -> ModelInput:
    """Normalize what :meth:`Predictor.predict` was given; one line for anything else.

    Args:
        read_onnx: read an ``.onnx`` path (or export a module) into an ``onnx.ModelProto``; a kind that predicts only
            architectures passes False and refuses ONNX models before any file is read.
    """
    if isinstance(model, ModelInput):  # normalized already: the CLI reads a file once, before it loads a predictor
        return model
    if isinstance(model, Architecture):
        return ModelInput(model, None, f"architecture of {model.space}@{model.resolution}")
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.suffix not in (".onnx", ".tflite", ".json"):
            raise HwnasError(f"{path}: expected an architecture .json, an .onnx or a .tflite file")
        if not path.is_file():
            raise HwnasError(f"{path}: no such {'architecture' if path.suffix == '.json' else 'model'} file")
        if path.suffix == ".json":
            return ModelInput(Architecture.load(path), None, str(path))
        if path.suffix == ".tflite":
            return ModelInput(None, None, str(path), path=path)
        return ModelInput(None, _read(path) if read_onnx else None, str(path), path=path)
    if type(model).__name__ == "ModelProto":
        return ModelInput(None, model, "onnx.ModelProto")
    import torch

    if isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise HwnasError(f"predict: a torch module ({type(model).__name__}) needs input_shape=(1, C, H, W) to be "
                             "exported and predicted")
        onnx = _export(model, input_shape) if read_onnx else None
        return ModelInput(None, onnx, type(model).__name__, module=model, input_shape=tuple(input_shape))
    raise HwnasError(f"predict: expected an Architecture, an .onnx, .tflite or architecture .json path, an "
                     "onnx.ModelProto or "
                     f"a torch module, got {type(model).__name__}")


def _read(path: Path) -> Any:
    from hwnas.latency.kernels.onnx_split import read_onnx

    return read_onnx(path)


def _export(module: Any, input_shape: Sequence[int]) -> Any:
    """The module exported as the runtimes export it (eval mode, static shapes), loaded back."""
    from hwnas.runtimes.converters import to_onnx

    with tempfile.TemporaryDirectory(prefix="hwnas-predict-") as tmp:
        return _read(to_onnx(module.eval(), tuple(input_shape), Path(tmp) / "model.onnx"))


def unsupported(kind: str, what: str, instead: str) -> HwnasError:
    """The one line a kind answers for a part of the protocol it does not have."""
    return HwnasError(f"a {kind} predictor {what}; {instead}")
