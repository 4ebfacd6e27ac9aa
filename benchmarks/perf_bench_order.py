"""Does the order of the benchmark's units matter? Plan order against largest first.

Why: `ganno bench` (and the benchmark half of `make run`) hands its units to a pool of
worker processes. The oracle grid's units hold seven networks per seed and cost several
times a hand-made schedule's; in plan order the last condition's grid unit (`cnn`, the
slowest) starts near the end and runs alone while the other worker idles. Largest first
(`benchmarks.runner.largest_first`) starts the big units early and fills in with small ones.

This script runs the same units both ways in fresh folders, round-robin over the repeats so
that machine noise hits both alike, and prints the median wall times and their ratio.
Run on an idle machine: ``python -m benchmarks.perf_bench_order`` (``--suite``, ``--seeds``,
``--workers``, ``--repeats``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from benchmarks.runner import (
    _run_in_processes,
    controller_names,
    largest_first,
    plan,
    run_inputs,
)
from benchmarks.suites import Suite, load_suite
from benchmarks.timing import print_medians, round_robin

ORDERS: dict[str, Callable[[list], list]] = {
    "plan order": list,
    "largest first": largest_first,
}


def suite_seconds(suite: Suite, order: Callable[[list], list], workers: int) -> float:
    """Wall time of every hand-made and oracle unit of `suite`, handed out in `order`."""
    names = controller_names(None, suite)
    units = order(plan(suite, names, set(), run_inputs(suite, names)))
    start = time.perf_counter()
    _run_in_processes(units, suite, None, "cpu", workers, lambda unit, records: None)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="unseen")
    parser.add_argument("--seeds", type=int, default=3, help="first N seeds of the suite")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    suite = load_suite(args.suite).with_seeds(args.seeds)

    def seconds(name: str, repeat: int) -> float:
        took = suite_seconds(suite, ORDERS[name], args.workers)
        print(f"repeat {repeat + 1}: {name}: {took:.1f} s", flush=True)
        return took

    times = round_robin(ORDERS, args.repeats, seconds)
    print(f"suite {suite.version}, {args.seeds} seeds, {args.workers} workers, hand-made and "
          f"oracle units, median of {args.repeats}:")  # fmt: skip
    print_medians(times, base="plan order", label="order")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
