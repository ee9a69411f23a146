"""Check a latency estimator against end-to-end measurements of sampled architectures."""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hwnas.devices import DeviceProfile, device_protocol
from hwnas.io import write_json_atomic
from hwnas.latency.estimator import OVERHEAD_MODES, TableEstimator
from hwnas.latency.metrics import agreement, plot_against_measured
from hwnas.latency.table import LatencyTable
from hwnas.runtimes import get_runtime
from hwnas.runtimes.protocol import measure
from hwnas.spaces import get_space


@dataclass(frozen=True)
class ValidateConfig:
    """Options of ``hwnas validate``: how many architectures, the sampling seed, conversion chunk size."""

    n: int = 50
    seed: int = 0
    chunk: int = 10
    progress: bool = True
    protocol_overrides: dict[str, Any] = field(default_factory=dict)


def validate_table(table_path: Path, device: DeviceProfile, out_dir: Path,
                   config: ValidateConfig = ValidateConfig()) -> dict[str, Any]:
    """Sample ``config.n`` architectures, estimate them from the table, measure them end to end on ``device``.

    Writes ``out_dir/validation.json`` (every architecture's figures and the metrics for each overhead mode, in
    the vocabulary of :func:`~hwnas.latency.metrics.agreement`: shares in percent) and ``out_dir/validation.png``
    (estimated vs measured).
    """
    table = LatencyTable.load(table_path)
    space = get_space(table.space, table.resolution, table.num_classes)
    estimators = {mode: TableEstimator(table, space, mode) for mode in OVERHEAD_MODES}
    rng = random.Random(config.seed)
    archs = [space.random_arch(rng) for _ in range(config.n)]
    protocol = device_protocol(device, config.protocol_overrides)
    measured: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hwnas-validate-") as tmp:
        runtime = get_runtime(device.backend, device.runtime_config(), Path(tmp))
        bar = tqdm(total=len(archs), desc=f"validate {device.name} {space.name}@{space.resolution}", unit="net",
                   disable=not config.progress, dynamic_ncols=True)
        for start in range(0, len(archs), config.chunk):
            items = [(f"arch{i}", space.build(archs[i]).eval(), space.input_shape)
                     for i in range(start, min(start + config.chunk, len(archs)))]
            prepared = runtime.prepare_many(items)
            try:
                for key, stats in measure(prepared, protocol, on_done=lambda *_: bar.update(1)).items():
                    measured[key] = stats.median_ms
            finally:
                for model in prepared.values():
                    model.close()
        bar.close()
    rows = []
    for i, arch in enumerate(archs):
        row = {"arch": arch.to_dict(), "measured_ms": measured[f"arch{i}"]}
        row.update({f"estimated_ms_{mode}": est.latency_ms(arch) for mode, est in estimators.items()})
        rows.append(row)
    meas = [r["measured_ms"] for r in rows]
    metrics = {mode: agreement([r[f"estimated_ms_{mode}"] for r in rows], meas) for mode in OVERHEAD_MODES}
    report = {"table": str(table_path), "device": device.name, "space": space.name, "resolution": space.resolution,
              "overhead_ms": table.overhead_ms, "metrics": metrics, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "validation.json", report)
    plot_validation(rows, metrics, out_dir / "validation.png", f"{device.name} {space.name}@{space.resolution}")
    return report


def plot_validation(rows: list[dict[str, Any]], metrics: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Estimated vs measured scatter, one series per overhead mode, with the y = x line and a +-10% band."""
    meas = np.array([r["measured_ms"] for r in rows])
    series = {}
    for mode in OVERHEAD_MODES:
        m = metrics[mode]
        label = (f"table ({mode}): ±10% {m['within10_pct']:.0f}%, τ {m['kendall']:.2f}, "
                 f"bias {m['bias_pct']:+.1f}%")
        series[label] = np.array([r[f"estimated_ms_{mode}"] for r in rows])
    return plot_against_measured(meas, series, path, title=title, xlabel="measured end to end (ms)",
                                 ylabel="estimated from table (ms)",
                                 limits=(float(meas.min()) * 0.85, float(meas.max()) * 1.15))
