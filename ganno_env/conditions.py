"""Initial conditions: what "unseen" varies, and the versioned file that names them.

An `InitialConditions` fixes one training run's start (task, initial LR, init scale, batch
size, width, depth, seed). A `Condition` is a named, seeded distribution over them; the
training distribution and the held-out conditions live in `data/conditions_v0.json`, so a
result names exactly what it ran on (like DACBench's instance sets).

Field specs in the file: a constant, ``{"choice": [...]}``, ``{"log_uniform": [lo, hi]}``,
``{"uniform": [lo, hi]}`` or ``{"int_uniform": [lo, hi]}`` (inclusive). An entry may instead
be a ``{"mixture": {NAME: WEIGHT, ...}}`` of other entries: each network draws one of them
by weight, then its start from it.
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
    "input_scale",
    "seed",
)
CONDITIONS_VERSION = "conditions_v0"
DEFAULT_INITIAL_LR = 0.01
# Seeds from here up are the benchmark's (held out): an env that draws its own seeds (reset
# without one, as in training) stays below it.
HELD_OUT_SEED_START = 1_000_000
SPEC_KINDS = ("choice", "log_uniform", "uniform", "int_uniform")
# the defaults that do not depend on the task (a mixture's parts may leave these unset)
FIXED_DEFAULTS = {
    "initial_lr": DEFAULT_INITIAL_LR,
    "init_scale": 1.0,
    "grad_scale": 1.0,
    "input_scale": 1.0,
}


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
    # multiplies the (standardised) inputs: for the first layer, an init scale times it and
    # an LR times its square, so the LR alone does not tell whether a step is too large
    input_scale: float = 1.0
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
        elif key in ("init_scale", "grad_scale", "input_scale"):
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
    # a mixture: (part, weight) pairs, each network drawing its part by weight; `specs` is
    # then the parts' envelope (every value a part can draw), which the honesty checks use
    parts: tuple[tuple[Condition, float], ...] = ()

    def __post_init__(self) -> None:
        for key, spec in self.specs.items():
            problems = spec_problems(key, spec)
            if problems:
                raise ValueError(f"condition {self.name!r}: {key}: {problems[0]}")

    def sample(self, rng: np.random.Generator, seed: int) -> InitialConditions:
        """Draw one start; `seed` is used unless the condition fixes or samples the seed."""
        if self.parts:
            weights = np.array([weight for _, weight in self.parts], dtype=float)
            part = self.parts[int(rng.choice(len(self.parts), p=weights / weights.sum()))][0]
            return part.sample(rng, seed)
        values: dict[str, Any] = {"seed": seed}
        for key in CONDITION_FIELDS:  # fixed order: draws do not depend on dict order
            if key in self.specs:
                values[key] = draw(self.specs[key], rng)
        return make_conditions(values, f"condition {self.name!r}")

    def content(self) -> dict[str, Any]:
        """What its draws are made from: the specs, or a mixture's parts and weights (the
        envelope alone would hide them). Result keys hash it, so an edit reruns the runs."""
        if not self.parts:
            return dict(self.specs)
        return {"mixture": [[part.content(), weight] for part, weight in self.parts]}

    def values_of(self, key: str) -> list[Any]:
        """The values (or the [lo, hi] range) a field can take; [] if not set."""
        return support(self.specs[key]) if key in self.specs else []


def spec_problems(key: str, spec: Any) -> list[str]:
    """What is wrong with one field's spec: a value, or {"choice": [...]},
    {"log_uniform": [lo, hi]}, {"uniform": [lo, hi]}, {"int_uniform": [lo, hi]} ([] if
    nothing). Ranges must be [low, high] with low < high (one value is written as itself)."""
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in SPEC_KINDS:
            return [f"{spec!r}; allowed: a value or one of {SPEC_KINDS}"]
        kind, arg = next(iter(spec.items()))
        if not isinstance(arg, (list, tuple)) or not arg:
            return [f"{kind} {arg!r} is empty; allowed: a non-empty list"]
        if kind != "choice":
            if len(arg) != 2 or not all(is_finite_number(v) for v in arg):
                return [f"{kind} {arg!r}; allowed: [low, high], two numbers"]
            if arg[0] > arg[1]:
                return [f"{kind} {arg!r} is inverted; allowed: [low, high] with low < high"]
            if arg[0] == arg[1]:
                return [f"{kind} {arg!r} is empty; allowed: low < high (one value: write it)"]
            if kind == "log_uniform" and arg[0] <= 0:
                return [f"log_uniform {arg!r}; allowed: 0 < low < high"]
        values = list(arg)  # the choices, or the two ends of the range
    else:
        values = [spec]
    problems = []
    for value in values:
        try:
            check_condition_values({key: value}, "x")
        except ValueError as error:
            problems.append(str(error).removeprefix("x: "))
    return problems


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
    entries = raw["conditions"]
    known = {
        name: Condition(
            name, entry["specs"], entry.get("description", ""), entry.get("held_out", False)
        )
        for name, entry in entries.items()
        if "mixture" not in entry
    }
    for name, entry in entries.items():
        if "mixture" in entry:
            parts = tuple((known[part], float(w)) for part, w in entry["mixture"].items())
            known[name] = mixture(name, parts, entry.get("description", ""))
    return {name: known[name] for name in entries}


def mixture(
    name: str, parts: Sequence[tuple[Condition, float]], description: str = ""
) -> Condition:
    """A condition whose networks each draw a part by weight; held out if any part is.

    ValueError for weights that are not positive and for parts whose specs of one field
    cannot be joined into one spec (two kinds of range; a field that depends on the task's
    defaults, set in some parts only).
    """
    if not parts or any(not is_finite_number(w) or w <= 0 for _, w in parts):
        weights = [w for _, w in parts]
        raise ValueError(f"mixture {name!r}: weights {weights}; allowed: finite numbers > 0")
    envelope = {}
    for key in CONDITION_FIELDS:
        if all(key not in part.specs for part, _ in parts):
            continue  # every part draws the default
        specs = [part.specs.get(key, FIXED_DEFAULTS.get(key)) for part, _ in parts]
        envelope[key] = join_specs(specs, f"mixture {name!r}: {key}")
    held_out = any(part.held_out for part, _ in parts)
    return Condition(name, envelope, description, held_out, tuple(parts))


def join_specs(specs: Sequence[Any], where: str) -> Any:
    """One spec whose support holds every spec's: equal specs, the union of choices and
    constants, or the hull of ranges of one kind and the numbers chosen beside them."""
    if any(spec is None for spec in specs):
        raise ValueError(f"{where}: set in some parts only; allowed: set in every part or none")
    if all(spec == specs[0] for spec in specs):
        return specs[0]
    values = [v for spec in specs for v in support(spec)]
    kinds = {next(iter(s)) for s in specs if isinstance(s, dict)} - {"choice"}
    if not kinds:
        return {"choice": list(dict.fromkeys(values))}
    if len(kinds) == 1 and all(is_finite_number(v) for v in values):
        return {kinds.pop(): [min(values), max(values)]}
    raise ValueError(f"{where}: specs {list(specs)} cannot be joined; allowed: one kind of "
                     "range, with numbers beside it, or choices and constants")  # fmt: skip


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


def is_finite_number(value: Any) -> bool:
    """A finite int or float (numpy's too), not a bool: what a numeric field may hold."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _is_positive_number(value: Any) -> bool:
    return is_finite_number(value) and value > 0


# ---------------------------------------------------------------- training files


class FileProblems(ValueError):
    """A user file (a suite, training conditions) with problems: one line per problem, so
    the command line can print each on a line of its own."""

    def __init__(self, where: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(f"{where}: {p}" for p in self.problems))


TRAINING_FILE_KEYS = ("specs", "description")
# every field but the seed, which training and the suites draw or set per run themselves
TRAINING_FIELDS = tuple(key for key in CONDITION_FIELDS if key != "seed")


def held_out_overlap(condition: Condition, task: str = "digits_mlp") -> list[str]:
    """The held-out starts that training on `condition` could draw, one line each.

    A held-out start is drawn in training when every field of it (those its condition leaves
    alone at the task's defaults) lies in the training condition's support. For SGD the
    step that counts is LR x grad_scale, so that product's range must also stay apart from
    the held-out LRs. `task` is the env's task where the condition sets none.
    """
    from ganno_env.tasks import get_task

    def default(key: str, task_name: str) -> Any:
        t = get_task(task_name)
        defaults = {**FIXED_DEFAULTS, "task": t.name, "batch_size": t.batch_size,
                    "width": t.width, "depth": t.depth}  # fmt: skip
        return defaults[key]

    problems = []
    for held in held_out_conditions():
        combos = [{}]
        for key, spec in held.specs.items():
            combos = [{**c, key: value} for c in combos for value in support(spec)]
        for start in combos:
            held_task = start.get("task", task)
            train_task = condition.specs.get("task", task)
            drawable = True
            for key in TRAINING_FIELDS:
                value = start.get(key, default(key, held_task))
                if key in condition.specs:
                    spec = condition.specs[key]
                else:
                    spec = default(key, train_task if isinstance(train_task, str) else task)
                if not in_support(spec, value):
                    drawable = False
                    break
            if drawable:
                shown = ", ".join(f"{k}={v!r}" for k, v in start.items())
                problems.append(f"it can draw {shown}, a start of held-out condition {held.name!r}")
                break
    scales = support(condition.specs.get("grad_scale", 1.0))
    if scales == [1.0]:
        return problems  # the step is the LR itself, checked with the starts above
    lr = condition.specs.get("initial_lr", DEFAULT_INITIAL_LR)
    lrs = support({"choice": list(lr)} if isinstance(lr, (list, tuple)) else lr)
    low, high = min(lrs) * min(scales), max(lrs) * max(scales)
    for held in held_out_conditions():
        if set(held.specs) != {"initial_lr"}:
            continue  # only the LR-defined held-out conditions fix the step size alone
        for value in support(held.specs["initial_lr"]):
            if low <= value <= high:
                problems.append(
                    f"its effective LR (initial_lr x grad_scale, {low:g}..{high:g}) reaches "
                    f"{value:g}, an initial LR of held-out condition {held.name!r}"
                )
                break
    return problems


def load_training_conditions(path: str, task: str = "digits_mlp") -> dict[str, Any]:
    """The field specs of a training-conditions file, after checking them.

    The file holds one entry with the schema of `conditions_v0.json`'s entries:
    ``{"specs": {...}, "description": "..."}``. ValueError, one line per problem, for
    unknown keys, bad specs and any held-out start it could draw (training on it would make
    the benchmark's unseen results seen).
    """
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--conditions file {path!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--conditions file {path!r} is not readable JSON: {error}") from None
    where = f"{path}"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("specs"), Mapping):
        raise ValueError(f'{where}: allowed: {{"specs": {{FIELD: SPEC, ...}}, "description": ...}}')
    problems = [f"unknown key {key!r}; allowed: {TRAINING_FILE_KEYS}" for key in raw
                if key not in TRAINING_FILE_KEYS]  # fmt: skip
    problems += [f"specs: unknown field {key!r}; allowed: {TRAINING_FIELDS}"
                 for key in raw["specs"] if key not in TRAINING_FIELDS]  # fmt: skip
    if not problems:
        try:
            condition = Condition("training file", dict(raw["specs"]))
        except ValueError as error:
            problems.append(str(error))
        else:
            problems += [f"held out: {p}" for p in held_out_overlap(condition, task)]
    if problems:
        raise FileProblems(where, problems)
    return dict(raw["specs"])
