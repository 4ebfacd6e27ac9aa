"""What does a second knob or the step clip cost? The env's speed with the LR alone and more.

Why: every knob after the LR adds its update (`ganno_env.knobs.Knob.update`) to every
inner optimiser step, and so does the step clip (`step_clip`: each layer's step ratio,
then its clipped LRs), and an experiment is millions of those steps. This script times one
episode of each configuration, round-robin over the repeats so machine noise hits all of
them alike, and prints the medians and each one's time relative to the LR alone:

* `lr`: `controls=("lr",)`, the default;
* `lr+momentum (0)`: momentum as a knob, left at 0: the general per-element path of the
  momentum update (some elements without momentum);
* `lr+momentum (0.9)`: momentum as a knob from 0.9: its short path (every element has
  momentum), the case of a trained policy, which raises momentum early;
* `lr+weight_decay`, `lr+momentum+weight_decay (0.9)`;
* `lr, step clip 0.5`: the LR alone under the step clip (binding or not, it costs the same).

Every agent keeps its values (factor 1 for every knob). Run on an idle machine:
``python -m benchmarks.perf_knobs`` (``--population``, ``--repeats``, ``--cycles``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from benchmarks.timing import print_medians, round_robin
from ganno_env import layerwise_lr_v1

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "lr": {},
    "lr+momentum (0)": {"controls": ("lr", "momentum")},
    "lr+momentum (0.9)": {"controls": ("lr", "momentum"), "momentum": 0.9},
    "lr+weight_decay": {"controls": ("lr", "weight_decay"), "weight_decay": 1e-4},
    "lr+momentum+weight_decay (0.9)": {
        "controls": ("lr", "momentum", "weight_decay"),
        "momentum": 0.9,
        "weight_decay": 1e-4,
    },
    "lr, step clip 0.5": {"step_clip": 0.5},
}


def episode_seconds(settings: dict[str, Any], population: int, cycles: int, seed: int) -> float:
    """Wall time of one episode (reset and every step), every agent keeping its values."""
    env = layerwise_lr_v1.parallel_env(
        conditions={"initial_lr": 0.01}, population=population, max_cycles=cycles, **settings
    )
    keep = [list(control.factors).index(1.0) for control in env.core.controls]
    action: Any = keep[0] if len(keep) == 1 else np.array(keep)
    start = time.perf_counter()
    env.reset(seed=seed)
    while env.agents:
        env.step({agent: action for agent in env.agents})
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for settings in CONFIGURATIONS.values():  # warm-up
        episode_seconds(settings, args.population, 2, seed=1_000_000)
    times = round_robin(
        CONFIGURATIONS,
        args.repeats,
        lambda name, repeat: episode_seconds(
            CONFIGURATIONS[name], args.population, args.cycles, seed=repeat
        ),
    )
    print(f"population {args.population}, {args.cycles} decisions x 25 steps, one torch thread,")
    print(f"median of {args.repeats} round-robin repeats, seconds per episode")
    print_medians(times, base="lr", label="controls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
