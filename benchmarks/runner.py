"""Run a suite: every controller on every condition and seed, resumably.

Work is cut into units: one controller on one condition for the seeds that share a network
shape, trained as one population. Each finished unit appends one JSON line per run to
`results.jsonl`, keyed by (suite version, condition, controller, seed, variant); a rerun
skips the keys already there, so an interrupted run resumes without repeating or losing a
run (a line cut off by a kill is ignored). Units run in `workers` processes, or as Ray
tasks when an address is given.

The oracle ("best constant LR per condition") runs every LR of the suite's grid as variant
`lr=...` of controller `oracle_grid`; the report picks, per condition, the LR with the best
mean final *val* loss and reports its *test* loss, as a reference, not a competitor.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suites import Suite
from ganno_env.controllers import HAND_MADE, Controller, make_controller
from ganno_env.policy import load_policy
from ganno_env.rollout import RunResult, make_env, rollout

RESULTS = "results.jsonl"
SHAPE_KEYS = ("task", "width", "depth", "batch_size")


@dataclass(frozen=True)
class Unit:
    """One controller on one condition for some seeds (one population)."""

    condition: str
    controller: str
    seeds: tuple[int, ...]
    variants: tuple[str, ...]  # per network, "" or "lr=..." for the oracle grid
    conditions: tuple[tuple[tuple[str, Any], ...], ...]  # explicit initial conditions

    @property
    def size(self) -> int:
        return len(self.seeds)


def controller_names(policy: str | None) -> list[str]:
    names = sorted(HAND_MADE)
    if policy is not None:
        names += ["ganno", "ganno_global"]
    return names + ["oracle_grid"]


def run_key(record: dict[str, Any]) -> tuple:
    return (record["suite_version"], record["condition"], record["controller"], record["seed"],
            record.get("variant", ""))  # fmt: skip


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a results file (a line cut off by a kill is skipped)."""
    if not path.exists():
        return []
    records = []
    with path.open() as f:
        for line in f:
            if not line.endswith("\n"):
                break  # the last line of an interrupted write
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def drop_partial_line(path: Path) -> None:
    """Cut a last line left unfinished by a kill, so new lines start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def plan(suite: Suite, controllers: Iterable[str], done: set[tuple]) -> list[Unit]:
    """The units still to run: missing (condition, controller, seed, variant) keys only."""
    units = []
    for condition in suite.conditions:
        starts = {seed: suite.initial_conditions(condition, seed) for seed in suite.seeds}
        for controller in controllers:
            variants = (
                [f"lr={lr:g}" for lr in suite.oracle_grid] if controller == "oracle_grid" else [""]
            )
            groups: dict[tuple, list[tuple[int, str, dict]]] = {}
            for seed, start in starts.items():
                for variant in variants:
                    key = (suite.version, condition, controller, seed, variant)
                    if key in done:
                        continue
                    values = dict(start)
                    if variant:
                        values["initial_lr"] = float(variant.removeprefix("lr="))
                    shape = tuple(values[k] for k in SHAPE_KEYS)
                    groups.setdefault(shape, []).append((seed, variant, values))
            for members in groups.values():
                units.append(
                    Unit(
                        condition=condition,
                        controller=controller,
                        seeds=tuple(m[0] for m in members),
                        variants=tuple(m[1] for m in members),
                        conditions=tuple(tuple(sorted(m[2].items())) for m in members),
                    )
                )
    return units


def make(controller: str, policy: str | None) -> Controller:
    if controller == "ganno":
        return load_policy(policy)
    if controller == "ganno_global":
        return load_policy(policy, tie_layers=True)
    if controller == "oracle_grid":
        return make_controller("constant")
    return make_controller(controller)


def run_unit(
    unit: Unit, suite: Suite, policy: str | None, device: str = "cpu", threads: int | None = None
) -> list[dict]:
    """Train the unit's population under its controller; one record per run."""
    controller = make(unit.controller, policy)
    env_kwargs = dict(suite.env, num_threads=threads)
    if unit.controller in ("ganno", "ganno_global"):
        env_kwargs.update(lr_factors=tuple(controller.payload["lr_factors"]),
                          lr_bounds=tuple(controller.payload["lr_bounds"]))  # fmt: skip
    first = dict(unit.conditions[0])
    shape = {k: first[k] for k in SHAPE_KEYS if k != "task"}
    env = make_env(
        controller, task=first["task"], conditions=shape, population=unit.size,
        device=device, **env_kwargs,
    )  # fmt: skip
    began = time.perf_counter()
    per_network = [dict(c) for c in unit.conditions]
    results = rollout(env, controller, seed=unit.seeds[0], options={"conditions": per_network})
    took = time.perf_counter() - began
    return [record(suite, unit, i, result, took / unit.size) for i, result in enumerate(results)]


