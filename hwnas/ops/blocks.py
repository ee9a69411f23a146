"""MnasNet's layer op and the block of several layers that one choice of a factorized space makes.

* :class:`MnasLayerSpec` (kind ``mnas``): one layer of a MnasNet block. Its conv op ``t`` is a regular conv (0), a
  depthwise-separable conv (1) or an MBConv (2, expansion ``e``); kernel ``k``; squeeze-and-excite on the op's
  widest tensor (``se`` 1: ratio 0.25); an identity skip (``res`` 1) where the layer keeps its shape. A table
  measures it like any op, by its canonical key.
* :class:`BlockSpec`: the layers one choice of a block stands for (1 to 4 ``mnas`` layers sharing op, kernel, SE and
  skip). It is not a table entry: a table holds its layers, and every cost of a block is the sum (or, for peak
  memory, the max) over its layers. :meth:`BlockSpec.key` joins the layers' keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.ops.modules import ConvBNAct, SqueezeExcite, register_op
from hwnas.ops.spec_base import OpSpec, make_divisible
from hwnas.ops.specs import _conv_macs, _conv_params

MNAS_OPS = {0: "conv", 1: "dwsep", 2: "mbconv"}


@dataclass(frozen=True)
class MnasLayerSpec(OpSpec):
    """One layer of a MnasNet block (module docstring). ``res`` is kept only where it applies (``s`` 1, cin = cout)."""

    kind: ClassVar[str] = "mnas"
    t: int = 2
    e: int = 6
    k: int = 3
    s: int = 1
    se: int = 0
    res: int = 0
    act: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.t not in MNAS_OPS or self.se not in (0, 1) or self.res not in (0, 1):
            raise HwnasError(f"mnas: t must be one of {sorted(MNAS_OPS)} and se, res 0 or 1, got t={self.t}, "
                             f"se={self.se}, res={self.res}")
        if (self.t != 2) != (self.e == 1) or self.k % 2 == 0:
            raise HwnasError(f"mnas: expansion is 1 exactly for conv and dwsep (got t={self.t}, e={self.e}); "
                             f"the kernel is odd (got {self.k})")
        if self.res and not self.residual:
            raise HwnasError(f"mnas: an identity skip needs stride 1 and cin = cout, got s={self.s}, "
                             f"{self.cin} -> {self.cout}")

    @property
    def mid(self) -> int:
        """The channels of the op's inner tensor: the expansion for an MBConv, the input for a dwsep."""
        return self.cin * self.e if self.t == 2 else self.cin if self.t == 1 else self.cout

    @property
    def se_channels(self) -> int:
        return make_divisible(self.mid / 4)

    @property
    def residual(self) -> bool:
        return self.s == 1 and self.cin == self.cout

    def macs(self) -> int:
        o, mid = self.out_size, self.mid
        if self.t == 0:
            total = _conv_macs(self.cin, self.cout, self.k, 1, o)
        else:
            total = _conv_macs(self.cin, mid, 1, 1, self.size) if self.t == 2 else 0
            total += _conv_macs(mid, mid, self.k, mid, o) + _conv_macs(mid, self.cout, 1, 1, o)
        return total + (2 * mid * self.se_channels if self.se else 0)

    def params(self) -> int:
        mid = self.mid
        if self.t == 0:
            total = _conv_params(self.cin, self.cout, self.k, 1)
        else:
            total = _conv_params(self.cin, mid, 1, 1) if self.t == 2 else 0
            total += _conv_params(mid, mid, self.k, mid) + _conv_params(mid, self.cout, 1, 1)
        return total + (2 * mid * self.se_channels + mid + self.se_channels if self.se else 0)

    def activation_elements(self) -> int:
        o, mid, size = self.out_size, self.mid, self.size
        if self.t == 0:
            total = 3 * self.cout * o * o
        else:
            total = 3 * mid * size * size if self.t == 2 else 0  # expansion conv, BN, activation
            total += 3 * mid * o * o + (3 if self.t == 1 else 2) * self.cout * o * o  # depthwise; pointwise
        if self.se:
            total += 3 * mid + 2 * self.se_channels + mid * o * o  # pool, reduce, act, expand, gate; scaled
        return total + (self.cout * o * o if self.res else 0)


class MnasLayer(nn.Module):
    """The module of a :class:`MnasLayerSpec`: conv, dwsep (dw, [SE], pw + act) or MBConv (expand, dw, [SE],
    linear projection), with the identity skip when ``res``."""

    def __init__(self, cin: int, cout: int, stride: int, *, t: int, e: int, k: int, se: int, res: int,
                 act: str) -> None:
        super().__init__()
        mid = cin * e if t == 2 else cin if t == 1 else cout
        squeeze = [SqueezeExcite(mid, make_divisible(mid / 4))] if se else []
        if t == 0:
            layers = [ConvBNAct(cin, cout, k, stride, act=act), *squeeze]
        else:
            layers = [ConvBNAct(cin, mid, 1, 1, act=act)] if t == 2 else []
            layers += [ConvBNAct(mid, mid, k, stride, groups=mid, act=act), *squeeze,
                       ConvBNAct(mid, cout, 1, 1, act=act if t == 1 else "none")]
        self.body = nn.Sequential(*layers)
        self.res = bool(res)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.res else out


@register_op("mnas")
def _mnas(in_channels: int, out_channels: int, stride: int, **kwargs: int | str) -> nn.Module:
    return MnasLayer(in_channels, out_channels, stride, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, init=False)
class BlockSpec(OpSpec):
    """Several layer specs in sequence, chosen together (module docstring). Not registered as a kind: a table
    holds its layers, never the block."""

    parts: tuple[OpSpec, ...] = ()

    def __init__(self, parts: tuple[OpSpec, ...]) -> None:
        if not parts:
            raise HwnasError("block: needs at least one layer")
        for before, after in zip(parts, parts[1:]):
            if (before.cout, before.out_size) != (after.cin, after.size):
                raise HwnasError(f"block: {before.key()} does not feed {after.key()}")
        object.__setattr__(self, "parts", tuple(parts))
        object.__setattr__(self, "cin", parts[0].cin)
        object.__setattr__(self, "cout", parts[-1].cout)
        object.__setattr__(self, "size", parts[0].size)

    @property
    def stride(self) -> int:
        stride = 1
        for part in self.parts:
            stride *= part.stride
        return stride

    @property
    def out_size(self) -> int:
        return self.parts[-1].out_size

    @property
    def is_free(self) -> bool:
        return all(p.is_free for p in self.parts)

    def key(self) -> str:
        return "+".join(p.key() for p in self.parts)

    def macs(self) -> int:
        return sum(p.macs() for p in self.parts)

    def params(self) -> int:
        return sum(p.params() for p in self.parts)

    def activation_elements(self) -> int:
        return sum(p.activation_elements() for p in self.parts)


def flat_specs(spec: OpSpec) -> tuple[OpSpec, ...]:
    """The table entries a spec stands for: a block's layers, else the spec itself."""
    return spec.parts if isinstance(spec, BlockSpec) else (spec,)
