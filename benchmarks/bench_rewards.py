"""Soft, hard and absolute rewards on one supernet and one target: what each one's evolution picks.

    python benchmarks/bench_rewards.py --device cpu-onnxruntime --data digits --epochs 6 --fractions 0.3,0.5

Trains one supernet on uniformly sampled paths (the ``evolution`` strategy's training: ``--epochs`` warm-up epochs
of the default search settings), then for each target (``--fractions`` of the way from the fastest to the slowest
architecture by the device's latency table) runs the evolutionary search on the same shared weights once per
reward and bound, the bound at each of ``--bounds`` x T: at 1.0 (the search's own setting) nothing over T is ever
evaluated; above 1 the reward alone decides whether to go over T. Prints, per target, bound and reward, the chosen
architecture's predicted latency / T and its shared-weight accuracy on the validation split. Same seed, same
accuracy cache: the rewards differ only in how they rank (which also steers each evolution).
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from hwnas.data import load_dataset
from hwnas.devices import load_device
from hwnas.search.decode import latency_range
from hwnas.search.decoders import EvolutionDecoder, shared_weight_accuracy
from hwnas.search.evolution import EvolutionConfig
from hwnas.search.losses import get_reward
from hwnas.search.progress import Progress
from hwnas.search.run import load_estimator
from hwnas.search.run_config import SearchConfig
from hwnas.search.run_supernet import search_supernet
from hwnas.search.run_train import torch_settings
from hwnas.search.supernet import SuperNet
from hwnas.spaces import get_space


REWARDS = ("hard", "soft", "abs")


def trained_supernet(config: SearchConfig, space, data, estimator) -> SuperNet:
    """A supernet trained on uniform paths (``evolution``: no architecture step)."""
    supernet = SuperNet(space, arch_grad=config.arch_grad, weight_sharing=config.weight_sharing)
    search_supernet(supernet, data, estimator, 1.0, config, Progress())
    return supernet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--fractions", default="0.3,0.5")
    parser.add_argument("--bounds", default="1.0,1.3", help="comma-separated bounds, as multiples of T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = SearchConfig(device=args.device, space=args.space, resolution=args.resolution, data=args.data,
                          strategy="evolution", warmup_epochs=args.epochs, search_epochs=0, seed=args.seed)
    device = load_device(args.device)
    data = load_dataset(args.data, args.resolution, args.seed)
    space = get_space(args.space, args.resolution, data.num_classes)
    estimator = load_estimator(device, space, config, progress=False)
    rows = []
    with torch_settings(config):
        supernet = trained_supernet(config, space, data, estimator)
        accuracy_of = shared_weight_accuracy(supernet, data, config.evolution_images, config.eval_batch_size, False)
        span = latency_range(space, estimator)
        cache: dict = {}
        for fraction in (float(f) for f in args.fractions.split(",")):
            target = span.target_at(fraction)
            for bound, reward in itertools.product((float(b) for b in args.bounds.split(",")), REWARDS):
                decoder = EvolutionDecoder(space, accuracy_of, _at_target(get_reward(reward), target),
                                           EvolutionConfig(population=config.evolution_population,
                                                           generations=config.evolution_generations, seed=args.seed))
                decoder.accuracies = cache  # the same shared-weight accuracies for every reward
                arch = decoder.under(estimator, bound * target)
                rows.append({"fraction": fraction, "target_ms": target, "bound": bound, "reward": reward,
                             "latency_over_target": estimator.latency_ms(arch) / target,
                             "accuracy": decoder.accuracy(arch), "arch": list(arch.choices)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| target (fraction) | bound | reward | predicted latency / T | shared-weight accuracy |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target_ms']:.4g} ms ({r['fraction']}) | {r['bound']} T | {r['reward']} | "
              f"{r['latency_over_target']:.3f} | {r['accuracy']:.3f} |")


def _at_target(reward, target_ms: float):
    """The reward against the real target T (the evolution passes its bound as T; here the bound may exceed T)."""
    return lambda accuracy, latency_ms, _bound: reward(accuracy, latency_ms, target_ms)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
