"""Convert a measurement set's planned networks into the device's artifact cache ahead of its measurement.

    python tools/preconvert_set.py --device cpu-litert --resolution 224 --n 80 --seed 1 [--num-classes 1000]

LiteRT's converter takes seconds per whole network while a paired measurement of it takes about one; run this on
another core (``taskset -c 0``) while ``hwnas measure`` (or ``tools/build_predictor.py``) measures on its own core,
and the measurement finds each converted file by name and content hash. The plan is computed exactly as
``hwnas measure`` computes it (same space, n, seed and stratifying table), so nothing is measured here.
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from hwnas.devices import load_device
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.profile import artifacts_dir
from hwnas.latency.sets import network_items, sample_stratified
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.runtimes import get_runtime
from hwnas.spaces import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True)
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=8)
    args = parser.parse_args()
    device = load_device(args.device)
    space = get_space(args.space, args.resolution, args.num_classes)
    table_path = default_table_path(device.name, space.name, space.resolution)
    proxy = TableEstimator(LatencyTable.load(table_path), space) if table_path.is_file() else None
    plan = [a.choices for a in sample_stratified(space, args.n, args.seed, proxy)]
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    for start in tqdm(range(0, len(plan), args.chunk), unit="chunk", desc=f"convert {device.name}"):
        ids = list(range(start, min(start + args.chunk, len(plan))))
        for model in runtime.prepare_many(network_items(space, plan, ids)).values():
            model.close()


if __name__ == "__main__":
    main()
