"""Do the strategies find better networks than a random pick at the same latency? Runs ``hwnas search`` for each
strategy and seed with the same data, budget and target, each run with the uniform baseline and random
architectures measured in the same band (``--random-baselines``), and prints one table:

    python benchmarks/compare_strategies.py --device cpu-onnxruntime --data clutter --target-ms 1.2 \\
        --strategies proxyless,mnas,evolution --seeds 0,1,2 --random-baselines 8

Per strategy: the searched network's accuracy (mean over seeds), its measured latency / T (the run's paired
verdict), how many seeds beat the random architectures' mean by more than their standard deviation and beat the
uniform baseline, search wall time and peak RSS. Each run is a folder under ``--workdir`` (kept: a rerun of the same
command resumes or reuses finished runs). ``--set FIELD=VALUE`` goes to every run (e.g. ``--set train_epochs=5``);
``--json`` prints the rows as JSON. The machine should be quiet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_one(args: argparse.Namespace, strategy: str, seed: int, reward: str | None) -> dict[str, Any]:
    """One search (reused when its report exists); returns its report."""
    out = args.workdir / f"{strategy}-{reward or 'default'}-seed{seed}"
    report = out / "report.json"
    if not report.is_file():
        argv = [sys.executable, "-m", "hwnas.cli", "search", "--device", args.device, "--strategy", strategy,
                "--seed", str(seed), "--out", str(out), "--baseline", "--random-baselines",
                str(args.random_baselines), "--quiet", "--json"]
        argv += ["--data", args.data] if args.data else []
        argv += ["--target-ms", str(args.target_ms)] if args.target_ms else []
        argv += ["--resolution", str(args.resolution)] if args.resolution else []
        argv += ["--reward", reward] if reward else []
        for field in args.set:
            argv += ["--set", field]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{out}: hwnas search failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(report.read_text())


def summarise(strategy: str, reward: str | None, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: the searched networks against their runs' random and uniform baselines."""
    beats_random = beats_uniform = 0
    for r in reports:
        randoms = [b["accuracy"] for b in r.get("baselines") or [] if b["kind"] == "random"]
        uniform = [b["accuracy"] for b in r.get("baselines") or [] if b["kind"] == "uniform"]
        if len(randoms) >= 2 and r["accuracy"] > statistics.mean(randoms) + statistics.stdev(randoms):
            beats_random += 1
        if uniform and r["accuracy"] > uniform[0]:
            beats_uniform += 1
    randoms_all = [b["accuracy"] for r in reports for b in r.get("baselines") or [] if b["kind"] == "random"]
    over = [r["measured_over_target"] for r in reports if r["measured_over_target"] is not None]
    return {"strategy": strategy, "reward": reward or "default", "seeds": len(reports),
            "accuracy": statistics.mean(r["accuracy"] for r in reports),
            "accuracies": [r["accuracy"] for r in reports],
            "random_mean": statistics.mean(randoms_all) if randoms_all else None,
            "random_std": statistics.stdev(randoms_all) if len(randoms_all) > 1 else None,
            "random_n": len(randoms_all), "beats_random": beats_random, "beats_uniform": beats_uniform,
            "measured_over_target": over, "in_band": sum(0.85 <= o <= 1.0 for o in over),
            "search_seconds": statistics.mean(r["search_seconds"] for r in reports),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in reports)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| strategy | reward | accuracy (mean; per seed) | random in band: mean ± std (n) | beats random+std | "
             "beats uniform | measured / T | in [0.85, 1] T | search s | peak RSS MB |", "|" + "---|" * 10]
    for r in rows:
        rnd = (f"{r['random_mean']:.3f} ± {r['random_std']:.3f} ({r['random_n']})" if r["random_std"] is not None
               else "-")
        lines.append(f"| {r['strategy']} | {r['reward']} | {r['accuracy']:.3f}; "
                     f"{', '.join(f'{a:.3f}' for a in r['accuracies'])} | {rnd} | {r['beats_random']}/{r['seeds']} | "
                     f"{r['beats_uniform']}/{r['seeds']} | {', '.join(f'{o:.3f}' for o in r['measured_over_target'])}"
                     f" | {r['in_band']}/{r['seeds']} | {r['search_seconds']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--data", default="clutter")
    parser.add_argument("--target-ms", type=float)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--strategies", default="proxyless,mnas,evolution")
    parser.add_argument("--rewards", default="", help="comma-separated rewards to compare (mnas, evolution)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--random-baselines", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hwnas-compare-strategies"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rewards: list[str | None] = [r for r in args.rewards.split(",") if r] or [None]
    rows = []
    for strategy in args.strategies.split(","):
        for reward in rewards if strategy != "proxyless" else [None]:
            reports = [run_one(args, strategy, seed, reward) for seed in seeds]
            rows.append(summarise(strategy, reward, reports))
    print(json.dumps(rows, indent=1) if args.json else table(rows))


if __name__ == "__main__":
    main()
