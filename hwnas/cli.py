"""The ``hwnas`` command line: thin — parse arguments, call a layer, print (one JSON object with ``--json``)."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable

from hwnas import __version__
from hwnas.errors import ArtifactMissing, HwnasError
from hwnas.latency.table import dumps_strict
from hwnas.outputs import check_out_file, check_out_folder

Handler = Callable[[argparse.Namespace], dict[str, Any]]


def _print_human(result: dict[str, Any]) -> None:
    text = result.pop("_text", None)
    if text is not None:
        print(text)
        return
    for key, value in result.items():
        print(f"{key}: {value if not isinstance(value, (dict, list)) else json.dumps(value)}")


# -- listing ---------------------------------------------------------------------------------------------
def cmd_devices(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import add_device, list_devices, load_device, user_devices_dir
    from hwnas.runtimes import runtime_class

    if args.action is not None and not args.target:
        raise HwnasError(f"devices {args.action}: expected {'a device file' if args.action == 'add' else 'a name'}")
    if args.action == "add":
        added = add_device(args.target)
        return {"added": added.name, "path": str(added.path), "profile": added.to_dict(),
                "_text": f"added device {added.name} ({added.path})"}
    if args.action == "show":
        profile = load_device(args.target)
        text = "\n".join([f"# {profile.path}"] + [f"{k} = {json.dumps(v)}" for k, v in profile.to_dict().items()])
        return {"path": str(profile.path), "profile": profile.to_dict(), "_text": text}
    user = user_devices_dir().resolve()
    rows = []
    for device in list_devices():
        reason = runtime_class(device.backend).unavailable_reason(device.runtime_config())
        rows.append({"name": device.name, "backend": device.backend, "device": device.device,
                     "threads": device.threads, "precision": device.precision, "available": reason is None,
                     "unavailable_reason": reason, "description": device.description, "path": str(device.path),
                     "source": "user" if device.path and device.path.resolve().parent == user else "shipped"})
    text = "\n".join(f"{r['name']:<18} {r['backend']:<12} {r['device']:<8} {r['threads']} thr {r['precision']:<5} "
                     f"{r['source']:<7} "
                     f"{'ok' if r['available'] else 'unavailable: ' + str(r['unavailable_reason'])}" for r in rows)
    return {"devices": rows, "_text": text}


def cmd_spaces(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.spaces import get_space, space_info, space_names

    rows = []
    for name in space_names():
        info, space = space_info(name), get_space(name)
        rows.append({"name": name, "default_resolution": info.default_resolution, "resolution_multiple":
                     info.total_stride, "layers": len(space.layers), "ops": len(space.all_specs()),
                     "num_classes": info.default_num_classes, "description": info.description})
    text = "\n".join(f"{r['name']:<16} {r['layers']:>2} layers  {r['ops']:>3} ops  res {r['default_resolution']} "
                     f"(multiple of {r['resolution_multiple']})  {r['description']}" for r in rows)
    return {"spaces": rows, "_text": text}


# -- profiling and tables --------------------------------------------------------------------------------
def cmd_tables(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.latency.table import LatencyTable, foreign_table_note, table_folders

    rows, seen = [], set()
    for kind, folder in zip(("user", "shipped"), table_folders()):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                table = LatencyTable.load(path)
            except HwnasError as exc:
                rows.append({"path": str(path), "where": kind, "error": str(exc)})
                continue
            note = foreign_table_note(table)
            rows.append({"device": table.device_name, "space": table.space, "resolution": table.resolution,
                         "num_classes": table.num_classes, "entries": len(table.entries),
                         "noisy": len(table.noisy_keys()), "where": kind, "path": str(path),
                         "overridden": path.name in seen, "matches_this_machine": note is None,
                         "difference": note})
            seen.add(path.name)
    text = "\n".join(f"{r['path']}: unreadable ({r['error']})" if "error" in r else
                     f"{r['device']:<18} {r['space']:<15} {r['resolution']:>4} {r['entries']:>4} entries "
                     f"{r['noisy']:>3} noisy  {r['where']:<7} "
                     f"{'this machine' if r['matches_this_machine'] else 'other'}"
                     f"{' (overridden)' if r['overridden'] else ''}  {r['path']}" for r in rows)
    return {"tables": rows, "_text": text or "no latency tables"}


def _protocol_overrides(args: argparse.Namespace, paired: bool = False) -> dict[str, Any]:
    """``--protocol FIELD=VALUE`` pairs, checked against the (paired) measurement protocol so that an error names
    the flag rather than the device file they are later merged with."""
    overrides: dict[str, Any] = {}
    for item in getattr(args, "protocol", None) or []:
        if "=" not in item:
            raise HwnasError(f"--protocol {item!r}: expected FIELD=VALUE, e.g. rounds=5")
        name, raw = item.split("=", 1)
        try:
            overrides[name] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[name] = raw
    if overrides:
        if paired:
            from hwnas.runtimes.paired import PairedProtocol as protocol_class
        else:
            from hwnas.runtimes.protocol import Protocol as protocol_class
        protocol_class.from_dict({**protocol_class().to_dict(), **overrides}, "--protocol")
    return overrides


def _with_threads(device: Any, args: argparse.Namespace) -> Any:
    """The device profile with ``--threads`` applied (the runtime's thread count is part of a table's fingerprint,
    so a table measured with other threads is refused for measuring into)."""
    import dataclasses

    return dataclasses.replace(device, threads=args.threads) if getattr(args, "threads", None) else device


def _add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_count(1), help="runtime threads (default: the device profile's)")


def cmd_profile(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.profile import ProfileConfig, profile_device
    from hwnas.spaces import get_space

    device = _with_threads(load_device(args.device), args)
    space = get_space(args.space, args.resolution, args.num_classes)
    if args.out:
        check_out_file(args.out)
    config = ProfileConfig(chunk=args.chunk, protocol_overrides=_protocol_overrides(args), progress=_progress(args))
    return profile_device(device, space, Path(args.out) if args.out else None, config).to_dict()


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.spaces import get_space

    space = get_space(args.space, args.resolution, args.num_classes)
    rng = random.Random(args.seed)
    out = check_out_folder(args.out)
    files = [str(space.random_arch(rng).save(out / f"arch_{i:04d}.json")) for i in range(args.n)]
    return {"files": files, "space": space.name, "resolution": space.resolution}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.bench import bench

    device = _with_threads(load_device(args.device), args)
    stats = bench(device, args.target, _protocol_overrides(args))
    return {"device": device.name, "target": args.target, "median_ms": stats.median_ms, "p10_ms": stats.p10_ms,
            "p90_ms": stats.p90_ms, "mean_ms": stats.mean_ms, "std_ms": stats.std_ms, "runs": stats.n,
            "noisy": stats.noisy}


def _warn_foreign_table(table: Any) -> None:
    """One warning line on stderr when ``table`` comes from another machine or runtime."""
    from hwnas.latency.table import foreign_table_note

    note = foreign_table_note(table)
    if note:
        print(f"hwnas: warning: {note}", file=sys.stderr)


def cmd_estimate(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.table import LatencyTable, find_table_file, table_folders, table_name
    from hwnas.spaces import Architecture, get_space

    if not (args.table or args.device):
        raise HwnasError("estimate: give --table FILE or --device NAME (its table for the architecture's space)")
    table = LatencyTable.load(args.table) if args.table else None
    arch = Architecture.load(args.arch)
    if table is None:  # the device's table for the architecture's space and resolution: the user's, else shipped
        from hwnas.devices import load_device

        name = table_name(load_device(args.device).name, arch.space, arch.resolution)
        path = find_table_file(name)
        if path is None:
            raise HwnasError(f"no latency table {name} in {' or '.join(map(str, table_folders()))}; run `hwnas "
                             f"profile --device {args.device} --space {arch.space} --resolution {arch.resolution}`")
        table = LatencyTable.load(path)
    _warn_foreign_table(table)
    space = get_space(arch.space, arch.resolution, arch.num_classes)
    estimator = TableEstimator(table, space, args.overhead)
    terms = estimator.terms(arch)
    total = estimator.latency_ms(arch)
    text = "\n".join(f"{t.part:<22} {t.ms:8.4f} ms  {t.key}" for t in terms) + f"\n{'total':<22} {total:8.4f} ms"
    return {"latency_ms": total, "device": table.device_name, "overhead_mode": args.overhead,
            "terms": [{"part": t.part, "key": t.key, "ms": t.ms} for t in terms], "_text": text}


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.table import LatencyTable
    from hwnas.latency.validate import ValidateConfig, validate_table

    table = LatencyTable.load(args.table)
    _warn_foreign_table(table)
    device = _with_threads(load_device(args.device or table.device_name), args)
    config = ValidateConfig(n=args.n, seed=args.seed, progress=_progress(args),
                            protocol_overrides=_protocol_overrides(args))
    check_out_folder(args.out)
    report = validate_table(Path(args.table), device, Path(args.out), config)
    text = "\n".join(f"{mode:<7} ±5% {100 * m['within_5pct']:5.1f}%  ±10% {100 * m['within_10pct']:5.1f}%  "
                     f"RMSE {m['rmse_ms']:.3f} ms  tau {m['kendall_tau']:.3f}  bias {m['mean_bias_pct']:+.1f}%"
                     for mode, m in report["metrics"].items())
    return {"metrics": report["metrics"], "out": args.out, "_text": text}


# -- measurement sets and predictors ---------------------------------------------------------------------
def cmd_measure(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.sets import MeasureConfig, measure_set
    from hwnas.latency.table import LatencyTable, default_table_path
    from hwnas.spaces import get_space

    device = load_device(args.device)
    space = get_space(args.space, args.resolution, args.num_classes)
    table_path = Path(args.table) if args.table else default_table_path(device.name, space.name, space.resolution)
    proxy = None
    if table_path.is_file():
        table = LatencyTable.load(table_path)
        _warn_foreign_table(table)
        if table.num_classes == space.num_classes:
            proxy = TableEstimator(table, space)
    elif args.table:
        raise HwnasError(f"{args.table}: no such latency table")
    check_out_file(args.out)
    config = MeasureConfig(n=args.n, seed=args.seed, repeat=args.repeat, chunk=args.chunk,
                           protocol=_protocol_overrides(args, paired=True), progress=_progress(args))
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
    from hwnas.latency.predictors.fit import fit_predictor
    from hwnas.latency.sets import MeasurementSet
    from hwnas.spaces import get_space

    resolution, num_classes = args.resolution, args.num_classes
    if args.set and resolution is None:
        first = MeasurementSet.load(args.set[0])
        resolution, num_classes = first.resolution, num_classes or first.num_classes
    elif args.table and resolution is None:
        from hwnas.latency.table import LatencyTable

        table = LatencyTable.load(args.table)
        resolution, num_classes = table.resolution, num_classes or table.num_classes
    space = get_space(args.space, resolution, num_classes)
    check_out_file(args.out)
    result = fit_predictor(space=space, out=Path(args.out), kind=args.kind, table=args.table, sets=args.set or (),
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
    from hwnas.latency.predictors.fit import evaluate_predictor

    predictor = load_predictor(args.predictor)
    result = evaluate_predictor(predictor, sets=args.set or (), csv=args.measurements, column=args.column,
                                plot=Path(args.plot) if args.plot else None)

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


# -- search ----------------------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.search.run import SearchConfig, run_search

    config = SearchConfig.from_file(args.config) if args.config else SearchConfig()
    flags = {"device": args.device, "space": args.space, "target_ms": args.target_ms, "resolution": args.resolution,
             "data": args.data, "search_epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
             "train_epochs": args.train_epochs, "loss": args.loss, "strategy": args.strategy, "seed": args.seed,
             "out": args.out, "device_threads": args.threads}
    config = config.with_overrides({k: v for k, v in flags.items() if v is not None}, "command line")
    config = config.with_overrides(_parse_sets(args.set), "command line --set")
    if args.baseline:
        config = config.with_overrides({"baseline": True}, "command line")
    result = run_search(config, progress=_progress(args))
    attempts = (result.get("measured") or {}).get("attempts", [])
    result["measured_spread"] = attempt_spread(attempts) if attempts else None
    measured = result["measured_ms"]
    lines = [result["arch_human"],
             f"target     {result['target_ms']:.4f} ms",
             f"estimated  {result['estimated_ms']:.4f} ms ({_model_text(result['latency_model'])})",
             "measured   " + (f"{measured:.4f} ms ({result['measured_over_target']:.2f} x target{_quietest(result)})"
                               if measured is not None else "not measured"),
             f"accuracy   {result['accuracy']:.4f} (test split)"]
    verdict = _verdict_text(result)
    if verdict is not None:
        lines.insert(4, verdict)
    base = result["baseline"]
    if base is not None and base["arch"] is None:
        lines.append(f"baseline   none: {base['note']}")
    elif base is not None:
        lines.append(f"baseline   accuracy {base['accuracy']:.4f}, estimated {base['estimated_ms']:.4f} ms"
                     + (f", measured {base['measured_ms']:.4f} ms" if base["measured_ms"] is not None else ""))
    lines.append(f"files      {result['out']}/ (arch.json, model.pt, report.json, search.png)")
    return {**result, "_text": "\n".join(lines)}


def _model_text(model: dict[str, Any]) -> str:
    if model["kind"] == "table":
        return "latency table"
    return f"calibrated predictor, {model['rows']} networks incl. the closed loop's; {model['note']}"


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only to a terminal: a log file would collect hundreds of KB of carriage returns."""
    return not args.quiet and sys.stderr.isatty()


