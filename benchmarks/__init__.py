"""Experiments that back figures and claims in docs/: each prints its figures (Markdown rows or a plot) and is
run by hand on a quiet machine (the test suite only checks that each one starts).

Run one from the repository root, as a module (no install needed: the root is on ``sys.path``) or as a plain
script (``hwnas`` installed, editable or not)::

    python -m benchmarks.bench_search_memory --resolution 64
    python benchmarks/bench_search_memory.py --resolution 64

- ``bench_aim``: the closed loop with the table against the one with the refitting predictor, on the device
  (docs/search.md, docs/predictors.md);
- ``bench_cache_pressure``: isolated ops against chains of copies, cache pressure at small resolutions
  (docs/search.md);
- ``bench_search_memory``: activation memory of the binarized supernet, one path and a DARTS mixture
  (docs/search.md);
- ``memory_check``: computed peak activation memory against LiteRT's arena, zoo and proxyless (docs/memory.md);
- ``memory_torch``: computed peak activation memory against PyTorch's CPU allocator, zoo and proxyless
  (docs/memory.md);
- ``bench_fewshot``: few-shot latency transfer, leave-one-device-out (docs/predictors_fewshot.md);
- ``bench_gpu_warmup``: an idle GPU's slow first rounds and the priming load that fixes them (docs/measurements.md);
- ``eval_kernel_predictor``: the kernel predictor on the zoo networks at 224 (docs/predictors_kernel.md);
- ``eval_kernel_on_set``: the kernel predictor on a measurement set's held-out networks (docs/predictors_kernel.md).

Scripts that make shipped data or regenerate the docs' tables live in ``tools/``; CI scripts in ``.ci/``.
"""
