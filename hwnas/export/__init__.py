"""Export layer: writes deployable artifacts (ONNX, TFLite, TensorRT) through the runtimes' converters, verifies
every one against PyTorch and measures it on its device.

Entry point: :func:`export_model` (``hwnas export``); options live in :class:`ExportConfig`.
"""

from hwnas import callable_package
from hwnas.export.config import ExportConfig
from hwnas.export.pipeline import export_model, summary_text
from hwnas.export.source import Source, load_source

__all__ = ["ExportConfig", "Source", "export_model", "load_source", "summary_text"]

callable_package(__name__)  # hwnas.export(...) is hwnas.api.export(...); hwnas.export.pipeline stays a module
