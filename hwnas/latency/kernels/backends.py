"""What a kernel predictor needs from one runtime: how it splits a network into kernels and runs one kernel alone.

A kernel predictor (nn-Meter's idea) is the same on every runtime: measure single kernels paired with a reference
network, fit a model per kernel type, correct on a few whole networks. What differs is the runtime's own view of a
network, so each CPU backend gives a :class:`KernelBackend`:

- ``onnxruntime``: ORT's level-1/2 fusions and NCHWc blocked layout replayed on the ONNX graph
  (:mod:`.onnx_split`); single kernels written as ORT's optimized nodes (:mod:`.generators`).
- ``litert``: the operators of the ``.tflite`` file, as XNNPACK runs them (:mod:`.litert_split`); single-operator
  ``.tflite`` files written directly (:mod:`.litert_models`); an ``.onnx`` file is split as the conversion would.
- ``torch``: the aten operators eager mode dispatches (:mod:`.torch_split`); single kernels as small modules
  (:mod:`.torch_models`); an ``.onnx`` file is split node by node as eager would run its graph.

:func:`kernel_backend` picks one by the runtime's name.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

from hwnas.errors import HwnasError
from hwnas.latency.kernels.record import Kernel
from hwnas.runtimes.base import PreparedModel, Runtime

KERNEL_BACKENDS = ("onnxruntime", "litert", "torch")


class KernelBackend(ABC):
    """One runtime's kernels: splitting networks and files, single-kernel models, and how kernels vary.

    Attributes:
        name: the runtime backend (``Runtime.name``).
        file_suffixes: model files :meth:`split_file` reads.
        free_types: kernel types that cost nothing inside a network (aliases): never measured, predicted 0.
    """

    name: ClassVar[str] = ""
    file_suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    free_types: ClassVar[tuple[str, ...]] = ("reshape",)

    def block(self) -> int:
        """The channel block the runtime pads to on this machine (ORT's NCHWc); 1 where it does not pad."""
        return 1

    @abstractmethod
    def split_file(self, path: Path, block: int) -> list[Kernel]:
        """The kernels the runtime runs for the model file at ``path``, in execution order (one-line errors)."""

    @abstractmethod
    def split_network(self, module: Any, input_shape: Sequence[int], directory: Path, name: str,
                      block: int) -> list[Kernel]:
        """The kernels the runtime runs for a torch module (converted as :meth:`prepare_network` converts it, files
        cached in ``directory`` under ``name``)."""

    @abstractmethod
    def prepare_network(self, runtime: Runtime, module: Any, input_shape: Sequence[int], directory: Path,
                        name: str) -> tuple[PreparedModel, str]:
        """The module prepared on ``runtime`` as a whole network, and the name of what was measured (a file's
        name, so that a stored measurement names the file it was made from)."""

    @abstractmethod
    def prepare_kernel(self, runtime: Runtime, kernel: Kernel, directory: Path, block: int) -> PreparedModel:
        """A model of ``kernel`` alone, prepared on ``runtime`` (its files may be written under ``directory`` and
        removed once loaded); the caller closes it."""

    @abstractmethod
    def neighbour(self, kernel: Kernel, rng: random.Random, block: int, h: int, c_in: int,
                  c_out: int) -> dict[str, Any] | None:
        """New fields for a random neighbour of ``kernel`` that the runtime runs the same way (``h``, ``c_in``,
        ``c_out`` are drawn already; the backend keeps what decides how its runtime runs the kernel), or None."""


def prepare_and_remove(runtime: Runtime, path: Path) -> PreparedModel:
    """``runtime.prepare_file(path)``, then the file removed: the loaded session or interpreter holds the model,
    and a build writes thousands of single-kernel files."""
    try:
        return runtime.prepare_file(path)
    finally:
        path.unlink(missing_ok=True)


_BACKENDS: dict[str, type[KernelBackend]] = {}


def register_backend(cls: type[KernelBackend]) -> type[KernelBackend]:
    _BACKENDS[cls.name] = cls
    return cls


def kernel_backend(name: str) -> KernelBackend:
    """The kernel backend of the runtime ``name`` (one line when hwnas cannot split that runtime's kernels)."""
    if name == "onnxruntime":
        import hwnas.latency.kernels.onnx_backend  # noqa: F401
    elif name == "litert":
        import hwnas.latency.kernels.litert_backend  # noqa: F401
    elif name == "torch":
        import hwnas.latency.kernels.torch_backend  # noqa: F401
    if name not in _BACKENDS:
        raise HwnasError(f"backend {name!r}: no kernel splitter (kernel predictors exist for "
                         f"{', '.join(KERNEL_BACKENDS)} on the CPU)")
    return _BACKENDS[name]()
