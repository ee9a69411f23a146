"""``export_model``: SOURCE -> artifacts -> verification -> latency -> ``export.json``."""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

import hwnas
from hwnas.devices import DeviceProfile
from hwnas.errors import HwnasError
from hwnas.export.config import FORMATS, PRECISIONS, ExportConfig, out_path
from hwnas.export.inputs import ExportData, export_data
from hwnas.export.latency import Estimate, device_notes, measure_artifact, resolve_devices, table_estimate
from hwnas.export.metadata import embed_tflite_metadata, export_metadata
from hwnas.export.onnx_export import export_onnx
from hwnas.export.source import Source, load_source
from hwnas.export.tensorrt_export import TensorRTResult, export_tensorrt
from hwnas.export.tflite_export import export_tflite, tflite_io
from hwnas.export.verify import Verification, torch_outputs, verify_artifact
from hwnas.io import write_json_atomic
from hwnas.runtimes.protocol import Stats


@dataclass
class _Artifacts:
    """What was written: per artifact format its file (None: not built), input layout and precision."""

    files: dict[str, str | None] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    precisions: dict[str, str] = field(default_factory=dict)
    tflite_io: dict[str, Any] | None = None
    tensorrt: TensorRTResult | None = None

    def add(self, fmt: str, path: Path | None, layout: str, precision: str) -> None:
        self.files[fmt] = str(path) if path is not None else None
        self.layouts[fmt], self.precisions[fmt] = layout, precision


