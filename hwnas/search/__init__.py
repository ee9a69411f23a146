"""search layer: the supernet and how it is searched, then the search run that meets a latency target on a device.

Search machinery: ``supernet`` (mixed ops with binary gates), ``nested`` (candidates sharing the largest one's
weights), ``losses`` (latency losses and rewards), ``strategies`` (proxyless, mnas, evolution), ``decode`` (the most
probable architecture under a latency target, exact), ``evolution`` (evolutionary search under a latency bound),
``decoders`` (what the closed loop decodes with: a distribution's mode, or evolution on shared weights),
``memory_bound`` and ``decode_memory`` (MemNet's memory bound and the two-budget decoder), ``pareto``
(accuracy-latency(-memory) fronts), ``distributed`` (data-parallel supernet training under torchrun).

The search run, one module per job: ``run`` (the phases in order: set up, search, closed loop, train, measure,
write), ``run_config`` (every option, in named groups), ``run_supernet`` (the supernet search), ``run_train``
(training from scratch), ``closed_loop`` (meeting T on the device before training, the uniform baseline), ``aim``
(the latency model and the predictor's refitting loop), ``measure`` (end-to-end attempts, each network's quietest),
``verdict`` (the final measurement), ``random_baselines`` (random architectures in the measured band),
``run_pareto`` (the run's accuracy-latency points), ``run_targets`` (one network per target), ``records`` (the typed
records that cross between them), ``run_report`` (the run folder's files), ``checkpoint`` (resuming an interrupted
run), ``progress`` (bars or summary lines).
"""

from hwnas import callable_package

callable_package(__name__)  # hwnas.search(...) is hwnas.api.search(...); hwnas.search.run stays this package's module
