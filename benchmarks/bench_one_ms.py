"""One millisecond, quiet: a measurement set's ``latency_ms`` against ``hwnas bench`` of the same networks, warm
turns (the default) and cold turns (``turn_warmup_runs=0``, the protocol before warm turns) side by side.

    python benchmarks/bench_one_ms.py --device cpu-onnxruntime --resolution 64 --num-classes 1000 --n 20

Measures a set of ``--n`` networks (``--repeat`` of them again at its end) with warm turns, the same plan with cold
turns, then each network and the reference with the device's ``hwnas bench`` protocol (one call per network, their
rounds interleaved). Prints, per timing:

* ``latency_ms / bench``: the set's figure against bench's median of the network (the acceptance: within +-5% for
  >= 95% of networks); this carries the machine's drift between the two measurements;
* ``ratio / bench ratio``: the set's paired ratio against bench's network/reference ratio measured back to back,
  i.e. the same comparison with the drift cancelled: what is left is the scale (warm or cold);
* the set's re-measured subset against its first measurement.

Work files go to ``--workdir`` (kept: a rerun resumes the sets). The machine should be quiet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hwnas.devices import load_device
from hwnas.runtimes.paired import COLD
from hwnas.spaces import get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing_common import agreement_line, bench_figures, measured_set, remeasure_pairs, share_line  # noqa: E402


def cached_bench(path: Path, device: Any, space: Any, mset: Any) -> dict[int, tuple[float, float]]:
    """:func:`bench_figures`, kept in ``path`` so a rerun (e.g. after a change of how a set's level is computed)
    compares the same bench measurements."""
    if path.exists():
        return {int(k): tuple(v) for k, v in json.loads(path.read_text()).items()}
    figures = bench_figures(device, space, mset)
    path.write_text(json.dumps(figures))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hwnas-bench-one-ms"))
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-turn set")
    args = parser.parse_args()
    device = load_device(args.device)
    space = get_space(args.space, args.resolution, args.num_classes)
    tag = f"{device.name}-{space.name}{space.resolution}-{space.num_classes}-n{args.n}-s{args.seed}"
    args.workdir.mkdir(parents=True, exist_ok=True)
    timings = {"warm": {}} if args.no_cold else {"warm": {}, "cold": COLD}
    print(f"{tag}: {args.n} networks, {args.repeat} re-measured")
    for name, protocol in timings.items():
        start = time.perf_counter()
        mset = measured_set(device, space, args.workdir / f"{tag}-{name}.json", args.n, args.seed, args.repeat,
                            protocol)
        set_s = time.perf_counter() - start
        bench = cached_bench(args.workdir / f"{tag}-{name}-bench.json", device, space, mset)
        ids = sorted(mset.rows)
        level = mset.reference_ms or 0.0
        print(f"[{name} turns] set measured in {set_s:.0f} s, reference level {level:.4g} ms; bench's reference "
              f"median over the networks {sorted(b[1] for b in bench.values())[len(ids) // 2]:.4g} ms")
        print("  " + share_line("latency_ms / bench", [mset.rows[i].paired.ratio * level / bench[i][0] for i in ids]))
        print("  " + share_line("ratio / bench ratio", [mset.rows[i].paired.ratio / (bench[i][0] / bench[i][1])
                                                         for i in ids]))
        again, first = remeasure_pairs(mset)
        if again:
            print("  " + agreement_line("re-measured subset", again, first))
        noisy = sum(row.paired.noisy for row in mset.rows.values())
        dropped = sum(r.paired.discarded for r in mset.rows.values())
        print(f"  noisy rows {noisy} of {len(ids)}; discarded pairs {dropped}")


if __name__ == "__main__":
    main()
