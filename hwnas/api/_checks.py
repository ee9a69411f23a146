"""The API's own argument checks: one line naming the function and the parameter, what was given and what was
expected, raised before any work starts (the layers below word their errors for files and flags)."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from hwnas.errors import HwnasError


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def argument_error(function: str, name: str, expected: str, value: Any) -> HwnasError:
    """``FUNCTION: NAME: expected WHAT, got VALUE (TYPE)``."""
    return HwnasError(f"{function}: {name}: expected {expected}, got {_shown(value)} ({type(value).__name__})")


def check_int(function: str, name: str, value: Any, low: int = 0) -> int:
    """An int (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise argument_error(function, name, f"an int >= {low}", value)
    return value


def check_optional_int(function: str, name: str, value: Any, low: int = 1) -> int | None:
    return None if value is None else check_int(function, name, value, low)


def check_path(function: str, name: str, value: Any) -> Path:
    """A ``str`` or ``Path`` (non-empty)."""
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise argument_error(function, name, "a path (str or pathlib.Path)", value)
    return Path(value)


def check_choice(function: str, name: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise argument_error(function, name, f"one of {', '.join(map(repr, choices))}", value)
    return value


def check_mapping(function: str, name: str, value: Any) -> dict[str, Any]:
    """None (nothing) or a mapping of field names to values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise argument_error(function, name, "a dict of field names to values", value)
    return dict(value)


def check_protocol(function: str, name: str, value: Any, paired: bool = False) -> dict[str, Any]:
    """Overrides of the (paired) measurement protocol, checked field by field against its class."""
    from hwnas.runtimes.paired import PairedProtocol
    from hwnas.runtimes.protocol import Protocol

    overrides = check_mapping(function, name, value)
    protocol_class = PairedProtocol if paired else Protocol
    protocol_class.from_dict({**protocol_class().to_dict(), **overrides}, f"{function}: {name}")
    return overrides


def check_options(function: str, options: Mapping[str, Any], config_class: type, taken: Iterable[str] = ()) -> None:
    """Keyword arguments passed on to ``config_class``: each must name one of its fields (not one the function
    takes as its own parameter)."""
    fields = [f.name for f in dataclasses.fields(config_class) if f.name not in set(taken)]
    for key in options:
        if key not in fields:
            raise HwnasError(f"{function}: unexpected keyword argument {key!r} (expected one of the "
                             f"{config_class.__name__} fields: {', '.join(fields)})")


def device_profile(function: str, value: Any, name: str = "device") -> Any:
    """A :class:`~hwnas.devices.DeviceProfile`, or a device name or ``.toml`` path loaded as one."""
    from hwnas.devices import DeviceProfile, load_device

    if isinstance(value, DeviceProfile):
        return value
    if isinstance(value, (str, Path)) and str(value).strip():
        return load_device(str(value))
    raise argument_error(function, name, "a DeviceProfile (hwnas.load_device), a device name or a .toml path", value)


def search_space(function: str, value: Any, name: str = "space") -> Any:
    """A :class:`~hwnas.spaces.SearchSpace` (:func:`hwnas.get_space` makes one at a resolution and head)."""
    from hwnas.spaces import SearchSpace

    if not isinstance(value, SearchSpace):
        raise argument_error(function, name, "a SearchSpace (hwnas.get_space(name, resolution, num_classes=...))",
                             value)
    return value


_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def for_python(message: str) -> str:
    """A library message worded for the command line, worded for a Python caller: each ``--flag`` outside a quoted
    command (between backticks) becomes the parameter's name (``--target-ms`` -> ``target_ms``); the commands a
    message suggests stay as written."""
    parts = message.split("`")
    for index in range(0, len(parts), 2):  # the even parts lie outside backticks
        parts[index] = _FLAG.sub(lambda match: match.group(1).replace("-", "_"), parts[index])
    return "`".join(parts)


def python_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator of an API function: a :class:`HwnasError` from the layers below reaches the caller worded for
    Python (:func:`for_python`), still one line, still an ``HwnasError``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except HwnasError as exc:
            raise type(exc)(for_python(str(exc))) from None

    return wrapper
