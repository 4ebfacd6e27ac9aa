"""Run a suite: every controller on every condition and seed, resumably.

Work is cut into units: one controller on one condition for the seeds that share a network
shape, trained as one population. Each finished unit appends one JSON line per run to
`results.jsonl`. A line's key names the run (condition, controller, seed, variant) and every
input that can change its result (`INPUT_FIELDS`: content hashes of the suite, the
controller's parameters, the policy file, the env settings and the package's source code,
plus the env and features versions). A rerun skips the keys already there, so an
interrupted run resumes without repeating or losing a run (a line cut off by a kill is
ignored), and a changed input (a new policy.pt, an edited suite, other env settings, other
package code) recomputes exactly the runs it affects; the old lines stay in the file, and
the report ignores them.

Units run in `workers` processes, or as Ray tasks when an address is given. Workers leave
Ctrl-C to the runner, which stops them at once, and they exit when the runner dies, also by
SIGKILL, so no orphan keeps computing.

The oracle ("best constant LR per condition") runs every LR of the suite's grid as variant
`lr=...` of controller `oracle_grid`; the report picks, per condition, the LR with the best
mean final *val* loss and reports its *test* loss, as a reference, not a competitor. The
tuned baselines `cosine_tuned` and `warmup_cosine_tuned` run the same grid as their peak LR
and are picked the same way: what a practitioner gets from tuning a cosine schedule with
one run per grid LR (`GRID_CONTROLLERS`).

Conditions whose data files are missing (CIFAR-10 without its files) are skipped with a
message; the report lists them.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

import ganno_env
from benchmarks.suites import Suite, digest
from ganno_env.conditions import DEFAULT_INITIAL_LR, check_lrs_in_bounds
from ganno_env.config import ENV_DEFAULTS
from ganno_env.controllers import HAND_MADE, Controller, make_controller
from ganno_env.features import FEATURES_VERSION
from ganno_env.jsonl import append_lines, drop_partial_line, read_lines
from ganno_env.layerwise_lr import env_version
from ganno_env.policy import PolicyController, load_policy, resolve_policy_path
from ganno_env.rollout import RunResult, make_env, rollout

RESULTS = "results.jsonl"
SHAPE_KEYS = ("task", "width", "depth", "batch_size")
POLICY_CONTROLLERS = ("ganno", "ganno_global")
# Controllers that run every LR of the suite's grid (variant "lr=..."), and the hand-made
# schedule each runs; the report keeps, per condition, the LR with the best mean val loss.
GRID_CONTROLLERS = {
    "oracle_grid": "constant",
    "cosine_tuned": "cosine",
    "warmup_cosine_tuned": "warmup_cosine",
}
TUNED = ("cosine_tuned", "warmup_cosine_tuned")
# What a result depends on besides its run (condition, controller, seed, variant).
INPUT_FIELDS = (
    "suite_hash",
    "controller_hash",
    "policy_hash",
    "env_hash",
    "env_version",
    "features_version",
    "code_hash",
)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Unit:
    """One controller on one condition for some seeds (one population)."""

    condition: str
    controller: str
    seeds: tuple[int, ...]
    variants: tuple[str, ...]  # per network, "" or "lr=..." for the oracle grid
    conditions: tuple[tuple[tuple[str, Any], ...], ...]  # explicit initial conditions
    inputs: tuple[tuple[str, Any], ...] = ()  # INPUT_FIELDS of the controller's runs

    @property
    def size(self) -> int:
        return len(self.seeds)


def controller_names(policy: str | None, suite: Suite | None = None) -> list[str]:
    """The controllers a suite runs by default: the hand-made ones, GANNO with a policy, the
    tuned cosine schedules where the suite asks for them (`tuned_baselines`), the oracle."""
    names = sorted(HAND_MADE)
    if policy is not None:
        names += list(POLICY_CONTROLLERS)
    if suite is not None and suite.tuned_baselines:
        names += list(TUNED)
    return names + ["oracle_grid"]


def known_controllers() -> list[str]:
    """Every controller name `--controllers` accepts."""
    return sorted(HAND_MADE) + list(POLICY_CONTROLLERS) + list(TUNED) + ["oracle_grid"]


def check_controllers(names: Iterable[str], policy: str | None) -> None:
    """ValueError for unknown controllers, or GANNO ones without a policy, before any work."""
    names = list(names)
    unknown = sorted(set(names) - set(known_controllers()))
    if unknown:
        raise ValueError(f"unknown controllers {unknown}; known: {known_controllers()}")
    needs_policy = sorted(set(POLICY_CONTROLLERS) & set(names))
    if needs_policy and policy is None:
        raise ValueError(f"controllers {needs_policy} need --policy FILE")


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (first 16 hex digits): a policy is named by its content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@functools.cache
def code_hash(root: str | os.PathLike | None = None) -> str:
    """sha256 of the package's source, every `ganno_env/**/*.py` by path and content (first
    16 hex digits; `root`: another package folder).

    A result computed by other code is stale, also where a change to the engine's numbers
    forgot to bump the env version. Any edit of the package recomputes, a conservative
    choice: a benchmark result is cheap next to a wrong one.
    """
    root = Path(root) if root is not None else Path(ganno_env.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def machine(device: str = "cpu") -> str:
    """What computed a result: torch's version and the CPU (or GPU) model.

    The same code and inputs give other numbers on another machine: other kernels round
    otherwise, and training at large LRs magnifies the difference (the oracle's pick between
    grid LRs can flip), so every result line names its machine and the report says which
    machines its numbers come from.
    """
    if device.startswith("cuda"):
        model = torch.cuda.get_device_name(torch.device(device))
    else:
        model = _cpu_model()
    return f"torch {torch.__version__}, {model}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def make(controller: str, policy: str | None) -> Controller:
    """A fresh controller by its benchmark name (`oracle_grid` runs `constant`)."""
    if controller == "ganno":
        return load_policy(policy)
    if controller == "ganno_global":
        return load_policy(policy, tie_layers=True)
    if controller in GRID_CONTROLLERS:
        return make_controller(GRID_CONTROLLERS[controller])
    return make_controller(controller)


def controller_params(controller: Controller) -> dict[str, Any]:
    """What sets a controller's behaviour apart from its code: class and parameters."""
    params: dict[str, Any] = {
        "class": f"{type(controller).__module__}.{type(controller).__qualname__}",
        "action_mode": controller.action_mode,
        "params": {k: getattr(controller, k) for k in getattr(controller, "params", ())},
    }
    if isinstance(controller, PolicyController):
        params["greedy"] = controller.greedy  # the weights are named by policy_hash
    return params


