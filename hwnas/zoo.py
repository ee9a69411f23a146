"""Reference networks that belong to no search space, in plain PyTorch (torchvision does not import here).

They exercise every kernel an ImageNet CNN runs on a mobile-class runtime: plain and residual 3x3 convs
(ResNet-18), inverted residuals with ReLU6 (MobileNetV2), SE with hardswish/hardsigmoid (MobileNetV3-Large),
channel split/shuffle/concat (ShuffleNetV2 x1.0), MBConv with SE and SiLU (EfficientNet-B0) and MnasNet-A1's
mix of 3x3/5x5 blocks with ReLU SE. Architectures follow the papers (and torchvision/timm's definitions);
weights are seeded, so every process builds the same model. :func:`build_zoo` returns an eval-mode module.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.ops.specs import make_divisible

_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True), "relu6": lambda: nn.ReLU6(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True), "silu": lambda: nn.SiLU(inplace=True), "none": nn.Identity,
}


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str = "relu") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         _ACTS[act]())


class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(mean_hw(x))))), the SE block of MobileNetV3/EfficientNet/MnasNet."""

    def __init__(self, channels: int, squeeze: int, act: str = "relu", gate: str = "sigmoid") -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = _ACTS[act]()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * scale


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand (skipped at e=1), kxk depthwise, optional SE, 1x1 project; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, mid: int, act: str, se_squeeze: int = 0,
                 se_act: str = "relu", se_gate: str = "sigmoid", skip: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(_conv_bn(cin, mid, 1, act=act))
        layers.append(_conv_bn(mid, mid, k, stride, groups=mid, act=act))
        if se_squeeze:
            layers.append(SqueezeExcite(mid, se_squeeze, se_act, se_gate))
        layers.append(_conv_bn(mid, cout, 1, act="none"))
        self.body = nn.Sequential(*layers)
        self.residual = skip and stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class _Classifier(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


# -- ResNet-18 -------------------------------------------------------------------------------------------
class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3, act="none")
        self.down = _conv_bn(cin, cout, 1, stride, act="none") if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.down(x))


def resnet18(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
        cin = cout
    return _Classifier(nn.Sequential(*layers), nn.Linear(512, num_classes))


# -- MobileNetV2 -----------------------------------------------------------------------------------------
def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2, act="relu6")]
    cin = 32
    for e, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        for i in range(n):
            layers.append(InvertedResidual(cin, c, 3, s if i == 0 else 1, cin * e, "relu6"))
            cin = c
    layers.append(_conv_bn(cin, 1280, 1, act="relu6"))
    return _Classifier(nn.Sequential(*layers), nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes)))


# -- MobileNetV3-Large -----------------------------------------------------------------------------------
_MBV3_LARGE = (  # k, expanded, out, se, act, stride
    (3, 16, 16, 0, "relu", 1), (3, 64, 24, 0, "relu", 2), (3, 72, 24, 0, "relu", 1), (5, 72, 40, 1, "relu", 2),
    (5, 120, 40, 1, "relu", 1), (5, 120, 40, 1, "relu", 1), (3, 240, 80, 0, "hswish", 2),
    (3, 200, 80, 0, "hswish", 1), (3, 184, 80, 0, "hswish", 1), (3, 184, 80, 0, "hswish", 1),
    (3, 480, 112, 1, "hswish", 1), (3, 672, 112, 1, "hswish", 1), (5, 672, 160, 1, "hswish", 2),
    (5, 960, 160, 1, "hswish", 1), (5, 960, 160, 1, "hswish", 1),
)


