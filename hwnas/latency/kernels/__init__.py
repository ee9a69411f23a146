"""Kernel-level latency modelling (nn-Meter's idea): split a model into the kernels the runtime really runs.

``onnx_split`` turns an ONNX graph into :class:`Kernel` records the way ONNX Runtime's CPU optimizer fuses and
lays it out; ``generators`` builds the single-kernel ONNX model of a record; ``sample`` samples and measures
kernels (paired with the reference network) for the kernel predictor.
"""

from hwnas.latency.kernels.onnx_split import KERNEL_TYPES, Kernel, kernel_from_key, split_model, split_onnx

__all__ = ["KERNEL_TYPES", "Kernel", "kernel_from_key", "split_model", "split_onnx"]
