"""The training loop behind `ganno train`: one run per folder, progress, checkpoints, export.

A folder holds one run. `DIR/run.json` records what makes the run this run (preset name,
mapping, seed and every preset field, env_config included); `resume=True` refuses, listing
the differences, when the requested run is not the recorded one, and a folder that holds a
run is only reused with `resume=True` or `overwrite=True`. The process holds an OS lock on
the folder for the whole run, so a second `ganno train` on it fails at once.

Each iteration appends one row to `DIR/progress.csv` and to TensorBoard (`DIR/tb`).
A checkpoint lands in `DIR/checkpoints/iter_NNNNNN` every `checkpoint_every` iterations,
at the end, and on Ctrl-C; resuming continues from the newest one that loads (a damaged
one is set aside as `iter_NNNNNN.damaged`, with a warning), and rows of iterations after
it are dropped from the CSV so each iteration appears once. At the end the policy is
exported to `DIR/policy.pt`: the last iteration's policy, or, with a preset that validates,
the best one on held-in validation (`rllib_configs.selection`; scores in
`DIR/validation.jsonl`, candidates in `DIR/validation/`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import ray
import ray._private.ray_constants as ray_constants
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from ganno_env.config import ENV_DEFAULTS
from ganno_env.folder_lock import UsageError, folder_lock
from ganno_env.policy import PolicyNet, export_policy
from ganno_env.validation import check_networks
from rllib_configs import NoSamplesError
from rllib_configs.ppo import Preset, build_config
from rllib_configs.selection import (
    CANDIDATES,
    SCORES_FILE,
    due,
    export_best,
    keep_scores_through,
    read_scores,
    score_candidate,
)

CSV_FIELDS = (
    "iteration", "env_steps", "agent_steps", "mean_return", "eval_mean_return",
    "agent_steps_per_s", "iteration_s", "learner_s", "wall_s",
)  # fmt: skip
CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
# what --overwrite clears
RUN_OUTPUTS = (RUN_FILE, CHECKPOINTS, "progress.csv", "tb", "policy.pt", SCORES_FILE, CANDIDATES)
RUN_KEYS = ("preset", "mapping", "seed", "config")  # what --resume compares
NOT_IN_CONFIG = ("name", "seed", "stop_iters")  # the first two are top-level keys
MAX_SHOWN = 6  # differences named in the error; a different preset differs in many fields


@contextmanager
def _single_machine_ray() -> Iterator[None]:
    """Make the Ray started in this block listen on 127.0.0.1 only.

    On Linux, Ray 2.60 advertises a new local instance on the machine's outward address,
    its servers listen on every interface, and `ray.init(_node_ip_address="127.0.0.1")`
    is turned back into the outward address. Its single-machine mode (the default on macOS
    and Windows, switched by `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`) keeps every server on
    loopback. This process read that switch when it imported Ray, Ray's own processes
    read it when they start: set both for the start only, so that joining a cluster
    later in this process still works.
    """
    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Join `address` (or `RAY_ADDRESS`, which `ray job submit` sets for its entrypoint),
    else start a private local instance on 127.0.0.1; True if this call started Ray.

    A plain `ray.init()` would join any cluster it finds on the machine, so without an
    address we always ask for a new local one, reachable from this machine only (and,
    as Ray 2.60 does for any new local instance, with token authentication).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        start_local_ray(num_cpus)
    return True


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start a new private Ray instance on 127.0.0.1, ignoring `RAY_ADDRESS` and any
    cluster running on the machine (what tests need: never join someone else's Ray)."""
    with _single_machine_ray():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False, _node_ip_address="127.0.0.1")  # fmt: skip


def checkpoints_newest_first(out_dir: Path) -> list[Path]:
    """The run's checkpoints `iter_NNNNNN`, newest first (set-aside damaged ones excluded)."""
    folder = out_dir / CHECKPOINTS
    found = folder.glob("iter_*") if folder.is_dir() else []
    return sorted((p for p in found if p.name[5:].isdigit()), reverse=True)


