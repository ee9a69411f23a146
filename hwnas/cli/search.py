"""``hwnas search``: the search config from a file, flags and ``--set``; the run's summary in a few lines."""

from __future__ import annotations

import argparse
from typing import Any

from hwnas.cli.common import json_or_text
from hwnas.errors import HwnasError


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.search.run import SearchConfig, run_search

    config = SearchConfig.from_file(args.config) if args.config else SearchConfig()
    flags = {"device": args.device, "space": args.space, "target_ms": args.target_ms, "resolution": args.resolution,
             "data": args.data, "search_epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
             "train_epochs": args.train_epochs, "loss": args.loss, "strategy": args.strategy, "reward": args.reward,
             "seed": args.seed, "out": args.out, "random_baselines": args.random_baselines, "targets": args.targets,
             "device_threads": args.threads, "predictor": args.predictor, "max_memory_mb": args.max_memory_mb,
             "max_params_mb": args.max_params_mb}
    config = config.with_overrides({k: v for k, v in flags.items() if v is not None}, "command line")
    config = config.with_overrides(_parse_sets(args.set), "command line --set")
    if args.baseline:
        config = config.with_overrides({"baseline": True}, "command line")
    result = run_search(config, progress=not args.quiet)
    if "targets" in result:
        return {**result, "_text": _targets_text(result)}
    attempts = (result.get("measured") or {}).get("attempts", [])
    result["measured_spread"] = attempt_spread(attempts) if attempts else None
    measured = result["measured_ms"]
    lines = [result["arch_human"],
             f"target     {result['target_ms']:.4f} ms",
             f"estimated  {result['estimated_ms']:.4f} ms ({_model_text(result['latency_model'])})",
             "measured   " + (f"{measured:.4f} ms ({result['measured_over_target']:.2f} x target{_quietest(result)})"
                               if measured is not None else "not measured"),
             f"accuracy   {result['accuracy']:.4f} (test split)"]
    if result.get("memory_mb"):
        lines.append(_memory_text(result))
    verdict = _verdict_text(result)
    if verdict is not None:
        lines.insert(4, verdict)
    if result.get("target_note"):
        lines.insert(2, f"           {result['target_note']}")
    base = result["baseline"]
    if base is not None:
        lines.append(f"baseline   accuracy {base['accuracy']:.4f}, estimated {base['estimated_ms']:.4f} ms"
                     + (f", measured {base['measured_ms']:.4f} ms" if base["measured_ms"] is not None else ""))
    randoms = [row for row in result.get("baselines") or [] if row["kind"] == "random"]
    if randoms:
        accs = [row["accuracy"] for row in randoms]
        lines.append(f"random     {len(randoms)} in the band: accuracy mean {sum(accs) / len(accs):.4f} (min "
                     f"{min(accs):.4f}, max {max(accs):.4f})")
    lines.append(f"files      {result['out']}/ (arch.json, model.pt, report.json, search.png, pareto.json, "
                 "pareto.png)")
    return {**result, "_text": "\n".join(lines)}


def _memory_text(result: dict[str, Any]) -> str:
    """The network's memory at batch 1, with the bounds the search was given."""
    memory = result["memory_mb"]
    bounds = [f"{label} <= {result[name]:g} MB" for name, label in (("max_memory_mb", "peak"),
                                                                   ("max_params_mb", "parameters"))
              if result.get(name) is not None]
    return (f"memory     peak activations {memory['peak_activation_mb']:.4g} MB, parameters {memory['params_mb']:.4g} "
            "MB" + (f" (bound: {', '.join(bounds)})" if bounds else ""))


def _targets_text(result: dict[str, Any]) -> str:
    """One line per target of ``--targets``."""
    lines = []
    for row in result["targets"]:
        measured = (f"measured {row['measured_ms']:.4f} ms ({row['measured_over_target']:.2f} x T)"
                    if row["measured_ms"] is not None else "not measured")
        lines.append(f"target {row['target_ms']:.4f} ms: {measured}, accuracy {row['accuracy']:.4f}  {row['out']}/")
    lines.append(f"files      {result['out']}/ (targets.json, supernet.pt, target-*/)")
    return "\n".join(lines)


def _model_text(model: dict[str, Any]) -> str:
    """What the estimate came from: the latency table, or the predictor (of any kind) and the rows it was fitted on,
    the closed loop's included, when it refits."""
    if model["kind"] == "table":
        return "latency table"
    rows = f", {model['rows']} networks incl. the closed loop's" if model.get("rows") else ""
    return f"{model['kind']} predictor{rows}; {model['note']}"


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
        values[field.strip()] = json_or_text(raw)
    return values
