"""Export a searched model to ONNX and TFLite (fp32, then TFLite int8 and optionally fp16) and print one table of
numerics and measured vs estimated latency on cpu-onnxruntime and cpu-litert, for docs/.

Usage::

    python tools/export_report.py runs/<search> --out runs/<search>/export [--precisions fp32,int8,fp16]

Each precision is one ``hwnas export`` into ``OUT/<precision>/`` (its ``export.json`` has every figure); the
table is printed as Markdown and saved as ``OUT/export_report.md`` with the rows in ``OUT/export_report.json``.
The same, by hand::

    hwnas export RUN --format onnx,tflite --out OUT/fp32
    hwnas export RUN --format tflite --precision int8 --out OUT/int8
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hwnas.export import ExportConfig, export_model


@dataclass(frozen=True)
class ReportConfig:
    """Which exports to run; ``export`` holds every other export option (data, batch, protocol...)."""

    precisions: tuple[str, ...] = ("fp32", "int8")
    export: ExportConfig = field(default_factory=ExportConfig)


def formats_for(precision: str) -> tuple[str, ...]:
    """ONNX is fp32 only, so the quantized exports are TFLite alone."""
    return ("onnx", "tflite") if precision == "fp32" else ("tflite",)


def run_exports(source: Path, out: Path, config: ReportConfig) -> list[dict[str, Any]]:
    """One export per precision; one row per artifact."""
    rows = []
    for precision in config.precisions:
        export = replace(config.export, precision=precision, formats=formats_for(precision))
        result = export_model(source, out / precision, export)
        for fmt in export.formats:
            check = result["verification"][fmt]
            rows.append({
                "artifact": f"{fmt} {result['precision'][fmt]}", "device": result["devices"][fmt],
                "max_abs_diff": check["max_abs_diff"], "mean_abs_diff": check["mean_abs_diff"],
                "top1_agreement": check["top1_agreement"], "within_bounds": check["within_bounds"],
                "measured_ms": result["measured_ms"][fmt], "estimated_ms": result["estimated_ms"][fmt],
                "target_ms": result["target_ms"], "size_kib": Path(result["files"][fmt]).stat().st_size / 1024,
                "report": result["files"]["report"], "notes": result["notes"],
            })
    return rows


def markdown(rows: list[dict[str, Any]], source: Path) -> str:
    """The table, then every distinct note."""

    def ms(value: float | None) -> str:
        return f"{value:.3f}" if value is not None else "-"

    lines = [f"Export of `{source}`", "",
             "| artifact | device | max abs diff | mean abs diff | top-1 agreement | in bounds | size KiB | "
             "measured ms | estimated ms | target ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['artifact']} | {r['device']} | {r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e} | "
                     f"{r['top1_agreement']:.3f} | {'yes' if r['within_bounds'] else 'NO'} | {r['size_kib']:.0f} | "
                     f"{ms(r['measured_ms'])} | {ms(r['estimated_ms'])} | {ms(r['target_ms'])} |")
    notes = list(dict.fromkeys(note for r in rows for note in r["notes"]))
    return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="search run folder (or model.pt / architecture JSON)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precisions", default=",".join(ReportConfig.precisions),
                        help="comma-separated subset of fp32,int8,fp16")
    parser.add_argument("--data", help="data set for calibration and verification (default: the run's)")
    args = parser.parse_args(argv)
    export = ExportConfig(data=args.data) if args.data else ExportConfig()
    config = ReportConfig(precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
                          export=export)
    rows = run_exports(args.source, args.out, config)
    table = markdown(rows, args.source)
    (args.out / "export_report.md").write_text(table + "\n")
    (args.out / "export_report.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