def mobilenet_v3_large(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [_conv_bn(3, 16, 3, 2, act="hswish")]
    cin = 16
    for k, mid, cout, se, act, stride in _MBV3_LARGE:
        squeeze = make_divisible(mid // 4) if se else 0
        layers.append(InvertedResidual(cin, cout, k, stride, mid, act, squeeze, "relu", "hsigmoid"))
        cin = cout
    layers.append(_conv_bn(cin, 960, 1, act="hswish"))
    head = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(inplace=True), nn.Dropout(0.2),
                         nn.Linear(1280, num_classes))
    return _Classifier(nn.Sequential(*layers), head)


# -- ShuffleNetV2 x1.0 -----------------------------------------------------------------------------------
def _channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin, act="none"),
                                         _conv_bn(cin, half, 1))
        branch_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(_conv_bn(branch_in, half, 1), _conv_bn(half, half, 3, stride, groups=half,
                                                                            act="none"), _conv_bn(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _channel_shuffle(out)


def shufflenet_v2(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [_conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 24
    for repeats, cout in ((4, 116), (8, 232), (4, 464)):
        for i in range(repeats):
            layers.append(_ShuffleUnit(cin, cout, 2 if i == 0 else 1))
            cin = cout
    layers.append(_conv_bn(cin, 1024, 1))
    return _Classifier(nn.Sequential(*layers), nn.Linear(1024, num_classes))


# -- EfficientNet-B0 and MnasNet-A1 ----------------------------------------------------------------------
def _mbconv_net(stem: int, stages: tuple[tuple[int, int, int, int, int, bool], ...], act: str, se_act: str,
                head: int, num_classes: int, first_noskip: bool = False) -> nn.Module:
    """Stages of (expansion, kernel, stride, out channels, repeats, SE); SE squeezes to 1/4 of the block input."""
    layers: list[nn.Module] = [_conv_bn(3, stem, 3, 2, act=act)]
    cin = stem
    for index, (e, k, s, c, n, se) in enumerate(stages):
        for i in range(n):
            squeeze = max(1, cin // 4) if se else 0
            skip = not (first_noskip and index == 0)
            layers.append(InvertedResidual(cin, c, k, s if i == 0 else 1, cin * e, act, squeeze, se_act, skip=skip))
            cin = c
    layers.append(_conv_bn(cin, head, 1, act=act))
    return _Classifier(nn.Sequential(*layers), nn.Sequential(nn.Dropout(0.2), nn.Linear(head, num_classes)))


def efficientnet_b0(num_classes: int = 1000) -> nn.Module:
    stages = ((1, 3, 1, 16, 1, True), (6, 3, 2, 24, 2, True), (6, 5, 2, 40, 2, True), (6, 3, 2, 80, 3, True),
              (6, 5, 1, 112, 3, True), (6, 5, 2, 192, 4, True), (6, 3, 1, 320, 1, True))
    return _mbconv_net(32, stages, "silu", "silu", 1280, num_classes)


def mnasnet(num_classes: int = 1000) -> nn.Module:
    """MnasNet-A1 (timm's ``mnasnet_a1``): a depthwise-separable stem block, then MBConv stages, SE in three."""
    stages = ((1, 3, 1, 16, 1, False), (6, 3, 2, 24, 2, False), (3, 5, 2, 40, 3, True), (6, 3, 2, 80, 4, False),
              (6, 3, 1, 112, 2, True), (6, 5, 2, 160, 3, True), (6, 3, 1, 320, 1, False))
    return _mbconv_net(32, stages, "relu", "relu", 1280, num_classes, first_noskip=True)


_ZOO: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "mobilenet_v3_large": mobilenet_v3_large,
    "shufflenet_v2": shufflenet_v2, "efficientnet_b0": efficientnet_b0, "mnasnet": mnasnet,
}


def zoo_names() -> list[str]:
    return list(_ZOO)


def build_zoo(name: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """An eval-mode zoo network with seeded weights (BatchNorm statistics randomised so folding is not trivial)."""
    if name not in _ZOO:
        raise HwnasError(f"unknown zoo network {name!r} (expected one of {', '.join(_ZOO)})")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = _ZOO[name](num_classes)
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                nn.init.uniform_(sub.weight, 0.5, 1.5)
                nn.init.normal_(sub.bias, 0.0, 0.1)
                sub.running_mean.normal_(0.0, 0.1)
                sub.running_var.uniform_(0.5, 1.5)
    return module.eval()
