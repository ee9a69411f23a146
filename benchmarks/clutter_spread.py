"""Do architectures differ on ``clutter``? Issue 19 item 1's acceptance experiment.

Trains ``--n`` random architectures of the proxyless space on the ``clutter`` task with one budget (epochs, lr,
batch), each once per seed of ``--seeds``, with hwnas's own derived-network training
(:func:`hwnas.search.run_train.train_derived`: the seed sets the initial weights and the batch order; the data, and
its split, stay fixed by ``--data-seed``). Prints the test accuracy's mean/min/max/std over architectures, the
correlation of the first two seeds' accuracies across architectures, the mean |acc_A - acc_B| of the same
architecture against the mean |acc difference| of pairs of different architectures whose MACs are within 10% (the
matched cost is MACs, computed from the op specs; not a latency table), and the same over all pairs.

Usage: ``python benchmarks/clutter_spread.py --n 6 --epochs 2 --seeds 0,1 [--max-per-split 2000] [--json]`` (an epoch of
the default set is 62 steps of 64 images; the search trains its derived network for 10).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import itertools
import json
import multiprocessing
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import hwnas.data.clutter as clutter_module
from hwnas.data import load_dataset
from hwnas.data.clutter import GLYPHS, ClutterConfig
from hwnas.latency.sampling import sample_stratified
from hwnas.search.progress import Progress
from hwnas.search.run_config import SearchConfig
from hwnas.search.run_train import torch_settings, train_derived
from hwnas.spaces import Architecture, get_space


@dataclass
class Trained:
    """One architecture: its human form, cost, and test accuracy per seed."""

    human: str
    macs: int
    params: int
    accuracy: dict[int, float]
    seconds: float


def _options(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=6, help="random architectures (default: 6)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per network (default: 3)")
    p.add_argument("--resolution", type=int, default=32, help="input resolution (default: 32)")
    p.add_argument("--seeds", default="0,1", help="training seeds, comma-separated, at least two (default: 0,1)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data split, fixed across seeds (default: 0)")
    p.add_argument("--arch-seed", type=int, default=0, help="seed drawing the architectures (default: 0)")
    p.add_argument("--max-per-split", type=int, help="keep at most this many images per data split (quick runs)")
    p.add_argument("--lr", type=float, default=0.05, help="initial learning rate, cosine to 0 (default: 0.05)")
    p.add_argument("--batch", type=int, default=64, help="training batch (default: 64)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer (default: sgd)")
    p.add_argument("--stratified", action="store_true",
                   help="draw the architectures evenly over the space's MACs range (hwnas measure's sampler) "
                        "instead of uniformly at random")
    p.add_argument("--clutter", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ClutterConfig field for this run (e.g. classes=16, per_class=320, "
                        "scale=0.4,0.7); repeatable; the shipped set is the default")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings run at once, one thread each, in worker processes (default: 1)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    try:
        args.clutter_config = clutter_config(args.clutter)
    except ValueError as err:
        p.error(str(err))
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds) or args.n < 2:
        p.error("need --n >= 2 and at least two distinct --seeds")
    return args


def clutter_config(overrides: list[str]) -> ClutterConfig:
    """The shipped :class:`ClutterConfig` with ``FIELD=VALUE`` overrides; ``classes=N`` takes the first N glyphs."""
    changes: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(ClutterConfig)}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise ValueError(f"--clutter {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        if name == "classes":
            changes[name] = tuple(GLYPHS)[:int(value)] if value.isdigit() else tuple(value.split(","))
            if any(c not in GLYPHS for c in changes[name]) or len(changes[name]) < 2:
                raise ValueError(f"--clutter {item!r}: classes are 2..{len(GLYPHS)} or names of {''.join(GLYPHS)}")
        elif "," in value:
            changes[name] = tuple(float(v) for v in value.split(","))
        else:
            changes[name] = type(getattr(ClutterConfig(), name))(float(value) if "." in value else int(value))
    return dataclasses.replace(ClutterConfig(), **changes)


_DATA: dict[str, Any] = {}  # per process: the data set, loaded once


def _load(args: argparse.Namespace) -> Any:
    if "data" not in _DATA:
        torch.set_num_threads(1)
        if args.clutter:  # the loader reads the shipped set; a variant is swapped in for this process
            clutter_module.read_clutter = functools.partial(clutter_module.read_clutter, config=args.clutter_config)
        _DATA["data"] = load_dataset("clutter", args.resolution, args.data_seed, max_per_split=args.max_per_split)
    return _DATA["data"]


def _train_one(args: argparse.Namespace, arch: Architecture, seed: int) -> tuple[float, float]:
    """(test accuracy, seconds) of ``arch`` trained with ``seed`` (in this process or a worker)."""
    data = _load(args)
    space = get_space("proxyless", args.resolution, data.num_classes)
    config = SearchConfig(seed=seed, train_epochs=args.epochs, train_lr=args.lr, train_batch_size=args.batch,
                          weight_optimizer=args.optimizer, num_threads=1)
    start = time.perf_counter()
    with torch_settings(config):
        _, accuracy, _ = train_derived(space, arch, data, config, Progress())
    return accuracy, time.perf_counter() - start


def _train_all(args: argparse.Namespace) -> tuple[list[Trained], dict[str, Any]]:
    data = _load(args)
    space = get_space("proxyless", args.resolution, data.num_classes)
    archs = (sample_stratified(space, args.n, args.arch_seed) if args.stratified
             else space.sample_archs(args.n, random.Random(args.arch_seed)))
    trained = []
    for arch in archs:
        specs = space.arch_specs(arch)
        trained.append(Trained(space.human(arch), sum(s.macs() for s in specs), sum(s.params() for s in specs),
                               {}, 0.0))
    tasks = [(index, seed) for index in range(len(archs)) for seed in args.seeds]
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, args, archs[index], seed): (index, seed) for index, seed in tasks}
        for future in concurrent.futures.as_completed(futures):
            index, seed = futures[future]
            row = trained[index]
            row.accuracy[seed], seconds = future.result()
            row.seconds += seconds / len(args.seeds)
            print(f"arch {index + 1}/{len(archs)} seed {seed}: accuracy {row.accuracy[seed]:.3f} "
                  f"({row.macs / 1e6:.1f} MMACs, {seconds:.0f} s)", file=sys.stderr, flush=True)
    return trained, data.summary()


def _mean_abs(pairs: list[tuple[float, float]]) -> float | None:
    return float(np.mean([abs(a - b) for a, b in pairs])) if pairs else None


def _spread(trained: list[Trained], seeds: list[int]) -> dict[str, Any]:
    """The figures of the acceptance: spread across architectures, seed agreement, matched-cost differences."""
    acc = np.array([[t.accuracy[s] for s in seeds] for t in trained])  # (archs, seeds)
    mean_per_arch = acc.mean(axis=1)
    same = [(row[i], row[j]) for row in acc for i, j in itertools.combinations(range(len(seeds)), 2)]
    matched, every = [], []
    for a, b in itertools.combinations(range(len(trained)), 2):
        pairs = [(acc[a, s], acc[b, s]) for s in range(len(seeds))]
        every += pairs
        if abs(trained[a].macs - trained[b].macs) <= 0.1 * max(trained[a].macs, trained[b].macs):
            matched += pairs
    correlation = float(np.corrcoef(acc[:, 0], acc[:, 1])[0, 1]) if acc[:, :2].std(axis=0).min() > 0 else None
    return {"accuracy_mean": float(acc.mean()), "accuracy_min": float(acc.min()), "accuracy_max": float(acc.max()),
            "arch_mean_accuracy_std": float(mean_per_arch.std(ddof=1)),
            "arch_mean_accuracy_range": float(mean_per_arch.max() - mean_per_arch.min()),
            "seed_correlation": correlation, "same_arch_mean_abs_diff": _mean_abs(same),
            "macs_matched_mean_abs_diff": _mean_abs(matched), "macs_matched_pairs": len(matched) // len(seeds),
            "all_pairs_mean_abs_diff": _mean_abs(every)}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = _options(argv)
    start = time.perf_counter()
    trained, data = _train_all(args)
    figures = _spread(trained, args.seeds)
    setup = {k: getattr(args, k) for k in ("n", "epochs", "resolution", "seeds", "data_seed", "arch_seed",
                                           "max_per_split", "lr", "batch", "optimizer",
                                           "stratified", "clutter", "jobs")}
    if args.json:
        print(json.dumps({"setup": setup, "data": data, "figures": figures, "seconds": time.perf_counter() - start,
                          "archs": [t.__dict__ | {"accuracy": {str(k): v for k, v in t.accuracy.items()}}
                                    for t in trained]}, indent=2))
        return 0
    print(f"clutter spread: {args.n} proxyless archs @{args.resolution}, {args.epochs} epochs, seeds {args.seeds}, "
          f"data {data}" + (f", clutter {args.clutter}" if args.clutter else ""))
    for t in trained:
        accs = " ".join(f"{t.accuracy[s]:.3f}" for s in args.seeds)
        print(f"  {t.macs / 1e6:7.2f} MMACs {t.params / 1e6:5.2f} M params  acc {accs}  ({t.seconds:.0f} s/net)")
    f = figures
    print(f"accuracy over archs x seeds: mean {f['accuracy_mean']:.3f} min {f['accuracy_min']:.3f} "
          f"max {f['accuracy_max']:.3f}; std of per-arch means {f['arch_mean_accuracy_std']:.3f}, "
          f"range {f['arch_mean_accuracy_range']:.3f}")
    print(f"seed A vs seed B correlation across archs: {_fmt(f['seed_correlation'])}")
    print(f"mean |acc diff|: same arch, other seed {_fmt(f['same_arch_mean_abs_diff'])}; different archs with MACs "
          f"within 10% {_fmt(f['macs_matched_mean_abs_diff'])} ({f['macs_matched_pairs']} pairs); "
          f"all pairs {_fmt(f['all_pairs_mean_abs_diff'])}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
