"""Initial conditions: what "unseen" varies, and the versioned file that names them.

An `InitialConditions` fixes one training run's start (task, initial LR, init scale, batch
size, width, depth, seed). A `Condition` is a named, seeded distribution over them; the
training distribution and the held-out conditions live in `data/conditions_v0.json`, so a
result names exactly what it ran on (like DACBench's instance sets).

Field specs in the file: a constant, ``{"choice": [...]}``, ``{"log_uniform": [lo, hi]}``,
``{"uniform": [lo, hi]}`` or ``{"int_uniform": [lo, hi]}`` (inclusive).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

CONDITION_FIELDS = (
    "task",
    "initial_lr",
    "init_scale",
    "grad_scale",
    "batch_size",
    "width",
    "depth",
    "seed",
)
CONDITIONS_VERSION = "conditions_v0"
DEFAULT_INITIAL_LR = 0.01
# Seeds from here up are the benchmark's (held out): an env that draws its own seeds (reset
# without one, as in training) stays below it.
HELD_OUT_SEED_START = 1_000_000
SPEC_KINDS = ("choice", "log_uniform", "uniform", "int_uniform")


@dataclass(frozen=True)
class InitialConditions:
    """One training run's starting point. `None` means "the task's default".

    `initial_lr` is one LR for every layer, or a tuple with one LR per layer.
    """

    task: str | None = None
    initial_lr: float | tuple[float, ...] = DEFAULT_INITIAL_LR
    init_scale: float = 1.0
    grad_scale: float = 1.0  # multiplies the training loss: for SGD, the same as every LR x it
    batch_size: int | None = None
    width: int | None = None
    depth: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(out["initial_lr"], tuple):
            out["initial_lr"] = list(out["initial_lr"])
        return out


def check_condition_values(values: Mapping[str, Any], where: str = "conditions") -> None:
    """Raise ValueError naming the first bad key or value; call before any work starts."""
    for key, value in values.items():
        if key not in CONDITION_FIELDS:
            raise ValueError(f"{where}: unknown key {key!r}; allowed: {CONDITION_FIELDS}")
        if value is None and key != "initial_lr":
            continue
        if key == "task":
            if not isinstance(value, str):
                raise ValueError(f"{where}: task={value!r}; allowed: a task name (str)")
        elif key == "initial_lr":
            lrs = value if isinstance(value, (list, tuple)) else [value]
            if not lrs or not all(_is_positive_number(lr) for lr in lrs):
                raise ValueError(
                    f"{where}: initial_lr={value!r}; allowed: a finite number > 0, "
                    "or a non-empty list of them (one per layer)"
                )
        elif key in ("init_scale", "grad_scale"):
            if not _is_positive_number(value):
                raise ValueError(f"{where}: {key}={value!r}; allowed: a finite number > 0")
        elif key == "seed":
            if not _is_int(value) or value < 0:
                raise ValueError(f"{where}: seed={value!r}; allowed: an int >= 0")
        else:
            low = 0 if key == "depth" else 1
            if not _is_int(value) or value < low:
                raise ValueError(f"{where}: {key}={value!r}; allowed: an int >= {low}")


def make_conditions(values: Mapping[str, Any], where: str = "conditions") -> InitialConditions:
    """Checked `InitialConditions` from a dict of fixed values."""
    check_condition_values(values, where)
    values = dict(values)
    if isinstance(values.get("initial_lr"), list):
        values["initial_lr"] = tuple(float(lr) for lr in values["initial_lr"])
    elif "initial_lr" in values:
        values["initial_lr"] = float(values["initial_lr"])
    return InitialConditions(**values)


@dataclass(frozen=True)
class Condition:
    """A named distribution over initial conditions (one spec per field)."""

    name: str
    specs: Mapping[str, Any]
    description: str = ""
    held_out: bool = False

    def __post_init__(self) -> None:
        for key, spec in self.specs.items():
            where = f"condition {self.name!r}"
            if isinstance(spec, dict):
                if len(spec) != 1 or next(iter(spec)) not in SPEC_KINDS:
                    raise ValueError(f"{where}: {key}={spec!r}; allowed spec kinds: {SPEC_KINDS}")
                for value in support(spec):
                    check_condition_values({key: value}, where)
            else:
                check_condition_values({key: spec}, where)

    def sample(self, rng: np.random.Generator, seed: int) -> InitialConditions:
        """Draw one start; `seed` is used unless the condition fixes or samples the seed."""
        values: dict[str, Any] = {"seed": seed}
        for key in CONDITION_FIELDS:  # fixed order: draws do not depend on dict order
            if key in self.specs:
                values[key] = draw(self.specs[key], rng)
        return make_conditions(values, f"condition {self.name!r}")

    def values_of(self, key: str) -> list[Any]:
        """The values (or the [lo, hi] range) a field can take; [] if not set."""
        return support(self.specs[key]) if key in self.specs else []


def draw(spec: Any, rng: np.random.Generator) -> Any:
    """One value from a field spec."""
    if not isinstance(spec, dict):
        return spec
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        return arg[int(rng.integers(len(arg)))]
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
    if kind == "uniform":
        return float(rng.uniform(arg[0], arg[1]))
    return int(rng.integers(arg[0], arg[1] + 1))


def support(spec: Any) -> list[Any]:
    """The values a spec can produce: the choices, or the two ends of a range."""
    if not isinstance(spec, dict):
        return [spec]
    kind, arg = next(iter(spec.items()))
    return list(arg)


def in_support(spec: Any, value: Any) -> bool:
    """Could `spec` produce `value`? Used to prove held-out values are never trained on."""
    if not isinstance(spec, dict):
        return spec == value
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        return value in arg
    return arg[0] <= value <= arg[1]


@cache
def load_conditions(version: str = CONDITIONS_VERSION) -> dict[str, Condition]:
    """All named conditions of a versioned condition file."""
    text = resources.files("ganno_env").joinpath("data", f"{version}.json").read_text()
    raw = json.loads(text)
    if raw.get("version") != version:
        raise ValueError(f"{version}.json declares version {raw.get('version')!r}")
    return {
        name: Condition(
            name,
            entry["specs"],
            entry.get("description", ""),
            entry.get("held_out", False),
        )
        for name, entry in raw["conditions"].items()
    }


def get_condition(name: str, version: str = CONDITIONS_VERSION) -> Condition:
    """A named condition; ValueError listing the known names otherwise."""
    known = load_conditions(version)
    if name not in known:
        raise ValueError(f"conditions={name!r} is unknown; known conditions: {sorted(known)}")
    return known[name]


def held_out_conditions(version: str = CONDITIONS_VERSION) -> list[Condition]:
    return [c for c in load_conditions(version).values() if c.held_out]


def with_defaults(
    conditions: InitialConditions, width: int, depth: int, batch_size: int
) -> InitialConditions:
    """Fill the fields left to the task's defaults."""
    return replace(
        conditions,
        width=conditions.width if conditions.width is not None else width,
        depth=conditions.depth if conditions.depth is not None else depth,
        batch_size=conditions.batch_size if conditions.batch_size is not None else batch_size,
    )