def _quietest(result: dict[str, Any]) -> str:
    """'; quietest of N[, the closed loop's]; attempts median M, p10 A, p90 B ms' when the search measured the
    network more than once: the kept attempt is a selection, so the spread of all of them goes beside it."""
    stats = result.get("measured") or {}
    attempts = stats.get("attempts", [])
    if len(attempts) < 2:
        return ""
    spread = attempt_spread(attempts)
    return (f"; quietest of {len(attempts)}" + (", the closed loop's" if stats.get("source") == "closed loop" else "")
            + f"; attempts median {spread['median_ms']:.4g}, p10 {spread['p10_ms']:.4g}, "
              f"p90 {spread['p90_ms']:.4g} ms")


def attempt_spread(attempts: list[dict[str, Any]]) -> dict[str, float]:
    """Median, 10th and 90th percentile of the attempts' medians."""
    import numpy as np

    median, p10, p90 = np.percentile([float(a["median_ms"]) for a in attempts], [50, 10, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90), "n": len(attempts)}


def _verdict_text(result: dict[str, Any]) -> str | None:
    """One line on how the measured figure was reached."""
    stats = result.get("measured") or {}
    attempts = stats.get("attempts", [])
    if result["measured_ms"] is None:
        return None
    if str(stats.get("source", "")).startswith("final (paired)"):
        return "verdict    one paired measurement against the reference network (latency = ratio x reference)"
    if len(attempts) < 2:
        return "verdict    one end-to-end measurement"
    return (f"verdict    the lowest median of {len(attempts)} attempts spread in time (non-noisy ones first): "
            "interference on a shared machine only adds time")


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs; VALUE parsed as JSON (numbers, true/false, null, lists, objects), else a string."""
    values: dict[str, Any] = {}
    for item in items:
        field, sep, raw = item.partition("=")
        if not sep or not field.strip():
            raise HwnasError(f"command line --set: expected FIELD=VALUE, got {item!r}")
        try:
            values[field.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[field.strip()] = raw
    return values


# -- kernel-level prediction -----------------------------------------------------------------------------
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
        latency, kernels = predictor.predict_onnx(target) if arch is None else predictor.predict_arch(arch)
        overhead = predictor.overhead_ms
    elif isinstance(predictor, SpacePredictor) and arch is not None:
        latency, kernels = predictor.latency_ms(arch), _layer_terms(predictor, arch)
    else:
        raise HwnasError(f"{path}: a {predictor.kind!r} predictor of a search space predicts architecture .json files; "
                         "use a kernel predictor for .onnx models")
    text = "\n".join(f"{k['type']:<12} {k['ms']:8.4f} ms  {k['key']}" for k in kernels)
    text += f"\n{'overhead':<12} {overhead:8.4f} ms\n{'total':<12} {latency:8.4f} ms"
    return {"latency_ms": latency, "device": device.name, "predictor": str(path), "kind": predictor.kind,
            "overhead_ms": overhead, "kernels": kernels, "_text": text}


def _layer_terms(predictor: Any, arch: Any) -> list[dict[str, Any]]:
    """A space predictor's additive terms of an architecture (the fixed part, then one per searchable layer),
    at the predictor's linearization point (its non-additive factor, if any, spread over them)."""
    predictor.set_anchor(arch) if hasattr(predictor, "set_anchor") else None
    costs, space = predictor.layer_costs_ms(), predictor.space
    terms = [{"type": "fixed", "key": "stem, fixed blocks, head, runtime overhead", "ms": predictor.fixed_ms()}]
    for layer, choice, cost in zip(space.layers, arch.choices, costs):
        terms.append({"type": f"layer{layer.index}:{choice}", "key": layer.spec(choice).key(),
                      "ms": cost[layer.names.index(choice)]})
    return terms


