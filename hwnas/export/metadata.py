"""Provenance embedded in every artifact that can hold it: the architecture JSON and the hwnas version.

ONNX keeps it in ``metadata_props``; TFLite in the model's ``metadata`` table (named buffers the interpreter
ignores, where ``min_runtime_version`` lives too); a TensorRT engine is an opaque serialized plan that holds no
user metadata, so it is only in the ONNX file beside it and in ``export.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import hwnas
from hwnas.io import write_bytes_atomic

PREFIX = "hwnas."


def export_metadata(arch: dict[str, Any], precision: str, layout: str, meta: Mapping[str, Any]) -> dict[str, str]:
    """String key/values: ``hwnas.version``, ``hwnas.arch`` (JSON), ``hwnas.precision``, ``hwnas.input_layout``
    and, for a trained model, ``hwnas.normalization`` (the per-channel mean/std its inputs need)."""
    props = {f"{PREFIX}version": hwnas.__version__, f"{PREFIX}arch": json.dumps(arch, sort_keys=True),
             f"{PREFIX}precision": precision, f"{PREFIX}input_layout": layout}
    if meta.get("mean") and meta.get("std"):
        props[f"{PREFIX}normalization"] = json.dumps({"mean": list(meta["mean"]), "std": list(meta["std"])})
    return props


def read_onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def embed_tflite_metadata(path: Path, props: Mapping[str, str]) -> Path:
    """Add ``props`` as named metadata buffers to the ``.tflite`` file at ``path`` (rewritten atomically).

    Buffers that a converter stored after the flatbuffer (``offset``/``size``, as ai-edge-quantizer does) are
    moved inline, so the rewritten file is a plain flatbuffer (valid below TFLite's 2 GiB flatbuffer limit).
    """
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    model.buffers = model.buffers or []
    for buffer in model.buffers:  # data stored after the flatbuffer (offset/size) moves into the buffer itself
        if buffer.offset and buffer.offset > 1:
            buffer.data = np.frombuffer(data, dtype=np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset, buffer.size = 0, 0
    entries = [m for m in (model.metadata or []) if not _name(m.name).startswith(PREFIX)]
    for key, value in props.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode(), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(model.buffers) - 1
        entries.append(entry)
    model.metadata = entries
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    write_bytes_atomic(path, bytes(builder.Output()))
    return Path(path)


def read_tflite_metadata(path: Path) -> dict[str, str]:
    """The ``hwnas.*`` metadata entries of a ``.tflite`` file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    props = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = _name(entry.Name())
        if name.startswith(PREFIX):
            props[name] = bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode()
    return props


def _name(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
