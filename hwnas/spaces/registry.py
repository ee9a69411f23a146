"""Registered search spaces: ``proxyless``, ``fbnet``, ``fbnet-cifar100`` and ``tiny``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hwnas.errors import HwnasError
from hwnas.ops import MBConvSpec, OpSpec, SkipSpec, ZeroSpec
from hwnas.spaces.base import SearchSpace, staged_space
from hwnas.spaces.memory import check_fits_memory


@dataclass(frozen=True)
class SpaceInfo:
    """How to make a space: factory (resolution, num_classes), defaults, and the resolution rule."""

    factory: Callable[[int, int], SearchSpace]
    default_resolution: int
    default_num_classes: int
    total_stride: int
    description: str


_SPACES: dict[str, SpaceInfo] = {}


def register_space(name: str, *, default_resolution: int, default_num_classes: int, total_stride: int,
                   description: str) -> Callable[[Callable[[int, int], SearchSpace]], Callable[[int, int], SearchSpace]]:
    def wrap(factory: Callable[[int, int], SearchSpace]) -> Callable[[int, int], SearchSpace]:
        _SPACES[name] = SpaceInfo(factory, default_resolution, default_num_classes, total_stride, description)
        return factory

    return wrap


def space_names() -> list[str]:
    return list(_SPACES)


def space_info(name: str) -> SpaceInfo:
    if name not in _SPACES:
        raise HwnasError(f"unknown search space {name!r}: expected one of {', '.join(_SPACES)}")
    return _SPACES[name]


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


# -- ProxylessNAS mobile space ---------------------------------------------------------------------------
PROXYLESS_OPS = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6")


def _proxyless_candidates(position: int, cin: int, cout: int, size: int, stride: int) -> list[tuple[str, OpSpec]]:
    ops: list[tuple[str, OpSpec]] = []
    for name in PROXYLESS_OPS:
        k, e = int(name[1]), int(name[4])
        ops.append((name, MBConvSpec(cin, cout, size, e=e, k=k, s=stride, act="relu6")))
    if position > 0:
        ops.append(("zero", ZeroSpec(cin, cout, size)))
    return ops


@register_space("proxyless", default_resolution=224, default_num_classes=1000, total_stride=32,
                description="ProxylessNAS mobile: 21 layers, MBConv k{3,5,7} x e{3,6} + zero")
def _proxyless(resolution: int, num_classes: int) -> SearchSpace:
    return staged_space(
        "proxyless", resolution, num_classes,
        stem=(32, 3, 2, "relu6"),
        fixed=[lambda cin, size: MBConvSpec(cin, 16, size, e=1, k=3, s=1, act="relu6", pw=0)],
        stages=[(24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)],
        candidates=_proxyless_candidates,
        head=(1280, "relu6"),
    )


# -- FBNet space as HW-NAS-Bench defines it -------------------------------------------------------------
FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
_FBNET_STAGES = ((16, 1), (24, 4), (32, 4), (64, 4), (112, 4), (184, 4), (352, 1))


def _fbnet_candidates(position: int, cin: int, cout: int, size: int, stride: int) -> list[tuple[str, OpSpec]]:
    ops: list[tuple[str, OpSpec]] = []
    for name in FBNET_OPS:
        if name == "skip":
            ops.append((name, SkipSpec(cin, cout, size, s=stride)))
            continue
        k, e = int(name[1]), int(name[4])
        g = 2 if name.endswith("_g2") else 1
        ops.append((name, MBConvSpec(cin, cout, size, e=e, k=k, s=stride, act="relu", g=g)))
    return ops


def _fbnet(name: str, resolution: int, num_classes: int, stem_stride: int, strides: tuple[int, ...],
           head: int) -> SearchSpace:
    return staged_space(
        name, resolution, num_classes,
        stem=(16, 3, stem_stride, "relu"),
        fixed=[],
        stages=[(c, n, s) for (c, n), s in zip(_FBNET_STAGES, strides)],
        candidates=_fbnet_candidates,
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


def _tiny_candidates(position: int, cin: int, cout: int, size: int, stride: int) -> list[tuple[str, OpSpec]]:
    ops: list[tuple[str, OpSpec]] = [
        (name, MBConvSpec(cin, cout, size, e=int(name[4]), k=int(name[1]), s=stride)) for name in TINY_OPS
    ]
    if position > 0:
        ops.append(("zero", ZeroSpec(cin, cout, size)))
    return ops


@register_space("tiny", default_resolution=32, default_num_classes=10, total_stride=8,
                description="tiny: 4 layers of MBConv k3/k5 e3/e6 + zero, for tests and CI")
def _tiny(resolution: int, num_classes: int) -> SearchSpace:
    return staged_space(
        "tiny", resolution, num_classes,
        stem=(8, 3, 2, "relu6"),
        fixed=[],
        stages=[(16, 2, 2), (24, 2, 2)],
        candidates=_tiny_candidates,
        head=(64, "relu6"),
    )