# -- export ----------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.export import ExportConfig, export_model, summary_text

    given = {"precision": args.precision, "device": args.device, "batch": args.batch, "opset": args.opset,
             "data": args.data, "seed": args.seed, "nhwc": args.nhwc or None,
             "random_weights": args.random_weights or None}
    if args.format is not None:
        given["formats"] = tuple(f.strip() for f in args.format.split(",") if f.strip())
    config = ExportConfig(**{k: v for k, v in given.items() if v is not None},
                          protocol_overrides=_protocol_overrides(args))
    check_out_folder(args.out)
    result = export_model(args.source, args.out, config)
    engine = result.get("tensorrt")
    if engine and not engine["engine_built"] and not args.allow_missing:
        raise ArtifactMissing(f"{engine['note']}; --allow-missing accepts the export without it")
    return {**result, "_text": summary_text(result)}


# -- parser ----------------------------------------------------------------------------------------------
def _add_space_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--space", required=required, help="search space name (see `hwnas spaces`)")
    parser.add_argument("--resolution", type=int, default=None, help="input resolution (default: the space's)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the space's)")


def _add_protocol_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", action="append", metavar="FIELD=VALUE",
                        help="override a measurement-protocol field, e.g. --protocol rounds=5")


class _UsageError(Exception):
    """A command-line mistake found by argparse; ``usage`` is the usage text of the (sub)command."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse whose errors go through :func:`main`: with ``--json`` anywhere in the command line a usage error
    is one line on stderr and ``{"error": ...}`` on stdout (exit 2), without it argparse's usage and the line."""

    def error(self, message: str) -> Any:
        raise _UsageError(f"{self.prog}: {message}", self.format_usage())


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


