"""The built-in op specs: conv, mbconv, dwsep, skip, zero, pool and linear, each with its cost model.

The base class, the canonical key and its parser are in :mod:`hwnas.ops.spec_base` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hwnas.errors import HwnasError
from hwnas.ops.spec_base import ACTIVATIONS, OpSpec, make_divisible, spec_from_key, spec_types


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


__all__ = ["ACTIVATIONS", "ConvSpec", "DWSepSpec", "LinearSpec", "MBConvSpec", "OpSpec", "PoolSpec", "SkipSpec",
           "ZeroSpec", "make_divisible", "spec_from_key", "spec_types"]