def env_settings(
    suite: Suite, controller: Controller, device: str, condition: str | None = None
) -> dict[str, Any]:
    """The env keyword arguments the runs of `controller` on `suite` (on `condition`, with
    its own episode settings) train with, as `make_env` combines them (the per-run initial
    conditions are in each result)."""
    return {
        **controller.env_defaults(),
        **(suite.env if condition is None else suite.env_for(condition)),
        **controller.env_requirements(),
        "device": device,
    }


def check_initial_lrs(suite: Suite, name: str, controller: Controller, device: str) -> None:
    """ValueError, before any run, when a condition (or the grid) starts outside the LR
    bounds that `controller`'s env would clip to."""
    for condition in suite.conditions:
        bounds = env_settings(suite, controller, device, condition).get("lr_bounds")
        bounds = bounds or ENV_DEFAULTS["lr_bounds"]
        spec = suite.condition(condition).specs.get("initial_lr", DEFAULT_INITIAL_LR)
        where = f"suite {suite.name!r}, condition {condition!r}, controller {name!r}"
        check_lrs_in_bounds(spec, bounds, where)
        if name in GRID_CONTROLLERS:
            check_lrs_in_bounds(list(suite.oracle_grid), bounds, f"{where}, its LR grid")


def run_inputs(
    suite: Suite, controllers: Iterable[str], policy: str | None = None, device: str = "cpu"
) -> dict[str, dict[str, Any]]:
    """Per controller, the INPUT_FIELDS its results are keyed by now.

    A result line whose inputs differ (another policy file, suite content, controller
    parameters, env settings, env or features version) is stale: the runner recomputes it
    and the report ignores it.
    """
    policy = str(resolve_policy_path(policy)) if policy is not None else None
    suite_hash = suite.content_hash()
    policy_hash = file_hash(policy) if policy is not None else None
    inputs = {}
    for name in controllers:
        controller = make(name, policy)
        check_initial_lrs(suite, name, controller, device)
        settings = env_settings(suite, controller, device)
        # the env a controller runs on: a policy's own version, else the current one
        features_version = settings.get("features_version", FEATURES_VERSION)
        inputs[name] = {
            "suite_hash": suite_hash,
            "controller_hash": digest(controller_params(controller)),
            "policy_hash": policy_hash if name in POLICY_CONTROLLERS else None,
            "env_hash": digest(settings),
            "env_version": env_version(features_version, settings.get("controls", ("lr",))),
            "features_version": features_version,
            "code_hash": code_hash(),
        }
    return inputs


