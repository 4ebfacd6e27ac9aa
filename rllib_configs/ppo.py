"""PPO on the GANNO env, on RLlib's new API stack: presets and the config builder.

Every preset is one function that returns a `Preset`; every setting that differs from
RLlib's defaults is visible there with the reason. `build_config` turns a preset and a
policy mapping into a `PPOConfig` builder chain.

Why these settings (all presets):
* Parameter sharing (`mapping="shared"`, IPPO-style): one module acts for every layer, so
  the policy serves networks of any depth, including depths never trained on.
* Populations: one env trains `population` networks in lockstep, so one env step yields
  `population x layers` agent transitions for little more than one network's cost.
  Sampling dominates the cost; the learner is a 64x64 MLP and stays light.
* gamma 0.99, GAE lambda 0.95: the reward telescopes to the log loss ratio, so gamma near 1
  values the final loss, and the slight discount rewards getting there early.
* Evaluation on the held-out LR conditions every few iterations (`unseen_lr`), so the
  learning curve shows generalisation, not only the training reward.
* `critic="network"` (MAPPO style): the critic sees every layer of the agent's network
  (`NetworkViewEnv`), the actor only its own layer, so the exported policy is unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from ganno_env.conditions import load_conditions
from ganno_env.policy import MAPPINGS, module_for, module_ids
from rllib_configs import CRITICS, PRESET_NAMES
from rllib_configs.env import (
    GannoMultiAgentEnv,
    MixedDepthEnv,
    NetworkViewEnv,
    check_fixed_agents,
)
from rllib_configs.module import DEFAULT_HIDDEN, GannoRLModule

PRESETS = PRESET_NAMES
WIDE_FACTORS = (0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0)


@dataclass(frozen=True)
class Preset:
    """Everything one training run needs, in one place."""

    name: str
    env_config: dict[str, Any]
    eval_env_config: dict[str, Any]
    num_env_runners: int = 1
    num_envs_per_env_runner: int = 1
    num_cpus_per_env_runner: float = 1
    num_gpus_per_env_runner: float = 0
    rollout_fragment_length: int | str = "auto"
    train_batch_size: int = 2560  # agent transitions per iteration
    minibatch_size: int = 512  # agent transitions per SGD step
    num_epochs: int = 4
    lr: float = 3e-4
    entropy_coeff: float = 0.01
    gamma: float = 0.99
    lambda_: float = 0.95
    clip_param: float = 0.2
    num_learners: int = 0  # 0: the learner runs in the driver process
    num_gpus_per_learner: float = 0
    evaluation_interval: int = 5
    evaluation_episodes: int = 2
    stop_iters: int = 20
    checkpoint_every: int = 5
    # held-in validation (rllib_configs.selection): from iteration `validate_from`, every
    # `validate_every` iterations and at the last, score the policy on `validation_networks`
    # networks of the training conditions and export the best (0: off, export the last)
    validate_every: int = 0
    validate_from: int = 0
    validation_networks: int = 128
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    # "local": the critic sees the agent's observation; "network": its network's layers too
    critic: str = "local"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def smoke() -> Preset:
    """CI-sized: a few seconds per iteration, proves the pipeline end to end."""
    return Preset(
        name="smoke",
        env_config={"conditions": "train", "population": 2, "max_cycles": 5, "interval": 5},
        eval_env_config={
            "conditions": "unseen_lr",
            "population": 2,
            "max_cycles": 5,
            "interval": 5,
        },
        num_env_runners=0,  # sample in the driver: no extra processes in tests
        train_batch_size=80,  # 2 episodes of 2 networks x 4 layers x 5 decisions
        minibatch_size=40,
        num_epochs=2,
        evaluation_interval=2,
        evaluation_episodes=1,
        stop_iters=2,
        checkpoint_every=1,
        hidden=(32, 32),
    )


def local() -> Preset:
    """A 2-CPU laptop, minutes: two env runners, populations of 8 networks per env."""
    return Preset(
        name="local",
        # 8 networks x 4 layers = 32 agent transitions per env step; factors up to 4x let an
        # agent cross the LR range in a few decisions (cut a huge LR before it diverges).
        # train_wide randomises the gradient scale, init scale, width and batch size (none
        # to a held-out value), so "LR too high" and "dead network" occur in training and the
        # LR's value alone never tells the step size (docs/results.md: the ablation)
        env_config={"conditions": "train_wide", "population": 8, "lr_factors": WIDE_FACTORS},
        eval_env_config={"conditions": "unseen_lr", "population": 4},
        num_env_runners=2,  # one per core; the driver's learner is light
        # two envs per runner: one module forward and one connector pass serve both, and a
        # runner's sample mixes two condition draws, so runners wait less for each other
        # (benchmarks/perf_rllib.py --local)
        num_envs_per_env_runner=2,
        train_batch_size=5120,  # one 40-decision episode of 8 x 4 agents per env
        minibatch_size=512,
        num_epochs=6,
        lr=5e-4,
        evaluation_interval=5,
        evaluation_episodes=1,
        # 512,000 transitions, about 7 minutes on 2 cores: with three training seeds, 100
        # iterations beat 50 on every seed (median IQM 1.18x the oracle's instead of 1.58x,
        # and 9 networks lost instead of 21; docs/results.md, "More samples")
        stop_iters=100,
        checkpoint_every=5,
        # the policy still moves a lot between iterations; export the best of iterations 60,
        # 70, ..., 100 on 64 held-in networks (about 11 s each; docs/results.md, "Choosing
        # the checkpoint on held-in networks": 128 networks and iteration 50 picked the same)
        validate_every=10,
        validate_from=60,
        validation_networks=64,
    )


def full() -> Preset:
    """The shipped pretrained policy: the local preset, 200 iterations (the shipped policy
    took 12 minutes on 2 CPUs), the best of iterations 100, 110, ..., 200 on held-in
    validation (about 15 s each)."""
    return replace(local(), name="full", stop_iters=200, checkpoint_every=20, validate_from=100,
                   validation_networks=128)  # fmt: skip


def cluster_gpu() -> Preset:
    """A Ray cluster of GPU nodes: many env runners training their populations on CUDA
    with a fraction of a GPU each, and GPU learners."""
    return Preset(
        name="cluster_gpu",
        env_config={
            "conditions": "train_wide",
            "population": 64,
            "device": "cuda",
            "lr_factors": WIDE_FACTORS,
        },
        eval_env_config={"conditions": "unseen_lr", "population": 16, "device": "cuda"},
        num_env_runners=16,
        num_envs_per_env_runner=2,  # a second env hides the first one's inference latency
        num_gpus_per_env_runner=0.1,  # populations train on the GPU inside the runner
        train_batch_size=65536,
        minibatch_size=8192,
        num_epochs=6,
        lr=5e-4,
        num_learners=2,
        num_gpus_per_learner=1,
        evaluation_interval=5,
        evaluation_episodes=4,
        stop_iters=200,
        checkpoint_every=10,
        hidden=(128, 128),
    )


def get_preset(name: str, **overrides: Any) -> Preset:
    """A preset by name, with fields replaced; ValueError names the allowed values."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}; allowed: {PRESETS}")
    preset = globals()[name]()
    unknown = sorted(set(overrides) - set(Preset.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"unknown preset fields {unknown}; allowed: {sorted(Preset.__dataclass_fields__)}"
        )
    return replace(preset, **overrides)


def training_env_config(preset: Preset, conditions: str) -> dict[str, Any]:
    """The preset's env_config training on the named conditions, its other settings kept.

    ValueError for unknown names and for held-out conditions: those are the benchmark's
    unseen ones, and a policy trained on them would make its "unseen" results seen.
    """
    known = load_conditions()
    trainable = sorted(name for name, c in known.items() if not c.held_out)
    if conditions not in known:
        raise ValueError(f"conditions={conditions!r} is unknown; allowed: {trainable}")
    if known[conditions].held_out:
        raise ValueError(
            f"conditions={conditions!r} is held out for the benchmark (training on it would "
            f"make the benchmark's unseen conditions seen); allowed: {trainable}"
        )
    return {**preset.env_config, "conditions": conditions}


def map_agent(agent_id: str, episode: Any = None, mapping: str = "shared",
              num_layers: int | None = None, **kwargs: Any) -> str:  # fmt: skip
    """RLlib's policy mapping function; RLlib may call it with episode=None (`shared` maps
    every id, also MixedDepthEnv's `agent_K`, which names no layer)."""
    return module_for(agent_id, mapping, num_layers)


def fixed_depth(env: Any) -> int | None:
    """Layers per network when the env's conditions fix the depth, else None."""
    condition = env.condition
    if len(condition.values_of("depth")) > 1 or len(condition.values_of("task")) > 1:
        return None
    return env.max_layers


def build_config(preset: Preset, mapping: str = "shared") -> PPOConfig:
    """The PPOConfig for a preset and a policy mapping."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping={mapping!r}; allowed: {MAPPINGS}")
    if preset.critic not in CRITICS:
        raise ValueError(f"critic={preset.critic!r}; allowed: {CRITICS}")
    env_class = MixedDepthEnv if "agents_per_env" in preset.env_config else GannoMultiAgentEnv
    if env_class is MixedDepthEnv and mapping != "shared":
        raise ValueError(
            f"mapping={mapping!r} with agents_per_env: the agent ids of a MixedDepthEnv "
            "name no layer; allowed: mapping='shared'"
        )
    if preset.critic == "network":
        if env_class is MixedDepthEnv:
            raise ValueError(
                "critic='network' with agents_per_env: a MixedDepthEnv's agent ids name no "
                "network; allowed: critic='local'"
            )
        env_class = NetworkViewEnv
    probe = env_class(preset.env_config).par_env  # checks the env config, too
    max_layers = probe.max_layers
    num_layers = None
    if mapping == "grouped":
        num_layers = fixed_depth(probe)
        if num_layers is None:
            raise ValueError(
                "mapping='grouped' needs training conditions of one fixed depth (it must know "
                "which layer is last); allowed here: mapping='shared' or 'per_layer'"
            )
    if env_class is GannoMultiAgentEnv:
        check_fixed_agents(probe)
    modules = module_ids(mapping, max_layers)
    mapping_fn = functools.partial(map_agent, mapping=mapping, num_layers=num_layers)
    model_config: dict[str, Any] = {"hidden": list(preset.hidden)}
    if env_class is NetworkViewEnv:  # the actor reads the plain env's observation only
        model_config["actor_obs_size"] = int(
            probe.observation_space(probe.possible_agents[0]).shape[0]
        )
    module_spec = RLModuleSpec(module_class=GannoRLModule, model_config=model_config)
    # one torch thread per env: env runners share the cores (Ray also sets OMP_NUM_THREADS)
    env_config = {"num_threads": 1, **preset.env_config}
    # the evaluation env is a plain one (its conditions fix the depth)
    eval_env_config = {**env_config, **preset.eval_env_config}
    if "agents_per_env" in eval_env_config:
        eval_env_config["agents_per_env"] = None  # RLlib merges it into env_config
    if "siblings" in eval_env_config:  # held-out networks, each its own draw, plain returns
        eval_env_config["siblings"] = 1
        if eval_env_config.get("reward") == "vs_siblings":
            eval_env_config["reward"] = "log_improvement"
    return (
        PPOConfig()
        .environment(env_class, env_config=env_config)
        .env_runners(
            num_env_runners=preset.num_env_runners,
            num_envs_per_env_runner=preset.num_envs_per_env_runner,
            num_cpus_per_env_runner=preset.num_cpus_per_env_runner,
            num_gpus_per_env_runner=preset.num_gpus_per_env_runner,
            rollout_fragment_length=preset.rollout_fragment_length,
        )
        .learners(
            num_learners=preset.num_learners, num_gpus_per_learner=preset.num_gpus_per_learner
        )
        .multi_agent(
            policies=set(modules),
            policy_mapping_fn=mapping_fn,
            count_steps_by="agent_steps",  # batch sizes count layer decisions
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(rl_module_specs={m: module_spec for m in modules})
        )
        .training(
            train_batch_size_per_learner=preset.train_batch_size,
            minibatch_size=preset.minibatch_size,
            num_epochs=preset.num_epochs,
            lr=preset.lr,
            gamma=preset.gamma,
            lambda_=preset.lambda_,
            clip_param=preset.clip_param,
            entropy_coeff=preset.entropy_coeff,
        )
        .evaluation(
            evaluation_interval=preset.evaluation_interval,
            evaluation_duration=preset.evaluation_episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={
                "env": NetworkViewEnv if env_class is NetworkViewEnv else GannoMultiAgentEnv,
                "env_config": eval_env_config,
                "explore": False,
            },
        )
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=100,
            delay_between_env_runner_restarts_s=1.0,
        )
        .debugging(seed=preset.seed)
    )
