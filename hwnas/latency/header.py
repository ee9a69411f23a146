"""What every file measured on a device shares (latency tables, measurement sets): the device profile, the space
and resolution with the head's classes, the machine and runtime fingerprint, the protocol and the dates.

:class:`MeasuredFile` holds them and checks them in one place with one wording (see :mod:`hwnas.checks`);
each kind of file adds its own fields and says how it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hwnas.checks import check_required, check_type, field_error
from hwnas.errors import HwnasError
from hwnas.io import now_iso, read_json_file

HEADER_FIELDS: dict[str, Any] = {"device": dict, "space": str, "resolution": int, "num_classes": int,
                                 "fingerprint": dict, "protocol": dict}
_File = TypeVar("_File", bound="MeasuredFile")


@dataclass
class MeasuredFile:
    """The header of a measured file; ``created``/``updated``/``path`` are keyword-only (subclasses add fields)."""

    SCHEMA: ClassVar[str] = ""
    WHAT: ClassVar[str] = "measured file"

    device: dict[str, Any]
    space: str
    resolution: int
    num_classes: int
    fingerprint: dict[str, Any]
    protocol: dict[str, Any]
    created: str = field(default_factory=now_iso, kw_only=True)
    updated: str = field(default_factory=now_iso, kw_only=True)
    path: Path | None = field(default=None, kw_only=True)

    @property
    def device_name(self) -> str:
        return str(self.device.get("name", "?"))

    def header_dict(self) -> dict[str, Any]:
        """The header's JSON fields, in file order (``schema`` first; the dates are written by each kind)."""
        return {"schema": self.SCHEMA, "device": self.device, "space": self.space, "resolution": self.resolution,
                "num_classes": self.num_classes, "fingerprint": self.fingerprint, "protocol": self.protocol}

    @classmethod
    def check_header(cls, data: Any, source: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Check the JSON object ``data`` has this kind's schema, the header fields and ``fields`` (name -> type),
        each of its type; returns the header's constructor arguments."""
        if not isinstance(data, dict):
            raise HwnasError(f"{source}: not a {cls.WHAT} (expected a JSON object)")
        if data.get("schema") != cls.SCHEMA:
            raise field_error(source, "schema", repr(cls.SCHEMA), data.get("schema"))
        hints = {**HEADER_FIELDS, **fields}
        check_required(data, hints, source)
        for name, hint in hints.items():
            check_type(data[name], hint, source, name)
        return {**{name: data[name] for name in HEADER_FIELDS},
                "created": str(data.get("created", "")), "updated": str(data.get("updated", ""))}

    @classmethod
    def from_dict(cls: type[_File], data: Any, source: str) -> _File:
        raise NotImplementedError

    @classmethod
    def load(cls: type[_File], path: str | Path) -> _File:
        """Read and check the file at ``path``; errors are one line naming the file."""
        path = Path(path)
        result = cls.from_dict(read_json_file(path, cls.WHAT), str(path))
        result.path = path
        return result
