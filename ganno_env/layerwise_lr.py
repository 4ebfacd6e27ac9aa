"""# Layerwise learning rates

| Import             | `from ganno_env import layerwise_lr_v1` (`_v2`: LR and momentum)  |
|--------------------|-------------------------------------------------------------------|
| Registry ids       | `ganno/layerwise_lr-v1`, `ganno/<task>-v1` (e.g. `ganno/digits_mlp-v1`) |
| Actions            | Discrete(5) or Box(1,); MultiDiscrete or Box(K) for K knobs       |
| Parallel API       | Yes                                                               |
| Factories          | `parallel_env()` (class `LayerwiseLREnv`), `env()`, `raw_env()`   |
| Agents             | `layer_0 ... layer_{L-1}`; `net{i}_layer{j}` when population > 1 |
| Observation shape  | (13,) float32; 13 + 2 per knob after the LR                       |
| Observation values | clipped per feature, see below                                    |
| State shape        | (len(possible_agents) * observation size,) float32                |

One episode is one training run of a small network. Each trainable layer (a Linear or
Conv, weight and bias together) is an agent that sets its own learning rate. Every
decision is followed by `interval` optimiser steps; after `max_cycles` decisions the
episode is truncated. Agents act once before the first update, on statistics of a probe
gradient, so a huge initial LR can be cut at step 0.

`parallel_env(**kwargs)` gives the env with the Parallel API (all agents act at once);
`env(**kwargs)` the AEC API with PettingZoo's usual wrappers; `raw_env(**kwargs)` the AEC
API without them.

### Observations
Each agent sees 13 numbers about its own layer and its network (observation features v2),
every entry finite and clipped to the bounds given. None carries the absolute scale of the
LR, the weights or the gradients: those are measured against their values at the first
decision (reset), and the step size as the relative weight change of one SGD step.

| # | name                  | bounds      | meaning                                                |
|---|-----------------------|-------------|--------------------------------------------------------|
| 0 | log10_relative_lr     | [-8, 8]     | log10(the layer's LR / its LR at reset)                |
| 1 | log10_step_ratio      | [-10, 0]    | log10(LR x grad RMS / weight RMS): one SGD step        |
| 2 | log10_weight_growth   | [-4, 4]     | log10(weight RMS / weight RMS at reset)                |
| 3 | log10_grad_growth     | [-8, 4]     | log10(gradient RMS / gradient RMS at reset)            |
| 4 | log10_update_ratio    | [-10, 2]    | log10 of norm(weight change) / norm(weights)           |
| 5 | grad_cosine           | [-1, 1]     | cosine of this and the last interval's mean gradient   |
| 6 | grad_noise_ratio      | [0, 1]      | 1 - norm(mean grad)^2 / mean(norm(grad)^2)             |
| 7 | relative_depth        | [0, 1]      | layer index / (layers - 1)                             |
| 8 | log_train_loss_ratio  | [-10, 5]    | ln(mean train loss of the interval / initial val loss) |
| 9 | log_val_loss_ratio    | [-10, 5]    | ln(val loss / initial val loss)                        |
| 10| val_log_change        | [-10, 10]   | ln(val loss) - ln(previous val loss)                   |
| 11| progress              | [0, 1]      | decisions taken / max_cycles                           |
| 12| last_log_factor       | [-5, 5]     | ln of the LR factor the layer last chose               |

Weights and gradients are those of the layer's weight and bias together; gradient RMS is
over the per-step gradients of the interval (at reset: the probe batch's). The LR, weight
and gradient RMS at reset are `feature_reference`. Env `layerwise_lr_v0` (the
`features_version=1` setting) computes features v1 instead: 12 numbers whose first three
are log10 of the LR [-8, 2], of the weight RMS [-8, 4] and of the gradient RMS [-10, 4],
followed by features 4-12 above (`ganno_env.features.FEATURES_V1`).

When the agents set more than the LR (`controls`, see Knobs), each knob after the LR adds two
numbers, in `controls` order: log10 of its coordinate (the value; 1 - value for momentum)
and ln of the factor the layer last asked for it (`ganno_env.knobs.Knob.columns`):

| knob         | columns                                              | bounds            |
|--------------|------------------------------------------------------|-------------------|
| momentum     | log10_one_minus_momentum, last_log_factor_momentum   | [-2, 0], [-5, 5]  |
| weight_decay | log10_weight_decay, last_log_factor_weight_decay     | [-6, -1], [-5, 5] |

At reset the gradient features come from the probe batch, the update ratio is at its lower
bound and the cosine 0. `state()` concatenates the observations of all possible agents
(zeros for agents not in the episode) for centralised critics.

### Actions
Discrete (default): action k multiplies the layer's LR by `lr_factors[k]`. Continuous
(`action_mode="continuous"`): a in [ln min(lr_factors), ln max(lr_factors)] multiplies it by
exp(a). `action_mode="log_lr"` sets the LR to 10**a, a in log10(`lr_bounds`): hand-made
schedules use it to follow their formulas exactly. The LR is then clipped to `lr_bounds`.
With more knobs (`controls`), an action holds one entry per knob in `controls` order: a
MultiDiscrete index into each knob's factors, or a Box(K) number per knob (continuous: ln
of its factor; log_lr: log10 of its coordinate). A live agent missing from the action dict
keeps its values; an action outside the space, or
for an agent not in `agents`, raises ValueError. A discrete action is an int-like scalar (a
Python int, a numpy integer, a 0-d integer array); None is accepted only for agents that
are done (PettingZoo's convention), and actions other than a dict raise TypeError.

### Knobs
`controls` names the per-layer hyperparameters the agents set, the LR first
(`ganno_env.knobs.KNOBS`): `("lr",)` (default), `("lr", "momentum")`, `("lr",
"weight_decay")` or all three. A knob's factors multiply its coordinate, which is clipped to
its bounds: momentum's is 1 - momentum (factors 0.5, 1, 2; momentum in [0, 0.99], starting
from the `momentum` setting; SGD only), weight decay's the value (factors 0.1, 1, 10; in
[1e-6, 0.1], starting from the `weight_decay` setting, where 0 starts at 1e-6). The engine
applies them per layer as `torch.optim.SGD` does (weight decay added to the gradient,
then momentum), so `GannoScheduler` writes the same values into a torch optimizer's param
groups.

### Rewards
Shared by all agents of a network: ln L_val(t-1) - ln L_val(t), so an episode's return is
ln(L_val(0) / L_val(T)). The loss used is capped at `divergence_factor` x L_val(0); a capped
or non-finite val loss ends that network's episode (termination) and its weights stop
training. With `reward="final"` the whole return arrives at the end of the episode. With
`reward="vs_bold_driver"` each reward is the network's minus that of its bold-driver twin
(`ganno_env.bold_twin`: the same network trained by the `bold_driver` rule; `env.bold_twin`
after reset, None with the other rewards), so the return says how much better than bold
driver the agents did on that network. With `reward="vs_siblings"` each reward is the
network's minus the mean of its siblings' (networks that start alike and differ only by
the actions their agents sample; see `siblings`), so the return says how much better the
agents did than the same policy on the same network: a leave-one-out baseline, as in
RLOO, that cancels the network's own difficulty. A network whose initial val loss is not
finite uses 1.0 as L_val(0).

### Infos
Per agent: `lr`, `train_loss`, `val_loss`, `diverged`, `network`, `layer`, `inner_steps`,
and the value of each knob after the LR under its name (e.g. `momentum`); at
the end of a network's episode also `test_loss` and `test_accuracy` (classification; 0 for a
diverged network). All values are finite.

### Arguments
``parallel_env(task="digits_mlp", conditions="train", initial_lr=None, population=1,
siblings=1, max_cycles=40, interval=25, lr_factors=(0.5, 0.8, 1.0, 1.25, 2.0),
lr_bounds=(1e-7, 10.0), action_mode="discrete", reward="log_improvement",
divergence_factor=10.0, max_layers=None, device="cpu", render_mode=None, optimizer="sgd",
momentum=0.0, data_dir=None, val_limit=1000, num_threads=None, features_version=2,
controls=("lr",), weight_decay=0.0, max_step_ratio=None, probe_cuts_only=False,
fallback_step_ratio=None, step_clip=None)``

* `task`: a registered task name (`ganno_env.TASKS`) or a `ganno_env.Task`.
* `conditions`: a condition name from `conditions_v0.json` (`"train"`, a held-out one, or
  `"default"`), or a dict of fixed `InitialConditions` fields. A condition's `task` field
  wins over `task`.
* `initial_lr`: overrides the condition's initial LR (one number or one per layer). Every
  initial LR (this one, any the condition can draw, reset options) must lie inside
  `lr_bounds`: ValueError otherwise, rather than a run silently started at another LR.
* `population`: networks trained in lockstep by one env. Network i draws its conditions
  from seed `seed + i // siblings`; task, width, depth and batch size are network 0's for
  all.
* `siblings`: networks per group of alike networks, dividing `population` (default 1).
  Drawn conditions come per group: networks i and j with i // siblings == j // siblings
  share every condition value and seed (the same initial weights and minibatch order), so
  they part only where their agents' actions do. Conditions given per network in reset
  options are taken as given.
* `max_cycles`, `interval`: decisions per episode and optimiser steps per decision.
* `lr_factors`, `lr_bounds`, `action_mode`: see Actions.
* `reward`, `divergence_factor`: see Rewards.
* `max_layers`: size of `possible_agents` per network; default: the deepest network the
  conditions can produce. A deeper network raises ValueError.
* `device`: `"cpu"` or `"cuda[:N]"`: where the networks train.
* `optimizer`, `momentum`, `weight_decay`: the base optimiser, `"sgd"` (with optional
  momentum) or `"adam"` (the agents then scale each layer's Adam step size), and L2 weight
  decay (both optimisers). Where the agents set momentum or weight decay (`controls`), the
  setting is the knob's initial value.
* `controls`: the knobs the agents set, the LR first (see Knobs). More than the LR makes
  the env `layerwise_lr_v2`; it needs `features_version=2`.
* `render_mode`: `"ansi"` (render() returns a per-layer table of LR, gradient RMS and
  update ratio with the losses) or `"human"` (prints it).
* `data_dir`: folder of local dataset files (MNIST, Fashion-MNIST, CIFAR-10 tasks).
* `num_threads`: torch CPU threads while the env trains (restored after each call); None
  keeps torch's setting. Set 1 when several envs share the cores (env runners, benchmark
  workers): threads that spin-wait for a busy core make every step many times slower.
* `val_limit`: val examples used for rewards and observations (the first ones of the
  fixed val split), to bound the cost of evaluating every interval.
* `features_version`: the observation feature set, 2 (default, this env, `layerwise_lr_v1`)
  or 1 (`layerwise_lr_v0`, whose factory functions set it); it also names the env's
  version (`metadata["name"]`). ValueError for any other.
* `max_step_ratio`: a safety net, None (default) for none. Each layer's LR in force stays at
  or below the LR whose step ratio (`lr * grad_rms / weight_rms`, feature 2, from the latest
  statistics: at reset the probe's) is this number, whatever the agents ask; the lower LR
  bound still holds. A policy trained with it records it, and runs only where it is set.
* `probe_cuts_only`: False (default), or True: at the first decision (the probe, before any
  update) the agents may cut or keep each LR but not raise it; a raise asked for there
  keeps the LR. Recorded by the policy like `max_step_ratio`.
* `fallback_step_ratio`: None (default) for none. At any decision, a network any of whose
  layers' step ratio (as for `max_step_ratio`) at the LR in force or at the LR its agents
  ask for exceeds this number has every layer's LR cut by the smallest of `lr_factors`
  instead of its agents' actions, until every layer is back within it: beyond the largest
  step that training shows, the policy's answer is an extrapolation. Recorded by the
  policy like `max_step_ratio`.
* `step_clip`: None (default) for none. At every optimiser step (not only at decisions),
  a layer whose plain SGD step would change its weights by more than this fraction
  (`lr * rms(grad) / rms(weight)` of that step's gradient) takes the step scaled down to
  it; the LR in force, its feature and the agents' actions stay as they were. Recorded by
  the policy like `max_step_ratio`.

`reset(seed=..., options=...)`: options may fix condition fields for one episode
(`{"initial_lr": 1e-5, "depth": 6}`) or give one dict per network under `"conditions"`.

### Read-only state
What controllers, rollouts and library glue may read besides the PettingZoo API (arrays are
per network [N] or per network and layer [N, L]; they change at `reset` and `step`):

* `config`: the `EnvConfig` the env was built from.
* `condition`: the `Condition` episodes draw their initial conditions from.
* `max_layers`: layers per network that `possible_agents` covers.
* `layer_counts`: the layer counts the conditions can produce (`layer_counts(condition,
  tasks)` in this module computes them).
* `agent_index`: agent id -> (network, layer), for every possible agent.
* `episode_conditions`: the `InitialConditions` of each network this episode.
* `num_layers`, `inner_steps`, `num_moves`: layers this episode, optimiser steps and
  decisions taken so far.
* `lrs` [N, L], `last_log_factor` [N, L]: the LRs in force, ln of each layer's last factor.
* `knobs`: the `Knob`s of `controls`; `knob_values(name)` [N, L]: a knob's values in force.
* `val_loss`, `train_loss` [N]: the capped losses of the last measurement;
  `initial_val_loss` [N] is L_val(0), `cap` [N] the divergence cap.
* `done` [N]: networks whose episode has ended; `diverged` [N]: those that diverged.

### Version History
* v2: `controls`, agents that set more than the LR (see Knobs): a MultiDiscrete or Box(K)
  action, features v2 plus two columns per knob after the LR, the knobs' values in the
  infos. `layerwise_lr_v2` sets the LR and momentum by default; an env with `controls`
  left at `("lr",)` computes exactly v1 and is named `layerwise_lr_v1`.
* Naming (every version; no change to what the env computes): the ParallelEnv class is
  `LayerwiseLREnv`, and `raw_env()` returns the AEC env without wrappers, PettingZoo's
  convention (`env()` is `raw_env()` wrapped). `raw_env` used to name the ParallelEnv
  class: code that built a parallel env with `raw_env(...)` now calls `parallel_env(...)`.
* v1: scale-free observation features v2 (13): the LR, weight RMS and gradient RMS relative
  to their values at reset, and the step ratio LR x gradient RMS / weight RMS, instead of
  their absolute log10 values; a `grad_scale` condition field (multiplies the training
  loss, so gradients differ in scale at the same LR).
* v0: initial release (features v1, 12). Still importable as `ganno_env.layerwise_lr_v0`
  (registry ids `ganno/layerwise_lr-v0`, `ganno/<task>-v0`) for policies trained on it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec_wrapper

from ganno_env.bold_twin import BoldDriverTwin
from ganno_env.conditions import (
    CONDITION_FIELDS,
    HELD_OUT_SEED_START,
    Condition,
    InitialConditions,
    check_condition_values,
    check_lrs_in_bounds,
    layer_lrs,
    make_conditions,
    support,
    with_defaults,
)
from ganno_env.config import EnvConfig
from ganno_env.decision import DecisionCore
from ganno_env.engine import AGENT_BYTES, PopulationTrainer, check_batchable, check_memory
from ganno_env.knobs import KNOBS, engine_order, get_knobs, observation_bounds
from ganno_env.models import layer_groups
from ganno_env.tasks import Task, get_task

SHAPE_FIELDS = ("task", "width", "depth", "batch_size")
ENV_VERSION = "layerwise_lr_v2"  # the current version
# Every env version still served, with the observation features it computes (v2: those of
# v1 plus the columns of the knobs after the LR).
ENV_VERSIONS: dict[str, int] = {"layerwise_lr_v0": 1, "layerwise_lr_v1": 2, "layerwise_lr_v2": 2}


def env_version(features_version: int, controls: Sequence[str] = ("lr",)) -> str:
    """The env version that computes features `features_version` for the knobs `controls`:
    v0 and v1 set the LR alone (features v1 and v2), v2 sets more knobs (features v2)."""
    if len(controls) > 1:
        if features_version != ENV_VERSIONS["layerwise_lr_v2"]:
            raise ValueError(
                f"controls={tuple(controls)!r} with features_version={features_version!r}; "
                f"allowed: knobs besides the LR with features_version="
                f"{ENV_VERSIONS['layerwise_lr_v2']} (env layerwise_lr_v2)"
            )
        return "layerwise_lr_v2"
    for name, version in ENV_VERSIONS.items():
        if version == features_version:
            return name
    raise ValueError(
        f"features_version={features_version!r} is served by no env version; allowed: "
        f"{sorted(ENV_VERSIONS.values())} ({ENV_VERSIONS})"
    )


def minus_siblings_mean(reward: np.ndarray, siblings: int) -> np.ndarray:
    """Each network's reward minus the mean of its siblings' (the other networks of its
    group of `siblings` consecutive ones): leave-one-out, so a group's rewards sum to 0."""
    groups = reward.reshape(-1, siblings)
    others = (groups.sum(axis=1, keepdims=True) - groups) / (siblings - 1)
    return (groups - others).reshape(reward.shape)


