"""Timing under load: the same networks measured quiet and with busy loops, with and without the new timing.

    python benchmarks/bench_timing_load.py --device cpu-onnxruntime --resolution 64 --n 20 --repeat 10
    python benchmarks/bench_timing_load.py --device cpu-litert --resolution 224 --n 12 --repeat 6

The process pins itself to core 0. It measures one plan of ``--n`` networks (``--repeat`` of them re-measured at the
set's end) three times:

* ``quiet``: no other load, the new timing (interrupted turns dropped and retaken, adaptive pairs);
* ``loaded``: a busy loop pinned to core 0 (the measurement's core) and one to core 1, started and stopped here;
  the new timing;
* ``loaded-old``: the same load, without the new timing: no interruption detection (every run counts as clean,
  as before) and a fixed number of pairs (``precision=0`` where the protocol has it). Warm turns in all three,
  so the scale is the same and only the handling of interruptions differs.

Prints for each loaded set: its re-measured subset against its first measurement (the acceptance: within +-5% for
>= 90%, |bias| <= 2%), and its ratios against the quiet set's (within +-5% for >= 90%), then the wall time.
Ratios are compared, not milliseconds: the busy loops slow even clean runs of both sides alike (shared caches and
clock), which pairing cancels. Work files go to ``--workdir`` (a rerun resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from hwnas.devices import load_device
from hwnas.runtimes import interruptions
from hwnas.runtimes.paired import PairedProtocol
from hwnas.spaces import get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing_common import agreement_line, busy_loops, measured_set, pin_to, remeasure_pairs  # noqa: E402


@contextlib.contextmanager
def without_detection() -> Iterator[None]:
    """Every run counts as clean, as before interruption detection existed."""
    original = interruptions.thread_waits
    interruptions.thread_waits = lambda: interruptions.NoWaits("switched off by the benchmark")
    import hwnas.runtimes.base as base

    base.thread_waits = interruptions.thread_waits
    try:
        yield
    finally:
        interruptions.thread_waits = base.thread_waits = original


def old_protocol() -> dict[str, Any]:
    """Fixed pairs where the protocol adapts them."""
    names = {f.name for f in dataclasses.fields(PairedProtocol)}
    return {"precision": 0} if "precision" in names else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hwnas-bench-load"))
    args = parser.parse_args()
    pin_to(0)
    device = load_device(args.device)
    space = get_space(args.space, args.resolution, args.num_classes)
    tag = f"{device.name}-{space.name}{space.resolution}-{space.num_classes}-n{args.n}-s{args.seed}"
    args.workdir.mkdir(parents=True, exist_ok=True)
    cases = {"quiet": ([], contextlib.nullcontext, {}), "loaded": ([0, 1], contextlib.nullcontext, {}),
             "loaded-old": ([0, 1], without_detection, old_protocol())}
    sets = {}
    for name, (cores, timing, protocol) in cases.items():
        start = time.perf_counter()
        with busy_loops(cores), timing():
            sets[name] = measured_set(device, space, args.workdir / f"{tag}-{name}.json", args.n, args.seed,
                                      args.repeat, protocol)
        rows = sets[name].rows.values()
        print(f"[{name}] {time.perf_counter() - start:.0f} s; noisy rows {sum(r.paired.noisy for r in rows)} of "
              f"{len(rows)}, dropped pairs {sum(r.paired.discarded for r in rows)}", flush=True)
    quiet = sets["quiet"]
    for name, mset in sets.items():
        again, first = remeasure_pairs(mset)
        print(f"  {name:10s} " + agreement_line("re-measured subset", again, first))
        if name != "quiet":
            ids = sorted(set(mset.rows) & set(quiet.rows))
            print(f"  {name:10s} " + agreement_line("ratios against quiet", [mset.rows[i].paired.ratio for i in ids],
                                                    [quiet.rows[i].paired.ratio for i in ids]))


if __name__ == "__main__":
    main()
