"""hwnas: hardware-aware neural architecture search.

The Python API (:mod:`hwnas.api`), loaded on first use so that ``import hwnas`` stays cheap (no torch)::

    device = hwnas.load_device("cpu-onnxruntime")
    space = hwnas.get_space("proxyless", 32, num_classes=10)
    table = hwnas.profile(device, space)                          # -> LatencyTable
    train = hwnas.measure(device, space, n=24, out="set.json")    # -> MeasurementSet
    predictor = hwnas.fit_predictor(train, table=table)           # -> Predictor; predictor.predict(arch)
    result = hwnas.search(device, space, latency_model=predictor, out="runs/s1")   # -> SearchResult
    report = hwnas.export(result, "runs/s1/export", formats="onnx")               # -> ExportReport

``hwnas.search`` and ``hwnas.export`` are also the packages of those layers (``hwnas.search.run``,
``hwnas.export.pipeline``): calling the package calls the API function of its name.

Pipeline layers (data flows one way): ops -> spaces -> runtimes -> latency -> search -> export, with ``cli`` and
``api`` the only places that know all of them. At the bottom, used by every layer: ``errors`` (the one-line error
types), ``io`` (atomic writes, strict JSON, first line of an error), ``checks`` (one way to check configs and JSON
files), ``locations`` (shipped data, the user's data folder, the cache) and ``outputs`` (output folders checked
before work starts). ``devices`` loads device profiles; ``zoo`` holds reference CNNs outside every space.
"""

from __future__ import annotations

import importlib
import types

TYPE_CHECKING = False  # typing itself is not imported: it is most of what `import hwnas` would cost

__version__ = "0.1.0"

# name -> the module that defines it (imported on first access: torch comes with most of them)
_LAZY = {
    **dict.fromkeys(("load_device", "get_space", "profile", "measure", "fit_predictor", "load_predictor",
                     "predictor_names", "SearchResult", "ExportReport"), "hwnas.api"),
    "HwnasError": "hwnas.errors",
    "DeviceProfile": "hwnas.devices",
    "Architecture": "hwnas.spaces", "SearchSpace": "hwnas.spaces",
    "LatencyTable": "hwnas.latency.table",
    "MeasurementSet": "hwnas.latency.sets",
    "Predictor": "hwnas.latency.predictors", "Prediction": "hwnas.latency.predictors.prediction",
    "SearchConfig": "hwnas.search.run_config",
    "ExportConfig": "hwnas.export",
}
_CALLABLE_PACKAGES = ("search", "export")  # subpackages that are also the API function of their name

__all__ = [
    "__version__", "load_device", "get_space", "profile", "measure", "fit_predictor", "load_predictor",
    "predictor_names", "search", "export", "SearchResult", "ExportReport", "HwnasError", "DeviceProfile",
    "Architecture", "SearchSpace", "LatencyTable", "MeasurementSet", "Predictor", "Prediction", "SearchConfig",
    "ExportConfig",
]

if TYPE_CHECKING:
    from typing import Any

    from hwnas.api import (ExportReport, SearchResult, fit_predictor, get_space, load_device, load_predictor, measure,
                           predictor_names, profile)
    from hwnas.api import export as export
    from hwnas.api import search as search
    from hwnas.devices import DeviceProfile
    from hwnas.errors import HwnasError
    from hwnas.export import ExportConfig
    from hwnas.latency.predictors import Predictor
    from hwnas.latency.predictors.prediction import Prediction
    from hwnas.latency.sets import MeasurementSet
    from hwnas.latency.table import LatencyTable
    from hwnas.search.run_config import SearchConfig
    from hwnas.spaces import Architecture, SearchSpace


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # found directly from now on
        return value
    if name in _CALLABLE_PACKAGES:
        return importlib.import_module(f"{__name__}.{name}")  # the import binds it here
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _CallablePackage(types.ModuleType):
    """A layer's package that is also the API function of its name: ``hwnas.search(...)`` calls
    :func:`hwnas.api.search`, while ``hwnas.search.run`` (and every import of it) is still the module."""

    def _function(self) -> Any:
        return getattr(importlib.import_module("hwnas.api"), self.__name__.rpartition(".")[2])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function()(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature(hwnas.search) shows the function's
        import inspect

        return inspect.signature(self._function())


def callable_package(module_name: str) -> None:
    """Make the package ``module_name`` (``hwnas.search``, ``hwnas.export``) callable as its API function; called
    by the package's ``__init__``."""
    import sys

    sys.modules[module_name].__class__ = _CallablePackage