def run_key(record: Mapping[str, Any]) -> tuple:
    """A result's identity: its run and every input that can change it (old lines without
    inputs never match a current key)."""
    inputs = record.get("inputs") or {}
    return (record["condition"], record["controller"], record["seed"],
            record.get("variant", ""), tuple(inputs.get(k) for k in INPUT_FIELDS))  # fmt: skip


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a results file (a line cut off by a kill is skipped)."""
    return read_lines(path)


def plan(
    suite: Suite,
    controllers: Iterable[str],
    done: set[tuple],
    inputs: Mapping[str, Mapping[str, Any]],
    skip: Iterable[str] = (),
) -> list[Unit]:
    """The units still to run: runs whose key (with the controller's `inputs`) is not done,
    except on the conditions in `skip`."""
    units = []
    skip = set(skip)
    for condition in suite.conditions:
        if condition in skip:
            continue
        starts = {seed: suite.initial_conditions(condition, seed) for seed in suite.seeds}
        for controller in controllers:
            current = inputs[controller]
            variants = (
                [f"lr={lr:g}" for lr in suite.oracle_grid]
                if controller in GRID_CONTROLLERS
                else [""]
            )
            groups: dict[tuple, list[tuple[int, str, dict]]] = {}
            for seed, start in starts.items():
                for variant in variants:
                    run = {"condition": condition, "controller": controller, "seed": seed}
                    if run_key({**run, "variant": variant, "inputs": current}) in done:
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
                        inputs=tuple(current.items()),
                    )
                )
    return units


def largest_first(units: Iterable[Unit]) -> list[Unit]:
    """Units with the most networks first (plan order among equals): workers take the
    oracle grid's big populations early, so none of them runs alone at the end while the
    other workers idle (benchmarks/perf_bench_order.py)."""
    return sorted(units, key=lambda unit: -unit.size)


def run_unit(
    unit: Unit, suite: Suite, policy: str | None, device: str = "cpu", threads: int | None = None
) -> list[dict]:
    """Train the unit's population under its controller; one record per run."""
    expected = dict(unit.inputs).get("policy_hash")
    if expected is not None and expected != file_hash(policy):
        raise ValueError(f"policy file {policy!r} changed while the benchmark ran; rerun it")
    controller = make(unit.controller, policy)
    first = dict(unit.conditions[0])
    shape = {k: first[k] for k in SHAPE_KEYS if k != "task"}
    settings = env_settings(suite, controller, device, unit.condition)
    env = make_env(controller, task=first["task"], conditions=shape, population=unit.size,
                   num_threads=threads, **settings)  # fmt: skip
    began = time.perf_counter()
    per_network = [dict(c) for c in unit.conditions]
    results = rollout(env, controller, seed=unit.seeds[0], options={"conditions": per_network})
    took = time.perf_counter() - began
    where = machine(device)
    return [
        record(suite, unit, i, result, took / unit.size, where) for i, result in enumerate(results)
    ]


def record(
    suite: Suite, unit: Unit, i: int, result: RunResult, wall_s: float, machine_name: str = ""
) -> dict:
    """One result line: the run's key, its metrics and curves."""
    curve = np.array(result.val_curve, dtype=np.float64)
    return {
        "suite_version": suite.version,
        "condition": unit.condition,
        "controller": unit.controller,
        "seed": unit.seeds[i],
        "variant": unit.variants[i],
        "inputs": dict(unit.inputs),
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
        **({"knob_schedules": result.knob_schedules} if result.knob_schedules else {}),
        "wall_s": wall_s,
        "machine": machine_name,
    }


class Progress:
    """A one-line progress bar on stderr: runs done, rate, time left."""

    def __init__(self, total_runs: int, stream: TextIO | None = None):
        # sys.stderr looked up now, not at import: a test's captured stream may be closed since
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.start = total_runs, 0, time.perf_counter()
        self.drawn = False

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
        self.drawn = True

    def close(self) -> None:
        """End the bar's line, so what follows starts on a line of its own."""
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


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
    """Run whatever of the suite is not in `out_dir/results.jsonl` yet; returns its path.

    Keys include every input (see `run_inputs`), so only runs whose inputs are new run. The
    caller owns `out_dir`: `ganno bench` holds its folder lock, so no two runners append to
    one file.
    """
    policy = str(resolve_policy_path(policy)) if policy is not None else None  # "pretrained"
    names = list(controllers) if controllers is not None else controller_names(policy, suite)
    check_controllers(names, policy)
    inputs = run_inputs(suite, names, policy, device)  # also fails on a bad policy file
    skipped = suite.unavailable()
    for condition, reason in skipped.items():
        print(f"ganno: skipping condition {condition!r}: {reason}", file=sys.stderr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS
    drop_partial_line(path)
    done = {run_key(r) for r in read_results(path)}
    units = largest_first(plan(suite, names, done, inputs, skip=skipped))
    progress = Progress(sum(u.size for u in units))

    def finished(unit: Unit, records: list[dict]) -> None:
        append_lines(path, records)  # durable before the progress line says so
        progress.advance(unit.size, f"{unit.condition} {unit.controller}")
        if on_unit is not None:
            on_unit(unit)

    try:
        if not units:
            pass
        elif address is not None:
            _run_on_ray(units, suite, policy, device, address, finished)
        elif workers <= 1:
            for unit in units:  # one torch thread, as in a worker: contended threads spin
                finished(unit, run_unit(unit, suite, policy, device, 1))
        else:
            _run_in_processes(units, suite, policy, device, workers, finished)
    finally:
        progress.close()
    return path


# ---------------------------------------------------------------- worker processes


def die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """Exit this process when process `parent` dies, so a SIGKILLed runner leaves no workers.

    On Linux the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); a
    daemon thread that polls the parent PID covers other systems and a parent that died
    before this call.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still works

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker_init(parent: int) -> None:
    """A worker leaves Ctrl-C to the runner (no traceback per worker) and dies with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Ignore SIGINT while workers start: they inherit it, so a Ctrl-C before their
    initializer runs cannot print a traceback from them either."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_in_processes(units, suite, policy, device, workers, finished) -> None:
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))  # fmt: skip
    try:
        with _workers_ignore_ctrl_c():  # workers start on submit
            # one torch thread per worker: workers share the cores
            futures = {pool.submit(run_unit, u, suite, policy, device, 1): u for u in units}
        for future in as_completed(futures):
            finished(futures[future], future.result())
    except BaseException:  # Ctrl-C or a failed unit: stop now, not after the running units
        processes = list((pool._processes or {}).values())  # no public API before 3.14
        for process in processes:
            process.kill()
        for process in processes:
            process.join(5)
        raise
    finally:
        # One shutdown that waits: it joins the pool's manager thread, which then frees the
        # pool's queues (and their semaphores) before this process prints and exits. A
        # shutdown without waiting first would leave that thread running, and at exit it
        # could unlink a semaphore without telling multiprocessing's resource tracker,
        # which then warns after our last line.
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- Ray


def connect_ray(address: str) -> bool:
    """Join the Ray cluster at `address`; `"local"` starts a private instance that listens
    on 127.0.0.1 only, so benchmark tasks are not reachable from the network. True if this
    call started Ray."""
    import ray

    from rllib_configs.train import init_ray, start_local_ray

    if address != "local":
        return init_ray(address)
    if ray.is_initialized():
        return False
    start_local_ray()
    return True


def _run_on_ray(units, suite, policy, device, address, finished) -> None:
    import ray

    started = connect_ray(address)
    pending: dict = {}
    try:
        remote = ray.remote(num_cpus=1)(run_unit)
        pending = {remote.remote(u, suite, policy, device, 1): u for u in units}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            finished(unit, ray.get(ready[0]))
    finally:
        for ref in pending:  # interrupted: stop the tasks still queued or running
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
