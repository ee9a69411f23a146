"""The one place that turns an eval-mode ``nn.Module`` into deployable files (``.onnx``, ``.tflite``).

The runtimes convert isolated ops through these functions and the exporter converts whole networks through
the same ones, so a table entry and an exported model are produced by the same code path. Files are written
atomically (temporary file + ``os.replace``), so an interrupted run never leaves a truncated model behind.

Conversion with litert-torch costs seconds per module (``torch.export`` + decompositions + MLIR lowering, all
per graph), so :func:`cached_tflite` reuses an existing file of the same name and content hash. Converting
several modules as one multi-signature model was measured and rejected: it saves only ~15% of the time
because the cost is per signature, and timing a signature needs private interpreter calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import inspect
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.io import atomic_path, first_line

_LITERT_MISSING = "LiteRT converter not installed: pip install 'hwnas[tflite]' (litert-torch, ai-edge-litert)"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=+-]")


def example_input(input_shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """The fixed random NCHW float32 input used to trace modules and to feed prepared models."""
    return torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(seed))


def to_onnx(
    module: nn.Module,
    input_shape: Sequence[int],
    path: Path,
    *,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "output",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``module`` in eval mode to one self-contained, static-shape ``.onnx`` file and check it.

    The TorchScript exporter (``dynamo=False``) folds each BatchNorm that follows a convolution into the
    convolution's weights (eval-mode peephole + constant folding); a BatchNorm with no convolution before it
    stays a ``BatchNormalization`` node, which is what such a model really runs.
    """
    import onnx

    path = Path(path)
    example = example_input(input_shape)
    with _eval_mode(module), atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (example,), str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[input_name], output_names=[output_name],
            )
        except Exception as error:  # torch.onnx raises many types (unsupported op, tracing failure, ...)
            raise HwnasError(
                f"{path}: torch.onnx could not export {type(module).__name__}: {type(error).__name__}: "
                f"{first_line(error)}"
            ) from error
        model = onnx.load(str(tmp))
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as error:
            raise HwnasError(f"{path}: exported ONNX model is invalid: {first_line(error)}") from error
        onnx.save(model, str(tmp))
    return path


def to_tflite(module: nn.Module, input_shape: Sequence[int], path: Path, *, channel_last_io: bool = True) -> Path:
    """Convert ``module`` in eval mode to a ``.tflite`` file with litert-torch (fp32).

    With ``channel_last_io`` the model takes NHWC input and gives NHWC outputs (outputs of rank >= 3 only), so
    an isolated op has no layout transposes at its edges: with NCHW I/O the converter adds a TRANSPOSE before
    and after it, which a real network pays only once. litert-torch's progress log, warnings and native log
    lines are silenced; on failure they are kept in ``<path>.log``.
    """
    path = Path(path)
    example = example_input(input_shape)
    log_path = path.with_name(path.name + ".log")
    with _eval_mode(module), atomic_path(path) as tmp, _silenced(log_path) as keep_log:
        litert_torch = _import_litert_torch()
        try:
            wrapped, args = module, (example,)
            if channel_last_io:
                with torch.no_grad():
                    outputs = module(example)
                outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
                out_indices = [i for i, out in enumerate(outputs) if torch.is_tensor(out) and out.ndim >= 3]
                in_indices = [0] if example.ndim >= 3 else []
                wrapped = litert_torch.to_channel_last_io(module, args=in_indices, outputs=out_indices).eval()
                if in_indices:
                    args = (example.permute(0, *range(2, example.ndim), 1).contiguous(),)
            litert_torch.convert(wrapped, args).export(str(tmp))
        except Exception as error:  # the converter raises many types; the log file has the details
            keep_log()
            raise HwnasError(
                f"{path}: litert-torch could not convert {type(module).__name__}: {type(error).__name__}: "
                f"{first_line(error)} (converter log: {log_path})"
            ) from error
    log_path.unlink(missing_ok=True)  # a log left by an earlier failed conversion
    return path


