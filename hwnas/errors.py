"""User-facing errors: one line that says which file or field was wrong and what was expected."""

from __future__ import annotations


class HwnasError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line, no traceback."""


class ArtifactMissing(HwnasError):
    """A requested artifact could not be built here (e.g. no TensorRT engine); the CLI exits with status 3 so
    that scripts notice, while what could be written stays on disk."""

    exit_status = 3


class RuntimeUnavailable(HwnasError):
    """A runtime (backend) cannot be used here: a missing package, no GPU, no phone."""
