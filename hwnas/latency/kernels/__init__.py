"""Kernel-level latency modelling (nn-Meter's idea): split a model into the kernels the runtime really runs.

- ``record``: the :class:`Kernel` record and its canonical key.
- ``onnx_split``: an ONNX model -> the kernels ONNX Runtime's CPU optimizer makes of it, in three steps:
  ``onnx_graph`` (shapes, constants), ``fusion`` (level-1/2 rewrites), ``nchwc`` (the blocked layout).
- ``generators``: a record -> its single-kernel ONNX model; ``features``: a record -> its model's features.
- ``sample``: seeds, random neighbours and adaptive sampling of kernels for the kernel predictor; ``store``:
  their paired measurements against the reference network, in a resumable file.
"""

from hwnas.latency.kernels.onnx_split import split_onnx
from hwnas.latency.kernels.record import Kernel, count_by_op, kernel_from_key

__all__ = ["Kernel", "count_by_op", "kernel_from_key", "split_onnx"]