def module_digest(module: nn.Module, input_shape: Sequence[int], **options: object) -> str:
    """A content hash of what a conversion depends on: structure, attributes, forward code, weights, options.

    Two modules with the same digest convert to the same file, so a cached file is reused only when it is
    really the same model (the name alone may be reused for new weights or edited code).
    """
    digest = hashlib.sha256(repr((tuple(input_shape), sorted(options.items()))).encode())
    for name, sub in module.named_modules():
        attributes = {
            key: value for key, value in vars(sub).items()
            if not key.startswith("_") and key != "training" and isinstance(value, (bool, int, float, str, tuple))
        }
        digest.update(f"{name}|{type(sub).__module__}.{type(sub).__qualname__}|{sub.extra_repr()}|".encode())
        digest.update(repr(sorted(attributes.items())).encode())
        digest.update(_forward_source(type(sub)).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_onnx(module: nn.Module, input_shape: Sequence[int], directory: Path, name: str, *, opset: int = 17) -> Path:
    """:func:`to_onnx` into ``directory/<name>.<digest>.onnx``, reusing the file when it already exists."""
    digest = module_digest(module, input_shape, opset=opset, torch=torch.__version__, onnx=_version("onnx"))
    return _cached(Path(directory), name, digest, ".onnx", lambda path: to_onnx(module, input_shape, path, opset=opset))


def cached_tflite(
    module: nn.Module, input_shape: Sequence[int], directory: Path, name: str, *, channel_last_io: bool = True
) -> Path:
    """:func:`to_tflite` into ``directory/<name>.<digest>.tflite``, reusing the file when it already exists.

    A cache hit does not even import litert-torch (the import alone takes seconds).
    """
    versions = {"torch": torch.__version__, "litert_torch": _version("litert-torch")}
    digest = module_digest(module, input_shape, channel_last_io=channel_last_io, **versions)
    return _cached(
        Path(directory), name, digest, ".tflite",
        lambda path: to_tflite(module, input_shape, path, channel_last_io=channel_last_io),
    )


def _cached(directory: Path, name: str, digest: str, suffix: str, write: Callable[[Path], Path]) -> Path:
    """Return ``directory/<safe name>.<digest><suffix>``, writing it if missing and removing stale versions."""
    stem = _SAFE_NAME.sub("_", name)
    path = directory / f"{stem}.{digest}{suffix}"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        write(path)
        stale = re.compile(re.escape(stem) + r"\.[0-9a-f]{16}" + re.escape(suffix))
        for old in directory.iterdir():
            if old != path and stale.fullmatch(old.name):
                old.unlink(missing_ok=True)
    return path


def _import_litert_torch():  # noqa: ANN202 - the module type is only known when installed
    try:
        import litert_torch
    except ImportError as error:
        raise RuntimeUnavailable(_LITERT_MISSING) from error
    return litert_torch


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _forward_source(cls: type) -> str:
    try:
        return inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}.forward"


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the conversion and restore each one's mode afterwards."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


@contextlib.contextmanager
def silenced_native_output() -> Iterator[None]:
    """Silence Python and native (C++) writes to stdout/stderr in the block, e.g. LiteRT's delegate banner."""
    with _silenced(None):
        yield


@contextlib.contextmanager
def _silenced(log_path: Path | None) -> Iterator[Callable[[], None]]:
    """Send stdout/stderr (file descriptors 1 and 2, so native logs too) and warnings to a temporary log.

    Yields a function that keeps the log at ``log_path`` when called (on failure). litert-torch's progress
    log is switched off through its environment variable, restored afterwards. Not thread-safe: the file
    descriptors are process-wide.
    """
    keep = [False]
    previous_progress = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    log = tempfile.TemporaryFile(mode="w+b")
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield lambda: keep.__setitem__(0, True)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        if previous_progress is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous_progress
        if keep[0] and log_path is not None:
            log.seek(0)
            Path(log_path).write_bytes(log.read())
        log.close()
