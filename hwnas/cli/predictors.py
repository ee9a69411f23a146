"""``hwnas measure``, ``predictor fit|eval`` and ``predict``: measurement sets of whole networks, and the
predictors fitted on them or on kernels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwnas.cli.common import progress, protocol_overrides, warn, warn_foreign_table
from hwnas.errors import HwnasError
from hwnas.outputs import check_out_file


def cmd_measure(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.sets import MeasureConfig, measure_set
    from hwnas.latency.lookup import find_tables
    from hwnas.latency.table import LatencyTable
    from hwnas.spaces import get_space

    device = load_device(args.device)
    space = get_space(args.space, args.resolution, args.num_classes)
    if args.table and not Path(args.table).is_file():
        raise HwnasError(f"{args.table}: no such latency table")
    # the proxy: a table that covers the space, its head included (the user's, else the shipped one), else MACs
    table = LatencyTable.load(args.table) if args.table else find_tables(device, space).covering
    proxy = None
    if table is not None:
        warn_foreign_table(table)
        if not table.missing_keys(space):
            proxy = TableEstimator(table, space)
    check_out_file(args.out)
    config = MeasureConfig(n=args.n, seed=args.seed, repeat=args.repeat, chunk=args.chunk,
                           protocol=protocol_overrides(args, paired=True), progress=progress(args))
    result = measure_set(device, space, Path(args.out), config, proxy).to_dict()
    noise = result["noise"]
    text = (f"set        {result['out']} ({result['rows']} networks: {result['measured']} measured now, "
            f"{result['reused']} reused; {result['seconds']} s)\nreference  {result['reference_ms']:.4f} ms "
            f"(quiet latency of {device.name}'s reference network)")
    if noise:
        paired = noise["paired"]
        text += (f"\nnoise      {noise['n']} networks measured twice: paired ±5% {paired['within5_pct']:.0f}%, "
                 f"±10% {paired['within10_pct']:.0f}%, tau {paired['kendall']:.3f}; raw medians "
                 f"±5% {noise['raw']['within5_pct']:.0f}%, ±10% {noise['raw']['within10_pct']:.0f}%, "
                 f"tau {noise['raw']['kendall']:.3f}")
        if "all_runs" in noise:
            text += f" (all runs, interrupted ones kept: ±5% {noise['all_runs']['within5_pct']:.0f}%)"
    if result.get("remeasured_disturbed"):
        text += (f"\ndisturbed  {result['remeasured_disturbed']} networks re-measured at the end (many pairs "
                 "interrupted, or noisy): each keeps the less disturbed measurement")
    return {**result, "_text": text}


def cmd_predictor_fit(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.latency.predictors.fit import check_fit_inputs, fit_predictor
    from hwnas.latency.sets import MeasurementSet
    from hwnas.spaces import get_space

    check_out_file(args.out)
    # --prior is a transfer predictor's own input: with it, the kind need not be named
    kind = args.kind or ("transfer" if args.prior is not None else "calibrated")
    check_fit_inputs(kind, args.set or (), args.measurements, args.column, args.prior)
    resolution, num_classes = args.resolution, args.num_classes
    if args.set and resolution is None:
        first = MeasurementSet.load(args.set[0])
        resolution, num_classes = first.resolution, num_classes or first.num_classes
    elif args.table and resolution is None:
        from hwnas.latency.table import LatencyTable

        table = LatencyTable.load(args.table)
        resolution, num_classes = table.resolution, num_classes or table.num_classes
    space = get_space(args.space, resolution, num_classes)
    result = fit_predictor(space=space, out=Path(args.out), kind=kind, table=args.table, sets=args.set or (),
                           csv=args.measurements, column=args.column, prior=args.prior, residual=args.residual,
                           seed=args.seed, allow_noisy=args.allow_noisy)
    cv = result["training"].get("cv") or {}
    lines = [f"predictor  {result['out']} ({result['kind']}, {result['space']}@{result['resolution']}, "
             f"{result['n']} networks)"]
    for name, figures in cv.items():
        lines.append(f"cv {name:<7} ±5% {figures['within5_pct']:5.1f}%  ±10% {figures['within10_pct']:5.1f}%  "
                     f"tau {figures['kendall']:.3f}  MAPE {figures['mape']:.2f}%")
    return {**result, "_text": "\n".join(lines)}


def cmd_predictor_eval(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.latency.predictors import load_predictor
    from hwnas.latency.predictors.fit import check_eval_inputs, evaluate_predictor

    plot = Path(args.plot) if args.plot else None
    space = _eval_space(args)
    check_eval_inputs(args.set or (), args.measurements, args.column, plot, space)
    predictor = load_predictor(args.predictor)
    result = evaluate_predictor(predictor, sets=args.set or (), csv=args.measurements, column=args.column, plot=plot,
                                space=space)

    def line(name: str, f: dict[str, Any]) -> str:
        return (f"{name:<10} n {f['n']}  ±5% {f['within5_pct']:5.1f}%  ±10% {f['within10_pct']:5.1f}%  "
                f"spearman {f['spearman']:.3f}  tau {f['kendall']:.3f}  MAPE {f['mape']:.2f}%  "
                f"bias {f['bias_pct']:+.1f}%")

    lines = [line("predictor", result)]
    if "table" in result:
        lines.append(line("table sum", result["table"]))
    if "table_scaled" in result:
        lines.append(line("table x1", result["table_scaled"]) + f"  (one scale {result['table_scaled']['scale']:.3f} "
                     "from the training rows)")
    noise = result.get("noise")
    if noise:
        p = noise["paired"]
        lines.append(f"noise      {noise['n']} re-measured: ±5% {p['within5_pct']:5.1f}%  "
                     f"±10% {p['within10_pct']:5.1f}%  "
                     f"tau {p['kendall']:.3f} (the set against itself)")
    return {**result, "_text": "\n".join(lines)}


def _eval_space(args: argparse.Namespace) -> Any:
    """The space of a CSV's op names for a kernel predictor (``--space``), None when not given."""
    from hwnas.spaces import get_space

    if args.space is None:
        for flag, value in (("--resolution", args.resolution), ("--num-classes", args.num_classes)):
            if value is not None:
                raise HwnasError(f"{flag} {value}: give --space too (the space of the CSV's op names, for a kernel "
                                 "predictor)")
        return None
    return get_space(args.space, args.resolution, args.num_classes)


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.predictors import check_device, load_predictor
    from hwnas.latency.predictors.origin import how_to_build
    from hwnas.latency.predictors.prediction import model_input

    device = load_device(args.device)
    # the file checked (an .onnx read, once) before a predictor loads: an empty or foreign file is one line at once
    given = model_input(Path(args.target))
    space = _space_of(given.arch)
    path = Path(args.predictor) if args.predictor is not None else _default_predictor(device, space)
    predictor = load_predictor(path)
    note = check_device(predictor, device)  # another device or runtime: one line, exit 2
    if note and args.predictor is None:  # the default lookup found no predictor of this machine
        note += f"; {how_to_build(device.name, space)}"
    warn(note)
    prediction = predictor.predict(given)  # a kind that cannot read the model says so in one line
    latency, overhead, terms = prediction.ms, prediction.overhead_ms, [dict(t) for t in prediction.terms]
    text = "\n".join(f"{t['type']:<12} {t['ms']:8.4f} ms  {t['key']}" for t in terms)
    text += f"\n{'overhead':<12} {overhead:8.4f} ms\n{'total':<12} {latency:8.4f} ms"
    machine = (predictor.meta.fingerprint.get("machine") or {}).get("cpu_model")
    result = {"latency_ms": latency, "device": device.name, "predictor": str(path), "kind": predictor.kind,
              "fitted_on": machine, "overhead_ms": overhead, "kernels": terms}
    if note:
        result["warning"] = note
    notes = []
    if latency > 0 and overhead > 0.5 * latency:
        notes.append(f"the per-run overhead is {100 * overhead / latency:.0f}% of the total: the prediction says more "
                     "about the runtime's fixed cost than about this model")
    if not predictor.meta.fingerprint:
        notes.append("the predictor does not record the machine it was fitted on (fitted from a CSV?): it cannot be "
                     "checked against this one")
    if notes:
        result["note"] = "; ".join(notes)
        text += f"\nnote: {result['note']}"
    return {**result, "_text": text}


def _space_of(arch: Any) -> Any:
    """The search space of an architecture (None for a model of no space: an ONNX file)."""
    from hwnas.spaces import get_space

    return get_space(arch.space, arch.resolution, arch.num_classes) if arch is not None else None


def _default_predictor(device: Any, space: Any) -> Path:
    """The device's predictor of the architecture's space (calibrated, then transfer), else its kernel predictor;
    the user's files before the shipped ones, and one of this machine before one of another
    (:func:`~hwnas.latency.predictors.locate.default_predictor`)."""
    from hwnas.latency.predictors.locate import default_predictor
    from hwnas.latency.predictors.origin import fits_here, how_to_build

    found = default_predictor(device.name, space, lambda path: fits_here(path, device))
    if found is not None:
        return found
    if space is None:
        raise HwnasError(f"no kernel predictor for device {device.name!r}: {how_to_build(device.name, None)}, or "
                         "pass --predictor")
    raise HwnasError(f"no predictor for device {device.name!r} of {space.name}@{space.resolution} (calibrated, "
                     f"transfer or kernel): {how_to_build(device.name, space)}, or pass --predictor")
