"""The step ratios that training shows: where a safety net, a fallback or a clip may sit.

A layer's step ratio is `lr * grad_rms / weight_rms` (feature `log10_step_ratio`): the
relative weight change of one SGD step, known at the probe before any update. This script
resets the env on a *training* condition many times and prints, per layer, quantiles of
the probe's step ratio, and the largest over all layers, which `--max-step-ratio` of the
`local` preset's safety-net lever uses (docs/results.md, "A safety net").

With `--every-step` it instead trains each network for `--steps` steps at its drawn
initial LR (constant) and prints the largest step ratio that any of its steps asked for,
split by whether the network ended below its initial val loss, and how many did;
`--step-clip X` trains them under the step clip (docs/results.md, "A clip on every step").

    python -m benchmarks.step_ratios                      # train_wide, 64 resets of 64
    python -m benchmarks.step_ratios --conditions train_hot --resets 16
    python -m benchmarks.step_ratios --every-step --step-clip 0.5

Held-out conditions are refused: a ceiling read off them would be tuned to the benchmark.
Seeds are 0, P, 2P, ... (P the population), all below the held-out ones.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator

import numpy as np
import torch

from ganno_env.conditions import HELD_OUT_SEED_START, get_condition
from ganno_env.layerwise_lr import LayerwiseLREnv


def probe_step_ratios(conditions: str, resets: int, population: int) -> np.ndarray:
    """The probe's step ratios [networks, layers] over `resets` resets of `population`
    networks each (network i of reset r draws its conditions from seed r * population + i;
    a reset's networks share their shape, so each reset draws one)."""
    ratios = []
    for env in _training_resets(conditions, resets, population):
        stats = env.layer_stats
        ratios.append(env.lrs * stats.grad_rms.cpu().numpy() / stats.weight_rms.cpu().numpy())
    return np.concatenate(ratios)


def every_step_ratios(
    conditions: str, resets: int, population: int, steps: int, step_clip: float | None
) -> np.ndarray:
    """Per network [networks, 4]: its initial LR (first layer), the largest step ratio any
    of its `steps` steps at that constant LR asked for (before the clip), its initial and
    its final val loss (NaN when it diverged). Seeds as in `probe_step_ratios`."""
    rows = []
    for env in _training_resets(conditions, resets, population):
        trainer = env.trainer
        trainer.step_clip = math.inf if step_clip is None else float(step_clip)  # tracks
        initial, _ = trainer.evaluate("val", accuracy=False)
        trainer.train(torch.as_tensor(env.lrs), steps)
        final, _ = trainer.evaluate("val", accuracy=False)
        largest = trainer.largest_step_ratio.amax(1)
        rows.append(np.stack([env.lrs[:, 0], largest.cpu().numpy(), initial, final], 1))
    return np.concatenate(rows)


def round_up(value: float, digits: int = 2) -> float:
    """`value` rounded up to `digits` significant digits (0.3279 -> 0.33)."""
    scale = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.ceil(round(value / scale, 9)) * scale, 12)


def _training_resets(conditions: str, resets: int, population: int) -> Iterator[LayerwiseLREnv]:
    """The env after each of `resets` resets of `population` networks on a training
    condition (reset r from seed r * population), once the arguments are checked."""
    _check_training(conditions, resets, population)
    env = LayerwiseLREnv(conditions=conditions, population=population, num_threads=1)
    for r in range(resets):
        env.reset(seed=r * population)
        yield env


def _check_training(conditions: str, resets: int, population: int) -> None:
    """ValueError for a held-out condition, or seeds that would reach the held-out ones."""
    condition = get_condition(conditions)  # ValueError naming the known conditions
    if condition.held_out:
        raise ValueError(f"conditions={conditions!r} is held out; allowed: a training condition")
    if resets * population > HELD_OUT_SEED_START:
        raise ValueError(
            f"resets x population = {resets * population}; allowed: at most "
            f"{HELD_OUT_SEED_START} (the held-out seeds start there)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conditions", default="train_wide")
    parser.add_argument("--resets", type=int, default=64)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--every-step", action="store_true", help="train at constant LRs")
    parser.add_argument("--steps", type=int, default=1000, help="with --every-step")
    parser.add_argument("--step-clip", type=float, default=None, help="with --every-step")
    args = parser.parse_args(argv)
    if args.resets < 1 or args.population < 1 or args.steps < 1:
        parser.error(
            f"--resets {args.resets}, --population {args.population}, --steps {args.steps}: "
            "allowed >= 1"
        )
    if args.step_clip is not None and not (math.isfinite(args.step_clip) and args.step_clip > 0):
        parser.error(f"--step-clip {args.step_clip}: allowed a finite number > 0")
    torch.set_num_threads(1)
    if args.every_step:
        print_every_step(args)
        return
    ratios = probe_step_ratios(args.conditions, args.resets, args.population)
    print(f"{args.conditions}: probe step ratios of {ratios.shape[0]} networks")
    print("layer | median   | p99      | p99.9    | max")
    for j, column in enumerate(ratios.T):
        quantiles = np.quantile(column, [0.5, 0.99, 0.999])
        print(f"{j:>5} | " + " | ".join(f"{q:.3g}".ljust(8) for q in quantiles)
              + f" | {column.max():.3g}")  # fmt: skip
    largest = float(ratios.max())
    print(f"largest over all layers: {largest:.4g} (rounded up: {round_up(largest):g})")


def print_every_step(args: argparse.Namespace) -> None:
    """The `--every-step` report: survivors' largest step ratios, and the networks lost."""
    rows = every_step_ratios(
        args.conditions, args.resets, args.population, args.steps, args.step_clip
    )
    kept = np.isfinite(rows[:, 3]) & (rows[:, 3] < rows[:, 2])
    clip = "no clip" if args.step_clip is None else f"step clip {args.step_clip:g}"
    print(f"{args.conditions}: {len(rows)} networks, {args.steps} steps at their LR, {clip}")
    print(f"ended below their initial val loss: {int(kept.sum())}; not: {int((~kept).sum())}")
    if kept.any():
        median, p99, p999 = np.quantile(rows[kept, 1], [0.5, 0.99, 0.999])
        print(
            f"largest step ratio of those that did: median {median:.3g}, p99 {p99:.3g}, "
            f"p99.9 {p999:.3g}, max {rows[kept, 1].max():.3g}"
        )
    if (~kept).any():
        print("largest step ratio of the others: " + ", ".join(f"{v:.3g}" for v in rows[~kept, 1]))
    print(f"mean final val loss of those that did: {rows[kept, 3].mean():.4f}")


if __name__ == "__main__":
    main()