def record(suite: Suite, unit: Unit, i: int, result: RunResult, wall_s: float) -> dict:
    curve = np.array(result.val_curve, dtype=np.float64)
    return {
        "suite_version": suite.version,
        "condition": unit.condition,
        "controller": unit.controller,
        "seed": unit.seeds[i],
        "variant": unit.variants[i],
        "conditions": result.conditions,
        "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy,
        "final_val_loss": result.final_val_loss,
        "initial_val_loss": result.initial_val_loss,
        "auc_log_val": float(np.trapezoid(np.log(curve)) / max(len(curve) - 1, 1)),
        "diverged": result.diverged,
        "interval": result.interval,
        "val_curve": result.val_curve,
        "lr_schedule": result.lr_schedule,
        "wall_s": wall_s,
    }


class Progress:
    """A one-line progress bar on stderr: runs done, rate, time left."""

    def __init__(self, total_runs: int, stream=sys.stderr):
        self.total, self.done, self.start, self.stream = total_runs, 0, time.perf_counter(), stream

    def advance(self, runs: int, label: str) -> None:
        self.done += runs
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else math.nan
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} runs "
            f"{elapsed:5.0f}s, ~{left:4.0f}s left  {label:<40.40}"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


def append(path: Path, records: list[dict]) -> None:
    """Append whole lines and make them durable before reporting progress."""
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def run_suite(
    suite: Suite,
    out_dir: str | os.PathLike,
    policy: str | None = None,
    controllers: Iterable[str] | None = None,
    workers: int = 1,
    address: str | None = None,
    device: str = "cpu",
    on_unit: Callable[[Unit], None] | None = None,
) -> Path:
    """Run whatever of the suite is not in `out_dir/results.jsonl` yet; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    if policy is not None:
        load_policy(policy)  # fail on a bad policy file before any work
    names = list(controllers) if controllers is not None else controller_names(policy)
    needs_policy = {"ganno", "ganno_global"} & set(names)
    if needs_policy and policy is None:
        raise ValueError(f"controllers {sorted(needs_policy)} need --policy FILE")
    unknown = sorted(set(names) - set(controller_names("x")))
    if unknown:
        raise ValueError(f"unknown controllers {unknown}; known: {controller_names('x')}")
    drop_partial_line(path)
    done = {run_key(r) for r in read_results(path)}
    units = plan(suite, names, done)
    progress = Progress(sum(u.size for u in units))
    if not units:
        progress.close()
        return path
    if address is not None:
        _run_on_ray(units, suite, policy, device, address, path, progress, on_unit)
    elif workers <= 1:
        for unit in units:
            append(path, run_unit(unit, suite, policy, device))
            progress.advance(unit.size, f"{unit.condition} {unit.controller}")
            if on_unit is not None:
                on_unit(unit)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            # one torch thread per worker: workers share the cores
            futures = {pool.submit(run_unit, u, suite, policy, device, 1): u for u in units}
            for future in as_completed(futures):
                unit = futures[future]
                append(path, future.result())
                progress.advance(unit.size, f"{unit.condition} {unit.controller}")
                if on_unit is not None:
                    on_unit(unit)
    progress.close()
    return path


def _run_on_ray(units, suite, policy, device, address, path, progress, on_unit) -> None:
    import ray

    from rllib_configs.train import init_ray

    started = init_ray(address)
    try:
        remote = ray.remote(num_cpus=1)(run_unit)
        pending = {remote.remote(u, suite, policy, device, 1): u for u in units}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            append(path, ray.get(ready[0]))
            progress.advance(unit.size, f"{unit.condition} {unit.controller}")
            if on_unit is not None:
                on_unit(unit)
    finally:
        if started:
            ray.shutdown()
