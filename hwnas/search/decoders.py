"""How a search turns what it learned into an architecture under a latency bound: the closed loop asks a
:class:`Decoder` for the best architecture the latency model puts under a table target (or in a band under it),
and for the fastest one, as often as it needs, with the model it has at that step (a predictor is refitted
between steps).

* :class:`ProbsDecoder` (``proxyless``, ``mnas``): the most probable architecture of the learned distribution
  ``log p`` within the bound (:func:`~hwnas.search.decode.decode_under_target`, an exact knapsack).
* :class:`EvolutionDecoder` (``evolution``): an evolutionary search (:func:`~hwnas.search.evolution.evolve`, as in
  Once-for-All) over the space, fitness from the trained supernet's shared weights on the validation split,
  candidates over the bound rejected by the latency model before they are evaluated. Accuracies are cached across
  calls (they do not depend on the bound), so the loop's later decodes cost predictions, not evaluations.

Both take the search's memory bound (``--max-memory-mb``, ``--max-params-mb``; :mod:`~hwnas.search.memory_bound`):
every architecture they return, the fastest included, is within it (:mod:`~hwnas.search.decode_memory`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.decode import most_probable_arch
from hwnas.search.decode_memory import decode_within, fastest_within, in_band_within
from hwnas.search.memory_bound import MemoryBound
from hwnas.spaces import Architecture, SearchSpace

Reward = Callable[[float, float, float], float]


class Decoder(Protocol):
    """What the closed loop decodes with; ``estimator`` is the latency model of the loop's current step."""

    space: SearchSpace

    def under(self, estimator: LatencyEstimator, bound_ms: float) -> Architecture | None:
        """The best architecture the model puts at or under ``bound_ms``; None when none is."""

    def in_band(self, estimator: LatencyEstimator, low_ms: float, high_ms: float) -> Architecture | None:
        """The best architecture the model puts in ``[low_ms, high_ms]``; None when none is found."""

    def fastest(self, estimator: LatencyEstimator) -> Architecture:
        """The fastest architecture by the model (as the decoder sees it)."""


class ProbsDecoder:
    """The learned distribution's most probable architecture under a bound (see the module docstring)."""

    def __init__(self, space: SearchSpace, log_probs: Sequence[Sequence[float]],
                 memory: MemoryBound | None = None) -> None:
        self.space, self.log_probs, self.memory = space, [list(lp) for lp in log_probs], memory

    def under(self, estimator: LatencyEstimator, bound_ms: float) -> Architecture | None:
        return decode_within(self.space, self.log_probs, estimator, bound_ms, self.memory)

    def in_band(self, estimator: LatencyEstimator, low_ms: float, high_ms: float) -> Architecture | None:
        return in_band_within(self.space, self.log_probs, estimator, low_ms, high_ms, self.memory)

    def fastest(self, estimator: LatencyEstimator) -> Architecture:
        """By the model's costs linearized where the decoder linearizes them (at the most probable architecture; an
        additive model, a table, is its own linearization)."""
        return fastest_within(self.space, estimator.anchored(most_probable_arch(self.space, self.log_probs)),
                              self.memory)


def as_decoder(space: SearchSpace, decoder_or_log_probs: Any) -> Decoder:
    """A :class:`Decoder` as given, or a :class:`ProbsDecoder` of the log-probabilities given."""
    if hasattr(decoder_or_log_probs, "under"):
        return decoder_or_log_probs
    return ProbsDecoder(space, decoder_or_log_probs)


