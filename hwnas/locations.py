"""Where hwnas keeps files of its own: the per-user cache (converted models, lock files).

``HWNAS_CACHE`` overrides the cache folder (default ``~/.cache/hwnas``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV_VAR = "HWNAS_CACHE"


def cache_dir() -> Path:
    """The per-user cache: ``$HWNAS_CACHE``, else ``~/.cache/hwnas``."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "hwnas"


def lock_file(path: str | Path) -> Path:
    """The lock file guarding ``path`` (kept in the cache, so data folders hold only data), one per resolved path."""
    resolved = Path(path).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:16]
    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{resolved.name}.{digest}.lock"


__all__ = ["cache_dir", "lock_file"]
