"""Where hwnas finds and keeps files: shipped data, the user's own data, and the cache.

* Shipped data (device files, latency tables, predictors, measurement sets): read-only defaults that travel with
  the package (``hwnas/_data/`` in an installed wheel, copied there at build time from the checkout's top-level
  ``devices/`` and ``latency_tables/``, which stay the source of truth; read from those folders directly in an
  editable install). ``HWNAS_DEVICES`` and ``HWNAS_TABLES`` replace the shipped folders.
* User data (``HWNAS_DATA``, default ``$XDG_DATA_HOME/hwnas`` or ``~/.local/share/hwnas``): tables written by
  ``profile`` and ``search``, and device files added with ``hwnas devices add``. A user's file of the same name
  overrides the shipped one. hwnas never writes into the package or the checkout.
* Cache (``HWNAS_CACHE``, default ``$XDG_CACHE_HOME/hwnas`` or ``~/.cache/hwnas``): converted models, lock files.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from hwnas.errors import HwnasError

CACHE_ENV_VAR = "HWNAS_CACHE"
DATA_ENV_VAR = "HWNAS_DATA"
SHIPPED_FOLDERS = ("devices", "latency_tables")


def cache_dir() -> Path:
    """The per-user cache: ``$HWNAS_CACHE``, else ``$XDG_CACHE_HOME/hwnas``, else ``~/.cache/hwnas``."""
    return _xdg(CACHE_ENV_VAR, "XDG_CACHE_HOME", Path(".cache"))


def data_dir() -> Path:
    """The per-user data folder: ``$HWNAS_DATA``, else ``$XDG_DATA_HOME/hwnas``, else ``~/.local/share/hwnas``."""
    return _xdg(DATA_ENV_VAR, "XDG_DATA_HOME", Path(".local") / "share")


def user_dir(name: str) -> Path:
    """The user's own folder of one kind of data (``devices``, ``latency_tables``); it may not exist yet."""
    return data_dir() / name


def shipped_dir(name: str) -> Path:
    """A folder of shipped data: the package's copy (``hwnas/_data/NAME``, an installed wheel) when there is one,
    else the checkout's top-level folder (an editable install)."""
    if name not in SHIPPED_FOLDERS:
        raise ValueError(f"no shipped folder {name!r} (expected one of {', '.join(SHIPPED_FOLDERS)})")
    packaged = Path(str(resources.files("hwnas").joinpath("_data", name)))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / name


def lock_file(path: str | Path) -> Path:
    """The lock file guarding ``path`` (kept in the cache, so data folders hold only data), one per resolved path."""
    resolved = Path(path).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:16]
    folder = cache_dir() / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # HWNAS_CACHE is a file, or read-only
        raise HwnasError(f"{CACHE_ENV_VAR} folder {folder}: cannot create it ({exc.strerror or exc}); set "
                         f"{CACHE_ENV_VAR} to a folder you can write") from None
    return folder / f"{resolved.name}.{digest}.lock"


def _xdg(own: str, xdg: str, fallback: Path) -> Path:
    override = os.environ.get(own)
    if override:
        return Path(override).expanduser()
    base = os.environ.get(xdg)
    return (Path(base).expanduser() if base else Path.home() / fallback) / "hwnas"


__all__ = ["cache_dir", "data_dir", "lock_file", "shipped_dir", "user_dir"]
