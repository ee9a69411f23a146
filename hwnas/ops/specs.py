"""Typed op specs and their canonical string keys.

Every candidate op is a frozen dataclass that knows its input shape (square ``size`` x ``size`` x ``cin``),
its output shape and its hyper-parameters. Its canonical key, e.g.
``mbconv-in:56x56x24-out:28x28x40-e:3-k:5-s:2-se:0-act:relu6-g:1-pw:1``, is derived from the fields in one
place (:meth:`OpSpec.key`) and parsed back in one place (:func:`spec_from_key`). The search spaces, the
profiler, the latency tables, the predictors and the exporters all speak this key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from hwnas.errors import HwnasError

ACTIVATIONS = ("relu", "relu6", "hswish", "none")
_SPEC_TYPES: dict[str, type[OpSpec]] = {}


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
            _SPEC_TYPES[cls.kind] = cls

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


def _conv_macs(cin: int, cout: int, k: int, groups: int, out_size: int) -> int:
    return out_size * out_size * cout * (cin // groups) * k * k


def _conv_params(cin: int, cout: int, k: int, groups: int, bn: bool = True, bias: bool = False) -> int:
    return cout * (cin // groups) * k * k + (2 * cout if bn else 0) + (cout if bias else 0)


@dataclass(frozen=True)
class ConvSpec(OpSpec):
    """Convolution + BatchNorm + activation (stems, heads, plain conv candidates)."""

    kind: ClassVar[str] = "conv"
    k: int = 3
    s: int = 1
    g: int = 1
    act: str = "relu6"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cin % self.g or self.cout % self.g:
            raise HwnasError(f"conv: groups {self.g} must divide cin {self.cin} and cout {self.cout}")

    def macs(self) -> int:
        return _conv_macs(self.cin, self.cout, self.k, self.g, self.out_size)

    def params(self) -> int:
        return _conv_params(self.cin, self.cout, self.k, self.g)

    def activation_elements(self) -> int:
        return self.cout * self.out_size**2 * (3 if self.act != "none" else 2)


@dataclass(frozen=True)
class MBConvSpec(OpSpec):
    """Inverted residual (MobileNetV2/ProxylessNAS MBConv, FBNet IRF block).

    1x1 expansion conv (present iff ``pw``; grouped with ``g`` groups and followed by a channel shuffle when
    ``g`` > 1), k x k depthwise conv with stride ``s``, optional squeeze-excite, 1x1 linear projection
    (grouped with ``g``). Residual connection when ``s`` = 1 and cin = cout.
    """

    kind: ClassVar[str] = "mbconv"
    e: int = 6
    k: int = 3
    s: int = 1
    se: int = 0
    act: str = "relu6"
    g: int = 1
    pw: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pw not in (0, 1) or self.se not in (0, 1):
            raise HwnasError(f"mbconv: pw and se must be 0 or 1, got pw={self.pw}, se={self.se}")
        if not self.pw and self.e != 1:
            raise HwnasError(f"mbconv: without an expansion conv (pw=0) the expansion must be 1, got {self.e}")
        if self.k % 2 == 0 or self.k < 1:
            raise HwnasError(f"mbconv: kernel must be odd, got {self.k}")
        if self.cin % self.g or self.cout % self.g or self.mid % self.g:
            raise HwnasError(f"mbconv: groups {self.g} must divide cin {self.cin}, mid {self.mid} and cout {self.cout}")

    @property
    def mid(self) -> int:
        return self.cin * self.e

    @property
    def se_channels(self) -> int:
        return make_divisible(self.mid / 4)

    @property
    def residual(self) -> bool:
        return self.s == 1 and self.cin == self.cout

    def macs(self) -> int:
        o, mid = self.out_size, self.mid
        total = _conv_macs(self.cin, mid, 1, self.g, self.size) if self.pw else 0
        total += _conv_macs(mid, mid, self.k, mid, o)
        if self.se:
            total += 2 * mid * self.se_channels
        return total + _conv_macs(mid, self.cout, 1, self.g, o)

    def params(self) -> int:
        mid = self.mid
        total = _conv_params(self.cin, mid, 1, self.g) if self.pw else 0
        total += _conv_params(mid, mid, self.k, mid)
        if self.se:
            total += 2 * mid * self.se_channels + mid + self.se_channels
        return total + _conv_params(mid, self.cout, 1, self.g)

    def activation_elements(self) -> int:
        o, mid = self.out_size, self.mid
        total = 3 * mid * self.size**2 if self.pw else 0  # expand conv, BN, activation
        total += mid * self.size**2 if self.pw and self.g > 1 else 0  # channel shuffle
        total += 3 * mid * o * o  # depthwise conv, BN, activation
        if self.se:
            total += 3 * mid + 2 * self.se_channels + mid * o * o  # pool, reduce, act, expand, gate; scaled output
        total += 2 * self.cout * o * o  # projection conv, BN
        return total + (self.cout * o * o if self.residual else 0)


@dataclass(frozen=True)
class DWSepSpec(OpSpec):
    """Depthwise-separable convolution: k x k depthwise + BN + act, then 1x1 pointwise + BN + act."""

    kind: ClassVar[str] = "dwsep"
    k: int = 3
    s: int = 1
    act: str = "relu6"

    def macs(self) -> int:
        o = self.out_size
        return _conv_macs(self.cin, self.cin, self.k, self.cin, o) + _conv_macs(self.cin, self.cout, 1, 1, o)

    def params(self) -> int:
        return _conv_params(self.cin, self.cin, self.k, self.cin) + _conv_params(self.cin, self.cout, 1, 1)

    def activation_elements(self) -> int:
        per_conv = 3 if self.act != "none" else 2  # conv, BN and the activation when there is one
        return per_conv * (self.cin + self.cout) * self.out_size**2


@dataclass(frozen=True)
class SkipSpec(OpSpec):
    """FBNet's ``skip``: identity when the shape is kept, else 1x1 conv (stride ``s``) + BN + ReLU."""

    kind: ClassVar[str] = "skip"
    s: int = 1

    @property
    def is_free(self) -> bool:
        return self.s == 1 and self.cin == self.cout

    def macs(self) -> int:
        return 0 if self.is_free else _conv_macs(self.cin, self.cout, 1, 1, self.out_size)

    def params(self) -> int:
        return 0 if self.is_free else _conv_params(self.cin, self.cout, 1, 1)

    def activation_elements(self) -> int:
        return 0 if self.is_free else 3 * self.cout * self.out_size**2


