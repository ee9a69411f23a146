"""The closed loop with the table against the closed loop with a refitting predictor, on the real device.

    python benchmarks/bench_aim.py [--devices cpu-onnxruntime,cpu-litert] [--resolution 32] [--num-classes 10]
        [--fractions 0.2,0.35,0.5,0.65,0.8] [--seeds 2] [--steps 8]

No training: both loops only choose an architecture for a target (latency does not depend on the weights), from
the same architecture probabilities (random logits tilted towards slow candidates, one set per seed). Targets lie
at the given fractions of the device's range (fastest to slowest architecture, measured paired). The table loop
is ``meet_on_device`` (table target tuned by trial, measurements by the device protocol); the predictor loop is
``aim_on_device`` (the device's shipped calibrated predictor, refitted after every paired measurement). Afterwards
both chosen architectures are measured again in one paired measurement, the verdict printed here (``x T``).

Prints one Markdown row per target and loop: measurements used, the verdict over T, and a summary.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from hwnas.devices import load_device
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors import load_predictor
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.search.aim import PairedMeter, aim_on_device, default_predictor_path
from hwnas.search.decode import decode_under_target, fastest_arch, slowest_arch
from hwnas.search.run import meet_on_device
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import get_space


def _log_probs(space, table, seed: int, bias: float) -> list[list[float]]:
    """Random logits plus ``bias`` x the candidate's latency rank in its layer (0 fastest, 1 slowest): like the
    probabilities of a search pulled towards slow, accurate ops, whose most probable architecture is over T, so
    the target constrains the decode (with plain random logits the most probable architecture is often far under
    T and every loop simply returns it)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for costs in table.layer_costs_ms():
        rank = torch.tensor(costs, dtype=torch.float64).argsort().argsort().double() / max(len(costs) - 1, 1)
        logits = torch.randn(len(costs), generator=gen, dtype=torch.float64) + bias * rank
        out.append(torch.log_softmax(logits, 0).tolist())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu-onnxruntime,cpu-litert")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--fractions", default="0.2,0.35,0.5,0.65,0.8")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--bias", type=float, default=3.0,
                        help="logit bonus of a layer's slowest candidate over its fastest (0: plain random logits)")
    args = parser.parse_args()
    print("| device | T (ms) | seed | table loop: measurements | table loop: verdict / T | predictor loop: "
          "measurements | predictor loop: verdict / T |")
    print("|---|---|---|---|---|---|---|")
    summary: dict[str, list[tuple[int, float]]] = {"table": [], "predictor": []}
    for name in args.devices.split(","):
        device = load_device(name)
        space = get_space(args.space, args.resolution, args.num_classes)
        table = TableEstimator(LatencyTable.load(default_table_path(name, space.name, space.resolution)), space)
        predictor = load_predictor(default_predictor_path(name, space))
        config = SearchConfig(closed_loop_steps=args.steps, retry_pause_s=2.0)
        with PairedMeter(device, space, float(predictor.meta.reference_ms)) as meter:
            ends = meter.measure({"fastest": space.build(fastest_arch(space, table)),
                                  "slowest": space.build(slowest_arch(space, table))}, "range")
            low, high = ends["fastest"].median_ms, ends["slowest"].median_ms
            for fraction in (float(f) for f in args.fractions.split(",")):
                target = low + fraction * (high - low)
                for seed in range(args.seeds):
                    log_probs = _log_probs(space, table, seed, args.bias)
                    decode = lambda t: decode_under_target(space, log_probs, table, t)  # noqa: E731
                    ceiling = table.latency_ms(decode(1e9) or fastest_arch(space, table))
                    table_arch, table_log = meet_on_device(space, table, target, decode, fastest_arch(space, table),
                                                           ceiling, device, config)
                    aimed_arch, aimed_log, _ = aim_on_device(space, predictor, target, log_probs, meter, config)
                    verdict = meter.measure({"table": space.build(table_arch), "predictor": space.build(aimed_arch)},
                                            "verdict")
                    cells = []
                    table_log, aimed_log = ([step.to_dict() for step in log] for log in (table_log, aimed_log))
                    for loop, log in (("table", table_log), ("predictor", aimed_log)):
                        ratio = verdict[loop].median_ms / target
                        summary[loop].append((len({e["arch"] for e in log}), ratio))
                        cells.append(f"{len({e['arch'] for e in log})} | {ratio:.2f}")
                    print(f"| {name} | {target:.3f} | {seed} | {' | '.join(cells)} |", flush=True)
    for loop, rows in summary.items():
        steps = [s for s, _ in rows]
        ratios = [r for _, r in rows]
        within = sum(1 for r in ratios if 0.85 <= r <= 1.0)
        print(f"\n{loop} loop: {statistics.mean(steps):.1f} measurements on average, verdict in [0.85, 1.0] T for "
              f"{within} of {len(ratios)}, over T for {sum(1 for r in ratios if r > 1.0)}, "
              f"median {statistics.median(ratios):.2f} T")


if __name__ == "__main__":
    main()
