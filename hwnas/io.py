"""Cross-cutting file helpers at the bottom of the house (imports nothing from hwnas but its errors).

Every file hwnas writes is written atomically: into a temporary file beside the target, flushed to disk
(``fsync``), then renamed over the target (``os.replace``), so readers and a ``kill -9`` only ever see the old or
the new complete file; a write that fails (a full disk) says so in one line, and the old file stays. JSON is
strict: a non-finite number becomes ``null`` rather than the invalid token ``NaN``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from hwnas.errors import HwnasError


def now_iso() -> str:
    """The current UTC time to the second, ISO 8601 (``2026-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def first_line(message: object, empty: str = "no message") -> str:
    """The first non-empty line of an exception's message (or of a text), for one-line user-facing errors;
    ``empty`` when there is none."""
    return next((line.strip() for line in str(message).splitlines() if line.strip()), empty)


def finite_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-inf) replaced by None, so it serializes as strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def dumps_strict(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes ``NaN``/``Infinity`` (they become ``null``)."""
    return json.dumps(finite_json(data), allow_nan=False, **kwargs)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer (e.g. a converter) to fill; when the block succeeds the
    file is flushed to disk and replaces ``path``, otherwise it is removed and ``path`` is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        try:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


class WriteFailed(HwnasError, OSError):
    """A failed write (a full disk, a read-only folder): a one-line user error, and still the ``OSError`` it was
    for code that catches that."""


def write_error(path: Path, exc: OSError) -> WriteFailed:
    """One line for a failed atomic write of ``path`` that says what was kept, with the cause's ``errno``."""
    kept = "the previous file is kept as it was" if path.is_file() else "nothing was written"
    error = WriteFailed(f"{path}: cannot write the file ({exc.strerror or exc}); {kept}")
    error.errno = exc.errno
    return error


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise write_error(Path(path), exc) from None


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as strict, indented JSON (see :func:`finite_json`) to ``path`` atomically."""
    text = dumps_strict(data, indent=1, sort_keys=False) + "\n"
    write_bytes_atomic(path, text.encode())


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON content of ``path``; a missing file, a folder, bytes that are not UTF-8 or invalid JSON raise one
    line naming the file and ``what`` was expected (e.g. ``"latency table"``)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise HwnasError(f"{path}: is a folder, expected a {what} .json file") from None
    except UnicodeDecodeError:
        raise HwnasError(f"{path}: corrupt {what}, not UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HwnasError(f"{path}: corrupt {what}, not valid JSON ({exc})") from None
