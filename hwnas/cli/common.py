"""What several commands share: flags turned into what the layers take, and the foreign-table warning."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from hwnas.errors import HwnasError


def json_or_text(raw: str) -> Any:
    """The VALUE of a ``FIELD=VALUE`` flag: JSON (numbers, true/false, null, lists, objects), else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def protocol_overrides(args: argparse.Namespace, paired: bool = False) -> dict[str, Any]:
    """``--protocol FIELD=VALUE`` pairs, checked against the (paired) measurement protocol so that an error names
    the flag rather than the device file they are later merged with."""
    overrides: dict[str, Any] = {}
    for item in getattr(args, "protocol", None) or []:
        if "=" not in item:
            raise HwnasError(f"--protocol {item!r}: expected FIELD=VALUE, e.g. rounds=5")
        name, raw = item.split("=", 1)
        overrides[name] = json_or_text(raw)
    if overrides:
        if paired:
            from hwnas.runtimes.paired import PairedProtocol as protocol_class
        else:
            from hwnas.runtimes.protocol import Protocol as protocol_class
        protocol_class.from_dict({**protocol_class().to_dict(), **overrides}, "--protocol")
    return overrides


def with_threads(device: Any, args: argparse.Namespace) -> Any:
    """The device profile with ``--threads`` applied (the runtime's thread count is part of a table's fingerprint,
    so a table measured with other threads is refused for measuring into)."""
    return dataclasses.replace(device, threads=args.threads) if getattr(args, "threads", None) else device


def progress(args: argparse.Namespace) -> bool:
    """Progress bars only to a terminal: a log file would collect hundreds of KB of carriage returns."""
    return not args.quiet and sys.stderr.isatty()


def warn_foreign_table(table: Any) -> None:
    """One warning line on stderr when ``table`` comes from another machine or runtime."""
    from hwnas.latency.table import foreign_table_note

    warn(foreign_table_note(table))


def warn(note: str | None) -> None:
    """``note`` as one warning line on stderr (nothing for None): a table or predictor from elsewhere."""
    if note:
        print(f"hwnas: warning: {note}", file=sys.stderr)
