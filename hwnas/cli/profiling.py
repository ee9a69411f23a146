"""``hwnas profile``, ``sample``, ``bench``, ``estimate`` and ``validate``: latency tables, and whole networks
measured end to end to check them."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from hwnas.cli.common import progress, protocol_overrides, warn_foreign_table, with_threads
from hwnas.errors import HwnasError
from hwnas.outputs import check_no_clobber, check_out_file, check_out_folder, numbered_names


def cmd_profile(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.profile import ProfileConfig, profile_device
    from hwnas.spaces import get_space

    device = with_threads(load_device(args.device), args)
    space = get_space(args.space, args.resolution, args.num_classes)
    if args.out:
        check_out_file(args.out)
    config = ProfileConfig(chunk=args.chunk, protocol_overrides=protocol_overrides(args), progress=progress(args))
    return profile_device(device, space, Path(args.out) if args.out else None, config).to_dict()


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.spaces import get_space

    space = get_space(args.space, args.resolution, args.num_classes)
    if args.n > space.size:  # distinct architectures only: refused before a file is written
        raise HwnasError(f"--n {args.n}: the {space.name} space at {space.resolution} has only {space.size} distinct "
                         f"architectures; pass --n {space.size} or less")
    rng = random.Random(args.seed)
    out = check_out_folder(args.out)
    check_no_clobber(out, numbered_names("arch_", ".json", args.n))  # an earlier sample's files are kept
    archs = space.sample_archs(args.n, rng)  # without replacement
    files = [str(arch.save(out / f"arch_{i:04d}.json")) for i, arch in enumerate(archs)]
    return {"files": files, "space": space.name, "resolution": space.resolution}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.bench import bench

    device = with_threads(load_device(args.device), args)
    machine: dict[str, Any] = {}
    stats = bench(device, args.target, protocol_overrides(args), machine)
    result = {"device": device.name, "target": args.target, "median_ms": stats.median_ms, "p10_ms": stats.p10_ms,
              "p90_ms": stats.p90_ms, "mean_ms": stats.mean_ms, "std_ms": stats.std_ms, "runs": stats.n,
              "noisy": stats.noisy}
    return {**result, "machine": machine} if machine else result


def cmd_estimate(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.latency.estimator import TableEstimator
    from hwnas.latency.lookup import covering_table, table_file
    from hwnas.latency.table import LatencyTable
    from hwnas.spaces import Architecture, get_space
    from hwnas.spaces.footprint import arch_footprint

    if not (args.table or args.device):
        raise HwnasError("estimate: give --table FILE or --device NAME (its table for the architecture's space)")
    table = LatencyTable.load(table_file(args.table)) if args.table else None
    arch = Architecture.load(args.arch)
    space = get_space(arch.space, arch.resolution, arch.num_classes)
    if table is None:  # the device's table that covers the space and its head: the user's, else the shipped one
        from hwnas.devices import load_device

        table = covering_table(with_threads(load_device(args.device), args), space)
    warn_foreign_table(table)
    estimator = TableEstimator(table, space, args.overhead)
    terms = estimator.terms(arch)
    total = estimator.latency_ms(arch)
    memory = arch_footprint(space, arch)
    text = "\n".join(f"{t.part:<22} {t.ms:8.4f} ms  {t.key}" for t in terms) + f"\n{'total':<22} {total:8.4f} ms"
    text += (f"\n{'memory':<22} {memory.memory_mb:8.3f} MiB  params {memory.params_mb:.3f} MiB + peak activations "
             f"{memory.peak_activation_mb:.3f} MiB (batch 1, fp32)")
    return {"latency_ms": total, "device": table.device_name, "overhead_mode": args.overhead,
            "terms": [{"part": t.part, "key": t.key, "ms": t.ms} for t in terms], "memory_mb": memory.to_dict(),
            "_text": text}


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.devices import load_device
    from hwnas.latency.lookup import table_file
    from hwnas.latency.table import LatencyTable
    from hwnas.latency.validate import ValidateConfig, validate_table

    table_path = table_file(args.table)  # a path, or a name `hwnas tables` lists
    table = LatencyTable.load(table_path)
    warn_foreign_table(table)
    device = with_threads(load_device(args.device or table.device_name), args)
    config = ValidateConfig(n=args.n, seed=args.seed, progress=progress(args),
                            protocol_overrides=protocol_overrides(args))
    check_out_folder(args.out)
    report = validate_table(table_path, device, Path(args.out), config)
    text = "\n".join(f"{mode:<7} ±5% {m['within5_pct']:5.1f}%  ±10% {m['within10_pct']:5.1f}%  "
                     f"RMSE {m['rmse_ms']:.3f} ms  tau {m['kendall']:.3f}  bias {m['bias_pct']:+.1f}%"
                     for mode, m in report["metrics"].items())
    return {"metrics": report["metrics"], "out": args.out, "_text": text}
