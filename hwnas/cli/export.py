"""``hwnas export``: a searched model or an architecture to ONNX, TFLite or TensorRT, verified and measured."""

from __future__ import annotations

import argparse
from typing import Any

from hwnas.cli.common import protocol_overrides
from hwnas.errors import ArtifactMissing
from hwnas.outputs import check_out_folder


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from hwnas.export import ExportConfig, export_model, summary_text

    given = {"precision": args.precision, "device": args.device, "batch": args.batch, "opset": args.opset,
             "data": args.data, "seed": args.seed, "nhwc": args.nhwc or None,
             "random_weights": args.random_weights or None}
    if args.format is not None:
        given["formats"] = tuple(f.strip() for f in args.format.split(",") if f.strip())
    config = ExportConfig(**{k: v for k, v in given.items() if v is not None},
                          protocol_overrides=protocol_overrides(args))
    check_out_folder(args.out)
    result = export_model(args.source, args.out, config)
    engine = result.get("tensorrt")
    if engine and not engine["engine_built"] and not args.allow_missing:
        raise ArtifactMissing(f"{engine['note']}; --allow-missing accepts the export without it")
    return {**result, "_text": summary_text(result)}