def layer_counts(condition: Condition, tasks: Sequence[Task]) -> tuple[int, ...]:
    """The layer counts (agents per network) that `condition` can produce on `tasks`, ascending.

    Sizes `possible_agents` (the largest) and tells library glue whether the agent set varies
    between episodes; a custom task's models are built to count (and checked batchable).
    """
    depth_spec = condition.specs.get("depth")
    counts = set()
    for task in tasks:
        depths = support(depth_spec) if depth_spec is not None else [task.depth]
        if task.arch == "custom":
            data = task.load_data()
            for depth in depths:
                model = task.build_model(task.width, depth, data)
                check_batchable(model)
                counts.add(len(layer_groups(model)))
        else:
            counts.update(task.num_layers(depth) for depth in depths)
    return tuple(sorted(counts))


class LayerwiseLREnv(ParallelEnv):
    """Per-layer learning-rate control of a population of training networks.

    A PettingZoo shell over `ganno_env.decision.DecisionCore`, which makes each decision
    (observations, LR arithmetic, loss caps) with the same code as `GannoScheduler`; the env
    adds the trainer, agent ids, action checks, rewards, terminations and infos.
    """

    metadata = {
        "name": "layerwise_lr_v1",  # what the defaults compute; each instance names its own
        "render_modes": ["ansi", "human"],
        "is_parallelizable": True,
    }

    def __init__(self, **kwargs: Any):
        self.config = EnvConfig.from_kwargs(kwargs)
        # the version is the feature set's: an env with features v1 is layerwise_lr_v0
        self.metadata = {
            **type(self).metadata,
            "name": env_version(self.config.features_version, self.config.controls),
        }
        self.render_mode = self.config.render_mode
        self._condition = self.config.condition()
        self._task = self._with_data_dir(get_task(self.config.task))
        self._check_tasks_available()
        self._layer_counts = layer_counts(self._condition, self._condition_tasks())
        needed = self._layer_counts[-1]
        if self.config.max_layers is not None and self.config.max_layers < needed:
            raise ValueError(
                f"max_layers={self.config.max_layers}; the conditions can produce networks of "
                f"{needed} layers: allowed: max_layers >= {needed}"
            )
        self.max_layers = self.config.max_layers or needed
        n = self.config.population
        check_memory(n, self.max_layers * AGENT_BYTES, "cpu", "the env's agent ids and spaces")
        self.possible_agents = [
            self._agent_id(i, j) for i in range(n) for j in range(self.max_layers)
        ]
        self.agents: list[str] = []
        self.core = DecisionCore(
            self.config.action_mode,
            self.config.lr_factors,
            self.config.lr_bounds,
            self.config.divergence_factor,
            self.config.max_cycles,
            self.config.features_version,
            self.config.controls,
            max_step_ratio=self.config.max_step_ratio,
            probe_cuts_only=self.config.probe_cuts_only,
            fallback_step_ratio=self.config.fallback_step_ratio,
            step_clip=self.config.step_clip,
        )
        self.knobs = get_knobs(self.config.controls)
        obs_low, obs_high = observation_bounds(self.config.features_version, self.config.controls)
        self._obs_space = spaces.Box(obs_low, obs_high, dtype=np.float32)
        if self.config.action_mode == "discrete" and len(self.knobs) == 1:
            self._action_space = spaces.Discrete(len(self.config.lr_factors))
        elif self.config.action_mode == "discrete":
            sizes = [len(control.factors) for control in self.core.controls]
            self._action_space = spaces.MultiDiscrete(sizes)
        else:
            low, high = self.core.action_range()
            self._action_space = spaces.Box(
                low.astype(np.float32), high.astype(np.float32), dtype=np.float32
            )
        self.observation_spaces = {a: self._obs_space for a in self.possible_agents}
        self.action_spaces = {a: self._action_space for a in self.possible_agents}
        count = len(self.possible_agents)
        self.state_space = spaces.Box(
            np.tile(obs_low, count), np.tile(obs_high, count), dtype=np.float32
        )
        self.np_random, _ = seeding.np_random(None)
        self.trainer: PopulationTrainer | None = None
        self.bold_twin: BoldDriverTwin | None = None  # reward="vs_bold_driver"'s baseline
        self._conditions_now: list[InitialConditions] = []
        self._done = np.zeros(n, dtype=bool)

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_space

    # ------------------------------------------------------------------- reset
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(
                f"reset(options=...) got a {type(options).__name__}; allowed: None or a dict "
                "such as {'initial_lr': 1e-3} or {'conditions': [{...}, ...]}"
            )
        n = self.config.population
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
            base_seed = int(seed)
        else:  # drawn (training): below the benchmark's held-out seeds, also base_seed + i
            base_seed = int(self.np_random.integers(max(HELD_OUT_SEED_START - n, 1)))
        conditions = self._episode_conditions(base_seed, options or {})
        first = conditions[0]
        task = self._resolve_task(first.task)
        data = task.load_data()
        self.trainer = self._build_trainer(task, data, conditions, self.core.step_clip)
        num_layers = self.trainer.num_layers
        if num_layers > self.max_layers:
            raise ValueError(
                f"the episode's network has {num_layers} layers; max_layers={self.max_layers}: "
                f"allowed: networks of at most max_layers layers"
            )
        self.num_layers = num_layers
        self._conditions_now = conditions
        self.inner_steps = 0

        # statistics of a probe gradient, then the first observations (no update yet)
        probe_losses, stats = self.trainer.probe()
        val_loss, _ = self.trainer.evaluate("val", accuracy=False)
        lrs = np.array([layer_lrs(c.initial_lr, num_layers) for c in conditions])
        values = np.stack(
            [lrs] + [np.full(lrs.shape, self.config.knob_setting(k)) for k in self.knobs[1:]], -1
        )
        obs = self.core.start(
            values,
            stats,
            probe_losses.detach().cpu().numpy(),
            val_loss.cpu().numpy(),
        )
        self._done = np.zeros(n, dtype=bool)
        self.bold_twin = None
        if self.config.reward == "vs_bold_driver":  # the same networks, trained by bold driver
            twin_trainer = self._build_trainer(task, data, conditions, step_clip=None)
            self.bold_twin = BoldDriverTwin(twin_trainer, lrs, self.core)
        self.layer_stats = stats
        self.agents = [self._agent_id(i, j) for i in range(n) for j in range(num_layers)]
        self._observations = self._per_agent(obs)
        infos = {a: self._info(a) for a in self.agents}
        return dict(self._observations), infos

    def _build_trainer(
        self,
        task: Task,
        data: Any,
        conditions: list[InitialConditions],
        step_clip: float | None,
    ) -> PopulationTrainer:
        """The population of this episode's networks (network i from conditions[i])."""
        first = conditions[0]
        return PopulationTrainer.build(
            lambda: task.build_model(first.width, first.depth, data),
            data,
            batch_size=first.batch_size,
            seeds=[c.seed for c in conditions],
            init_scales=[c.init_scale for c in conditions],
            grad_scales=[c.grad_scale for c in conditions],
            input_scales=[c.input_scale for c in conditions],
            optimizer=self.config.optimizer,
            # a controlled momentum is a knob's update, starting from this setting
            momentum=0.0 if "momentum" in self.config.controls else self.config.momentum,
            device=self.config.device,
            val_limit=self.config.val_limit,
            num_threads=self.config.num_threads,
            updates=[(knob.name, knob.update) for knob in self._engine_knobs],
            step_clip=step_clip,
        )

    # -------------------------------------------------------------------- step
    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if self.trainer is None or not self.agents:
            raise RuntimeError("step() called before reset() or after the episode ended")
        values = self._action_values(actions)
        live = ~self._done

        # apply actions
        self.core.apply_actions(values, live)

        # train one interval, then measure: capped losses and the next observations
        lrs = torch.as_tensor(self.lrs * live[:, None], dtype=torch.float32)
        knobs = self._knob_values()
        train_loss, stats = self.trainer.train(lrs, self.config.interval, knobs)
        val_loss, _ = self.trainer.evaluate("val", accuracy=False)
        self.inner_steps += self.config.interval
        self.layer_stats = stats
        measured = self.core.measure(stats, train_loss.cpu().numpy(), val_loss.cpu().numpy(), live)

        # reward: improvement of the capped val loss
        previous, capped = measured.previous_val_loss, measured.val_loss
        diverged_now = measured.diverged_now
        truncated_now = live & ~diverged_now & (self.num_moves >= self.config.max_cycles)
        finished = diverged_now | truncated_now
        if self.config.reward == "final":
            reward = np.where(finished, np.log(self.initial_val_loss) - np.log(capped), 0.0)
        else:
            reward = np.log(previous) - np.log(capped)
        if self.bold_twin is not None:
            reward = reward - self.bold_twin.step(self.config.interval, knobs)
        reward = np.where(live, reward, 0.0)
        if self.config.reward == "vs_siblings":
            reward = np.where(live, minus_siblings_mean(reward, self.config.siblings), 0.0)

        # episode ends: test metrics first, then stop diverged networks
        self.test_loss = self.test_accuracy = None
        if finished.any():
            self._measure_test()
        if diverged_now.any():
            self.trainer.freeze(diverged_now)
        self._done |= finished

        self._observations = self._per_agent(measured.observations)
        agents = self.agents
        observations = {a: self._observations[a] for a in agents}
        rewards = {a: float(reward[self._network(a)]) for a in agents}
        terminations = {a: bool(diverged_now[self._network(a)]) for a in agents}
        truncations = {a: bool(truncated_now[self._network(a)]) for a in agents}
        infos = {a: self._info(a, finished[self._network(a)]) for a in agents}
        self.agents = [a for a in agents if not finished[self._network(a)]]
        return observations, rewards, terminations, truncations, infos

    # ----------------- decision state: the core holds it; the names stay for callers
    lrs = property(lambda self: self.core.lrs, doc="Per-layer LRs [N, L] in force.")
    last_log_factor = property(
        lambda self: self.core.last_log_factor, doc="ln of the factor each layer last asked."
    )
    initial_val_loss = property(
        lambda self: self.core.initial_val_loss, doc="L_val(0) [N], the losses' reference."
    )
    cap = property(lambda self: self.core.cap, doc="Divergence cap on the losses [N].")
    val_loss = property(lambda self: self.core.val_loss, doc="Capped val loss [N].")
    train_loss = property(lambda self: self.core.train_loss, doc="Capped train loss [N].")
    diverged = property(lambda self: self.core.diverged, doc="Networks that diverged [N].")
    feature_reference = property(
        lambda self: self.core.feature_reference,
        doc="Values at reset the features are relative to.",
    )
    num_moves = property(lambda self: self.core.decisions, doc="Decisions taken this episode.")

    # ------------------------- read-only state for controllers, rollouts and library glue
    @property
    def condition(self) -> Condition:
        """The condition episodes draw their initial conditions from."""
        return self._condition

    @property
    def layer_counts(self) -> tuple[int, ...]:
        """The layer counts (agents per network) the conditions can produce, ascending."""
        return self._layer_counts

    @property
    def agent_index(self) -> Mapping[str, tuple[int, int]]:
        """Agent id -> (network, layer), for every possible agent."""
        return MappingProxyType(self._agent_index)

    @property
    def episode_conditions(self) -> list[InitialConditions]:
        """Each network's initial conditions this episode (a copy of the list)."""
        return list(self._conditions_now)

    @property
    def done(self) -> np.ndarray:
        """Networks whose episode has ended [N] (a read-only view)."""
        view = self._done.view()
        view.flags.writeable = False
        return view

    # ----------------------------------------------------------- global state
    def state(self) -> np.ndarray:
        size = self._obs_space.shape[0]
        state = np.zeros(len(self.possible_agents) * size, dtype=np.float32)
        for k, agent in enumerate(self.possible_agents):
            if agent in self.agents and agent in self._observations:
                state[k * size : (k + 1) * size] = self._observations[agent]
        return state

    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        text = self._render_text()
        if self.render_mode == "human":
            print(text, end="")
            return None
        return text

    def _render_text(self) -> str:
        """A per-layer table: LR, gradient RMS and update ratio, then the losses."""
        if self.trainer is None:
            return "layerwise_lr: call reset() first\n"
        stats = self.layer_stats
        grad = stats.grad_rms.cpu().numpy()
        ratio = stats.update_ratio.cpu().numpy()
        lines = [f"decision {self.num_moves}/{self.config.max_cycles}, step {self.inner_steps}"]
        for i in range(self.config.population):
            state = "diverged" if self.diverged[i] else ("done" if self._done[i] else "training")
            lines.append(
                f"net {i}: train loss {self.train_loss[i]:.4f}  val loss {self.val_loss[i]:.4f}"
                f"  ({state})"
            )
            others = [knob.name for knob in self.knobs[1:]]
            header = "".join(f"{name:>13}" for name in others)
            lines.append(f"  {'layer':<8}{'lr':>11}{header}{'grad rms':>11}{'update/w':>11}")
            for j in range(self.num_layers):
                values = "".join(f"{self.knob_values(n)[i, j]:>13.3g}" for n in others)
                lines.append(
                    f"  {j:<8}{self.lrs[i, j]:>11.3g}{values}{grad[i, j]:>11.3g}"
                    f"{ratio[i, j]:>11.3g}"
                )
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.trainer = self.bold_twin = None

    # ------------------------------------------------------------------ knobs
    def knob_values(self, name: str) -> np.ndarray:
        """The values [N, L] in force of a knob the agents set (`controls`), e.g. "momentum"."""
        return self.core.knob_values(name)

    @functools.cached_property
    def _engine_knobs(self) -> tuple:
        """Knobs the engine applies: those the agents set, and weight decay when it is set
        to a fixed value (`weight_decay` > 0) without agents controlling it (the config
        does not change, so neither do they)."""
        knobs = list(self.knobs)
        if self.config.weight_decay > 0 and "weight_decay" not in self.config.controls:
            knobs.append(KNOBS["weight_decay"])
        return engine_order(knobs)

    def _knob_values(self) -> dict[str, torch.Tensor]:
        """Per-layer values [N, L] of every knob the engine applies, by name."""
        shape = self.lrs.shape
        return {
            knob.name: torch.as_tensor(
                self.knob_values(knob.name)
                if knob.name in self.config.controls
                else np.full(shape, self.config.knob_setting(knob)),
                dtype=torch.float32,
            )
            for knob in self._engine_knobs
        }

    # ---------------------------------------------------------------- helpers
    def _agent_id(self, network: int, layer: int) -> str:
        if self.config.population == 1:
            return f"layer_{layer}"
        return f"net{network}_layer{layer}"

    @functools.cached_property
    def _agent_index(self) -> dict[str, tuple[int, int]]:
        n = self.config.population
        return {self._agent_id(i, j): (i, j) for i in range(n) for j in range(self.max_layers)}

    def _network(self, agent: str) -> int:
        return self._agent_index[agent][0]

    def _per_agent(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {
            self._agent_id(i, j): obs[i, j]
            for i in range(obs.shape[0])
            for j in range(obs.shape[1])
        }

    def _action_values(self, actions: dict[str, Any]) -> dict[tuple[int, int], float]:
        """{(network, layer): value} of the actions; ValueError outside the space."""
        if not isinstance(actions, Mapping):
            raise TypeError(
                f"step() got a {type(actions).__name__}; allowed: a dict of actions keyed by "
                "agent id, e.g. {'layer_0': 2}"
            )
        values = {}
        live = set(self.agents)
        for agent, action in actions.items():
            if agent not in live:
                if action is None:  # PettingZoo's convention: agents that are done act None
                    continue
                raise ValueError(f"action for agent {agent!r}, which is not live; live: {live}")
            values[self._agent_index[agent]] = self._action_value(agent, action)
        return values

    def _action_value(self, agent: str, action: Any) -> Any:
        """The action's index (discrete) or number (Box), checked against the space; a tuple
        of them, one per knob, when the agents set more than the LR."""
        if len(self.knobs) > 1:
            return self._multi_value(agent, action)
        if self.config.action_mode == "discrete":
            k = len(self.config.lr_factors)
            integer = isinstance(action, (int, np.integer)) and not isinstance(action, bool)
            if isinstance(action, np.ndarray) and action.ndim == 0:
                integer = np.issubdtype(action.dtype, np.integer)
            if not integer or not 0 <= int(action) < k:
                raise ValueError(
                    f"action {action!r} for {agent!r}; allowed: an int in [0, {k - 1}] (a "
                    "Python int, a numpy integer or a 0-d integer array)"
                )
            return int(action)
        if self.config.action_mode == "log_lr":
            return self._box_value(agent, action, "log10 of the LR")
        return self._box_value(agent, action, "ln of the LR factor")

    def _multi_value(self, agent: str, action: Any) -> tuple:
        """One index (MultiDiscrete) or number (Box) per knob, checked against the space."""
        names = [knob.name for knob in self.knobs]
        if self.config.action_mode == "discrete":
            sizes = self._action_space.nvec
            try:
                values = np.asarray(action)
            except (TypeError, ValueError):
                values = np.array(None)
            ok = (
                values.shape == (len(names),)
                and np.issubdtype(values.dtype, np.integer)
                and bool(np.all((values >= 0) & (values < sizes)))
            )
            if not ok:
                raise ValueError(
                    f"action {action!r} for {agent!r}; allowed: {len(names)} ints, one per knob "
                    f"{names}, in [0, {[int(n) - 1 for n in sizes]}]"
                )
            return tuple(int(v) for v in values)
        try:
            values = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            values = np.full(len(names) + 1, np.nan)
        low = self._action_space.low.astype(np.float64)
        high = self._action_space.high.astype(np.float64)
        if values.size != len(names) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"action {action!r} for {agent!r}; allowed: {len(names)} finite numbers, one per "
                f"knob {names}"
            )
        if np.any(values < low - 1e-6) or np.any(values > high + 1e-6):
            raise ValueError(
                f"action {action!r} for {agent!r}; allowed: within [{list(low.round(4))}, "
                f"{list(high.round(4))}] (per knob {names})"
            )
        return tuple(float(v) for v in np.clip(values, low, high))

    def _box_value(self, agent: str, action: Any, meaning: str) -> float:
        """The number in a Box(1,) action, checked against the space (float32 slack)."""
        try:
            value = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            value = np.array([np.nan, np.nan])
        low, high = float(self._action_space.low[0]), float(self._action_space.high[0])
        if value.size != 1 or not np.isfinite(value[0]):
            raise ValueError(f"action {action!r} for {agent!r}; allowed: one finite number")
        if not low - 1e-6 <= value[0] <= high + 1e-6:
            raise ValueError(
                f"action {action!r} for {agent!r}; allowed: [{low:.4f}, {high:.4f}] ({meaning})"
            )
        return float(np.clip(value[0], low, high))

    def _measure_test(self) -> None:
        loss, accuracy = self.trainer.evaluate("test")
        loss = loss.cpu().numpy().astype(np.float64)
        ok = np.isfinite(loss) & ~self.diverged
        self.test_loss = np.where(ok, self.core.safe(loss), self.cap)
        if accuracy is not None:
            self.test_accuracy = np.where(ok, accuracy.cpu().numpy(), 0.0)

    def _info(self, agent: str, finished: bool = False) -> dict[str, Any]:
        i, j = self._agent_index[agent]
        info = {
            "lr": float(self.lrs[i, j]),
            "train_loss": float(self.train_loss[i]),
            "val_loss": float(self.val_loss[i]),
            "diverged": bool(self.diverged[i]),
            "network": i,
            "layer": j,
            "inner_steps": self.inner_steps,
        }
        for knob in self.knobs[1:]:
            info[knob.name] = float(self.knob_values(knob.name)[i, j])
        if finished and self.test_loss is not None:
            info["test_loss"] = float(self.test_loss[i])
            if self.test_accuracy is not None:
                info["test_accuracy"] = float(self.test_accuracy[i])
        return info

    def _episode_conditions(self, base_seed: int, options: dict) -> list[InitialConditions]:
        """Per-network initial conditions for one episode; shape fields from network 0."""
        per_network = options.get("conditions")
        fixed = {k: v for k, v in options.items() if k in CONDITION_FIELDS}
        unknown = sorted(set(options) - set(CONDITION_FIELDS) - {"conditions"})
        if unknown:  # PettingZoo's API test passes foreign options: warn, don't fail
            warnings.warn(
                f"reset options {unknown} ignored; known: {CONDITION_FIELDS + ('conditions',)}",
                stacklevel=3,
            )
        check_condition_values(fixed, "reset options")
        n = self.config.population
        if per_network is not None:
            if not isinstance(per_network, (list, tuple)) or len(per_network) != n:
                raise ValueError(
                    f"reset options['conditions'] has {per_network!r}; allowed: a list of "
                    f"{n} dicts (one per network)"
                )
            drawn = [
                make_conditions({"seed": base_seed + i, **c}) for i, c in enumerate(per_network)
            ]
        else:
            k = self.config.siblings  # a group of siblings shares one draw
            groups = [
                self._condition.sample(np.random.default_rng(base_seed + g), base_seed + g)
                for g in range(n // k)
            ]
            drawn = [groups[i // k] for i in range(n)]
        overrides = dict(fixed)
        if self.config.initial_lr is not None:
            overrides.setdefault("initial_lr", self.config.initial_lr)
        resolved = []
        for drawn_one in drawn:
            c = make_conditions(drawn_one.to_dict() | overrides)
            task = self._resolve_task(c.task)
            c = replace(c, task=task.name)
            resolved.append(with_defaults(c, task.width, task.depth, task.batch_size))
        for c in resolved:
            check_lrs_in_bounds(c.initial_lr, self.config.lr_bounds, "reset options")
        first = resolved[0]
        if per_network is not None:
            for c in resolved[1:]:
                for key in SHAPE_FIELDS:
                    if getattr(c, key) != getattr(first, key):
                        raise ValueError(
                            f"reset options['conditions']: {key} differs between networks "
                            f"({getattr(first, key)!r} vs {getattr(c, key)!r}); allowed: one "
                            f"{key} for the whole population"
                        )
        return [replace(c, **{k: getattr(first, k) for k in SHAPE_FIELDS}) for c in resolved]

    def _resolve_task(self, name: str | None) -> Task:
        if name is None or name == self._task.name:
            return self._task
        return self._with_data_dir(get_task(name))

    def _with_data_dir(self, task: Task) -> Task:
        if self.config.data_dir is not None:
            return replace(task, data_dir=self.config.data_dir)
        return task

    def _condition_tasks(self) -> list[Task]:
        names = self._condition.values_of("task")
        return [self._resolve_task(name) for name in names] if names else [self._task]

    def _check_tasks_available(self) -> None:
        for task in self._condition_tasks():
            if not task.available():
                raise ValueError(
                    f"task={task.name!r} reads dataset {task.data!r} from data_dir="
                    f"{task.data_dir!r}, where its files are missing; allowed: data_dir=FOLDER "
                    "holding them (see ganno_env.datasets for the file names)"
                )


def factories(cls: type[LayerwiseLREnv]) -> tuple[Callable, Callable, Callable]:
    """PettingZoo's three factories of an env class: `parallel_env` (Parallel API), `raw_env`
    (AEC API, no wrappers) and `env` (AEC, wrapped). Each versioned module exports those of
    its own class, so the versions differ only in their settings."""
    version = cls.metadata["name"]

    def parallel_env(**kwargs: Any) -> LayerwiseLREnv:
        return cls(**kwargs)

    def raw_env(**kwargs: Any) -> AECEnv:
        return parallel_to_aec_wrapper(cls(**kwargs))

    def env(**kwargs: Any) -> AECEnv:
        return wrap(raw_env(**kwargs))

    parallel_env.__doc__ = f"The {version} env with the PettingZoo Parallel API."
    raw_env.__doc__ = f"The {version} env with the PettingZoo AEC API and no wrappers."
    env.__doc__ = f"The {version} env with the PettingZoo AEC API: `raw_env` wrapped."
    return parallel_env, raw_env, env


def to_aec(par_env: LayerwiseLREnv) -> AECEnv:
    """A parallel env with the AEC API and PettingZoo's usual wrappers."""
    return wrap(parallel_to_aec_wrapper(par_env))


def wrap(aec: AECEnv) -> AECEnv:
    """PettingZoo's usual wrappers around a raw AEC env; every versioned module's `env()`
    goes through here, so the versions differ only in their settings."""
    if aec.unwrapped.config.action_mode == "discrete" and len(aec.unwrapped.knobs) == 1:
        aec = wrappers.AssertOutOfBoundsWrapper(aec)
    return wrappers.OrderEnforcingWrapper(aec)


parallel_env, raw_env, env = factories(LayerwiseLREnv)
