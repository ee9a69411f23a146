"""Runtimes (backends), registered by name and imported lazily so that a missing optional runtime never
breaks ``import hwnas``.

- ``base``: the backend interface (:class:`Runtime`, :class:`PreparedModel`), option resolution over each backend's
  ``default_options``, and the ``perf_counter`` timing loop;
- one module per backend: ``torch_rt``, ``onnxruntime_rt``, ``litert_rt``, ``tensorrt_rt``, ``adb_rt`` (with
  ``benchmark_model``, the parser of what the phone prints);
- ``converters``: module -> ``.onnx``/``.tflite``, shared with export; ``fingerprint``: machine and runtime identity;
- ``protocol``: the timing protocol and :class:`~hwnas.runtimes.protocol.Stats`; ``paired``: timing against a
  reference network.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.runtimes.base import PreparedModel, Runtime, RuntimeConfig

# name -> "module:Class"; modules import their runtime library only inside methods.
_RUNTIMES: dict[str, str] = {
    "torch": "hwnas.runtimes.torch_rt:TorchRuntime",
    "onnxruntime": "hwnas.runtimes.onnxruntime_rt:OnnxRuntime",
    "litert": "hwnas.runtimes.litert_rt:LiteRTRuntime",
    "tensorrt": "hwnas.runtimes.tensorrt_rt:TensorRTRuntime",
    "adb": "hwnas.runtimes.adb_rt:AdbRuntime",
}


def runtime_names() -> list[str]:
    return list(_RUNTIMES)


def runtime_class(name: str) -> type[Runtime]:
    if name not in _RUNTIMES:
        raise HwnasError(f"unknown runtime {name!r}: expected one of {', '.join(_RUNTIMES)}")
    module_name, class_name = _RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_runtime(name: str, config: RuntimeConfig, workdir: Path) -> Runtime:
    """Instantiate a runtime; :class:`RuntimeUnavailable` (one line, naming the extra) when it can't run here."""
    cls = runtime_class(name)
    reason = cls.unavailable_reason(config)
    if reason is not None:
        raise RuntimeUnavailable(reason)
    return cls(config, workdir)


__all__ = ["PreparedModel", "Runtime", "RuntimeConfig", "get_runtime", "runtime_class", "runtime_names"]
