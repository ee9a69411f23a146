"""The run half of the API: a latency-targeted search with any latency model, and the export of its result."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hwnas.api._checks import (argument_error, check_choice, check_options, check_path, device_profile,
                               python_errors)
from hwnas.api.results import ExportReport, SearchResult
from hwnas.errors import HwnasError

if TYPE_CHECKING:
    from hwnas.devices import DeviceProfile
    from hwnas.search.run_config import SearchConfig
    from hwnas.spaces import Architecture, SearchSpace

_SEARCH_ARGUMENTS = ("device", "space", "resolution", "target_ms", "data", "out", "table", "device_threads")


@python_errors
def search(device: DeviceProfile | str | None = None, space: SearchSpace | str = "proxyless", *,
           resolution: int | None = None, target_ms: float | None = None, latency_model: Any = None,
           data: str | Path | None = None, out: str | Path | None = None, table: Any = None,
           config: SearchConfig | Mapping[str, Any] | str | Path | None = None, progress: bool = False,
           **options: Any) -> SearchResult:
    """Search ``space`` for the most accurate network whose latency on ``device`` meets ``target_ms``; train it,
    measure it, write the run folder ``out``, and return the result.

    Args:
        device: a device profile, name or ``.toml`` path (None: ``cpu-onnxruntime``).
        space: a space name, or a :class:`SearchSpace` (its name and resolution; the data set decides the head).
        resolution: the input resolution (None: the config's, 32 by default).
        target_ms: the latency target (None: 40% of the way from the fastest to the slowest architecture).
        latency_model: what the search aims with: any predictor (:func:`hwnas.fit_predictor`,
            :func:`hwnas.load_predictor`), or a predictor's path or name (None: ``config.predictor``, by default
            the device's calibrated predictor or one built from measured networks).
        data: ``digits`` (None, embedded), a CIFAR folder or an ImageFolder tree.
        table: a :class:`LatencyTable` or its path (None: the device's table, profiled where it lacks ops).
        config: a :class:`SearchConfig`, a dict of its fields, or a JSON/TOML file of them.
        progress: progress on stderr.
        **options: any other :class:`SearchConfig` field (``search_epochs=2``, ``strategy="mnas"``, ...).
    """
    from hwnas.outputs import check_run_folder
    from hwnas.search.run import run_search

    base = _search_config(config)
    check_options("search", options, type(base), taken=_SEARCH_ARGUMENTS)
    given = {**_device_fields(device), **_space_fields(space, resolution), "target_ms": target_ms,
             "data": None if data is None else str(check_path("search", "data", data)),
             "out": None if out is None else str(check_path("search", "out", out)), "table": _table_path(table)}
    config = base.with_overrides({**{k: v for k, v in given.items() if v is not None}, **options}, "search")
    model = _latency_model(latency_model)
    if model is not None and config.predictor != "auto":
        raise HwnasError(f"search: latency_model: given together with predictor={config.predictor!r}; give one of "
                         "them")
    if config.out is not None:
        check_run_folder(config.out, "search: out")  # worded for this call; the run checks it again
    return SearchResult.from_summary(run_search(config, progress=bool(progress), latency_model=model))


def _search_config(config: Any) -> SearchConfig:
    from hwnas.search.run_config import SearchConfig

    if config is None or isinstance(config, SearchConfig):
        return config or SearchConfig()
    if isinstance(config, Mapping):
        return SearchConfig().with_overrides(dict(config), "search: config")
    if isinstance(config, (str, Path)):
        return SearchConfig.from_file(config)
    raise argument_error("search", "config", "a SearchConfig, a dict of its fields or a .json/.toml file", config)


def _device_fields(device: Any) -> dict[str, Any]:
    """``device`` and ``device_threads`` of the config: a profile is searched on through its file, which must say
    what the object says (the threads aside), since the run records and reloads the device by path."""
    from hwnas.devices import DeviceProfile, load_device

    if device is None:
        return {}
    profile = device_profile("search", device)
    if not isinstance(device, DeviceProfile):
        return {"device": str(device)}
    if profile.path is None or load_device(str(profile.path)) != dataclasses.replace(profile,
                                                                                    threads=profile.default_threads):
        raise HwnasError(f"search: device: the DeviceProfile {profile.name!r} was made or changed in code; write it "
                         "to a .toml file and pass its path (or add it with `hwnas devices add`)")
    return {"device": str(profile.path), "device_threads": profile.threads if profile.threads_overridden else None}


def _space_fields(space: Any, resolution: Any) -> dict[str, Any]:
    from hwnas.spaces import SearchSpace

    if isinstance(space, SearchSpace):
        if resolution is not None and resolution != space.resolution:
            raise HwnasError(f"search: resolution: {resolution} differs from the space's {space.resolution}; give "
                             "one of them")
        return {"space": space.name, "resolution": space.resolution}
    if not isinstance(space, str):
        raise argument_error("search", "space", "a space name or a SearchSpace", space)
    return {"space": space, "resolution": resolution}


def _table_path(table: Any) -> str | None:
    from hwnas.latency.table import LatencyTable

    if table is None:
        return None
    if isinstance(table, LatencyTable):
        if table.path is None:
            raise HwnasError("search: table: the LatencyTable has no file; save it first (table.save(path))")
        return str(table.path)
    return str(check_path("search", "table", table))


def _latency_model(model: Any) -> Any:
    """A predictor or estimator object as given; a path or name loaded as a predictor."""
    from hwnas.api.latency import load_predictor
    from hwnas.latency.estimator import LatencyEstimator
    from hwnas.latency.predictors import Predictor

    if model is None or isinstance(model, (Predictor, LatencyEstimator)):
        return model
    if isinstance(model, (str, Path)):
        return load_predictor(model)
    raise argument_error("search", "latency_model", "a predictor (hwnas.fit_predictor, hwnas.load_predictor), a "
                         "LatencyEstimator, or a predictor's path or name", model)


@python_errors
def export(source: SearchResult | Architecture | str | Path, out: str | Path, *,
           formats: str | Sequence[str] = ("onnx", "tflite"), precision: str = "fp32", device: str | None = None,
           allow_missing: bool = False, **options: Any) -> ExportReport:
    """Export ``source`` to ``formats``, verify every artifact against PyTorch and measure it on its device.

    Args:
        source: a :class:`SearchResult` (its run folder), a run folder, a ``model.pt``, an architecture ``.json``,
            or an :class:`Architecture` (written to ``out/arch.json``; random weights, for latency work).
        out: the output folder (``export.json`` and the artifacts).
        formats: ``onnx``, ``tflite``, ``tensorrt``, as a list or ``"onnx,tflite"``.
        precision: ``fp32``, ``fp16`` or ``int8`` (TFLite and TensorRT; ONNX is fp32).
        device: the device profile to measure the format its backend loads on (others: their default devices).
        allow_missing: accept a TensorRT engine that cannot be built here (else :class:`~hwnas.errors.ArtifactMissing`).
        **options: any other :class:`~hwnas.export.ExportConfig` field (``batch``, ``opset``, ``random_weights``, ...).
    """
    from hwnas.errors import ArtifactMissing
    from hwnas.export import ExportConfig, export_model
    from hwnas.export.config import FORMATS, PRECISIONS
    from hwnas.outputs import check_out_folder

    wanted = tuple(f.strip() for f in formats.split(",")) if isinstance(formats, str) else formats
    if not isinstance(wanted, (list, tuple)) or not wanted:
        raise argument_error("export", "formats", f"a non-empty list of {', '.join(FORMATS)}", formats)
    for name in wanted:
        check_choice("export", "formats", name, FORMATS)
    check_choice("export", "precision", precision, PRECISIONS)
    check_options("export", options, ExportConfig, taken=("formats", "precision", "device"))
    config = ExportConfig(formats=tuple(wanted), precision=precision, device=device, **options)
    folder = check_out_folder(check_path("export", "out", out), "export: out")
    result = export_model(_export_source(source, folder), folder, config)
    engine = result.get("tensorrt")
    if engine and not engine["engine_built"] and not allow_missing:
        raise ArtifactMissing(f"export: {engine['note']}; allow_missing=True accepts the export without it")
    return ExportReport.from_dict(result, folder)


def _export_source(source: Any, out: Path) -> Path:
    from hwnas.spaces import Architecture

    if isinstance(source, SearchResult):
        return source.out
    if isinstance(source, Architecture):
        out.mkdir(parents=True, exist_ok=True)
        return source.save(out / "arch.json")
    if isinstance(source, (str, Path)):
        return check_path("export", "source", source)
    raise argument_error("export", "source", "a SearchResult, an Architecture, a run folder, a model.pt or an "
                         "architecture .json", source)
