"""``hwnas measure``, ``predictor fit|eval`` and ``predict``: measurement sets of whole networks, and the
predictors fitted on them or on kernels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwnas.cli.common import progress, protocol_overrides, warn_foreign_table
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
        text += (f"\nnoise      {noise['n']} networks measured twice: paired ±5% {100 * paired['acc5']:.0f}%, "
                 f"±10% {100 * paired['acc10']:.0f}%, tau {paired['kendall']:.3f}; raw medians "
                 f"±5% {100 * noise['raw']['acc5']:.0f}%, ±10% {100 * noise['raw']['acc10']:.0f}%, "
                 f"tau {noise['raw']['kendall']:.3f}")
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
                           seed=args.seed)
    cv = result["training"].get("cv") or {}
    lines = [f"predictor  {result['out']} ({result['kind']}, {result['space']}@{result['resolution']}, "
             f"{result['n']} networks)"]
    for name, figures in cv.items():
        lines.append(f"cv {name:<7} ±5% {100 * figures['acc5']:5.1f}%  ±10% {100 * figures['acc10']:5.1f}%  "
                     f"tau {figures['kendall']:.3f}  MAPE {figures['mape']:.2f}%")
    return {**result, "_text": "\n".join(lines)}


def cmd_predictor_eval(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.latency.predictors import load_predictor
    from hwnas.latency.predictors.fit import check_eval_inputs, evaluate_predictor

    plot = Path(args.plot) if args.plot else None
    check_eval_inputs(args.set or (), args.measurements, args.column, plot)
    predictor = load_predictor(args.predictor)
    result = evaluate_predictor(predictor, sets=args.set or (), csv=args.measurements, column=args.column, plot=plot)

    def line(name: str, f: dict[str, Any]) -> str:
        return (f"{name:<10} n {f['n']}  ±5% {100 * f['acc5']:5.1f}%  ±10% {100 * f['acc10']:5.1f}%  "
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
        lines.append(f"noise      {noise['n']} re-measured: ±5% {100 * p['acc5']:5.1f}%  "
                     f"±10% {100 * p['acc10']:5.1f}%  "
                     f"tau {p['kendall']:.3f} (the set against itself)")
    return {**result, "_text": "\n".join(lines)}


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.predictors import SpacePredictor, check_device, load_predictor
    from hwnas.latency.predictors.kernel import KernelPredictor
    from hwnas.latency.table import tables_dir
    from hwnas.spaces import Architecture

    device = load_device(args.device)
    target = Path(args.target)
    if target.suffix not in (".onnx", ".json"):
        raise HwnasError(f"{target}: expected an architecture .json or an .onnx file")
    if not target.is_file():
        raise HwnasError(f"{target}: no such {'model' if target.suffix == '.onnx' else 'architecture'} file")
    model = None
    if target.suffix == ".onnx":
        from hwnas.latency.kernels.onnx_split import read_onnx

        model = read_onnx(target)  # read once; an empty or foreign file is refused before the predictor loads
    arch = Architecture.load(target) if target.suffix == ".json" else None
    folder = tables_dir() / "predictors"
    if args.predictor is not None:
        path = Path(args.predictor)
    else:  # an architecture: the device's calibrated predictor of its space when there is one, else the kernels
        calibrated = folder / f"{device.name}__{arch.space}__{arch.resolution}__calibrated.json" if arch else None
        path = calibrated if calibrated is not None and calibrated.is_file() else folder / f"{device.name}__kernel.json"
        if not path.is_file():
            raise HwnasError(f"{path}: no kernel predictor for device {device.name!r}; build one with "
                             f"`python tools/build_kernel_predictor.py --device {device.name}` or pass --predictor")
    predictor = load_predictor(path)
    problems = check_device(predictor, device.name)
    if problems:
        raise HwnasError(f"{path}: {problems[0]}")
    overhead = 0.0
    if isinstance(predictor, KernelPredictor):
        latency, kernels = (predictor.predict_model(model, str(target)) if arch is None
                            else predictor.predict_arch(arch))
        overhead = predictor.overhead_ms
    elif isinstance(predictor, SpacePredictor) and arch is not None:
        latency, kernels = predictor.latency_ms(arch), _layer_terms(predictor, arch)
    else:
        raise HwnasError(f"{path}: a {predictor.kind!r} predictor of a search space predicts architecture .json files; "
                         "use a kernel predictor for .onnx models")
    text = "\n".join(f"{k['type']:<12} {k['ms']:8.4f} ms  {k['key']}" for k in kernels)
    text += f"\n{'overhead':<12} {overhead:8.4f} ms\n{'total':<12} {latency:8.4f} ms"
    result = {"latency_ms": latency, "device": device.name, "predictor": str(path), "kind": predictor.kind,
              "overhead_ms": overhead, "kernels": kernels}
    if latency > 0 and overhead > 0.5 * latency:
        result["note"] = (f"the per-run overhead is {100 * overhead / latency:.0f}% of the total: the prediction "
                          "says more about the runtime's fixed cost than about this model")
        text += f"\nnote: {result['note']}"
    return {**result, "_text": text}


def _layer_terms(predictor: Any, arch: Any) -> list[dict[str, Any]]:
    """A space predictor's additive terms of an architecture (the fixed part, then one per searchable layer),
    at the predictor's linearization point (its non-additive factor, if any, spread over them)."""
    linearized, space = predictor.anchored(arch), predictor.space
    costs = linearized.layer_costs_ms()
    terms = [{"type": "fixed", "key": "stem, fixed blocks, head, runtime overhead", "ms": linearized.fixed_ms()}]
    for layer, choice, cost in zip(space.layers, arch.choices, costs):
        terms.append({"type": f"layer{layer.index}:{choice}", "key": layer.spec(choice).key(),
                      "ms": cost[layer.names.index(choice)]})
    return terms