class EvolutionDecoder:
    """An evolutionary search under each bound (see the module docstring).

    ``accuracy_of(arch)``: the supernet's shared-weight accuracy on the validation split; ``reward(acc, lat, T)``
    ranks candidates by the latency model's prediction against the bound (the closed loop's table target: T in the
    model's units, which the loop tunes until the decoded network measures just under the real T); ``config``:
    :class:`~hwnas.search.evolution.EvolutionConfig`; ``say`` is told one line per evolution; ``memory``: the
    search's memory bound (a candidate over it is never evaluated)."""

    def __init__(self, space: SearchSpace, accuracy_of: Callable[[Architecture], float], reward: Reward,
                 config: Any, say: Callable[[str], None] | None = None, memory: MemoryBound | None = None) -> None:
        self.space, self.reward, self.config, self.say, self.memory = space, reward, config, say, memory
        self.accuracies: dict[tuple[str, ...], float] = {}
        self._accuracy_of = accuracy_of
        self.runs: list[dict[str, Any]] = []  # one per evolution: its bound, best, evaluated and rejected

    def accuracy(self, arch: Architecture) -> float:
        """Cached ``accuracy_of``."""
        if arch.choices not in self.accuracies:
            self.accuracies[arch.choices] = float(self._accuracy_of(arch))
        return self.accuracies[arch.choices]

    def _evolve(self, estimator: LatencyEstimator, bound_ms: float) -> Any:
        from hwnas.search.evolution import evolve

        result = evolve(self.space, self.accuracy, estimator.latency_ms, bound_ms, self.reward, bound_ms,
                        self.config, memory=self.memory)
        best = result.best
        self.runs.append({"bound_ms": bound_ms, "best": list(best.arch.choices), "best_accuracy": best.accuracy,
                          "best_latency_ms": best.latency_ms, "evaluated": len(result.evaluated),
                          "rejected": result.rejected})
        if self.memory is not None:
            self.runs[-1]["rejected_memory"] = result.rejected_memory
        if self.say is not None:
            self.say(f"evolution under {bound_ms:.4g} ms: best accuracy {best.accuracy:.3f} at {best.latency_ms:.4g} "
                     f"ms ({len(result.evaluated)} evaluated, {result.rejected} rejected by the latency model, "
                     f"{len(self.accuracies)} distinct architectures so far)")
        return result

    def under(self, estimator: LatencyEstimator, bound_ms: float) -> Architecture | None:
        if estimator.latency_ms(self.fastest(estimator)) > bound_ms:
            return None
        return self._evolve(estimator, bound_ms).best.arch

    def in_band(self, estimator: LatencyEstimator, low_ms: float, high_ms: float) -> Architecture | None:
        """The fittest candidate of an evolution under ``high_ms`` whose predicted latency is at least ``low_ms``."""
        if estimator.latency_ms(self.fastest(estimator)) > high_ms:
            return None
        result = self._evolve(estimator, high_ms)
        inside = [c for c in result.evaluated if low_ms <= c.latency_ms <= high_ms]
        if not inside:
            return None
        return max(inside, key=lambda c: self.reward(c.accuracy, c.latency_ms, high_ms)).arch

    def fastest(self, estimator: LatencyEstimator) -> Architecture:
        uniform = [[0.0] * len(layer.names) for layer in self.space.layers]
        return fastest_within(self.space, estimator.anchored(most_probable_arch(self.space, uniform)), self.memory)


def shared_weight_accuracy(supernet: Any, data: Any, images: int, eval_batch_size: int,
                           channels_last: bool) -> Callable[[Architecture], float]:
    """``accuracy_of`` for :class:`EvolutionDecoder`: ``arch``'s top-1 accuracy with the supernet's shared weights
    on the first ``images`` of the ``arch`` (validation) split, BatchNorm on each batch's statistics (the
    supernet's running statistics mix every path's)."""
    from hwnas.search.run_train import evaluate

    x, y = data.split("arch")
    x, y = x[:images], y[:images]
    batches = [(x[i:i + eval_batch_size], y[i:i + eval_batch_size]) for i in range(0, len(y), eval_batch_size)]

    def accuracy_of(arch: Architecture) -> float:
        supernet.set_arch(arch)
        return evaluate(supernet, batches, channels_last, batch_statistics=True)

    return accuracy_of
