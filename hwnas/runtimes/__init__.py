"""Runtimes (backends), registered by name in :data:`hwnas.registry.RUNTIMES` (another package adds one with
:func:`register_runtime`) and imported lazily so that a missing optional runtime never breaks ``import hwnas``.

- ``base``: the backend interface (:class:`Runtime`, :class:`PreparedModel`), option resolution over each backend's
  ``default_options``, and the ``perf_counter`` timing loop;
- one module per backend: ``torch_rt``, ``onnxruntime_rt``, ``litert_rt``, ``tensorrt_rt``, ``adb_rt`` (with
  ``benchmark_model``, the parser of what the phone prints);
- ``converters``: module -> ``.onnx``/``.tflite``, shared with export; ``fingerprint``: machine and runtime identity;
- ``protocol``: the timing protocol and :class:`~hwnas.runtimes.protocol.Stats`; ``paired``: timing against a
  reference network.
"""

from __future__ import annotations

from pathlib import Path

from hwnas.errors import RuntimeUnavailable
from hwnas.registry import RUNTIMES, register_runtime
from hwnas.runtimes.base import PreparedModel, Runtime, RuntimeConfig


def runtime_names() -> list[str]:
    """The registered backends: the built-ins (see :data:`hwnas.registry.RUNTIMES`) and those plugins add."""
    return RUNTIMES.names()


def runtime_class(name: str) -> type[Runtime]:
    """The backend's class, its module imported now (it imports its runtime library only inside methods)."""
    return RUNTIMES.get(name)


def get_runtime(name: str, config: RuntimeConfig, workdir: Path) -> Runtime:
    """Instantiate a runtime; :class:`RuntimeUnavailable` (one line, naming the extra) when it can't run here."""
    cls = runtime_class(name)
    reason = cls.unavailable_reason(config)
    if reason is not None:
        raise RuntimeUnavailable(reason)
    return cls(config, workdir)


__all__ = ["PreparedModel", "Runtime", "RuntimeConfig", "get_runtime", "register_runtime", "runtime_class",
           "runtime_names"]
