"""Sampling throughput of RLlib on the GANNO env: how to spend a machine's cores.

    python -m benchmarks.perf_rllib [--iterations 3] [--json perf_rllib.json] [--quick]
    python -m benchmarks.perf_rllib --local [--iterations 3]

Sampling dominates the cost of training (the learner is a small MLP). For each setting of
env runners, envs per runner and population (networks per env) this trains the `local`
preset for a warm-up iteration plus `--iterations` measured ones, in one Ray instance, and
reports agent transitions sampled per second of sampling, per second of wall time, and the
learner's time per iteration. The `local` preset is the best row on a 2-core machine.

`--local` measures only the `local` preset exactly as the main job trains it (its batch
sizes, its training conditions; evaluation off), and prints it next to the raw env's
rate: the same env config stepped directly with random actions in this process, on one
torch thread. Two env runners on two cores can at most double the raw rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np
import ray

from ganno_env.config import ENV_DEFAULTS
from rllib_configs.env import GannoMultiAgentEnv
from rllib_configs.ppo import Preset, build_config, get_preset

# (env runners, envs per runner, networks per env)
SETTINGS = (
    (0, 1, 1),
    (1, 1, 1),
    (2, 1, 1),
    (1, 1, 8),
    (2, 1, 4),
    (2, 1, 8),
    (2, 2, 8),
    (2, 1, 16),
)
QUICK = ((0, 1, 1), (2, 1, 8))
RAW_EPISODES = 6  # episodes of the raw env rate; seeds 0..5 of the training conditions


def measure(runners: int, envs: int, population: int, iterations: int) -> dict:
    """Train the local preset with one setting; medians over the measured iterations."""
    local = get_preset("local")
    env_config = {**local.env_config, "population": population}
    layers = 4  # digits_mlp
    episode = population * layers * env_config.get("max_cycles", ENV_DEFAULTS["max_cycles"])
    preset = get_preset(
        "local",
        env_config=env_config,
        num_env_runners=runners,
        num_envs_per_env_runner=envs,
        evaluation_interval=0,
        train_batch_size=max(episode * max(runners, 1), 2560),
        minibatch_size=512,
    )
    return {
        "env_runners": runners,
        "envs_per_runner": envs,
        "population": population,
        "agents_per_env_step": population * layers,
        **train_and_time(preset, iterations),
    }


def train_and_time(preset: Preset, iterations: int) -> dict:
    """A warm-up iteration, then medians of `iterations` measured ones."""
    algo = build_config(preset, "shared").build_algo()
    try:
        algo.train()  # warm-up: actors start, first episodes begin
        rows = []
        for _ in range(iterations):
            began = time.perf_counter()
            result = algo.train()
            wall = time.perf_counter() - began
            steps = sum(result["env_runners"]["num_module_steps_sampled"].values())
            timers = result["timers"]
            rows.append(
                {
                    "agent_steps": int(steps),
                    "wall_s": wall,
                    "sample_s": float(timers["env_runner_sampling_timer"]),
                    "learner_s": float(timers["learner_update_timer"]),
                }
            )
    finally:
        algo.stop()
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        **median,
        "sampled_per_s": median["agent_steps"] / median["sample_s"],
        "overall_per_s": median["agent_steps"] / median["wall_s"],
    }


def raw_env_rate(env_config: dict, episodes: int = RAW_EPISODES) -> dict:
    """Agent-steps/s of the env itself under a preset's env config, random actions.

    Uniform random indices of the presets' discrete actions (every preset uses them)."""
    env = GannoMultiAgentEnv({"num_threads": 1, **env_config}).par_env
    agent_steps, seconds = 0, 0.0
    for seed in range(episodes):
        rng = np.random.default_rng(seed)
        began = time.perf_counter()
        env.reset(seed=seed)
        while env.agents:
            agent_steps += len(env.agents)
            space = env.action_space(env.agents[0])
            env.step({a: int(rng.integers(space.n)) for a in env.agents})
        seconds += time.perf_counter() - began
    env.close()
    return {"episodes": episodes, "agent_steps": agent_steps, "seconds": seconds,
            "agent_steps_per_s": agent_steps / seconds}  # fmt: skip


def measure_local(iterations: int) -> dict:
    """The local preset as the main job trains it (evaluation off), and the raw env."""
    preset = get_preset("local", evaluation_interval=0)
    raw = raw_env_rate(preset.env_config)
    return {"preset": "local", "raw_env": raw, **train_and_time(preset, iterations)}


def main_local(iterations: int, json_path: str) -> int:
    """`--local`: one line for the preset next to the raw env's rate."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = measure_local(iterations)
    finally:
        ray.shutdown()
    raw = result["raw_env"]["agent_steps_per_s"]
    print(
        f"raw env (local preset's env config, one process, random actions): {raw:.0f} "
        f"agent-steps/s\nlocal preset, {iterations} iterations: {result['sampled_per_s']:.0f} "
        f"sampled/s ({result['sampled_per_s'] / raw:.2f}x raw), {result['overall_per_s']:.0f} "
        f"overall/s ({result['overall_per_s'] / raw:.2f}x raw), learner "
        f"{result['learner_s']:.2f} s, iteration {result['wall_s']:.2f} s"
    )
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--json", default="perf_rllib.json")
    parser.add_argument("--quick", action="store_true", help="two settings, one iteration")
    parser.add_argument(
        "--local", action="store_true", help="the local preset as trained, next to the raw env"
    )
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations {args.iterations}; allowed: >= 1")
    if args.local:
        return main_local(args.iterations, args.json)
    settings, iterations = (QUICK, 1) if args.quick else (SETTINGS, args.iterations)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = [measure(*s, iterations) for s in settings]
    finally:
        ray.shutdown()
    print(
        f"{'runners':>7} {'envs':>5} {'pop':>4} {'agents':>7} {'sampled/s':>10} "
        f"{'overall/s':>10} {'learner s':>10} {'iter s':>7}"
    )
    for r in results:
        print(
            f"{r['env_runners']:>7} {r['envs_per_runner']:>5} {r['population']:>4} "
            f"{r['agents_per_env_step']:>7} {r['sampled_per_s']:>10.0f} "
            f"{r['overall_per_s']:>10.0f} {r['learner_s']:>10.2f} {r['wall_s']:>7.2f}"
        )
    best = max(results, key=lambda r: r["overall_per_s"])
    print(
        f"best overall: {best['env_runners']} runners x {best['envs_per_runner']} envs x "
        f"population {best['population']}: {best['overall_per_s']:.0f} agent transitions/s "
        f"(target >= 1000 sampled/s with the local preset)"
    )
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