def run_record(preset: Preset, mapping: str) -> dict[str, Any]:
    """What makes a run this run, as JSON values: two runs differ if any value differs.

    How long to train is not part of it (`--stop-iters` extends a resumed run).
    """
    config = {k: v for k, v in dataclasses.asdict(preset).items() if k not in NOT_IN_CONFIG}
    record = {"preset": preset.name, "mapping": mapping, "seed": preset.seed, "config": config}
    return json.loads(json.dumps(record, default=repr))  # tuples as lists, as read back


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    flat = {}
    for key, item in value.items():
        flat.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def with_later_defaults(config: Any) -> Any:
    """A recorded config with the preset fields it lacks set to their defaults: a run
    recorded before a field existed trained as its default says (new fields default to
    what came before), so it still resumes."""
    if not isinstance(config, dict):
        return config
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(Preset)
        if f.default is not dataclasses.MISSING and f.name not in NOT_IN_CONFIG
    }
    return {**json.loads(json.dumps(defaults)), **config}


def run_differences(recorded: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """`key: recorded X, requested Y` for every setting in which two run records differ,
    top-level keys first, then the preset fields in their order."""
    recorded = {**recorded, "config": with_later_defaults(recorded.get("config"))}
    old = _flat({k: recorded.get(k) for k in RUN_KEYS})
    new = _flat({k: requested.get(k) for k in RUN_KEYS})
    keys = list(new) + [k for k in old if k not in new]
    unset = "unset"
    return [
        f"{key}: recorded {old.get(key, unset)!r}, requested {new.get(key, unset)!r}"
        for key in keys
        if old.get(key, unset) != new.get(key, unset)
    ]


def read_record(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / RUN_FILE).read_text())
    except FileNotFoundError:
        raise UsageError(
            f"--resume: {out} has checkpoints but no {RUN_FILE}, so what run made them is "
            "unknown; start over with --overwrite"
        ) from None
    except (OSError, ValueError) as error:
        raise UsageError(f"--resume: {out / RUN_FILE} is unreadable ({error})") from None


def check_folder(
    out: Path, record: dict[str, Any], resume: bool | Literal["auto"], overwrite: bool
) -> list[Path]:
    """Check the folder against the request before any work; returns the checkpoints to
    resume from, newest first, or [] for a fresh run (the old run's outputs cleared).

    Raises UsageError, and changes nothing, for: `resume=True` with nothing to resume or
    with settings other than the recorded ones; a folder holding a run without `resume`
    or `overwrite` (the two runs' checkpoints and metrics would mix).
    """
    checkpoints = checkpoints_newest_first(out)
    if resume is True and not checkpoints:
        raise UsageError(
            f"--resume: nothing to resume in {out}: no checkpoint in {out / CHECKPOINTS}"
        )
    if resume and checkpoints:
        differences = run_differences(read_record(out), record)
        if differences:
            shown = "; ".join(differences[:MAX_SHOWN])
            more = len(differences) - MAX_SHOWN
            raise UsageError(
                f"--resume: the requested run differs from the one recorded in "
                f"{out / RUN_FILE}: {shown}{f'; and {more} more' if more > 0 else ''}. Resume "
                "with the recorded settings, or choose another --out, or start over with "
                "--overwrite"
            )
        return checkpoints
    used = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if used and not (overwrite or resume == "auto"):
        raise UsageError(
            f"--out {out} holds a run ({', '.join(used)}): continue it with --resume, or "
            "replace it with --overwrite, or choose another --out"
        )
    for name in used:  # only the run's own outputs; other files in the folder stay
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    return []


def restore_newest_valid(algo: Algorithm, checkpoints: list[Path], log: Callable) -> Path:
    """Restore the newest checkpoint that loads, so that a damaged one (a crash while
    saving, a bad disk) costs a few iterations instead of the run.

    Once an older one has loaded, the newer ones are set aside as `iter_NNNNNN.damaged`
    with a warning; when none loads (another Ray version, say), nothing is moved.
    """
    failed = []
    for path in checkpoints:
        try:
            algo.restore_from_path(str(path.resolve()))
        except Exception as error:  # a damaged file can fail in any of Ray's loaders
            failed.append((path, f"{type(error).__name__}: {error}"))
            continue
        for bad, reason in failed:
            aside = bad.with_name(f"{bad.name}.damaged")
            shutil.rmtree(aside, ignore_errors=True)  # one set aside earlier at this iteration
            bad.rename(aside)
            log(f"warning: checkpoint {bad} does not load ({reason}); moved to {aside.name}")
        return path
    raise UsageError(
        f"--resume: no checkpoint in {checkpoints[0].parent} loads (newest: {failed[0][1]}); "
        "start over with --overwrite"
    )


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The few numbers worth a line of progress, from RLlib's result dict."""
    runners = result.get("env_runners", {})
    returns = runners.get("agent_episode_returns_mean", {})
    evaluation = result.get("evaluation", {}).get("env_runners", {})
    eval_returns = evaluation.get("agent_episode_returns_mean", {})
    agent_steps = sum(runners.get("num_module_steps_sampled", {}).values())
    timers = result.get("timers", {})
    learner_s = timers.get("learner_update_timer", timers.get("training_step", float("nan")))
    return {
        "env_steps": float(runners.get("num_env_steps_sampled", 0)),
        "agent_steps": float(agent_steps),
        # rewards are shared by a network's layers: a layer's return is its network's
        "mean_return": float(np.mean(list(returns.values()))) if returns else float("nan"),
        "eval_mean_return": (
            float(np.mean(list(eval_returns.values()))) if eval_returns else float("nan")
        ),
        "learner_s": float(learner_s) if np.isscalar(learner_s) else float("nan"),
    }