@dataclass(frozen=True)
class _ChannelKeepingSpec(OpSpec):
    """An op without weights that keeps its input's channels (``cout`` = ``cin``): no MACs, no parameters.

    ``_CHANNEL_ERROR`` is the message when ``cin`` != ``cout`` (formatted with both).
    """

    _CHANNEL_ERROR: ClassVar[str] = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cin != self.cout:
            raise HwnasError(self._CHANNEL_ERROR.format(cin=self.cin, cout=self.cout))

    def macs(self) -> int:
        return 0

    def params(self) -> int:
        return 0


@dataclass(frozen=True)
class ZeroSpec(_ChannelKeepingSpec):
    """ProxylessNAS's ``zero``: the block is skipped (its residual path alone remains), so the output is the input."""

    kind: ClassVar[str] = "zero"
    _CHANNEL_ERROR: ClassVar[str] = "zero: only valid where the block keeps its shape, got cin {cin} != cout {cout}"

    @property
    def is_free(self) -> bool:
        return True

    def activation_elements(self) -> int:
        return 0


@dataclass(frozen=True)
class PoolSpec(_ChannelKeepingSpec):
    """Global average pooling to 1x1 (``cout`` = ``cin``)."""

    kind: ClassVar[str] = "pool"
    _CHANNEL_ERROR: ClassVar[str] = "pool: cout must equal cin, got {cin} -> {cout}"

    @property
    def out_size(self) -> int:
        return 1

    def activation_elements(self) -> int:
        return self.cout


@dataclass(frozen=True)
class LinearSpec(OpSpec):
    """Classifier: flatten + fully connected layer with bias (input ``size`` must be 1)."""

    kind: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size != 1:
            raise HwnasError(f"linear: input must be 1x1, got {self.size}x{self.size}")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.cin, 1, 1)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (1, self.cout)

    def macs(self) -> int:
        return self.cin * self.cout

    def params(self) -> int:
        return self.cin * self.cout + self.cout

    def activation_elements(self) -> int:
        return self.cout


def spec_types() -> dict[str, type[OpSpec]]:
    """Registered spec classes by kind."""
    return dict(_SPEC_TYPES)


def spec_from_key(key: str) -> OpSpec:
    """Parse a canonical key back into its spec; a malformed key raises a one-line :class:`HwnasError`."""
    tokens = key.split("-")
    if len(tokens) < 3 or tokens[0] not in _SPEC_TYPES:
        raise HwnasError(f"op key {key!r}: expected '<kind>-in:HxWxC-out:HxWxC-...' with kind in {sorted(_SPEC_TYPES)}")
    cls = _SPEC_TYPES[tokens[0]]
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