def check_lrs_in_bounds(spec: Any, lr_bounds: Sequence[float], where: str) -> None:
    """ValueError when an initial LR that `spec` can give lies outside `lr_bounds`.

    The env clips every LR to `lr_bounds`, so such a run would silently start at another LR
    than the one its conditions (and every result built on them) name. `spec` is an
    `initial_lr` value (one LR or one per layer) or a field spec (choice or range).
    """
    low, high = float(lr_bounds[0]), float(lr_bounds[1])
    for value in support(spec):
        for lr in map(float, value if isinstance(value, (list, tuple)) else [value]):
            if not low <= lr <= high:
                raise ValueError(
                    f"{where}: initial LR {lr!r} lies outside lr_bounds=({low!r}, {high!r}), "
                    f"where the env would clip it to {min(max(lr, low), high)!r}; to start "
                    f"there, widen the bounds: lr_bounds=({min(low, lr)!r}, {max(high, lr)!r})"
                )


def layer_lrs(initial_lr: float | Sequence[float], num_layers: int) -> list[float]:
    """One LR per layer; ValueError when a per-layer list has the wrong length."""
    if isinstance(initial_lr, (list, tuple)):
        if len(initial_lr) != num_layers:
            raise ValueError(
                f"initial_lr has {len(initial_lr)} values; allowed: one number, "
                f"or exactly {num_layers} (one per layer)"
            )
        return [float(lr) for lr in initial_lr]
    return [float(initial_lr)] * num_layers


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