def check_config(config: ExportConfig) -> None:
    """One-line errors for options that cannot work, before anything is converted."""
    unknown = [f for f in config.formats if f not in FORMATS]
    if not config.formats or unknown:
        raise HwnasError(f"--format: expected a comma-separated subset of {','.join(FORMATS)}, "
                         f"got {','.join(config.formats) or 'nothing'}")
    if config.precision not in PRECISIONS:
        raise HwnasError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    for name in ("batch", "calibration_batches", "calibration_batch_size", "verify_samples", "torch_threads"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HwnasError(f"export: {name} must be a positive integer, got {value!r}")
    if not 7 <= config.opset <= 21:
        raise HwnasError(f"--opset: expected 7..21, got {config.opset}")


def export_model(source: str | Path, out_dir: str | Path, config: ExportConfig | None = None) -> dict[str, Any]:
    """Export SOURCE (run folder, model.pt or architecture JSON) to ``config.formats`` in ``out_dir``, verify
    every artifact against PyTorch, time it on its device, and write ``out_dir/export.json``; returns its content."""
    config = config or ExportConfig()
    check_config(config)
    started = time.perf_counter()
    with _torch_threads(config.torch_threads):
        src = load_source(source, config.seed, config.random_weights)
        devices = resolve_devices(config.formats, config.device, src.meta.get("device"))
        data = export_data(src, config)
        shape = (config.batch, *src.space.input_shape[1:])
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        seconds: dict[str, float] = {}
        tick = time.perf_counter()
        artifacts = _write_artifacts(src, data, shape, devices, out_dir, config)
        seconds["convert"], tick = time.perf_counter() - tick, time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hwnas-export-") as tmp:
            checks = _verify_all(src, data, shape, artifacts, config, Path(tmp))
            seconds["verify"], tick = time.perf_counter() - tick, time.perf_counter()
            latency = _measure_all(artifacts, devices, config, Path(tmp))
            seconds["measure"] = time.perf_counter() - tick
    estimates = {fmt: table_estimate(src.space, src.arch, devices[fmt], config.batch, artifacts.precisions[fmt])
                 for fmt in config.formats}
    artifacts.files["report"] = str(out_path(out_dir, config, "report"))
    seconds["total"] = time.perf_counter() - started
    result = _result(src, data, shape, devices, artifacts, checks, latency, estimates, config, seconds)
    write_json_atomic(Path(artifacts.files["report"]), result)
    Path(artifacts.files["report"]).chmod(0o644)
    return result


def _write_artifacts(src: Source, data: ExportData, shape: tuple[int, ...], devices: dict[str, DeviceProfile],
                     out_dir: Path, config: ExportConfig) -> _Artifacts:
    artifacts = _Artifacts()
    arch = src.arch.to_dict()
    if "onnx" in config.formats or "tensorrt" in config.formats:
        path = export_onnx(src.module, shape, out_path(out_dir, config, "onnx"), opset=config.opset,
                           input_name=config.input_name, output_name=config.output_name,
                           metadata=export_metadata(arch, "fp32", "NCHW", src.meta))
        artifacts.add("onnx", path, "NCHW", "fp32")
    if "tflite" in config.formats:
        layout = "NHWC" if config.nhwc else "NCHW"
        path = export_tflite(src.module, shape, out_path(out_dir, config, "tflite"), precision=config.precision,
                             nhwc=config.nhwc, calibration=data.calibration)
        embed_tflite_metadata(path, export_metadata(arch, config.precision, layout, src.meta))
        artifacts.add("tflite", path, layout, config.precision)
        artifacts.tflite_io = tflite_io(path)
    if "tensorrt" in config.formats:
        result = export_tensorrt(out_path(out_dir, config, "onnx"), out_path(out_dir, config, "tensorrt"),
                                 out_path(out_dir, config, "trtexec"), config.precision, shape, devices["tensorrt"],
                                 data.calibration)
        artifacts.add("tensorrt", result.engine, "NCHW", config.precision)
        artifacts.files["trtexec"] = str(result.trtexec)
        artifacts.tensorrt = result
    return artifacts


def _verify_all(src: Source, data: ExportData, shape: tuple[int, ...], artifacts: _Artifacts, config: ExportConfig,
                workdir: Path) -> dict[str, Verification | None]:
    """Every artifact written (the ONNX behind a TensorRT engine too) against one batched PyTorch reference."""
    reference = torch_outputs(src.module, data.verification)
    checks: dict[str, Verification | None] = {}
    for fmt in FORMATS:
        if fmt in artifacts.layouts:
            path = artifacts.files[fmt]
            bounds = config.bounds[artifacts.precisions[fmt]]
            checks[fmt] = None if path is None else verify_artifact(fmt, Path(path), shape, reference,
                                                                    data.verification, bounds, workdir)
    return checks


def _measure_all(artifacts: _Artifacts, devices: dict[str, DeviceProfile], config: ExportConfig,
                 workdir: Path) -> dict[str, tuple[Stats | None, str | None]]:
    latency: dict[str, tuple[Stats | None, str | None]] = {}
    for fmt in config.formats:
        path = artifacts.files.get(fmt)
        if not config.measure or path is None:  # no path: no engine was built, the TensorRT note says why
            latency[fmt] = (None, None)
        else:
            latency[fmt] = measure_artifact(Path(path), devices[fmt], config.protocol_overrides, workdir)
    return latency


def _result(src: Source, data: ExportData, shape: tuple[int, ...], devices: dict[str, DeviceProfile],
            artifacts: _Artifacts, checks: dict[str, Verification | None],
            latency: dict[str, tuple[Stats | None, str | None]], estimates: dict[str, Estimate],
            config: ExportConfig, seconds: dict[str, float]) -> dict[str, Any]:
    def per_check(attribute: str) -> dict[str, Any]:
        return {fmt: getattr(c, attribute) if c is not None else None for fmt, c in checks.items()}

    return {
        "files": artifacts.files,
        "max_abs_diff": per_check("max_abs_diff"),
        "mean_abs_diff": per_check("mean_abs_diff"),
        "top1_agreement": per_check("top1_agreement"),
        "within_bounds": per_check("within_bounds"),
        "measured_ms": {fmt: stats.median_ms if stats else None for fmt, (stats, _) in latency.items()},
        "estimated_ms": {fmt: e.ms for fmt, e in estimates.items()},
        "target_ms": src.meta.get("target_ms"),
        "target_device": src.meta.get("device") if src.meta.get("target_ms") is not None else None,
        "devices": {fmt: d.name for fmt, d in devices.items()},
        "precision": artifacts.precisions,
        "input_shape": list(shape),
        "input_layout": artifacts.layouts,
        "source": _source_dict(src),
        "data": data.to_dict(),
        "verification": {fmt: c.to_dict() if c else None for fmt, c in checks.items()},
        "latency": {fmt: stats.to_dict() if stats else None for fmt, (stats, _) in latency.items()},
        "estimates": {fmt: e.to_dict() for fmt, e in estimates.items()},
        "tflite_io": artifacts.tflite_io,
        "tensorrt": artifacts.tensorrt.to_dict() if artifacts.tensorrt else None,
        "opset": config.opset,
        "hwnas_version": hwnas.__version__,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "notes": _notes(src, artifacts, checks, latency, estimates, config)
        + device_notes(devices, src.meta.get("device"), src.meta.get("target_ms")),
    }


def _notes(src: Source, artifacts: _Artifacts, checks: dict[str, Verification | None],
           latency: dict[str, tuple[Stats | None, str | None]], estimates: dict[str, Estimate],
           config: ExportConfig) -> list[str]:
    notes = []
    if not src.trained:
        notes.append("random weights (architecture JSON): the artifacts are for latency work; numerics compare the "
                     "same random network" + (", so int8 agreement is indicative only" if config.precision == "int8"
                                              else ""))
    if config.precision != "fp32" and "onnx" in config.formats:
        notes.append(f"onnx is exported in fp32 (--precision {config.precision} applies to tflite and tensorrt)")
    if artifacts.tensorrt is not None:
        notes.append(artifacts.tensorrt.note)
    for fmt, check in checks.items():
        if check is not None and not check.within_bounds:
            limits = check.to_dict()
            mean_limit = limits["mean_abs_diff_limit"]
            notes.append(f"{fmt}: OUTSIDE the {artifacts.precisions[fmt]} bounds: max abs diff "
                         f"{check.max_abs_diff:.3g} (limit {limits['max_abs_diff_limit']:.3g}), "
                         f"mean abs diff {check.mean_abs_diff:.3g}"
                         + (f" (limit {mean_limit:.3g})" if mean_limit is not None else "")
                         + f", top-1 agreement {check.top1_agreement:.3f} (least {check.bounds.min_top1})")
    notes += [reason for _, reason in latency.values() if reason]
    notes += [f"{fmt} estimate: {e.note}" for fmt, e in estimates.items() if e.note]
    return notes


def _source_dict(src: Source) -> dict[str, Any]:
    keys = ("target_ms", "device", "estimated_ms", "measured_ms", "accuracy")
    return {"path": str(src.path), "kind": src.kind, "trained": src.trained, "arch": src.arch.to_dict(),
            "arch_human": src.space.human(src.arch), "space": src.space.name, "resolution": src.space.resolution,
            "num_classes": src.space.num_classes, "search": {k: src.meta[k] for k in keys if k in src.meta}}


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` PyTorch intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def summary_text(result: dict[str, Any]) -> str:
    """The human form of a result: one line per artifact, then the notes."""
    source = result["source"]
    lines = [f"{source['space']}@{source['resolution']} ({source['kind']}, "
             f"{'trained' if source['trained'] else 'random weights'}), input {result['input_shape']}"]
    target = result.get("target_ms")
    for fmt in FORMATS:
        if fmt not in result["precision"]:
            continue
        check = result["verification"].get(fmt)
        numerics = (f"max|d| {check['max_abs_diff']:.2e}  mean|d| {check['mean_abs_diff']:.2e}  "
                    f"top1 {check['top1_agreement']:.3f}  {'ok' if check['within_bounds'] else 'OUT OF BOUNDS'}"
                    if check else "not verified (no artifact)")
        device = result["devices"].get(fmt)  # None for an artifact that was not measured (an engine not built)
        latency = (f"measured {_ms(result['measured_ms'].get(fmt))}" + (f" on {device}" if device else "") + "  "
                   f"estimated {_ms(result['estimated_ms'].get(fmt))}")
        target_text = f"  target {_ms(target)}" + (f" on {result['target_device']}" if result.get("target_device")
                                                    else "")
        lines.append(f"{fmt:<8} {result['precision'][fmt]:<5} {numerics}  {latency}"
                     + (target_text if target is not None else "") + f"  {result['files'][fmt] or ''}")
    lines += [f"note: {note}" for note in result["notes"]]
    lines.append(f"report: {result['files']['report']}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{value:.3f} ms" if value is not None else "-"
