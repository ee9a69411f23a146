"""Entry point of the predictors: fit one from a table, measurement sets or a CSV; evaluate one on held-out data.

Data sources, all reduced to (architectures, latencies in ms at one reference level):

* a measurement set (``hwnas measure``): paired rows, ``latency = ratio x reference_ms``; several sets are
  brought to the first set's reference level (their ratios are what compare across days);
* a CSV (``--measurements CSV --column COL``): column ``arch`` with the space's op names in layer order separated
  by spaces, latency columns in ms (the format of the FBNet data of HELP).

Evaluation predicts each held-out network through the protocol (``predictor.predict(arch).ms``: every kind the
same way, the kernel kind included), compares at the evaluation set's reference level
(:func:`~hwnas.latency.predictors.base.rescale`), i.e. it compares ratios, where the predictor was paired with the
same reference network (plain ms for the kernel predictor), and reports the set's own re-measurement agreement (its
noise floor) beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.predictors.base import (Predictor, PredictorMeta, SpacePredictor, predictor_class,
                                          predictor_from_dict, rescale, versions)
from hwnas.latency.predictors.calibrated import CalibratedPredictor, fit_calibrated
from hwnas.latency.predictors.features import Caches, FeatureCache
from hwnas.latency.metrics import agreement, plot_against_measured
from hwnas.latency.set_noise import check_noise
from hwnas.latency.sets import MeasurementSet
from hwnas.latency.table import LatencyTable
from hwnas.outputs import check_out_file
from hwnas.spaces import Architecture, SearchSpace

PLOT_SUFFIXES = (".png", ".pdf", ".svg")  # formats matplotlib's Agg backend writes


@dataclass
class Measurements:
    """Architectures with latencies at one reference level, and where they come from."""

    space: SearchSpace
    archs: list[Architecture]
    latencies_ms: np.ndarray
    reference_ms: float | None
    device: str
    fingerprint: dict[str, Any]
    sources: list[str]
    noise: dict[str, Any] | None = None
    turns: str = ""  # "warm" / "cold" for measurement sets (hwnas.runtimes.paired.turns_of), "" for a CSV


def load_sets(paths: Sequence[str | Path | MeasurementSet]) -> Measurements:
    """One or more measurement sets (files, or sets already loaded) of the same space and device, at the first
    set's reference level."""
    sets = [p if isinstance(p, MeasurementSet) else MeasurementSet.load(p) for p in paths]
    first = sets[0]
    archs: list[Architecture] = []
    values: list[float] = []
    sources: list[str] = []
    for mset in sets:
        if (mset.space, mset.resolution, mset.device_name) != (first.space, first.resolution, first.device_name):
            raise HwnasError(f"{mset.path}: set is for {mset.device_name} {mset.space}@{mset.resolution}, the first "
                             f"for {first.device_name} {first.space}@{first.resolution}; fit them separately")
        if not mset.rows:
            raise HwnasError(f"{mset.path}: the set has no measured rows yet; run `hwnas measure` to fill it")
        if mset.turns != first.turns:
            raise HwnasError(f"{mset.path}: measured with {mset.turns} turns, {first.path} with {first.turns} turns "
                             "(two scales); re-measure the cold one with `hwnas measure`")
        ratios = [mset.rows[i].paired.ratio for i in sorted(mset.rows)]
        archs += mset.archs()
        values += [r * (first.reference_ms or 0.0) for r in ratios]
        sources += [str(mset.path)] * len(ratios)
    return Measurements(first.space_obj(), archs, np.array(values), first.reference_ms, first.device_name,
                        first.fingerprint, sources, first.noise(), first.turns)


def load_csv(path: str | Path, space: SearchSpace, column: str) -> Measurements:
    from hwnas.latency.predictors.csvdata import read_measurements

    archs, latencies = read_measurements(path, space, column)
    return Measurements(space, archs, np.asarray(latencies, dtype=float), None, column, {},
                        [f"{path}:{column}"] * len(archs))


