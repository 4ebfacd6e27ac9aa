"""The step ratios that training shows at the first decision: where a safety net may sit.

A layer's step ratio is `lr * grad_rms / weight_rms` (feature `log10_step_ratio`): the
relative weight change of one SGD step, known at the probe before any update. This script
resets the env on a *training* condition many times and prints, per layer, quantiles of
the probe's step ratio, and the largest over all layers, which `--max-step-ratio` of the
`local` preset's safety-net lever uses (docs/results.md, "A safety net").

    python -m benchmarks.step_ratios                      # train_wide, 64 resets of 64
    python -m benchmarks.step_ratios --conditions train_hot --resets 16

Held-out conditions are refused: a ceiling read off them would be tuned to the benchmark.
Seeds are 0, P, 2P, ... (P the population), all below the held-out ones.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from ganno_env.conditions import HELD_OUT_SEED_START, get_condition
from ganno_env.layerwise_lr import LayerwiseLREnv


def probe_step_ratios(conditions: str, resets: int, population: int) -> np.ndarray:
    """The probe's step ratios [networks, layers] over `resets` resets of `population`
    networks each (network i of reset r draws its conditions from seed r * population + i;
    a reset's networks share their shape, so each reset draws one)."""
    condition = get_condition(conditions)  # ValueError naming the known conditions
    if condition.held_out:
        raise ValueError(f"conditions={conditions!r} is held out; allowed: a training condition")
    if resets * population > HELD_OUT_SEED_START:
        raise ValueError(
            f"resets x population = {resets * population}; allowed: at most "
            f"{HELD_OUT_SEED_START} (the held-out seeds start there)"
        )
    env = LayerwiseLREnv(conditions=conditions, population=population, num_threads=1)
    ratios = []
    for r in range(resets):
        env.reset(seed=r * population)
        stats = env.layer_stats
        ratios.append(env.lrs * stats.grad_rms.cpu().numpy() / stats.weight_rms.cpu().numpy())
    return np.concatenate(ratios)


def round_up(value: float, digits: int = 2) -> float:
    """`value` rounded up to `digits` significant digits (0.3279 -> 0.33)."""
    scale = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.ceil(round(value / scale, 9)) * scale, 12)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conditions", default="train_wide")
    parser.add_argument("--resets", type=int, default=64)
    parser.add_argument("--population", type=int, default=64)
    args = parser.parse_args(argv)
    if args.resets < 1 or args.population < 1:
        parser.error(f"--resets {args.resets}, --population {args.population}: allowed >= 1")
    torch.set_num_threads(1)
    ratios = probe_step_ratios(args.conditions, args.resets, args.population)
    print(f"{args.conditions}: probe step ratios of {ratios.shape[0]} networks")
    print("layer | median   | p99      | p99.9    | max")
    for j, column in enumerate(ratios.T):
        quantiles = np.quantile(column, [0.5, 0.99, 0.999])
        print(f"{j:>5} | " + " | ".join(f"{q:.3g}".ljust(8) for q in quantiles)
              + f" | {column.max():.3g}")  # fmt: skip
    largest = float(ratios.max())
    print(f"largest over all layers: {largest:.4g} (rounded up: {round_up(largest):g})")


if __name__ == "__main__":
    main()
