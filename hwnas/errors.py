"""User-facing errors: one line that says which file or field was wrong and what was expected."""

from __future__ import annotations


class HwnasError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line, no traceback."""


class RuntimeUnavailable(HwnasError):
    """A runtime (backend) cannot be used here: a missing package, no GPU, no phone."""
