"""``hwnas``'s entry point and its error contract: parse, run the command's handler, print its result (one JSON
object with ``--json``); every failure is one line on stderr (and ``{"error": ...}`` on stdout with ``--json``).

Exit status: 0 done, 2 an error of the input or environment (3: an artifact that cannot be built here), 130 stopped
by Ctrl-C (SIGINT), 143 stopped by SIGTERM (what ``timeout``, ``kill`` and service managers send), the shells'
128 + signal convention. SIGTERM is handled as Ctrl-C: the command's ``finally`` blocks and context managers run
(temporary folders are removed, finished work is saved) and one ``hwnas: interrupted ...`` line says what is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from typing import Any, Iterator

from hwnas.cli.parser import UsageError, build_parser
from hwnas.errors import HwnasError
from hwnas.io import dumps_strict


def _print_human(result: dict[str, Any]) -> None:
    text = result.pop("_text", None)
    if text is not None:
        print(text)
        return
    for key, value in result.items():
        print(f"{key}: {value if not isinstance(value, (dict, list)) else json.dumps(value)}")


def _fail(message: str, as_json: bool, status: int = 2) -> int:
    """The one error contract: one line on stderr, ``{"error": ...}`` on stdout with --json, exit status 2 (3 for
    an artifact that could not be built here)."""
    if as_json:
        print(dumps_strict({"error": message}))
    print(f"hwnas: error: {message}", file=sys.stderr)
    return status


@contextlib.contextmanager
def _sigterm_as_interrupt(received: list[int]) -> Iterator[None]:
    """While the command runs, the first SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (later ones are
    ignored, so that the cleanup it starts is not cut short) and is noted in ``received``; the previous handler is
    restored after. Outside the main thread (``main`` called from a thread) signals cannot be handled: unchanged."""

    def interrupt(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        if "--json" not in argv:
            print(exc.usage, end="", file=sys.stderr)
        return _fail(str(exc), "--json" in argv)
    terminated: list[int] = []
    try:
        with _sigterm_as_interrupt(terminated):
            result = args.handler(args)
    except HwnasError as exc:
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return _fail(message, getattr(args, "json", False), getattr(exc, "exit_status", 2))
    except KeyboardInterrupt as exc:  # search says where its checkpoint is; profile and measure resume from files
        saved = str(exc) or "completed measurements are saved; rerun to resume"
        print(f"hwnas: interrupted{' by SIGTERM' if terminated else ''} ({saved})", file=sys.stderr)
        return 128 + signal.SIGTERM if terminated else 130
    try:
        if args.json:
            result.pop("_text", None)
            print(dumps_strict(result, default=str))
        else:
            _print_human(result)
        sys.stdout.flush()
    except BrokenPipeError:  # `hwnas ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