def check_fit_inputs(kind: str, sets: Sequence[str | Path], csv: str | Path | None, column: str | None,
                     prior: str | Path | None) -> None:
    """Refuse, in one line and before any file is read, a fit that could only fail or mean nothing: a predictor
    learns from measured networks, so one of ``sets`` or ``csv`` (with its ``column``) is required."""
    cls = predictor_class(kind, "--kind")
    if not cls.fits_networks:  # docs/predictors.md, "Which predictor where"
        raise HwnasError(f"--kind {kind}: a {kind} predictor does not learn from measured networks; {cls.how_to_fit}")
    if sets and csv is not None:
        raise HwnasError("predictor fit: give --set or --measurements, not both")
    if not sets and csv is None:
        raise HwnasError("predictor fit: no measurements: give --set SET.json (from `hwnas measure`) or "
                         "--measurements CSV --column COL; a predictor of 0 networks would only repeat the table")
    if csv is not None and not column:
        raise HwnasError("predictor fit: --measurements needs --column (the CSV's latency column)")
    if cls.needs_prior and prior is None:
        raise HwnasError(f"--kind {kind} needs --prior CSV (other devices' measurements of the same space)")
    if not cls.needs_prior and prior is not None:
        raise HwnasError(f"--prior: other devices' measurements are a prior of --kind transfer, not --kind {kind}")


def fit_predictor(*, space: SearchSpace, out: Path, kind: str = "calibrated", table: str | Path | None = None,
                  sets: Sequence[str | Path] = (), csv: str | Path | None = None, column: str | None = None,
                  prior: str | Path | None = None, residual: str = "auto", seed: int = 0,
                  allow_noisy: bool = False) -> dict[str, Any]:
    """:func:`build_predictor`, saved to ``out``; returns ``{"out", "n", "kind", ...}`` (the CLI's answer)."""
    predictor = build_predictor(space=space, kind=kind, table=table, sets=sets, csv=csv, column=column, prior=prior,
                                residual=residual, seed=seed, allow_noisy=allow_noisy)
    predictor.save(out)
    training = predictor.meta.training
    return {"out": str(out), "n": int(training.get("n", 0)), "kind": predictor.kind, "space": predictor.meta.space,
            "resolution": predictor.meta.resolution, "device": predictor.meta.device, "training": training}


def build_predictor(*, space: SearchSpace, kind: str = "calibrated", table: str | Path | LatencyTable | None = None,
                    sets: Sequence[str | Path] = (), csv: str | Path | None = None, column: str | None = None,
                    prior: str | Path | None = None, residual: str = "auto", seed: int = 0, allow_noisy: bool = False,
                    noisy_flag: str = "--allow-noisy") -> Predictor:
    """A new predictor of ``space`` fitted on measured networks (sets or a CSV); nothing is written, the inputs are
    read only. A set whose own re-measure agrees far below its runtime's is refused in one line naming
    ``noisy_flag`` (:func:`~hwnas.latency.set_noise.check_noise`), or with ``allow_noisy`` fitted with a warning."""
    check_fit_inputs(kind, sets, csv, column, prior)
    loaded = [MeasurementSet.load(p) for p in sets]  # read once: the noise gate, then the fit
    check_noise(loaded, allow_noisy, noisy_flag)
    data = load_sets(loaded) if loaded else load_csv(csv or "", space, column or "")
    if (data.space.name, data.space.resolution) != (space.name, space.resolution):
        raise HwnasError(f"{data.sources[0]}: measurements are of {data.space.name}@{data.space.resolution}, "
                         f"not --space {space.name}@{space.resolution}")
    return predictor_class(kind).fit_networks(data, table=table, prior=prior, residual=residual, seed=seed)


def fit_calibrated_networks(data: Measurements, table: str | Path | LatencyTable | None, residual: str,
                            seed: int) -> Predictor:
    """:meth:`CalibratedPredictor.fit_networks`: the given table, else the device's that covers the space."""
    table_obj = _table_for(data.space, table, data)
    return fit_calibrated(data.space, data.archs, data.latencies_ms, table=table_obj,
                          meta=_calibrated_meta(data, table_obj), residual=residual, seed=seed, sources=data.sources)


def _calibrated_meta(data: Measurements, table: LatencyTable | None) -> PredictorMeta:
    """The meta of a calibrated fit, built whole before fitting: the measurements' device and fingerprint, else the
    table's."""
    training: dict[str, Any] = {"sources": sorted(set(data.sources))}
    runtime = None
    if table is not None:
        training["table"] = str(table.path)
        runtime = table.fingerprint.get("runtime", {})
    return PredictorMeta(device=data.device or (table.device_name if table is not None else ""),
                         fingerprint=data.fingerprint or (table.fingerprint if table is not None else {}),
                         reference_ms=data.reference_ms, training=training, versions=versions(runtime),
                         turns=data.turns)


