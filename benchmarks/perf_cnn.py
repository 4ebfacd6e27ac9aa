"""The engine's CNN path: one grouped convolution against the same model under vmap.

Why: the `cnn` condition is the benchmark's slowest (with the oracle grid's 7 LRs, a
fifth of `unseen_v0`'s work on 2 cores). `PopulationTrainer` runs the `CNN` of
`ganno_env.models` as grouped convolutions over all networks' channels; any other model
runs under `torch.vmap`. This script trains one population of the task's CNN both ways,
round-robin over the repeats so that machine noise hits both alike, checks that both give
the same losses, and prints the median seconds per interval and their ratio.
Run on an idle machine: ``python -m benchmarks.perf_cnn`` (``--task``, ``--population``,
``--steps``, ``--repeats``).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.timing import print_medians, round_robin
from ganno_env.engine import PopulationTrainer
from ganno_env.models import CNN
from ganno_env.tasks import get_task

PATHS = {"vmap": False, "grouped": True}


def interval_seconds(task_name: str, population: int, steps: int, grouped: bool) -> tuple:
    """Seconds for `steps` SGD steps and one val evaluation; the losses, to compare."""
    task = get_task(task_name)
    data = task.load_data()
    trainer = PopulationTrainer.build(
        lambda: task.build_model(task.width, task.depth, data), data, task.batch_size,
        seeds=range(population), init_scales=[1.0] * population, num_threads=1,
    )  # fmt: skip
    if not trainer._fast_cnn:
        raise SystemExit(f"task {task_name!r} has no {CNN.__name__}; allowed: a CNN task")
    trainer._fast_cnn = grouped
    lrs = torch.full((population, trainer.num_layers), 0.05)
    start = time.perf_counter()
    loss, _ = trainer.train(lrs, steps)
    val, _ = trainer.evaluate("val", accuracy=False)
    return time.perf_counter() - start, loss, val


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits_cnn")
    parser.add_argument("--population", type=int, default=70, help="the oracle grid's 7 x 10")
    parser.add_argument("--steps", type=int, default=25, help="one interval")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}

    def seconds(name: str, repeat: int) -> float:
        took, loss, val = interval_seconds(args.task, args.population, args.steps, PATHS[name])
        results[name] = (loss, val)
        return took

    times = round_robin(PATHS, args.repeats, seconds)
    for a, b in zip(results["vmap"], results["grouped"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    print(f"{args.task}, population {args.population}, {args.steps} steps and one val "
          f"evaluation, one thread, median of {args.repeats} (same losses both ways):")  # fmt: skip
    print_medians(times, base="vmap", label="path")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
