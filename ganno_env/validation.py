"""Held-in validation: how well a policy trains networks of its own training distribution.

A PPO run ends with whatever policy its last iteration left, and that policy can move a
lot from one iteration to the next (`docs/results.md`, "Choosing the checkpoint on held-in
networks"). `validation_score` measures a policy the way the benchmark does (greedy
actions, `rollout`), but on fixed networks drawn from the conditions it trained on, with
seeds below the held-out ones: a training run can keep its best checkpoint without ever
seeing a held-out condition or seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ganno_env.conditions import HELD_OUT_SEED_START, get_condition
from ganno_env.policy import load_policy
from ganno_env.rollout import make_env, rollout

# Validation networks take the seeds from here up; training draws its own from [0, 1e6)
# too, so a validation network may have been trained on: it is held in, not held out.
VALIDATION_SEED_START = 900_000
MAX_VALIDATION_NETWORKS = HELD_OUT_SEED_START - VALIDATION_SEED_START


@dataclass(frozen=True)
class ValidationScore:
    """The mean ln of the final val loss over the validation networks (lower is better;
    a network that diverged counts with its capped val loss, as in the env's rewards)."""

    mean_log_val_loss: float
    diverged: int
    networks: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_networks(networks: Any, name: str = "networks") -> None:
    """ValueError unless `networks` is a count whose seeds stay below the held-out ones;
    `name` is the setting as the caller knows it (a preset's `validation_networks`)."""
    if not isinstance(networks, int) or not 1 <= networks <= MAX_VALIDATION_NETWORKS:
        raise ValueError(f"{name}={networks!r}; allowed: an int in 1..{MAX_VALIDATION_NETWORKS}")


def check_training_conditions(conditions: str | Mapping[str, Any], use: str = "validation") -> None:
    """ValueError for a held-out condition's name: `use` (what runs the policy on
    `conditions`) must not see one."""
    if isinstance(conditions, str) and get_condition(conditions).held_out:
        raise ValueError(
            f"conditions={conditions!r} is held out for the benchmark; allowed: the "
            f"conditions the policy trained on ({use} must not see a held-out one)"
        )


def validation_score(
    policy: str | os.PathLike[str],
    conditions: str | Mapping[str, Any],
    networks: int = 128,
    population: int = 8,
    env_kwargs: Mapping[str, Any] | None = None,
) -> ValidationScore:
    """Score the policy file on `networks` networks drawn from `conditions` (a condition
    name or specs, as the env takes them), seeds `VALIDATION_SEED_START` upwards, trained
    `population` at a time; `env_kwargs` are further env settings (the training run's).

    ValueError, before any work, for a held-out condition and for a number of networks
    whose seeds would reach the held-out ones.
    """
    check_training_conditions(conditions)
    check_networks(networks)
    if not isinstance(population, int) or population < 1:
        raise ValueError(f"population={population!r}; allowed: an int >= 1")
    controller = load_policy(policy)
    env_kwargs = {**(env_kwargs or {}), "conditions": conditions, "population": population}
    env = make_env(controller, **env_kwargs)
    log_losses, diverged = [], 0
    for episode in range(math.ceil(networks / population)):
        # network i of an episode takes seed base + i: every network has its own seed
        results = rollout(env, controller, seed=VALIDATION_SEED_START + episode * population)
        for result in results[: networks - len(log_losses)]:
            log_losses.append(math.log(result.final_val_loss))
            diverged += bool(result.diverged)
    return ValidationScore(float(np.mean(log_losses)), diverged, len(log_losses))