def _table_for(space: SearchSpace, table: str | Path | LatencyTable | None,
               data: Measurements | None) -> LatencyTable | None:
    """The given table, else the default table of the measurements' device when it exists, else None."""
    if isinstance(table, LatencyTable):
        loaded = table
    elif table is not None:
        loaded = LatencyTable.load(table)
    elif data is not None and data.device:
        from hwnas.latency.lookup import find_tables

        lookup = find_tables(data.device, space)  # the user's, else the shipped one, that has the set's head
        if lookup.first is None:
            return None
        loaded = lookup.covering or lookup.first
    else:
        return None
    if (loaded.space, loaded.resolution) != (space.name, space.resolution):
        raise HwnasError(f"{loaded.path}: table is for {loaded.space}@{loaded.resolution}, not "
                         f"{space.name}@{space.resolution}")
    missing = loaded.missing_keys(space)  # the head is an op: the measurements' head must be in the table
    if missing:
        raise HwnasError(f"{loaded.path}: table lacks {len(missing)} of the ops of the measurements' networks "
                         f"({space.num_classes} classes; first: {missing[0]}); run "
                         f"`{loaded.profile_command(space.num_classes)}` to measure them")
    return loaded


def fit_transfer_networks(data: Measurements, prior: str | Path, seed: int) -> Predictor:
    """:meth:`TransferPredictor.fit_networks`: the prior read from the CSV ``prior`` (the data's own device left
    out)."""
    from hwnas.latency.predictors.csvdata import read_prior
    from hwnas.latency.predictors.transfer import fit_transfer

    space = data.space
    prior_archs, prior_latencies = read_prior(prior, space, exclude=(data.device,))
    predictor = fit_transfer(space, prior_archs, prior_latencies, data.archs, data.latencies_ms,
                             device=data.device, seed=seed)
    training = {**predictor.meta.training, "sources": sorted(set(data.sources)), "prior": str(prior)}
    meta = replace(predictor.meta, fingerprint=data.fingerprint, reference_ms=data.reference_ms, versions=versions(),
                   turns=data.turns, training=training)
    return predictor_from_dict({**predictor.to_dict(), "meta": meta.to_dict()}, "transfer fit")


def check_eval_inputs(sets: Sequence[str | Path], csv: str | Path | None, column: str | None,
                      plot: Path | None, space: SearchSpace | None = None) -> None:
    """Refuse, before the predictor is loaded or anything evaluated, held-out data that is missing or ambiguous, a
    space where it would not be read (sets name their own) and a plot file that matplotlib would not write."""
    if bool(sets) == (csv is not None):
        raise HwnasError("predictor eval: give --set or --measurements")
    if csv is not None and not column:
        raise HwnasError("predictor eval: --measurements needs --column")
    if sets and space is not None:
        raise HwnasError(f"--space {space.name}: measurement sets name their own space; --space (with --resolution, "
                         "--num-classes) is read only with --measurements, for a kernel predictor")
    if plot is not None:
        if plot.suffix.lower() not in PLOT_SUFFIXES:
            raise HwnasError(f"--plot {plot}: expected a {', '.join(PLOT_SUFFIXES)} file, got "
                             f"{plot.suffix or 'no suffix'!r}")
        check_out_file(plot, "--plot")


def evaluate_predictor(predictor: Predictor, *, sets: Sequence[str | Path] = (), csv: str | Path | None = None,
                       column: str | None = None, plot: Path | None = None,
                       space: SearchSpace | None = None) -> dict[str, Any]:
    """Figures of ``predictor`` on held-out measurements (and of the table it embeds, when it has one), each
    network predicted by ``predictor.predict(arch)``, the same for every kind.

    A CSV names its networks by op names: they are read in the predictor's space, or, for a kind that predicts any
    model (the kernel predictor), in ``space``, which is required then."""
    check_eval_inputs(sets, csv, column, plot, space)
    own = _own_space(predictor)
    data = load_sets(sets) if sets else load_csv(csv or "", _csv_space(predictor, own, space), column or "")
    if own is not None and (data.space.name, data.space.resolution) != (own.name, own.resolution):
        raise HwnasError(f"{data.sources[0]}: measurements are of {data.space.name}@{data.space.resolution}, "
                         f"the predictor of {own.name}@{own.resolution}")
    measured, level = data.latencies_ms, _shared_reference_ms(predictor, data)
    predicted = np.array([rescale(predictor.predict(a).ms, predictor, level) for a in data.archs])
    result: dict[str, Any] = agreement(predicted, measured)
    result["noise"] = data.noise
    series = {"predictor": predicted}
    if isinstance(predictor, CalibratedPredictor) and predictor.table is not None:
        series.update(_table_figures(predictor, data, result))
    if plot is not None:
        plot_predictions(measured, series, plot, f"{predictor.meta.device} {data.space.name}@{data.space.resolution}")
        result["plot"] = str(plot)
    return result


