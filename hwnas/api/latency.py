"""The latency half of the API: devices and spaces, tables, measurement sets and predictors, as objects.

Each function is what a CLI command does, without the printing: ``profile`` (``hwnas profile``), ``measure``
(``hwnas measure``), ``fit_predictor`` (``hwnas predictor fit``, returning the predictor instead of writing it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hwnas.api._checks import (argument_error, check_choice, check_int, check_optional_int, check_path,
                               check_protocol, device_profile, python_errors, search_space)
from hwnas.errors import HwnasError

if TYPE_CHECKING:
    from hwnas.devices import DeviceProfile
    from hwnas.latency.predictors import Predictor
    from hwnas.latency.sets import MeasurementSet
    from hwnas.latency.table import LatencyTable
    from hwnas.spaces import SearchSpace



@python_errors
def load_device(name_or_path: str | Path, *, threads: int | None = None) -> DeviceProfile:
    """A device profile by name (the user's, else the shipped one) or from a ``.toml`` file; ``threads`` overrides
    the profile's thread count (a table measured so is another table, as with ``--threads``)."""
    import dataclasses

    device = device_profile("load_device", name_or_path, "name_or_path")
    threads = check_optional_int("load_device", "threads", threads, 1)
    return device if threads is None else dataclasses.replace(device, threads=threads)


@python_errors
def get_space(name: str, resolution: int | None = None, *, num_classes: int | None = None) -> SearchSpace:
    """The search space ``name`` at ``resolution`` (None: the space's default) with a ``num_classes`` head."""
    from hwnas.spaces import get_space as make_space, space_names

    if not isinstance(name, str):
        raise argument_error("get_space", "name", f"a space name, one of {', '.join(space_names())}", name)
    resolution = check_optional_int("get_space", "resolution", resolution, 1)
    num_classes = check_optional_int("get_space", "num_classes", num_classes, 1)
    return make_space(name, resolution, num_classes)


@python_errors
def profile(device: DeviceProfile | str, space: SearchSpace, *, protocol: Mapping[str, Any] | None = None,
            out: str | Path | None = None, chunk: int = 12, progress: bool = False) -> LatencyTable:
    """Measure every op of ``space`` (its head included) that the table lacks, and return the table.

    Args:
        protocol: fields of the measurement protocol to change (:class:`~hwnas.runtimes.protocol.Protocol`).
        out: the table's file (None: ``$HWNAS_DATA/latency_tables/DEVICE__SPACE__RES.json``, found by every
            command); an existing table of the same device and protocol is completed, not replaced.
        progress: a progress bar on stderr.
    """
    from hwnas.latency.profile import ProfileConfig, profile_device
    from hwnas.latency.table import LatencyTable
    from hwnas.outputs import check_out_file

    device = device_profile("profile", device)
    space = search_space("profile", space)
    overrides = check_protocol("profile", "protocol", protocol)
    check_int("profile", "chunk", chunk, 1)
    path = check_out_file(check_path("profile", "out", out), "profile: out") if out is not None else None
    config = ProfileConfig(chunk=chunk, protocol_overrides=overrides, progress=bool(progress))
    return LatencyTable.load(profile_device(device, space, path, config).table)


@python_errors
def measure(device: DeviceProfile | str, space: SearchSpace, *, out: str | Path, n: int = 50, seed: int = 0,
            repeat: int = 10, protocol: Mapping[str, Any] | None = None, table: LatencyTable | str | Path | None = None,
            chunk: int = 8, progress: bool = False) -> MeasurementSet:
    """Measure ``n`` sampled networks of ``space`` end to end, each paired with the reference network, into the set
    file ``out`` (saved after every network: the same call resumes an interrupted set), and return the set.

    Args:
        repeat: networks measured a second time, for the set's noise floor (0: none).
        protocol: fields of the paired protocol to change (:class:`~hwnas.runtimes.paired.PairedProtocol`).
        table: the table whose estimates stratify the sample (None: the device's table covering the space, if any;
            else MACs).
    """
    from hwnas.latency.sets import MeasureConfig, MeasurementSet, measure_set
    from hwnas.outputs import check_out_file

    device = device_profile("measure", device)
    space = search_space("measure", space)
    counts = {name: check_int("measure", name, value, low) for name, value, low in
              (("n", n, 1), ("seed", seed, 0), ("repeat", repeat, 0), ("chunk", chunk, 1))}
    overrides = check_protocol("measure", "protocol", protocol, paired=True)
    proxy = _proxy(device, space, table)
    path = check_out_file(check_path("measure", "out", out), "measure: out")
    config = MeasureConfig(**counts, protocol=overrides, progress=bool(progress))
    return MeasurementSet.load(measure_set(device, space, path, config, proxy).path)


def _proxy(device: DeviceProfile, space: SearchSpace, table: Any) -> Any:
    """The table estimator that stratifies a set's sample: ``table``, else the device's covering table, else None."""
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.lookup import find_tables

    loaded = _table("measure", table) if table is not None else find_tables(device, space).covering
    if loaded is None or loaded.missing_keys(space):
        return None
    return TableEstimator(loaded, space)


def _table(function: str, table: Any) -> LatencyTable:
    """A :class:`LatencyTable`, or one read from a path or a name as ``hwnas tables`` lists it."""
    from hwnas.latency.lookup import table_file
    from hwnas.latency.table import LatencyTable

    if isinstance(table, LatencyTable):
        return table
    return LatencyTable.load(table_file(str(check_path(function, "table", table))))


@python_errors
def fit_predictor(measurements: Any, *, kind: str = "calibrated", table: LatencyTable | str | Path | None = None,
                  prior: str | Path | None = None, space: SearchSpace | None = None, column: str | None = None,
                  residual: str = "auto", seed: int = 0, allow_noisy: bool = False) -> Predictor:
    """A new predictor fitted on measured networks; nothing is written and the inputs are left as they were.

    Args:
        measurements: a :class:`~hwnas.latency.sets.MeasurementSet`, a set file, or a list of them (one device and
            space; brought to the first set's reference level); or a CSV file of the space's op names and latency
            ``column`` (HW-NAS-Bench's format), with ``space``.
        kind: ``calibrated`` (the table's sum plus a learned correction) or ``transfer`` (few-shot, with ``prior``:
            a CSV of other devices' measurements of the same space).
        table: for ``calibrated``, the table whose sum is corrected (None: the measured device's covering table).
        residual: ``linear``, ``xgb`` or ``auto`` (the trees when they help in cross-validation).
        allow_noisy: fit a set whose own re-measure agrees far below its runtime's, with one warning line on
            stderr (else refused: :mod:`hwnas.latency.set_noise`).
    """
    from hwnas.latency.predictors.fit import build_predictor

    from hwnas.latency.predictors.base import predictor_class, predictor_kinds

    check_choice("fit_predictor", "kind", kind, predictor_kinds())
    cls = predictor_class(kind)
    if not cls.fits_networks:
        raise HwnasError(f"fit_predictor: kind: a {kind} predictor does not learn from measured networks; "
                         f"{cls.how_to_fit}")
    if cls.needs_prior and prior is None:
        raise HwnasError(f"fit_predictor: prior: kind={kind!r} needs other devices' measurements of the space "
                         "(a CSV path), got None")
    if not cls.needs_prior and prior is not None:
        raise HwnasError(f"fit_predictor: prior: other devices' measurements are the prior of kind='transfer', "
                         f"not kind={kind!r}")
    prior_path = check_path("fit_predictor", "prior", prior) if prior is not None else None
    check_int("fit_predictor", "seed", seed)
    if not isinstance(allow_noisy, bool):
        raise argument_error("fit_predictor", "allow_noisy", "True or False", allow_noisy)
    table_obj = _table("fit_predictor", table) if table is not None else None
    sets, csv = _measurement_files(measurements, column)
    if csv is not None:
        space = search_space("fit_predictor", space)
    elif space is None:
        from hwnas.latency.sets import MeasurementSet

        space = MeasurementSet.load(sets[0]).space_obj()
    return build_predictor(space=search_space("fit_predictor", space), kind=kind, table=table_obj, sets=sets,
                           csv=csv, column=column, prior=prior_path, residual=residual, seed=seed,
                           allow_noisy=allow_noisy, noisy_flag="allow_noisy=True")


def _measurement_files(measurements: Any, column: str | None) -> tuple[list[Path], Path | None]:
    """``(set files, CSV file)`` of what ``fit_predictor`` was given: a set object is read from its file, which must
    hold what the object holds (a set changed in memory and not saved would be fitted on stale rows)."""
    items = list(measurements) if isinstance(measurements, (list, tuple)) else [measurements]
    if not items:
        raise argument_error("fit_predictor", "measurements", "a MeasurementSet, a set file or a list of them", [])
    paths = [_set_file(item, f"measurements[{i}]" if len(items) > 1 else "measurements")
             for i, item in enumerate(items)]
    csvs = [path for path in paths if path.suffix == ".csv"]
    if not csvs:
        if column is not None:
            raise HwnasError("fit_predictor: column: names a CSV's latency column; measurement sets have none")
        return paths, None
    if len(paths) > 1:
        raise HwnasError(f"fit_predictor: measurements: one CSV file alone, or measurement sets; got {len(paths)} "
                         "items with a CSV among them")
    if not isinstance(column, str) or not column:
        raise argument_error("fit_predictor", "column", "the CSV's latency column (a str)", column)
    return [], paths[0]


def _set_file(item: Any, name: str) -> Path:
    from hwnas.latency.sets import MeasurementSet

    if isinstance(item, MeasurementSet):
        if item.path is None or not Path(item.path).is_file():
            raise HwnasError(f"fit_predictor: {name}: the MeasurementSet has no file; save it first (mset.save(path))")
        if MeasurementSet.load(item.path).to_dict() != item.to_dict():
            raise HwnasError(f"fit_predictor: {name}: the MeasurementSet differs from its file {item.path}; save it "
                             "first (mset.save())")
        return Path(item.path)
    path = check_path("fit_predictor", name, item) if isinstance(item, (str, Path)) else None
    if path is None or path.suffix not in (".json", ".csv"):
        raise argument_error("fit_predictor", name, "a MeasurementSet, a set .json file or a .csv file", item)
    if not path.is_file():
        raise HwnasError(f"fit_predictor: {name}: {path}: no such file")
    return path


@python_errors
def load_predictor(name_or_path: str | Path) -> Predictor:
    """A predictor file by path, or by name (``DEVICE__SPACE__RES__KIND`` or ``DEVICE__kernel``, with or without
    ``.json``) in the predictor folders, the user's first (``$HWNAS_DATA/latency_tables/predictors``)."""
    from hwnas.latency.predictors import load_predictor as load

    path = check_path("load_predictor", "name_or_path", name_or_path)
    if path.is_file() or len(path.parts) != 1:
        return load(path)
    found = _find_predictor(path.name)
    if found is None:
        raise HwnasError(f"load_predictor: name_or_path: no predictor file {path.name!r} here nor a predictor named "
                         f"so (known: {', '.join(predictor_names()) or 'none'})")
    return load(found)


def _find_predictor(name: str) -> Path | None:
    from hwnas.latency.predictors.locate import FOLDER
    from hwnas.latency.table import find_table_file

    file = name if name.endswith(".json") else f"{name}.json"
    return find_table_file(f"{FOLDER}/{file}")


def predictor_names() -> list[str]:
    """The names of the predictor files hwnas can see (the user's and the shipped ones), sorted."""
    from hwnas.latency.predictors import predictor_kinds
    from hwnas.latency.predictors.locate import FOLDER
    from hwnas.latency.table import table_folders

    kinds = tuple(f"__{kind}" for kind in predictor_kinds())  # not the kernel predictor's measurements beside it
    names = {path.stem for folder in table_folders() if (folder / FOLDER).is_dir()
             for path in (folder / FOLDER).glob("*.json") if path.stem.endswith(kinds)}
    return sorted(names)
