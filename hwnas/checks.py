"""One way to check configs and JSON files, with one error wording: which file, which field, what was expected.

Every error is one line::

    SOURCE: field 'NAME': expected WHAT, got VALUE
    SOURCE: unknown field 'NAME' (expected one of A, B, C)
    SOURCE: missing field 'NAME'

``SOURCE`` names the file (and where in it, e.g. ``pixel.toml: [protocol]``). Field types are Python type hints
(``int | None``, ``tuple[float, float]``, ``dict[str, Any]``), usually a dataclass's own annotations, so the record
and its check cannot drift apart.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from hwnas.errors import HwnasError

MAX_THREADS = 1024
"""The most runtime threads a device file or ``--threads`` may ask for: more is a typo (a runtime allocates per
thread, and fails late)."""


def field_error(source: str, name: str, expected: str, value: Any) -> HwnasError:
    """``SOURCE: field 'NAME': expected WHAT, got VALUE``."""
    return HwnasError(f"{source}: field {name!r}: expected {expected}, got {_short_repr(value)}")


def unknown_field_error(source: str, name: str, known: Iterable[str], noun: str = "field") -> HwnasError:
    """``SOURCE: unknown field 'NAME' (expected one of ...)`` (``noun`` names what the file calls its fields)."""
    return HwnasError(f"{source}: unknown {noun} {name!r} (expected one of {', '.join(known)})")


def missing_field_error(source: str, name: str, hint: str = "") -> HwnasError:
    """``SOURCE: missing field 'NAME'``, with ``(hint)`` appended when given."""
    return HwnasError(f"{source}: missing field {name!r}" + (f" ({hint})" if hint else ""))


def check_known(values: Mapping[str, Any], known: Iterable[str], source: str, noun: str = "field") -> None:
    """Every key of ``values`` is one of ``known``."""
    known = list(known)
    for key in values:
        if key not in known:
            raise unknown_field_error(source, key, known, noun)


def check_required(values: Mapping[str, Any], required: Iterable[str], source: str) -> None:
    """Every name of ``required`` is a key of ``values``."""
    for name in required:
        if name not in values:
            raise missing_field_error(source, name)


def check_fields(values: Mapping[str, Any], hints: Mapping[str, Any], source: str, noun: str = "field") -> None:
    """Every key of ``values`` is a field of ``hints`` and its value matches the field's type hint."""
    for key, value in values.items():
        if key not in hints:
            raise unknown_field_error(source, key, hints, noun)
        check_type(value, hints[key], source, key)


def check_type(value: Any, hint: Any, source: str, name: str) -> None:
    """``value`` matches the type hint ``hint`` (see :func:`matches`)."""
    if not matches(value, hint):
        raise field_error(source, name, type_name(hint), value)


Rule = tuple[str, Callable[[Any], bool], str]
"""(field name, test of its value, what was expected): one line of a file's checks (see :func:`check_rules`)."""


def check_rules(values: Mapping[str, Any], rules: Iterable[Rule], source: str) -> None:
    """Each rule's field, when present in ``values``, passes the rule's test, in the rules' order."""
    for name, test, expected in rules:
        if name in values and not test(values[name]):
            raise field_error(source, name, expected, values[name])


def is_finite_number(value: Any) -> bool:
    """An int or a finite float; booleans are not numbers."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number_rule(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                high_open: bool = False, integer: bool = False,
                optional: bool = False) -> tuple[Callable[[Any], bool], str]:
    """The test and wording of a :data:`Rule` for a finite number (an integer when ``integer``) between ``low`` and
    ``high`` (excluded when ``*_open``; None: unbounded), or None when ``optional``; e.g.
    ``("momentum", *number_rule(0, 1, high_open=True))`` expects "a finite number in [0, 1)"."""

    def test(value: Any) -> bool:
        if value is None:
            return optional
        if not is_finite_number(value) or integer and not isinstance(value, int):
            return False
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    noun = "an integer" if integer else "a finite number"
    if low is not None and high is not None:
        expected = f"{noun} in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"{noun} {'>' if low_open else '>='} {_number(low)}"
    elif high is not None:
        expected = f"{noun} {'<' if high_open else '<='} {_number(high)}"
    else:
        expected = noun
    return test, expected + (" or null" if optional else "")


def check_finite(value: Any, source: str, name: str, minimum: float = 0.0, strict: bool = False) -> None:
    """``value`` is a finite number ``>= minimum`` (``> minimum`` when ``strict``); booleans are not numbers."""
    if not is_finite_number(value) or value < minimum or (strict and value == minimum):
        if minimum == 0.0:
            expected = "a finite positive number" if strict else "a finite non-negative number"
        else:
            expected = f"a finite number {'>' if strict else '>='} {minimum:g}"
        raise field_error(source, name, expected, value)


def dataclass_hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's fields (strings from ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def matches(value: Any, hint: Any) -> bool:
    """Whether a JSON/TOML ``value`` fits ``hint``: ints are floats, booleans are neither, lists are tuples."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(map(matches, value, args))
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and all(matches(item, args[0]) for item in value if args)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    """A type hint as the error says it: ``int``, ``int | None``, ``tuple[float, float]``."""
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters so that a whole wrong list never floods the one line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
