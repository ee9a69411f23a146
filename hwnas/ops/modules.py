"""Spec -> ``nn.Module`` through one registry with one signature ``(in_channels, out_channels, stride, **kwargs)``."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.ops.specs import OpSpec, make_divisible
from hwnas.registry import OPS

OpBuilder = Callable[..., nn.Module]


def register_op(kind: str, *, replace: bool = False) -> Callable[[OpBuilder], OpBuilder]:
    """Register a builder ``(in_channels, out_channels, stride, **kwargs) -> nn.Module`` for a spec kind."""
    return OPS.register(kind, replace=replace)


def registered_kinds() -> list[str]:
    return sorted(OPS.names())


def build_op(spec: OpSpec) -> nn.Module:
    """Build the module for a spec; its input is NCHW ``spec.input_shape``. A block of layers
    (:class:`~hwnas.ops.blocks.BlockSpec`) is their modules in sequence."""
    parts = getattr(spec, "parts", None)
    if parts is not None:
        return nn.Sequential(*(build_op(part) for part in parts))
    if spec.kind not in OPS:
        raise HwnasError(f"no module builder registered for op kind {spec.kind!r}")
    kwargs = {k: v for k, v in vars(spec).items() if k not in ("cin", "cout", "size", "s")}
    return OPS.get(spec.kind)(spec.cin, spec.cout, spec.stride, **kwargs)


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "none": nn.Identity}[name]()


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int = 1, act: str = "relu6") -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act != "none":
            layers.append(activation(act))
        super().__init__(*layers)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: interleave the channels of ``groups`` groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """Inverted residual block; see :class:`hwnas.ops.specs.MBConvSpec`."""

    def __init__(self, cin: int, cout: int, stride: int, *, e: int, k: int, se: int, act: str, g: int, pw: int) -> None:
        super().__init__()
        mid = cin * e
        layers: list[nn.Module] = []
        if pw:
            layers.append(ConvBNAct(cin, mid, 1, 1, groups=g, act=act))
            if g > 1:
                layers.append(ChannelShuffle(g))
        layers.append(ConvBNAct(mid, mid, k, stride, groups=mid, act=act))
        if se:
            layers.append(SqueezeExcite(mid, make_divisible(mid / 4)))
        layers.append(ConvBNAct(mid, cout, 1, 1, groups=g, act="none"))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def zero_init_residuals(net: nn.Module) -> int:
    """Zero the scale of the last BatchNorm of every residual branch of ``net`` (a module with ``residual`` or
    ``res`` true and a ``body`` whose last :class:`ConvBNAct` is followed by no other, an SE at most), so each such
    block starts as the identity (Goyal et al., 2017; "bag of tricks", He et al., 2019). Returns how many branches
    it zeroed.

    For training from scratch only: a deep network of the proxyless space at 32x32 otherwise sat at chance for two
    of three epochs with one seed and learned with another (0.45 vs 0.86 on ``clutter``); zeroed, 0.971 and 0.963.
    Networks built to be timed or exported keep their random scales (a zeroed branch would hide it from a numerics
    check)."""
    zeroed = 0
    for module in net.modules():
        body = getattr(module, "body", None)
        residual = getattr(module, "residual", False) is True or getattr(module, "res", False) is True
        # the last ConvBNAct of the branch: an SE after it scales zeros, still zero
        last = next((m for m in reversed(body) if isinstance(m, ConvBNAct)), None) \
            if residual and isinstance(body, nn.Sequential) else None
        if last is not None:
            nn.init.zeros_(last[1].weight)  # every activation here maps 0 to 0
            zeroed += 1
    return zeroed


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class Classifier(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


@register_op("conv")
def _conv(in_channels: int, out_channels: int, stride: int, *, k: int, g: int, act: str) -> nn.Module:
    return ConvBNAct(in_channels, out_channels, k, stride, groups=g, act=act)


@register_op("mbconv")
def _mbconv(in_channels: int, out_channels: int, stride: int, **kwargs: int | str) -> nn.Module:
    return MBConv(in_channels, out_channels, stride, **kwargs)  # type: ignore[arg-type]


@register_op("dwsep")
def _dwsep(in_channels: int, out_channels: int, stride: int, *, k: int, act: str) -> nn.Module:
    return nn.Sequential(
        ConvBNAct(in_channels, in_channels, k, stride, groups=in_channels, act=act),
        ConvBNAct(in_channels, out_channels, 1, 1, act=act),
    )


@register_op("skip")
def _skip(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvBNAct(in_channels, out_channels, 1, stride, act="relu")


@register_op("zero")
def _zero(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    return nn.Identity()


@register_op("pool")
def _pool(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    return GlobalAvgPool()


@register_op("linear")
def _linear(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    return Classifier(in_channels, out_channels)
