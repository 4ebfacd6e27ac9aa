"""Benchmark suites: versioned sets of held-out conditions, seeds and episode settings.

A suite file (`benchmarks/suites/NAME.json`) names its version, the condition file it draws
from, the seeds (>= 1,000,000, never used in training) and the oracle's LR grid. Seed s of
a condition always gives the same initial conditions, so every controller starts each run
from exactly the same LR, weights and data order as every other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganno_env.conditions import get_condition


def digest(obj: Any) -> str:
    """sha256 of a JSON-able value (first 16 hex digits), the same for equal content:
    result keys name their inputs by such hashes."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Suite:
    """A versioned set of held-out conditions, their seeds and the episode settings."""

    name: str
    version: str
    description: str
    conditions_version: str
    task: str
    env: dict[str, Any]
    seeds: tuple[int, ...]
    conditions: tuple[str, ...]
    oracle_grid: tuple[float, ...]
    target_factor: float

    def with_seeds(self, count: int) -> Suite:
        """The first `count` seeds (a quicker run of the same suite)."""
        if not 1 <= count <= len(self.seeds):
            raise ValueError(f"--seeds {count}; allowed: 1..{len(self.seeds)} for {self.name}")
        return Suite(**{**self.__dict__, "seeds": self.seeds[:count]})

    def content_hash(self) -> str:
        """Hash of what the suite's runs are made from: version, task, env settings and each
        condition's specs (read from its conditions file), so an edited suite or condition
        invalidates old results. Seeds and oracle LRs are part of each result's own key, and
        the name, description and report settings change no result, so they are left out.
        """
        specs = {
            name: dict(get_condition(name, self.conditions_version).specs)
            for name in self.conditions
        }
        return digest(
            {
                "version": self.version,
                "conditions_version": self.conditions_version,
                "task": self.task,
                "env": self.env,
                "conditions": specs,
            }
        )

    def initial_conditions(self, condition: str, seed: int) -> dict[str, Any]:
        """Explicit initial conditions of one run (every field fixed)."""
        drawn = get_condition(condition, self.conditions_version).sample(
            np.random.default_rng(seed), seed
        )
        values = drawn.to_dict()
        values["task"] = values["task"] or self.task
        return values


# Not importlib.resources: torchrl installs a top-level `benchmarks` namespace folder of its
# own, which can shadow this package's data files.
SUITES_DIR = Path(__file__).parent / "suites"


def suite_names() -> list[str]:
    """The suites shipped in benchmarks/suites/."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


def load_suite(name: str) -> Suite:
    """A suite by name; ValueError lists the known ones."""
    if name not in suite_names():
        raise ValueError(f"suite={name!r} is unknown; known suites: {suite_names()}")
    raw = json.loads((SUITES_DIR / f"{name}.json").read_text())
    for condition in raw["conditions"]:
        get_condition(condition, raw["conditions_version"])
    return Suite(
        name=name,
        version=raw["version"],
        description=raw.get("description", ""),
        conditions_version=raw["conditions_version"],
        task=raw["task"],
        env=dict(raw["env"]),
        seeds=tuple(raw["seeds"]),
        conditions=tuple(raw["conditions"]),
        oracle_grid=tuple(raw["oracle_grid"]),
        target_factor=float(raw.get("target_factor", 2.0)),
    )
