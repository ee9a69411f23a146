"""Checks of output locations before any work is done, so a long run never ends in a write that fails.

Each check tries what the command will later do (create the folder, create a file in it) instead of asking
``os.access``, which answers yes to root even on a read-only file system.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hwnas.errors import HwnasError


def check_out_folder(path: str | Path, flag: str = "--out") -> Path:
    """Make sure ``path`` is, or can be created as, a folder this process can write into; return it.

    Nothing is created: the check writes and removes a probe file in ``path`` or in its nearest existing parent.

    Raises:
        HwnasError: one line naming ``flag`` when ``path`` (or a parent) is an existing file, or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HwnasError(f"{flag} {path}: is an existing file, expected a folder (give a new or existing folder)")
    _probe(_nearest_existing(path, flag, path), flag, path)
    return path


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """Make sure ``path`` can be written as a file (not a folder; its folder exists or can be created and is
    writable); return it. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise HwnasError(f"{flag} {path}: is a folder, expected a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise HwnasError(f"{flag} {path}: the file is not writable")
    _probe(_nearest_existing(path.parent, flag, path), flag, path)
    return path


def _nearest_existing(folder: Path, flag: str, given: Path) -> Path:
    """``folder`` or its nearest existing parent, which must be a folder (else nothing below it can be created)."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            if not candidate.is_dir():
                raise HwnasError(f"{flag} {given}: {candidate} is an existing file, not a folder")
            return candidate
    return Path.cwd()


def _probe(folder: Path, flag: str, given: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=".hwnas-write-check-", dir=folder)
    except OSError as exc:
        raise HwnasError(f"{flag} {given}: cannot write into {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(name)


__all__ = ["check_out_file", "check_out_folder"]
