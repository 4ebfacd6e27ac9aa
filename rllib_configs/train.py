"""The training loop behind `ganno train`: progress, metrics, checkpoints, export.

Each iteration appends one row to `DIR/progress.csv` and to TensorBoard (`DIR/tb`).
A checkpoint lands in `DIR/checkpoints/iter_NNNNNN` every `checkpoint_every` iterations,
at the end, and on Ctrl-C; `resume=True` continues from the newest one, and rows of
iterations after it (lost with the interrupted process) are dropped from the CSV so each
iteration appears once. At the end the policy is exported to `DIR/policy.pt`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm

from ganno_env.policy import PolicyNet, export_policy
from rllib_configs.ppo import Preset, build_config

CSV_FIELDS = (
    "iteration", "env_steps", "agent_steps", "mean_return", "eval_mean_return",
    "agent_steps_per_s", "iteration_s", "learner_s", "wall_s",
)  # fmt: skip
CHECKPOINTS = "checkpoints"


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Join `address` (or `RAY_ADDRESS`, which `ray job submit` sets for its entrypoint),
    else start a private local instance; True if this call started Ray.

    A plain `ray.init()` would join any cluster it finds on the machine, so without an
    address we always ask for a new local one.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True


def latest_checkpoint(out_dir: Path) -> Path | None:
    folder = out_dir / CHECKPOINTS
    found = sorted(folder.glob("iter_*")) if folder.is_dir() else []
    return found[-1] if found else None


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
        weights = {k.removeprefix("net."): torch.as_tensor(np.asarray(v)) for k, v in state.items()}
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
        "iteration": algo.iteration,
        "hidden": list(preset.hidden),
        # what a scheduler needs to pace decisions as in training
        "interval": int(env.get("interval", 25)),
        "max_cycles": int(env.get("max_cycles", 40)),
        "divergence_factor": float(env.get("divergence_factor", 10.0)),
    }
    export_policy(path, nets, mapping, algo.config.env_config, extra)
    return path


def train(
    preset: Preset,
    mapping: str,
    out_dir: str | os.PathLike,
    stop_iters: int | None = None,
    address: str | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train until `stop_iters` iterations in total; returns the path of `policy.pt`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stop = stop_iters if stop_iters is not None else preset.stop_iters
    config = build_config(preset, mapping)  # checks the preset and mapping before Ray starts
    started_ray = init_ray(address)
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        log(f"no checkpoint in {out / CHECKPOINTS}: starting from scratch")
    try:
        if checkpoint is not None:
            algo = Algorithm.from_checkpoint(str(checkpoint.resolve()))
            log(f"resumed from {checkpoint} (iteration {algo.iteration})")
        else:
            algo = config.build_algo()
        (out / "run.json").write_text(json.dumps({"preset": preset.name, "mapping": mapping,
                                                   "stop_iters": stop}, indent=1))  # fmt: skip
        metrics = MetricsLog(out, keep_through=algo.iteration if checkpoint else None)
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
                if algo.iteration % preset.checkpoint_every == 0 and algo.iteration < stop:
                    save(algo, out)
        except KeyboardInterrupt:
            path = save(algo, out)
            log(f"interrupted: checkpoint {path}; continue with --resume")
            raise
        finally:
            metrics.close()
        path = save(algo, out)
        log(f"checkpoint {path}")
        policy = export_from(algo, out / "policy.pt", preset, mapping)
        log(f"policy {policy}")
        algo.stop()
        return policy
    finally:
        if started_ray:
            ray.shutdown()


def save(algo: Algorithm, out: Path) -> Path:
    path = out / CHECKPOINTS / f"iter_{algo.iteration:06d}"
    algo.save_to_path(str(path.resolve()))
    return path