def _shared_reference_ms(predictor: Predictor, data: Measurements) -> float | None:
    """The set's reference level when the predictor's latencies are multiples of the same reference network, else
    None (plain ms are compared). A predictor of a space was fitted paired with that space's reference, as the
    set was; the kernel predictor's reference is a generic network (``meta.reference``): bringing its predictions
    to the level of another network would scale them by the two networks' ratio, not by the machine's drift."""
    from hwnas.latency.reference import reference_arch

    reference = predictor.meta.reference
    if isinstance(reference, dict) and isinstance(reference.get("arch"), dict):
        same = Architecture.from_dict(reference["arch"]) == reference_arch(data.space)
        return data.reference_ms if same else None
    return data.reference_ms if predictor.meta.space is not None else None


def _own_space(predictor: Predictor) -> SearchSpace | None:
    """The search space a predictor is of (``meta.space``), None for a kind that predicts any model."""
    if predictor.meta.space is None:
        return None
    return SpacePredictor.space_of(predictor.meta, str(predictor.path or "predictor"))


def _csv_space(predictor: Predictor, own: SearchSpace | None, given: SearchSpace | None) -> SearchSpace:
    """The space a CSV's op names are read in: the predictor's own, else the given one."""
    where = predictor.path or "predictor"
    if own is None:
        if given is None:
            raise HwnasError(f"{where}: a {predictor.kind} predictor knows no search space: give --space (and "
                             "--resolution, --num-classes) of the CSV's op names, or evaluate on --set")
        return given
    if given is not None and (given.name, given.resolution, given.num_classes) != (
            own.name, own.resolution, own.num_classes):
        raise HwnasError(f"--space {given.name}@{given.resolution}/{given.num_classes} classes: the {predictor.kind} "
                         f"predictor {where} is of {own.name}@{own.resolution}/{own.num_classes} classes (leave "
                         "--space out: it is read only for a kernel predictor)")
    return own


def _table_figures(predictor: CalibratedPredictor, data: Measurements,
                   result: dict[str, Any]) -> dict[str, np.ndarray]:
    """Add the embedded table's figures (its sum, and its sum times the fitted scale) to ``result``; returns the
    series to plot beside the predictor's."""
    measured = data.latencies_ms
    table_pred = _table_predictions(predictor, data)
    result["table"] = agreement(table_pred, measured)
    if not predictor.rows:
        return {"table sum": table_pred}
    scale = float(predictor.table_scale)
    # the scale was learned at the training set's reference level: a table without a reference of its own
    # is moved to this set's level as the predictor's predictions are (a paired table already is there)
    scaled = table_pred * scale
    if predictor.table is not None and predictor.table.reference_ms is None:
        scaled = np.array([rescale(v, predictor, data.reference_ms) for v in scaled])
    result["table_scaled"] = {**agreement(scaled, measured), "scale": scale}
    return {"table sum x one scale": scaled}


def _table_predictions(predictor: CalibratedPredictor, data: Measurements) -> np.ndarray:
    """The embedded table's once-overhead sums: at the measurements' reference level when the table was profiled
    paired with the reference, else in the table's own absolute ms."""
    assert predictor.table is not None
    leveled = predictor.table.at_level(data.reference_ms)
    features = FeatureCache(predictor.space, Caches.from_fingerprint(predictor.meta.fingerprint), leveled)
    return features.matrix(data.archs)[:, 0] + leveled.scaled_overhead_ms


def plot_predictions(measured: np.ndarray, series: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Predicted vs measured, one series each (labelled with its agreement), with y = x and the +-10% band."""
    labelled = {}
    for name, values in series.items():
        a = agreement(values, measured)
        label = f"{name}: ±10% {a['within10_pct']:.0f}%, ±5% {a['within5_pct']:.0f}%, τ {a['kendall']:.2f}"
        labelled[label] = values
    lo = float(min(measured.min(), *(v.min() for v in series.values()))) * 0.9
    hi = float(max(measured.max(), *(v.max() for v in series.values()))) * 1.1
    return plot_against_measured(measured, labelled, path, title=title, alpha=0.75, limits=(lo, hi),
                                 xlabel="measured, paired with the reference (ms)", ylabel="predicted (ms)")
