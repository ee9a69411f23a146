"""The LiteRT backend's split of an ``.onnx`` file equals the split of the ``.tflite`` that hwnas converts it to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("ai_edge_litert")

from hwnas.latency.kernels.backends import kernel_backend  # noqa: E402


class _Probe(nn.Module):
    """The rarer patterns: conv + Tanh, x * hardsigmoid(x), a BatchNorm after an Add, a padded max and average
    pool, a constant Div folded into the next conv, LeakyRelu, Split, a flatten of a 4x4 map, Gemm + Relu."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 16, 3, 1, 1), nn.Conv2d(16, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 2, 1)
        self.bn, self.c4, self.c5 = nn.BatchNorm2d(16), nn.Conv2d(16, 24, 1), nn.Conv2d(24, 24, 3, 1, 1, groups=4)
        self.fc1, self.fc2 = nn.Linear(24 * 4 * 4, 32), nn.Linear(32, 10)
        with torch.no_grad():
            self.bn.running_mean.uniform_()
            self.bn.running_var.uniform_(0.5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.c1(x))
        y = self.c2(x) + self.c3(x)
        y = self.bn(F.hardsigmoid(y) * y)
        y = F.relu(self.c4(F.max_pool2d(y, 3, 2, 1))) / 6.0
        p, q, r = torch.split(F.leaky_relu(self.c5(y), 0.1), [8, 8, 8], dim=1)
        y = F.avg_pool2d(torch.cat([r, p, q], dim=1), 3, 1, 1)
        return self.fc2(F.relu(self.fc1(torch.flatten(y, 1))))


@pytest.fixture(scope="module")
def backend():
    return kernel_backend("litert")


@pytest.fixture(scope="module")
def pairs(litert_pairs, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two zoo networks and one proxyless architecture at 64 (converted once a session: tests/conftest.py) and the
    probe module, each as .onnx and .tflite."""
    from hwnas.runtimes.converters import cached_onnx, cached_tflite

    directory = tmp_path_factory.mktemp("probe")
    shape = (1, 3, 15, 15)  # odd 15: SAME-padded convs; the pools' padding is explicit
    probe = _Probe()
    return {**litert_pairs, "probe": (cached_onnx(probe, shape, directory, "probe"),
                                      cached_tflite(probe, shape, directory, "probe"))}


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "shufflenet_v2", "proxyless", "probe"])
def test_onnx_split_equals_tflite_split(backend, pairs, name):
    """Same kernels, same keys, same order: without converting, the .onnx gives what its LiteRT conversion runs."""
    onnx_path, tflite_path = pairs[name]
    from_onnx = [k.key for k in backend.split_file(onnx_path, 1)]
    from_tflite = [k.key for k in backend.split_file(tflite_path, 1)]
    assert from_onnx == from_tflite
    ops = {key.split("-op:")[1].split("-in:")[0] for key in from_onnx}
    expected = {"mobilenet_v3_large": {"tfl.HARD_SWISH", "tfl.MUL", "tfl.MEAN"},  # SE: HardSigmoid -> RELU6 + MUL
                "shufflenet_v2": {"tfl.TRANSPOSE", "tfl.RESHAPE", "tfl.SLICE", "tfl.PADV2"},
                "proxyless": {"tfl.DEPTHWISE_CONV_2D", "tfl.ADD"},
                "probe": {"tfl.TANH", "tfl.SUB", "tfl.AVERAGE_POOL_2D", "tfl.LEAKY_RELU", "tfl.TRANSPOSE"}}[name]
    assert expected <= ops