_FOLDERS_HELP = """data folders (environment variables):
  HWNAS_DATA     your own tables and device files: profile and search write tables to HWNAS_DATA/latency_tables,
                 `hwnas devices add` writes HWNAS_DATA/devices; yours override shipped files of the same name
                 (default: $XDG_DATA_HOME/hwnas, else ~/.local/share/hwnas)
  HWNAS_TABLES   replaces the folder of shipped tables, predictors/ and sets/ (default: the installed package's)
  HWNAS_DEVICES  replaces the folder of shipped device files (default: the installed package's)
  HWNAS_CACHE    converted models and lock files (default: $XDG_CACHE_HOME/hwnas, else ~/.cache/hwnas)"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwnas", description="Hardware-aware neural architecture search.", epilog=_FOLDERS_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(handler=handler)
        return p

    p = command("devices", cmd_devices, "list device profiles and whether their runtime is available here; "
                "`devices add FILE` adds a device file to your own, `devices show NAME` prints a resolved profile")
    p.add_argument("action", nargs="?", choices=["add", "show"], help="add a device file, or show one profile")
    p.add_argument("target", nargs="?", help="the device file to add, or the name (or path) to show")
    command("tables", cmd_tables, "list the latency tables hwnas can see (yours first, then the shipped ones)")
    command("spaces", cmd_spaces, "list registered search spaces")

    p = command("profile", cmd_profile, "measure every op of a search space on a device into a latency table")
    p.add_argument("--device", required=True, help="device profile name or path")
    _add_space_args(p)
    p.add_argument("--out", help="table path (default: latency_tables/DEVICE__SPACE__RES.json)")
    p.add_argument("--chunk", type=_count(1), default=12, help="ops converted and measured together (interleaved)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads_arg(p)
    _add_protocol_arg(p)

    p = command("sample", cmd_sample, "write K random architectures of a space as JSON files")
    _add_space_args(p)
    p.add_argument("--n", type=_count(1), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = command("bench", cmd_bench, "measure a network end to end on a device")
    p.add_argument("--device", required=True)
    p.add_argument("target", help="architecture .json, .onnx or .tflite file, or torchvision:NAME")
    _add_threads_arg(p)
    _add_protocol_arg(p)

    p = command("estimate", cmd_estimate, "a latency table's estimate for an architecture")
    p.add_argument("--table", help="latency table file")
    p.add_argument("--device", help="instead of --table: the device's table for the architecture's space and "
                   "resolution (yours, else the shipped one)")
    p.add_argument("--overhead", choices=["once", "per-op", "none"], default="once",
                   help="count the runtime's per-invocation overhead once (default), per op, or not at all")
    p.add_argument("arch")

    p = command("validate", cmd_validate, "compare a table's estimates with end-to-end measurements")
    p.add_argument("--table", required=True)
    p.add_argument("--device", help="device (default: the table's)")
    p.add_argument("--n", type=_count(1), default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for validation.json and validation.png")
    p.add_argument("--quiet", action="store_true")
    _add_threads_arg(p)
    _add_protocol_arg(p)

    p = command("measure", cmd_measure, "measure sampled whole networks of a space end to end, each paired with "
                "the reference network, into a resumable measurement set")
    p.add_argument("--device", required=True, help="device profile name or path")
    _add_space_args(p)
    p.add_argument("--n", type=int, default=50, help="networks (stratified over the table's latency range)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=_count(0), default=10, help="networks measured twice for the set's noise floor")
    p.add_argument("--chunk", type=_count(1), default=8, help="networks converted together")
    p.add_argument("--table", help="table whose estimates stratify the sample (default: the device's, else MACs)")
    p.add_argument("--out", required=True, help="set file (.json); rerun the same command to resume")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--protocol", action="append", metavar="FIELD=VALUE",
                   help="override a paired-protocol field, e.g. --protocol pairs=60")

    predictor = sub.add_parser("predictor", help="fit or evaluate a learned latency predictor",
                               description="fit or evaluate a learned latency predictor")
    predictor_sub = predictor.add_subparsers(dest="predictor_command", required=True)
    p = predictor_sub.add_parser("fit", help="fit a predictor", description="fit a predictor of a space's networks")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=cmd_predictor_fit)
    _add_space_args(p)
    p.add_argument("--table", help="latency table (default with --set: the set's device's table when it exists)")
    p.add_argument("--set", action="append", help="measurement set (repeatable)")
    p.add_argument("--measurements", help="CSV: column 'arch' (op names in layer order), latency columns in ms")
    p.add_argument("--column", help="the CSV's latency column")
    p.add_argument("--prior", help="CSV of other devices' measurements (all its latency columns), for --kind transfer")
    p.add_argument("--kind", default="calibrated", choices=["calibrated", "kernel", "transfer"])
    p.add_argument("--residual", default="auto", choices=["auto", "linear", "xgb"],
                   help="calibrated: additive only, with XGBoost trees, or whichever cross-validates better")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="predictor file (.json)")
    p = predictor_sub.add_parser("eval", help="evaluate a predictor on held-out measurements",
                                 description="evaluate a predictor on held-out measurements")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=cmd_predictor_eval)
    p.add_argument("--predictor", required=True)
    p.add_argument("--set", action="append", help="measurement set (repeatable)")
    p.add_argument("--measurements", help="CSV of measurements")
    p.add_argument("--column", help="the CSV's latency column")
    p.add_argument("--plot", help="PNG: predicted vs measured with the ±10%% band")

    p = command("search", cmd_search, "search an architecture for a latency target on a device, train and measure it")
    p.add_argument("--device", help="device profile name or path (default: cpu-onnxruntime)")
    p.add_argument("--space", help="search space (default: proxyless)")
    p.add_argument("--resolution", type=int, help="input resolution (default: 32)")
    p.add_argument("--target-ms", type=float, help="latency target in ms (default: 40%% of the way from the fastest "
                   "to the slowest architecture)")
    p.add_argument("--data", help="CIFAR folder or ImageFolder tree (default: the embedded digits)")
    p.add_argument("--epochs", type=int, help="search epochs (alternating weight and architecture steps)")
    p.add_argument("--warmup-epochs", type=int, help="supernet warm-up epochs (weight steps only)")
    p.add_argument("--train-epochs", type=int, help="epochs training the derived network from scratch")
    p.add_argument("--loss", help="latency loss of the proxyless strategy: add#abs (default), mul#log or add#linear")
    p.add_argument("--strategy", help="proxyless (gradient) or mnas (REINFORCE)")
    p.add_argument("--seed", type=int)
    p.add_argument("--baseline", action="store_true", help="also train and measure a same-budget uniform network")
    p.add_argument("--config", help="JSON or TOML file of search config fields (flags override it)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any search config field (repeatable; VALUE is JSON, else a string), "
                   "e.g. --set arch_lr=0.01 --set weight_sharing=none")
    p.add_argument("--out", help="run folder (default: runs/search-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threads_arg(p)

    p = command("predict", cmd_predict, "predict a model's latency on a device (kernel predictor for any ONNX model; "
                "an architecture uses the device's calibrated predictor of its space when there is one)")
    p.add_argument("--device", required=True, help="device profile name or path")
    p.add_argument("--predictor", help="predictor file (default: latency_tables/predictors/DEVICE__SPACE__RES__"
                   "calibrated.json for an architecture when it exists, else DEVICE__kernel.json)")
    p.add_argument("target", help="architecture .json or .onnx file")

    p = command("export", cmd_export, "export a searched model or an architecture to ONNX, TFLite or TensorRT, "
                "verify it against PyTorch and measure it")
    p.add_argument("source", help="search run folder, model.pt written by search, or architecture .json "
                   "(random weights)")
    p.add_argument("--format", help="comma-separated: onnx, tflite, tensorrt "
                   "(default: onnx,tflite)")
    p.add_argument("--out", required=True, help="output folder (artifacts and export.json)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="TFLite/TensorRT precision: fp32 (default), fp16 weights, or full-integer int8 "
                   "(calibrated)")
    p.add_argument("--device", help="device profile to measure the format its backend loads on "
                   "(default: cpu-onnxruntime, cpu-litert, cuda-tensorrt)")
    p.add_argument("--batch", type=int, help="static batch size of the exported input (default: 1)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: 17)")
    p.add_argument("--nhwc", action="store_true", help="TFLite input channel-last (NHWC)")
    p.add_argument("--data", help="data set for calibration and verification (default: the run's, else digits)")
    p.add_argument("--seed", type=int, help="random weights of an architecture JSON, data split (default: 0)")
    p.add_argument("--random-weights", action="store_true",
                   help="export a run folder without model.pt with random weights (default: refuse it)")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 when a TensorRT engine cannot be built here (default: exit 3 with the reason)")
    _add_protocol_arg(p)

    return parser


def _fail(message: str, as_json: bool, status: int = 2) -> int:
    """The one error contract: one line on stderr, ``{"error": ...}`` on stdout with --json, exit status 2 (3 for
    an artifact that could not be built here)."""
    if as_json:
        print(dumps_strict({"error": message}))
    print(f"hwnas: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        if "--json" not in argv:
            print(exc.usage, end="", file=sys.stderr)
        return _fail(str(exc), "--json" in argv)
    try:
        result = args.handler(args)
    except HwnasError as exc:
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return _fail(message, getattr(args, "json", False), getattr(exc, "exit_status", 2))
    except KeyboardInterrupt as exc:  # search says where its checkpoint is; profile and measure resume from files
        saved = str(exc) or "completed measurements are saved; rerun to resume"
        print(f"hwnas: interrupted ({saved})", file=sys.stderr)
        return 130
    try:
        if args.json:
            result.pop("_text", None)
            print(dumps_strict(result, default=str))
        else:
            _print_human(result)
        sys.stdout.flush()
    except BrokenPipeError:  # `hwnas ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
