"""Checks of output locations before any work is done, so a long run never ends in a write that fails and never
overwrites a file the user made.

Each check tries what the command will later do (create the folder, create a file in it) instead of asking
``os.access``, which answers yes to root even on a read-only file system.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Collection

from hwnas.errors import HwnasError

RUN_FILES = ("arch.json", "model.pt", "report.json", "search.png", "predictor.json", "predictor_set.json",
             "checkpoint.pt")
"""What a search writes into its run folder (``hwnas.search.run``, ``hwnas.search.aim``)."""
RUN_MARKER = ".hwnas-run"
"""Written into a run folder before the run's first file (a predictor built for it comes before the checkpoint), so
a run interrupted that early is still recognised as one."""
RUN_SIGNS = ("checkpoint.pt", "report.json", RUN_MARKER)
"""A folder holding one of these is a search run folder (interrupted, or complete: refused by the checkpoint)."""


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


def check_no_clobber(folder: str | Path, would_write: Collection[str] | Callable[[str], bool], flag: str = "--out",
                     reason: str = "which this command would overwrite") -> None:
    """Refuse a folder that holds a file the command would write (its own earlier output is recognised by the
    caller, who skips this check then).

    Args:
        would_write: the file names written, or a test of a name (for numbered files of any count).
        reason: what the message says of the file found.

    Raises:
        HwnasError: ``--out DIR: holds NAME, REASON; give an empty or new folder``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    test = would_write if callable(would_write) else would_write.__contains__
    for entry in sorted(folder.iterdir()):
        if test(entry.name):
            raise HwnasError(f"{flag} {folder}: holds {entry.name}, {reason}; give an empty or new folder")


def numbered_names(prefix: str, suffix: str, count: int, width: int = 4) -> Callable[[str], bool]:
    """A test of the names ``f"{prefix}{i:0{width}d}{suffix}"`` for ``i < count`` (without listing them all)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))

    def test(name: str) -> bool:
        match = pattern.fullmatch(name)
        return bool(match) and int(match[1]) < count and name == f"{prefix}{int(match[1]):0{width}d}{suffix}"

    return test


def check_run_folder(path: str | Path, flag: str = "--out") -> Path:
    """:func:`check_out_folder`, then refuse a folder that is not a search run folder (see :data:`RUN_SIGNS`) but
    holds a file a run writes (:data:`RUN_FILES`): the user's own ``predictor.json`` is never overwritten."""
    path = check_out_folder(path, flag)
    if not any((path / name).exists() for name in RUN_SIGNS):
        check_no_clobber(path, RUN_FILES, flag, "which is not from an hwnas run")
    return path


def mark_run_folder(path: str | Path) -> None:
    """Create the run folder with its :data:`RUN_MARKER` (before the run writes its first file)."""
    marker = Path(path) / RUN_MARKER
    if not marker.exists():
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("a search run folder of hwnas\n")
        except OSError as exc:
            raise HwnasError(f"--out {path}: cannot write into the folder ({exc.strerror or exc})") from None


def check_env_folder(folder: str | Path, variable: str) -> Path:
    """Make sure ``folder`` (below the folder named by the environment variable ``variable``) is, or can be
    created as, a writable folder; the message names the variable, the one thing the user can change."""
    try:
        return check_out_folder(folder, flag=f"{variable} folder")
    except HwnasError as exc:
        raise HwnasError(f"{exc}; set {variable} to a folder you can write") from None


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


__all__ = ["RUN_FILES", "RUN_MARKER", "check_env_folder", "check_no_clobber", "check_out_file", "check_out_folder",
           "check_run_folder", "mark_run_folder", "numbered_names"]
