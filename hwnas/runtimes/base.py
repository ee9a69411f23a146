"""The backend interface: prepare a model for a runtime, time it, describe the runtime for a fingerprint.

A :class:`Runtime` turns an ``nn.Module`` (or an existing ``.onnx``/``.tflite`` file) into a
:class:`PreparedModel` that runs one synchronous batch-1 inference per :meth:`PreparedModel.run` call on
fixed random inputs. The timing protocol (warm-up, rounds, statistics, noise handling) lives in
:mod:`hwnas.runtimes.protocol` and only uses :meth:`PreparedModel.time_runs`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from torch import nn

from hwnas.errors import HwnasError
from hwnas.runtimes.interruptions import TimedRuns, WaitSource, is_disturbed, thread_waits


@dataclass(frozen=True)
class RuntimeConfig:
    """How a runtime is set up on a device (from the device profile)."""

    threads: int = 1
    device: str = "cpu"  # "cpu", "cuda", or "android"
    precision: str = "fp32"  # "fp32", "fp16", "int8"
    options: dict[str, Any] = field(default_factory=dict)  # runtime-specific, e.g. {"xnnpack": True}


class PreparedModel(ABC):
    """A model loaded in a runtime, with fixed inputs, ready to be invoked."""

    @abstractmethod
    def run(self) -> None:
        """One synchronous inference (returns when the result is ready)."""

    def time_runs(self, n: int) -> list[float]:
        """Time ``n`` consecutive invocations; seconds per invocation.

        The default brackets :meth:`run` with ``time.perf_counter`` through :func:`time_calls`, which also records
        which runs were interrupted (CPU runtimes override it with their own call, through :func:`time_calls` too);
        GPU runtimes override it with device events and report no interruptions.
        """
        return time_calls(self.run, n)

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Run on given NCHW float32 inputs and return the first output (for numerics checks)."""
        raise NotImplementedError(f"{type(self).__name__} does not support infer()")

    def close(self) -> None:
        """Release runtime resources (sessions, interpreters, engines)."""


class Runtime(ABC):
    """One backend. Subclasses set ``name``, ``extra`` (the pip extra that installs it) and ``default_options``.

    ``default_options`` are the ``[options]`` of a device profile the backend understands, with their defaults;
    :attr:`options` holds them resolved by :meth:`_resolve_options` (a backend whose options need more than a
    type check overrides it).
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    default_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, config: RuntimeConfig, workdir: Path) -> None:
        threads = config.threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise HwnasError(f"{self.name} runtime: threads must be a positive integer, got {threads!r}")
        self.config = config
        self.workdir = Path(workdir)
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # under HWNAS_CACHE, which may be a file or read-only
            raise HwnasError(f"{self.workdir}: cannot create the folder for converted models ({exc.strerror or exc}); "
                             "set HWNAS_CACHE to a folder you can write") from None
        self.options = self._resolve_options(config.options)

    def _resolve_options(self, options: Mapping[str, Any]) -> Any:
        """The options this runtime runs with: :func:`resolve_options` of ``options`` over ``default_options``."""
        return resolve_options(self.name, options, self.default_options)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> Any:
        """The options resolved as :meth:`_resolve_options` does, without a runtime: a device file's ``[options]``
        are checked when it is read, on a machine where the runtime library may be missing (backends import it
        only inside their methods). Every backend's ``_resolve_options`` reads only class attributes, so it runs
        on a bare instance, and its one-line :class:`HwnasError` is the answer."""
        return object.__new__(cls)._resolve_options(options)

    def _description(self, versions: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The fingerprint fields of :meth:`describe` (``options``: the resolved ones unless given)."""
        versions = {name: None if v is None else str(v) for name, v in versions.items()}  # torch's: a TorchVersion
        return {"runtime": self.name, "versions": versions, "threads": self.config.threads,
                "device": self.config.device, "precision": self.config.precision,
                "options": dict(self.options if options is None else options)}

    def _model_file(self, path: Path | str, suffix: str, verb: str = "loads") -> Path:
        """``path`` as a Path, after checking it has ``suffix`` and exists (one-line errors otherwise)."""
        path = Path(path)
        if path.suffix != suffix:
            got = path.suffix or "no suffix"
            raise HwnasError(f"{path}: the {self.name} runtime {verb} {suffix} files, got {got!r}")
        if not path.is_file():
            raise HwnasError(f"{path}: model file not found")
        return path

    @classmethod
    @abstractmethod
    def unavailable_reason(cls, config: RuntimeConfig) -> str | None:
        """None when this runtime can run ``config`` here, else one line saying why (and what to install)."""

    @abstractmethod
    def prepare(self, module: nn.Module, input_shape: Sequence[int], name: str) -> PreparedModel:
        """Convert an eval-mode module for this runtime (writing any artifact under ``workdir/name``) and load it."""

    def prepare_many(self, items: Sequence[tuple[str, nn.Module, Sequence[int]]]) -> dict[str, PreparedModel]:
        """Prepare several models; runtimes with a slow converter override this to convert in one batch."""
        return {name: self.prepare(module, shape, name) for name, module, shape in items}

    def prepare_file(self, path: Path) -> PreparedModel:
        """Load an existing model file (``.onnx``, ``.tflite``) for this runtime."""
        raise NotImplementedError(f"runtime {self.name} cannot load {Path(path).suffix} files")

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Runtime name, library versions, threads, precision and options, for the table fingerprint."""


def time_calls(call: Callable[..., object], n: int, *args: object, clock: Callable[[], float] = time.perf_counter,
               waits: WaitSource | None = None) -> TimedRuns:
    """Seconds taken by each of ``n`` consecutive ``call(*args)``, each bracketed by ``clock``, and whether each
    run was interrupted (:mod:`hwnas.runtimes.interruptions`).

    The counters are read once before the first run and once after each (outside the bracket), so detection adds
    wall time between runs, never measured time. ``waits`` (default: :func:`thread_waits` of the calling thread)
    and ``clock`` are the seam a test scripts.
    """
    source = thread_waits() if waits is None else waits
    times, disturbed, waited = [], [], []
    try:
        reading = source.read()
        for _ in range(n):
            start = clock()
            call(*args)
            times.append(clock() - start)
            after = source.read()
            flag, wait_s = is_disturbed(reading, after)
            disturbed.append(flag)
            waited.append(wait_s)
            reading = after
    finally:
        if waits is None:
            source.close()
    return TimedRuns(times, disturbed, waited, source.detection)


def resolve_options(runtime: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The options a runtime really uses: ``defaults`` updated with ``options``, each of its default's type.

    Fingerprints store the resolved options, so a profile that spells out a default matches one that omits it.
    """
    for key, value in options.items():
        if key not in defaults:
            raise HwnasError(f"{runtime} runtime: unknown option {key!r} (expected one of {', '.join(defaults)})")
        expected = type(defaults[key])
        if type(value) is not expected:
            raise HwnasError(f"{runtime} runtime: option {key!r} must be a {expected.__name__}, got {value!r}")
    return {**defaults, **options}
