"""Side-by-side timings: each configuration's median and its ratio to a baseline's.

The speed scripts (`perf_knobs`, `perf_cnn`, `perf_bench_order`) time every configuration
round-robin (`round_robin`), so that machine noise hits all alike, and print the medians
(`print_medians`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence


def round_robin(
    names: Iterable[str], repeats: int, seconds: Callable[[str, int], float]
) -> dict[str, list[float]]:
    """`seconds(name, repeat)` for every configuration in turn, `repeats` times over, so
    that machine noise hits all of them alike; the timings by name."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name, values in times.items():
            values.append(seconds(name, repeat))
    return times


def print_medians(times: Mapping[str, Sequence[float]], base: str, label: str) -> None:
    """One line per configuration: its median seconds and that median over `base`'s."""
    if base not in times:
        raise ValueError(f"base={base!r}; allowed: {sorted(times)}")
    reference = statistics.median(times[base])
    width = max(len(label), *(len(name) for name in times)) + 2
    print(f"{label:<{width}}{'median s':>10}{'x ' + base:>{len(base) + 10}}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<{width}}{median:>10.3f}{median / reference:>{len(base) + 10}.2f}")
