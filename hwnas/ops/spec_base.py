"""The base of the typed op specs, their canonical string keys and the key parser.

Every candidate op is a frozen dataclass that knows its input shape (square ``size`` x ``size`` x ``cin``),
its output shape and its hyper-parameters. Its canonical key, e.g.
``mbconv-in:56x56x24-out:28x28x40-e:3-k:5-s:2-se:0-act:relu6-g:1-pw:1``, is derived from the fields in one
place (:meth:`OpSpec.key`) and parsed back in one place (:func:`spec_from_key`). The search spaces, the
profiler, the latency tables, the predictors and the exporters all speak this key.

An :class:`OpSpec` subclass with a ``kind`` registers itself in :data:`hwnas.registry.OP_SPECS` when it is defined;
the built-in kinds are in :mod:`hwnas.ops.specs`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from hwnas.errors import HwnasError
from hwnas.registry import OP_SPECS

ACTIVATIONS = ("relu", "relu6", "hswish", "none")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet convention), never below 90%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class OpSpec:
    """Base of all op specs: input ``size`` x ``size`` x ``cin`` -> output ``out_size`` x ``out_size`` x ``cout``.

    Subclasses list their hyper-parameters as extra dataclass fields, in key order, named as in the key.
    """

    kind: ClassVar[str] = ""

    cin: int
    cout: int
    size: int

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            OP_SPECS.register(cls.kind, cls)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "act":
                if value not in ACTIVATIONS:
                    raise HwnasError(f"{self.kind}: act must be one of {ACTIVATIONS}, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise HwnasError(f"{self.kind}: field {f.name} must be a non-negative int, got {value!r}")
        if self.cin <= 0 or self.cout <= 0 or self.size <= 0:
            raise HwnasError(f"{self.kind}: cin, cout and size must be positive, "
                             f"got {self.cin}, {self.cout}, {self.size}")

    # -- shapes ---------------------------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        return int(getattr(self, "s", 1))

    @property
    def out_size(self) -> int:
        return math.ceil(self.size / self.stride)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW input shape at batch 1."""
        return (1, self.cin, self.size, self.size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (1, self.cout, self.out_size, self.out_size)

    @property
    def is_free(self) -> bool:
        """True for ops that compute nothing in a deployed network (identity, zero); their latency is 0."""
        return False

    # -- key ------------------------------------------------------------------------------------------------
    def _param_fields(self) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(self) if f.name not in ("cin", "cout", "size")]

    def key(self) -> str:
        """The canonical key; :func:`spec_from_key` inverts it."""
        o = self.out_size
        parts = [self.kind, f"in:{self.size}x{self.size}x{self.cin}", f"out:{o}x{o}x{self.cout}"]
        parts += [f"{f.name}:{getattr(self, f.name)}" for f in self._param_fields()]
        return "-".join(parts)

    def __str__(self) -> str:
        return self.key()

    # -- cost model -----------------------------------------------------------------------------------------
    def macs(self) -> int:
        """Multiply-accumulates of convolutions and linear layers (what FLOP counters report as 'FLOPs')."""
        raise NotImplementedError

    def params(self) -> int:
        """Trainable parameters, BatchNorm affine terms included, running statistics excluded."""
        raise NotImplementedError

    def activation_elements(self) -> int:
        """Elements of every tensor the op produces at batch 1 in training form (each conv, BatchNorm and
        activation output, SE and residual results, the op's output included): the activations a training step
        stores, the quantity search memory scales with."""
        raise NotImplementedError

    def activation_bytes(self, bytes_per_element: int = 4) -> int:
        return self.activation_elements() * bytes_per_element


def spec_types() -> dict[str, type[OpSpec]]:
    """Registered spec classes by kind."""
    return OP_SPECS.load_all()


def spec_from_key(key: str) -> OpSpec:
    """Parse a canonical key back into its spec; a malformed key raises a one-line :class:`HwnasError`."""
    tokens = key.split("-")
    if len(tokens) < 3 or tokens[0] not in OP_SPECS:
        raise HwnasError(f"op key {key!r}: expected '<kind>-in:HxWxC-out:HxWxC-...' with kind in {sorted(OP_SPECS)}")
    cls = OP_SPECS.get(tokens[0])
    try:
        tag_in, shape_in = tokens[1].split(":")
        tag_out, shape_out = tokens[2].split(":")
        h, w, cin = (int(v) for v in shape_in.split("x"))
        cout = int(shape_out.split("x")[2])
        if (tag_in, tag_out) != ("in", "out") or h != w:
            raise ValueError
        by_name = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("cin", "cout", "size")}
        values: dict[str, object] = {}
        for token in tokens[3:]:
            name, raw = token.split(":")
            field = by_name[name]
            values[field.name] = raw if field.name == "act" else int(raw)
    except (ValueError, KeyError) as exc:
        raise HwnasError(f"op key {key!r}: malformed ({exc.__class__.__name__}: {exc})") from None
    spec = cls(cin=cin, cout=cout, size=h, **values)
    if spec.key() != key:
        raise HwnasError(f"op key {key!r}: not canonical (expected {spec.key()!r})")
    return spec
