"""Run a controller for one episode and record what happened to each network.

The benchmark, the main job and users' own comparisons all go through `rollout`, so a
learned policy and a hand-made schedule are measured by the same code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ganno_env.controllers import Controller, same_setting
from ganno_env.layerwise_lr import LayerwiseLREnv


@dataclass
class RunResult:
    """One network's training run under one controller."""

    network: int
    conditions: dict[str, Any]
    test_loss: float = float("nan")
    test_accuracy: float | None = None
    final_val_loss: float = float("nan")
    initial_val_loss: float = float("nan")
    diverged: bool = False
    episode_return: float = 0.0
    interval: int = 0
    val_curve: list[float] = field(default_factory=list)  # at reset, then after each interval
    lr_schedule: list[list[float]] = field(default_factory=list)  # [interval][layer]
    # the same for every knob after the LR the agents set (`controls`), by name
    knob_schedules: dict[str, list[list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_env(controller: Controller, **env_kwargs: Any) -> LayerwiseLREnv:
    """The env that the controller speaks, plus the caller's `env_kwargs`.

    Settings that give the controller's actions their meaning (`controller.env_requirements()`:
    the action mode; for a trained policy also its `lr_factors` and `lr_bounds`, and the
    `features_version` its file records, so a `layerwise_lr_v0` policy gets the v0 env and
    its 12 features) are set from the controller; a conflicting value in `env_kwargs`
    raises ValueError naming both, since the actions would mean something else. Settings
    the controller was made for but that do not change what an action means
    (`env_defaults()`: a policy's recorded `interval` and `max_cycles`) are defaults:
    `env_kwargs` may override them, e.g. to run a policy for a longer horizon or on the
    pace of a benchmark suite.
    """
    needed = controller.env_requirements()
    for key, value in needed.items():
        if key in env_kwargs and not same_setting(env_kwargs[key], value):
            raise ValueError(
                f"{key}={env_kwargs[key]!r} conflicts with controller {controller.name!r}, "
                f"whose actions need {key}={value!r}; leave {key} out (make_env sets it)"
            )
    return LayerwiseLREnv(**{**controller.env_defaults(), **env_kwargs, **needed})


def rollout(
    env: LayerwiseLREnv,
    controller: Controller,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> list[RunResult]:
    """Play one episode; one `RunResult` per network of the env's population.

    ValueError before any work when the env does not match what the controller needs
    (`Controller.check_env`): build it with `make_env`.
    """
    controller.check_env(env.config)
    observations, infos = env.reset(seed=seed, options=options)
    results = [
        RunResult(i, c.to_dict(), interval=env.config.interval)
        for i, c in enumerate(env.episode_conditions)
    ]
    for result in results:
        result.initial_val_loss = float(env.val_loss[result.network])
        result.val_curve.append(result.initial_val_loss)
    controller.reset(env, observations, infos)
    while env.agents:
        live_agents = env.agents
        actions = controller.act(
            {a: observations[a] for a in live_agents}, {a: infos[a] for a in live_agents}
        )
        live = {i for i in range(len(results)) if not env.done[i]}
        observations, rewards, _, _, infos = env.step(actions)
        for i in live:
            results[i].lr_schedule.append([float(lr) for lr in env.lrs[i]])
            for knob in env.knobs[1:]:
                values = env.knob_values(knob.name)[i]
                results[i].knob_schedules.setdefault(knob.name, []).append(values.tolist())
            results[i].val_curve.append(float(env.val_loss[i]))
        for agent, info in infos.items():
            result = results[info["network"]]
            if info["layer"] == 0:
                result.episode_return += rewards[agent]
            if "test_loss" in info:
                result.test_loss = info["test_loss"]
                result.test_accuracy = info.get("test_accuracy")
                result.final_val_loss = info["val_loss"]
                result.diverged = info["diverged"]
    return results