class MetricsLog:
    """Append-only CSV plus TensorBoard scalars."""

    def __init__(self, out_dir: Path, keep_through: int | None):
        self.path = out_dir / "progress.csv"
        rows = []  # a new run starts a new file; a resumed one keeps the rows it restored
        if keep_through is not None and self.path.exists():
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= keep_through]
        self._write_all(rows)
        try:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"))
        except ImportError:  # TensorBoard logging is optional
            self.writer = None

    def _write_all(self, rows: list[dict]) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow({k: row[k] for k in CSV_FIELDS})
            f.flush()
            os.fsync(f.fileno())
        if self.writer is not None:
            for key in CSV_FIELDS[1:]:
                if np.isfinite(row[key]):
                    self.writer.add_scalar(key, row[key], int(row["iteration"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def learner_nets(algo: Algorithm, preset: Preset) -> dict[str, PolicyNet]:
    """The learner's current weights (the env runners may lag a step) as PolicyNets."""
    nets = {}
    for module_id, state in algo.learner_group.get_weights().items():
        weights = {  # the actor's net (a central critic, `critic.*`, is not exported)
            k.removeprefix("net."): torch.as_tensor(np.asarray(v))
            for k, v in state.items()
            if k.startswith("net.")
        }
        obs_size = weights["pi.0.weight"].shape[1]
        out_size = weights[f"pi.{2 * len(preset.hidden)}.weight"].shape[0]
        net = PolicyNet(obs_size, out_size, preset.hidden)
        net.load_state_dict(weights)
        nets[module_id] = net
    return nets


def export_from(algo: Algorithm, path: Path, preset: Preset, mapping: str) -> Path:
    """Write `policy.pt` from the learner's current modules."""
    nets = learner_nets(algo, preset)
    env = algo.config.env_config
    extra = {
        "preset": preset.name,
        "seed": preset.seed,
        "iteration": algo.iteration,
        "hidden": list(preset.hidden),
        "conditions": env.get("conditions"),  # what it was trained on (`ganno train --conditions`)
        "population": env.get("population"),
        # what a scheduler needs to pace decisions as in training
        "interval": int(env.get("interval", ENV_DEFAULTS["interval"])),
        "max_cycles": int(env.get("max_cycles", ENV_DEFAULTS["max_cycles"])),
        "divergence_factor": float(env.get("divergence_factor", ENV_DEFAULTS["divergence_factor"])),
    }
    export_policy(path, nets, mapping, algo.config.env_config, extra)
    return path


def train(
    preset: Preset,
    mapping: str,
    out_dir: str | os.PathLike,
    stop_iters: int | None = None,
    address: str | None = None,
    resume: bool | Literal["auto"] = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train until `stop_iters` iterations in total; returns the path of `policy.pt`.

    `resume=True` continues the run recorded in `out_dir` (UsageError when there is none or
    it differs from this one); `resume="auto"` continues it when there is a checkpoint and
    starts fresh otherwise (for `ganno run`, which reruns after an interruption);
    `overwrite=True` clears a previous run's outputs first. Everything is checked before
    Ray starts.
    """
    if resume not in (False, True, "auto"):
        raise ValueError(f"resume={resume!r}; allowed: False, True, 'auto'")
    resume = resume if resume == "auto" else bool(resume)
    if resume is True and overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other")
    if not isinstance(preset.seed, int) or preset.seed < 0:
        raise ValueError(f"seed={preset.seed!r}; allowed: an int >= 0")
    check_validation(preset)
    if resume is True and not Path(out_dir).exists():
        raise UsageError(f"--resume: nothing to resume: {out_dir} does not exist")
    stop = stop_iters if stop_iters is not None else preset.stop_iters
    config = build_config(preset, mapping)  # checks the preset and mapping before Ray starts
    record = run_record(preset, mapping)
    with folder_lock(out_dir) as out:
        checkpoints = check_folder(out, record, resume, overwrite)
        (out / RUN_FILE).write_text(json.dumps({**record, "stop_iters": stop}, indent=1))
        started_ray = init_ray(address)
        try:
            return _train_in(out, config, checkpoints, preset, mapping, stop, log)
        finally:
            if started_ray:
                ray.shutdown()


def _train_in(
    out: Path,
    config: AlgorithmConfig,
    checkpoints: list[Path],
    preset: Preset,
    mapping: str,
    stop: int,
    log: Callable[[str], None],
) -> Path:
    algo = config.build_algo()
    try:
        if checkpoints:
            checkpoint = restore_newest_valid(algo, checkpoints, log)
            log(f"resumed from {checkpoint} (iteration {algo.iteration})")
        metrics = MetricsLog(out, keep_through=algo.iteration if checkpoints else None)
        keep_scores_through(out, algo.iteration if checkpoints else None)
        scored = {row["iteration"] for row in read_scores(out)}
        if checkpoints and due(preset, algo.iteration, stop) and algo.iteration not in scored:
            validate(algo, out, preset, mapping, log)  # interrupted before its score
        start = time.perf_counter()
        log(f"{'iter':>5} {'env steps':>10} {'agent steps/s':>14} {'return':>8} {'eval':>8}")
        try:
            while algo.iteration < stop:
                began = time.perf_counter()
                result = algo.train()
                took = time.perf_counter() - began
                row = summarise(result)
                row.update(
                    iteration=algo.iteration,
                    agent_steps_per_s=row["agent_steps"] / took,
                    iteration_s=took,
                    wall_s=time.perf_counter() - start,
                )
                metrics.append(row)
                log(
                    f"{algo.iteration:>5} {row['env_steps']:>10.0f} "
                    f"{row['agent_steps_per_s']:>14.0f} {row['mean_return']:>8.3f} "
                    f"{row['eval_mean_return']:>8.3f}"
                )
                if row["agent_steps"] == 0:
                    raise NoSamplesError(
                        f"iteration {algo.iteration} sampled no agent steps: every env runner "
                        "failed (RLlib restarts failed runners and trains on what the others "
                        "sampled; their errors are in the log above). Stopped so that no "
                        "policy trained on nothing is exported."
                    )
                if algo.iteration % preset.checkpoint_every == 0 and algo.iteration < stop:
                    save(algo, out)
                if due(preset, algo.iteration, stop):
                    validate(algo, out, preset, mapping, log)
        except KeyboardInterrupt:
            path = save(algo, out)
            log(f"interrupted: checkpoint {path}; continue with --resume")
            raise
        finally:
            metrics.close()
        path = save(algo, out)
        log(f"checkpoint {path}")
        if read_scores(out):
            policy = export_best(out, out / "policy.pt", log)
        else:
            policy = export_from(algo, out / "policy.pt", preset, mapping)
        log(f"policy {policy}")
        return policy
    finally:
        algo.stop()


def check_validation(preset: Preset) -> None:
    """ValueError for validation settings that cannot run, before Ray starts."""
    for name in ("validate_every", "validate_from"):
        value = getattr(preset, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r}; allowed: an int >= 0")
    check_networks(preset.validation_networks, "validation_networks")


def validate(algo: Algorithm, out: Path, preset: Preset, mapping: str, log: Callable) -> None:
    """Export the current policy as a candidate and score it on held-in validation."""
    candidate = out / CANDIDATES / f"iter_{algo.iteration:06d}.pt"
    candidate.parent.mkdir(exist_ok=True)
    export_from(algo, candidate, preset, mapping)
    row = score_candidate(out, candidate, algo.iteration, preset)
    log(
        f"validation, iteration {algo.iteration}: mean ln val loss "
        f"{row['mean_log_val_loss']:.3f}, {row['diverged']}/{row['networks']} diverged "
        f"({row['seconds']:.0f} s)"
    )


def save(algo: Algorithm, out: Path) -> Path:
    path = out / CHECKPOINTS / f"iter_{algo.iteration:06d}"
    algo.save_to_path(str(path.resolve()))
    return path
