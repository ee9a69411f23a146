"""Summarise shipped latency tables and their validations as Markdown (what docs/latency_tables.md shows).

    python tools/tables_report.py [LOGDIR]

LOGDIR is the folder ``tools/build_tables.sh`` wrote (default ``runs/build-tables``): its ``profile-*.json``
give each profile's wall time, its ``validate-*/validation.json`` the end-to-end comparisons (read in today's
vocabulary: a report written when shares were fractions is converted, :func:`~hwnas.latency.metrics.
figures_in_percent`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hwnas.latency.metrics import figures_in_percent
from hwnas.latency.table import LatencyTable, tables_dir


def main(logdir: Path) -> None:
    profiles = {}
    for path in sorted(logdir.glob("profile-*.json")):
        result = json.loads(path.read_text())
        profiles[Path(result["table"]).name] = result
    print("| table | ops | noisy ops | per-call overhead (µs) | profile wall time (s) | CPU | runtime versions |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(tables_dir().glob("*.json")):
        table = LatencyTable.load(path)
        runtime = table.fingerprint.get("runtime", {})
        versions = ", ".join(f"{k} {v}" for k, v in runtime.get("versions", {}).items())
        seconds = profiles.get(path.name, {}).get("seconds", "—")
        print(f"| `{path.name}` | {len(table.entries)} | {len(table.noisy_keys())} | "
              f"{1000 * table.overhead_ms:.1f} | {seconds} | {table.fingerprint.get('machine', {}).get('cpu_model')} "
              f"| {versions} |")
    print()
    print("| device | networks | overhead mode | within ±5% | within ±10% | RMSE (ms) | Kendall τ | mean bias | "
          "measured range (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in sorted(logdir.glob("validate-*/validation.json")):
        report = json.loads(path.read_text())
        measured = [row["measured_ms"] for row in report["rows"]]
        for mode, stored in report["metrics"].items():
            m = figures_in_percent(stored)
            print(f"| {report['device']} {report['space']}@{report['resolution']} | {m['n']} | {mode} | "
                  f"{m['within5_pct']:.0f}% | {m['within10_pct']:.0f}% | {m['rmse_ms']:.3f} | "
                  f"{m['kendall']:.3f} | {m['bias_pct']:+.1f}% | {min(measured):.2f}–{max(measured):.2f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/build-tables"))
