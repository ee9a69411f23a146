"""Latency layer: what a network costs on a device, measured and modelled.

- ``table`` (a space's per-op lookup table, with ``TableEntry``) and ``profile`` (measuring one into it, paired
  with the reference); ``header``: the device/space/fingerprint header that tables and measurement sets share;
  ``lookup``: which table answers for a device and space (the user's, else the shipped one, each only when it has
  every op, the head included; the search completes the user's by profiling);
- ``estimator``: the one interface the search uses (``latency_ms`` of an architecture, the differentiable
  ``expected_latency_ms``, per-candidate costs for the exact decoder), backed by a table or a predictor;
- ``reference``: the reference network every measurement is paired with (one loaded copy by default; a pool of
  copies taking turns on request);
- ``sets``: end-to-end measurement sets (``hwnas measure``); ``bench`` and ``validate``: one network, or a table
  against measured networks; ``metrics``: the agreement figures and the estimated-vs-measured plot all of them use;
- ``predictors/``: learned predictors (calibrated, transfer, kernel) in one file format; ``kernels/``: splitting
  ONNX models into the kernels the runtime runs, and sampling kernels to learn them.
"""
