"""The built-in search spaces (``proxyless``, ``fbnet``, ``fbnet-cifar100``, ``tiny``), registered by name in
:data:`hwnas.registry.SPACES`, where another package adds its own (:func:`hwnas.registry.register_space`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, ClassVar

from hwnas.errors import HwnasError
from hwnas.ops import MBConvSpec, OpSpec, SkipSpec, ZeroSpec
from hwnas.registry import SPACES
from hwnas.spaces.base import CandidateFactory, SearchSpace, staged_space
from hwnas.spaces.memory import check_fits_memory

SpaceFactory = Callable[[int, int], SearchSpace]
"""(resolution, num_classes) -> the space."""


@dataclass(frozen=True)
class SpaceInfo:
    """How to make a space: factory (resolution, num_classes), defaults, and the resolution rule."""

    factory: SpaceFactory
    default_resolution: int
    default_num_classes: int
    total_stride: int
    description: str


def register_space(name: str, *, default_resolution: int, default_num_classes: int, total_stride: int,
                   description: str, replace: bool = False) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator: register a factory ``(resolution, num_classes) -> SearchSpace`` as the space ``name``, with its
    defaults and resolution rule (in :data:`hwnas.registry.SPACES`; a taken name needs ``replace=True``)."""
    def wrap(factory: SpaceFactory) -> SpaceFactory:
        info = SpaceInfo(factory, default_resolution, default_num_classes, total_stride, description)
        SPACES.register(name, info, replace=replace)
        return factory

    return wrap


def space_names() -> list[str]:
    return SPACES.names()


def space_info(name: str) -> SpaceInfo:
    return SPACES.get(name)


def get_space(name: str, resolution: int | None = None, num_classes: int | None = None) -> SearchSpace:
    """The space ``name`` at ``resolution`` (default: the space's) with ``num_classes`` outputs."""
    info = space_info(name)
    resolution = info.default_resolution if resolution is None else resolution
    if resolution < info.total_stride or resolution % info.total_stride:
        raise HwnasError(
            f"space {name}: resolution must be a positive multiple of {info.total_stride}, got {resolution}"
        )
    num_classes = info.default_num_classes if num_classes is None else num_classes
    if num_classes < 1:
        raise HwnasError(f"space {name}: num_classes must be positive, got {num_classes}")
    space = info.factory(resolution, num_classes)
    check_fits_memory(space)  # specs only so far: a hopeless resolution fails before any tensor exists
    return space


# -- candidate names ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MBConvChoice:
    """A candidate name such as ``k5_e6`` or ``k3_e1_g2``: an MBConv's kernel, expansion and groups."""

    k: int
    e: int
    g: int = 1

    _PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"k(\d+)_e(\d+)(?:_g(\d+))?")

    @classmethod
    def parse(cls, name: str) -> MBConvChoice:
        match = cls._PATTERN.fullmatch(name)
        if match is None:
            raise HwnasError(f"candidate {name!r}: expected 'k<kernel>_e<expansion>', optionally '_g<groups>'")
        kernel, expansion, groups = match.groups()
        return cls(k=int(kernel), e=int(expansion), g=int(groups or 1))

    @property
    def name(self) -> str:
        return f"k{self.k}_e{self.e}" + (f"_g{self.g}" if self.g != 1 else "")

    def spec(self, cin: int, cout: int, size: int, stride: int, act: str) -> MBConvSpec:
        return MBConvSpec(cin, cout, size, e=self.e, k=self.k, s=stride, act=act, g=self.g)


def candidate_spec(name: str, cin: int, cout: int, size: int, stride: int, act: str) -> OpSpec:
    """The op a candidate name stands for: ``skip`` (FBNet), ``zero`` (ProxylessNAS) or an :class:`MBConvChoice`."""
    if name == "skip":
        return SkipSpec(cin, cout, size, s=stride)
    if name == "zero":
        return ZeroSpec(cin, cout, size)
    return MBConvChoice.parse(name).spec(cin, cout, size, stride, act)


def _candidates(names: tuple[str, ...], act: str, zero: bool) -> CandidateFactory:
    """Every layer offers ``names``; with ``zero``, every layer after a stage's first may also be skipped."""

    def candidates(position: int, cin: int, cout: int, size: int, stride: int) -> list[tuple[str, OpSpec]]:
        offered = (*names, "zero") if zero and position > 0 else names
        return [(name, candidate_spec(name, cin, cout, size, stride, act)) for name in offered]

    return candidates


# -- ProxylessNAS mobile space ---------------------------------------------------------------------------
PROXYLESS_OPS = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6")


@register_space("proxyless", default_resolution=224, default_num_classes=1000, total_stride=32,
                description="ProxylessNAS mobile: 21 layers, MBConv k{3,5,7} x e{3,6} + zero")
def _proxyless(resolution: int, num_classes: int) -> SearchSpace:
    return staged_space(
        "proxyless", resolution, num_classes,
        stem=(32, 3, 2, "relu6"),
        fixed=[lambda cin, size: MBConvSpec(cin, 16, size, e=1, k=3, s=1, act="relu6", pw=0)],
        stages=[(24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)],
        candidates=_candidates(PROXYLESS_OPS, "relu6", zero=True),
        head=(1280, "relu6"),
    )


# -- FBNet space as HW-NAS-Bench defines it -------------------------------------------------------------
FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
_FBNET_STAGES = ((16, 1), (24, 4), (32, 4), (64, 4), (112, 4), (184, 4), (352, 1))


def _fbnet(name: str, resolution: int, num_classes: int, stem_stride: int, strides: tuple[int, ...],
           head: int) -> SearchSpace:
    return staged_space(
        name, resolution, num_classes,
        stem=(16, 3, stem_stride, "relu"),
        fixed=[],
        stages=[(c, n, s) for (c, n), s in zip(_FBNET_STAGES, strides)],
        candidates=_candidates(FBNET_OPS, "relu", zero=False),
        head=(head, "relu"),
    )


@register_space("fbnet", default_resolution=224, default_num_classes=1000, total_stride=32,
                description="FBNet (HW-NAS-Bench) ImageNet variant: 22 layers x 9 ops")
def _fbnet_imagenet(resolution: int, num_classes: int) -> SearchSpace:
    return _fbnet("fbnet", resolution, num_classes, 2, (1, 2, 2, 2, 1, 2, 1), 1984)


@register_space("fbnet-cifar100", default_resolution=32, default_num_classes=100, total_stride=8,
                description="FBNet (HW-NAS-Bench) CIFAR-100 variant: 32x32 input, 22 layers x 9 ops")
def _fbnet_cifar100(resolution: int, num_classes: int) -> SearchSpace:
    return _fbnet("fbnet-cifar100", resolution, num_classes, 1, (1, 1, 2, 2, 1, 2, 1), 1504)


# -- tiny: for unit tests and CI -------------------------------------------------------------------------
TINY_OPS = ("k3_e3", "k5_e3", "k3_e6")


@register_space("tiny", default_resolution=32, default_num_classes=10, total_stride=8,
                description="tiny: 4 layers of MBConv k3/k5 e3/e6 + zero, for tests and CI")
def _tiny(resolution: int, num_classes: int) -> SearchSpace:
    return staged_space(
        "tiny", resolution, num_classes,
        stem=(8, 3, 2, "relu6"),
        fixed=[],
        stages=[(16, 2, 2), (24, 2, 2)],
        candidates=_candidates(TINY_OPS, "relu6", zero=True),
        head=(64, "relu6"),
    )
