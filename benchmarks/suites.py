"""Benchmark suites: versioned sets of held-out conditions, seeds and episode settings.

(`heldin` is the exception: the main job's training conditions on seeds training never
draws, so that a policy's result there is the baseline for its generalisation gap.)

A suite file names its version, its conditions, the seeds (>= 1,000,000, never used in
training) and the oracle's LR grid. Seed s of a condition always gives the same initial
conditions, so every controller starts each run from exactly the same LR, weights and data
order as every other.

The package's suites live in `benchmarks/suites/NAME.json`; `load_suite` also takes a path
to a suite file anywhere on disk. A suite lists condition names of a conditions file, or
defines its conditions inline with the `specs` schema of `conditions_v0.json`::

    {"version": "mine_v0",
     "conditions": {"big_lr": {"specs": {"initial_lr": {"choice": [0.5, 2.0]}},
                               "description": "my LRs", "env": {"max_cycles": 80}}},
     "task": "digits_mlp", "env": {"max_cycles": 40, "interval": 25},
     "seeds": [1000000, 1000001, 1000002], "oracle_grid": [0.001, 0.01, 0.1]}

Only "version" and "conditions" are required. An inline condition may set its own episode
settings ("env"), e.g. a longer horizon or momentum. Every problem of a file is found before
any run and reported one line each (`SuiteError`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganno_env.conditions import (
    CONDITIONS_VERSION,
    HELD_OUT_SEED_START,
    TRAINING_FIELDS,
    Condition,
    FileProblems,
    get_condition,
    in_support,
    is_finite_number,
    load_conditions,
    spec_problems,
    support,
)
from ganno_env.config import ENV_DEFAULTS
from ganno_env.datasets import dataset_available
from ganno_env.tasks import TASKS, get_task

# Keys of a suite file; the first two are required.
SUITE_KEYS = (
    "version",
    "conditions",
    "description",
    "conditions_version",
    "task",
    "env",
    "seeds",
    "oracle_grid",
    "target_factor",
    "tuned_baselines",
)
INLINE_KEYS = ("specs", "description", "env")
# Episode settings a suite (or one of its conditions) may set; the rest belong to the
# controller (action mode, factors, bounds), the runner (population, device) or a condition.
SUITE_ENV_KEYS = (
    "max_cycles",
    "interval",
    "optimizer",
    "momentum",
    "val_limit",
    "divergence_factor",
    "data_dir",
)
DEFAULT_SEEDS = tuple(range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + 10))
DEFAULT_ORACLE_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
FILE_DATASETS = ("fashion_mnist", "mnist", "cifar10")  # read from files, not bundled
# Seeds and inline conditions may not fix the seed: the suite's seeds set it per run.
SPEC_FIELDS = TRAINING_FIELDS


class SuiteError(FileProblems):
    """A suite that cannot run; the message has one line per problem."""


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
    inline: Mapping[str, Condition] = field(default_factory=dict)  # conditions defined here
    condition_env: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tuned_baselines: bool = False  # run cosine_tuned and warmup_cosine_tuned by default

    def with_seeds(self, count: int) -> Suite:
        """The first `count` seeds (a quicker run of the same suite)."""
        if not 1 <= count <= len(self.seeds):
            raise ValueError(f"--seeds {count}; allowed: 1..{len(self.seeds)} for {self.name}")
        return Suite(**{**self.__dict__, "seeds": self.seeds[:count]})

    def condition(self, name: str) -> Condition:
        """A condition of the suite: defined inline, else from its conditions file."""
        if name in self.inline:
            return self.inline[name]
        return get_condition(name, self.conditions_version)

    def env_for(self, condition: str) -> dict[str, Any]:
        """The episode settings of one condition's runs: the suite's, then its own."""
        return {**self.env, **self.condition_env.get(condition, {})}

    def content_hash(self) -> str:
        """Hash of what the suite's runs are made from: version, task, env settings and each
        condition's content (its specs, or a mixture's parts and weights) and episode
        settings, so an edited suite or condition invalidates old results. Seeds and oracle
        LRs are part of each result's own key, and the name, description and report
        settings change no result, so they are left out.
        """
        content = {
            "version": self.version,
            "conditions_version": self.conditions_version,
            "task": self.task,
            "env": _without_data_dir(self.env),
            "conditions": {name: self.condition(name).content() for name in self.conditions},
        }
        # where the data files lie changes no result: data_dir is left out
        envs = {name: _without_data_dir(self.condition_env[name]) for name in self.conditions
                if _without_data_dir(self.condition_env.get(name, {}))}  # fmt: skip
        if envs:  # only then, so suites without per-condition settings keep their hashes
            content["condition_env"] = envs
        return digest(content)

    def initial_conditions(self, condition: str, seed: int) -> dict[str, Any]:
        """Explicit initial conditions of one run (every field fixed)."""
        drawn = self.condition(condition).sample(np.random.default_rng(seed), seed)
        values = drawn.to_dict()
        values["task"] = values["task"] or self.task
        return values

    def tasks_of(self, condition: str) -> list[str]:
        """The tasks a condition's runs train on."""
        return [t or self.task for t in self.condition(condition).values_of("task") or [None]]

    def unavailable(self) -> dict[str, str]:
        """Conditions whose data files are missing, with the reason (CIFAR-10 without its
        files): the runner skips them and the report says so."""
        missing = {}
        for name in self.conditions:
            folder = self.env_for(name).get("data_dir")
            for task in self.tasks_of(name):
                data = get_task(task).data
                if not dataset_available(data, folder):
                    where = f"in {folder}" if folder else "found (no data folder given)"
                    missing[name] = (
                        f"the {data} files of task {task} are not {where}; give their folder "
                        "with --data-dir"
                    )
                    break
        return missing

    def with_data_dir(self, folder: str | os.PathLike[str]) -> Suite:
        """The suite reading data files from `folder` for the conditions whose files are
        there (MNIST, CIFAR-10, or Fashion-MNIST in another place than Debian's). The
        results keep their keys: where the files lie is no part of a run's inputs."""
        folder = str(Path(folder).expanduser())
        condition_env = {name: dict(env) for name, env in self.condition_env.items()}
        for name in self.conditions:
            datas = {get_task(task).data for task in self.tasks_of(name)}
            if all(data in FILE_DATASETS and dataset_available(data, folder) for data in datas):
                condition_env.setdefault(name, {})["data_dir"] = folder
        return Suite(**{**self.__dict__, "condition_env": condition_env})


# Not importlib.resources: torchrl installs a top-level `benchmarks` namespace folder of its
# own, which can shadow this package's data files.
SUITES_DIR = Path(__file__).parent / "suites"


def suite_names() -> list[str]:
    """The suites shipped in benchmarks/suites/."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


def load_suite(name_or_path: str | os.PathLike[str]) -> Suite:
    """A shipped suite by name, or a suite file by path; SuiteError lists every problem."""
    text = str(name_or_path)
    if text in suite_names():
        path, name = SUITES_DIR / f"{text}.json", text
    elif text.endswith(".json") or os.sep in text or Path(text).exists():
        path, name = Path(text), Path(text).stem
        if not path.is_file():
            raise ValueError(f"suite file {text!r} does not exist; allowed: a .json suite file")
    else:
        raise ValueError(
            f"suite={text!r} is unknown; allowed: a shipped suite {suite_names()} or a path "
            "to a .json suite file"
        )
    try:
        raw = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys)
    except (json.JSONDecodeError, _DuplicateKey) as error:
        raise SuiteError(str(path), [f"not valid suite JSON: {error}"]) from None
    return parse_suite(raw, name, where=str(path))


def parse_suite(raw: Any, name: str, where: str = "suite") -> Suite:
    """A checked `Suite` from a suite file's content."""
    problems = check_suite(raw)
    if problems:
        raise SuiteError(where, problems)
    conditions = raw["conditions"]
    inline, condition_env = {}, {}
    if isinstance(conditions, Mapping):
        for cond, entry in conditions.items():
            inline[cond] = Condition(cond, entry["specs"], entry.get("description", ""), True)
            if entry.get("env"):
                condition_env[cond] = dict(entry["env"])
    return Suite(
        name=name,
        version=raw["version"],
        description=raw.get("description", ""),
        conditions_version=raw.get("conditions_version", CONDITIONS_VERSION),
        task=raw.get("task", ENV_DEFAULTS["task"]),
        env=dict(raw.get("env", {})),
        seeds=tuple(int(s) for s in raw.get("seeds", DEFAULT_SEEDS)),
        conditions=tuple(conditions),
        oracle_grid=tuple(float(lr) for lr in raw.get("oracle_grid", DEFAULT_ORACLE_GRID)),
        target_factor=float(raw.get("target_factor", 2.0)),
        inline=inline,
        condition_env=condition_env,
        tuned_baselines=bool(raw.get("tuned_baselines", False)),
    )


def check_suite(raw: Any) -> list[str]:
    """Every problem of a suite file's content, one line each ([] when it can run)."""
    if not isinstance(raw, Mapping):
        return [f"a suite is a JSON object with keys {SUITE_KEYS}; got {type(raw).__name__}"]
    problems = [f"unknown key {key!r}; allowed: {SUITE_KEYS}" for key in raw
                if key not in SUITE_KEYS]  # fmt: skip
    for key in SUITE_KEYS[:2]:
        if key not in raw:
            problems.append(f"missing key {key!r} (required: 'version', 'conditions')")
    version = raw.get("version", "v")
    if not isinstance(version, str) or not version.strip():
        problems.append(f"version={version!r}; allowed: a non-empty string, e.g. 'mine_v0'")
    for key in ("description",):
        if not isinstance(raw.get(key, ""), str):
            problems.append(f"{key}={raw[key]!r}; allowed: a string")
    task = raw.get("task", ENV_DEFAULTS["task"])
    problems += _task_problems("task", task)
    problems += _env_problems("env", raw.get("env", {}))
    problems += _seed_problems(raw.get("seeds", list(DEFAULT_SEEDS)))
    problems += _grid_problems(raw.get("oracle_grid", list(DEFAULT_ORACLE_GRID)))
    factor = raw.get("target_factor", 2.0)
    if not is_finite_number(factor) or factor <= 1:
        problems.append(f"target_factor={factor!r}; allowed: a number > 1")
    if not isinstance(raw.get("tuned_baselines", False), bool):
        problems.append(f"tuned_baselines={raw['tuned_baselines']!r}; allowed: true or false")
    version_of_conditions = raw.get("conditions_version", CONDITIONS_VERSION)
    try:
        known = load_conditions(version_of_conditions)
    except (FileNotFoundError, ValueError, TypeError):
        problems.append(f"conditions_version={version_of_conditions!r} is not a conditions file "
                        f"of the package; allowed: {CONDITIONS_VERSION!r}")  # fmt: skip
        known = {}
    problems += _condition_problems(raw.get("conditions"), known) if "conditions" in raw else []
    return problems


def _condition_problems(conditions: Any, known: Mapping[str, Condition]) -> list[str]:
    if isinstance(conditions, list):
        if not conditions:
            return ["conditions=[] is empty; allowed: condition names, or inline conditions"]
        problems, seen = [], set()
        for name in conditions:
            if not isinstance(name, str):
                problems.append(f"condition {name!r}; allowed: a condition name (str)")
                continue
            if name in seen:
                problems.append(f"condition {name!r} is listed twice")
            elif name not in known:
                problems.append(f"condition {name!r} is unknown; known: {sorted(known)}")
            seen.add(name)
        return problems
    if not isinstance(conditions, Mapping) or not conditions:
        return [f"conditions={conditions!r}; allowed: a non-empty list of condition names, or "
                '{"NAME": {"specs": {...}, "description": "..."}} (inline conditions)']  # fmt: skip
    problems = []
    for name, entry in conditions.items():
        where = f"condition {name!r}"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: {entry!r}; allowed: {{'specs': {{...}}, ...}}")
            continue
        problems += [f"{where}: unknown key {key!r}; allowed: {INLINE_KEYS}" for key in entry
                     if key not in INLINE_KEYS]  # fmt: skip
        if "specs" not in entry:
            problems.append(f"{where}: missing key 'specs'")
        elif not isinstance(entry["specs"], Mapping):
            problems.append(f"{where}: specs={entry['specs']!r}; allowed: an object of fields")
        else:
            for key, spec in entry["specs"].items():
                problems += [f"{where}: {key}: {p}" for p in _spec_problems(key, spec)]
        if not isinstance(entry.get("description", ""), str):
            problems.append(f"{where}: description={entry['description']!r}; allowed: a string")
        problems += _env_problems(f"{where}: env", entry.get("env", {}))
    return problems


def _spec_problems(key: str, spec: Any) -> list[str]:
    """A field spec's problems; tasks must be known ones."""
    if key not in SPEC_FIELDS:
        return [f"unknown field; allowed: {SPEC_FIELDS} (the suite's seeds set the seed)"]
    problems = spec_problems(key, spec)
    if key == "task" and not problems:
        for value in support(spec):
            problems += _task_problems("task", value)
    return problems


def _task_problems(where: str, task: Any) -> list[str]:
    if not isinstance(task, str) or task not in TASKS:
        return [f"{where}={task!r} is unknown; known tasks: {sorted(TASKS)}"]
    return []


def _env_problems(where: str, env: Any) -> list[str]:
    if not isinstance(env, Mapping):
        return [f"{where}={env!r}; allowed: an object with keys from {SUITE_ENV_KEYS}"]
    problems = [f"{where}: unknown key {key!r}; allowed: {SUITE_ENV_KEYS}" for key in env
                if key not in SUITE_ENV_KEYS]  # fmt: skip
    if problems:
        return problems
    from ganno_env.config import EnvConfig

    try:
        EnvConfig(**{k: v for k, v in env.items() if k != "data_dir"})
    except (ValueError, TypeError) as error:
        problems.append(f"{where}: {error}")
    if "data_dir" in env and not isinstance(env["data_dir"], str):
        problems.append(f"{where}: data_dir={env['data_dir']!r}; allowed: a folder path (str)")
    return problems


def _seed_problems(seeds: Any) -> list[str]:
    if not isinstance(seeds, list) or not seeds:
        return [f"seeds={seeds!r}; allowed: a non-empty list of ints >= {HELD_OUT_SEED_START}"]
    problems = []
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            problems.append(f"seed {seed!r}; allowed: an int >= {HELD_OUT_SEED_START}")
        elif seed < HELD_OUT_SEED_START:
            problems.append(
                f"seed {seed} is below {HELD_OUT_SEED_START:,}; allowed: seeds >= "
                f"{HELD_OUT_SEED_START:,}, which training never draws"
            )
    repeated = sorted({s for s in seeds if isinstance(s, int) and seeds.count(s) > 1})
    if repeated:
        problems.append(f"seeds {repeated} are listed twice; allowed: distinct seeds")
    return problems


def _grid_problems(grid: Any) -> list[str]:
    if (
        not isinstance(grid, list)
        or not grid
        or not all(is_finite_number(lr) and lr > 0 for lr in grid)
        or len(set(grid)) != len(grid)
    ):
        return [f"oracle_grid={grid!r}; allowed: a non-empty list of distinct LRs > 0"]
    return []


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a key written twice (two conditions of one name) is an error,
    not silently the last one."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"{key!r} is defined twice")
        out[key] = value
    return out


# ---------------------------------------------------------------- what "harder" means

# What the presets train on (`rllib_configs.ppo.local`: train_wide on digits_mlp with the
# env's default episode), the yardstick of `differences_from_training`.
TRAINING_TASK = "digits_mlp"
TRAINING_CONDITION = "train_wide"
TRAINING_STEPS = ENV_DEFAULTS["max_cycles"] * ENV_DEFAULTS["interval"]
TRAINING_REFERENCE = (
    "the presets' `train_wide` on digits_mlp (8x8 digits, MLP with 3 hidden layers of width "
    "32-128), initial LR 1e-4..0.3, batch 16-128, init scale 0.3-2.5, plain SGD, "
    f"{TRAINING_STEPS:,} steps (40 decisions x 25)"
)


def differences_from_training(suite: Suite, condition: str) -> list[str]:
    """In what way a condition lies outside what the presets train on: data, architecture,
    depth, width, batch, init scale, initial LR, steps and optimiser (empty: it does not)."""
    train = get_condition(TRAINING_CONDITION)
    base = get_task(TRAINING_TASK)
    specs = suite.condition(condition).specs
    env = suite.env_for(condition)
    out = []
    tasks = [get_task(t) for t in suite.tasks_of(condition)]
    data = sorted({t.data for t in tasks if t.data != base.data})
    if data:
        out.append(f"data {', '.join(data)} (training: {base.data})")
    archs = sorted({t.arch for t in tasks if t.arch != base.arch})
    if archs:
        out.append(f"{', '.join(a.upper() for a in archs)} (training: {base.arch.upper()})")

    def outside(key: str, defaults: list[Any], trained: Any = None) -> list[Any]:
        """The condition's values of `key` that training never takes (`trained`: the
        training task's value where the training condition leaves the field alone)."""
        values = suite.condition(condition).values_of(key) if key in specs else defaults
        spec = train.specs.get(key, defaults[0] if trained is None else trained)
        return [v for v in values if not in_support(spec, v)]

    depth = outside("depth", sorted({t.depth for t in tasks}), base.depth)
    if depth and all(t.arch == "mlp" for t in tasks):
        out.append(f"depth {_listed(depth)} hidden layers (training: {base.depth})")
    if all(t.arch == "mlp" for t in tasks):
        width = outside("width", sorted({t.width for t in tasks}))
        if width:
            out.append(f"width {_listed(width)} (training: {_range(train, 'width')})")
    batch = outside("batch_size", sorted({t.batch_size for t in tasks}))
    if batch:
        out.append(f"batch {_listed(batch)} (training: {_range(train, 'batch_size')})")
    scale = outside("init_scale", [1.0])
    if scale:
        out.append(f"init scale {_listed(scale)} (training: {_range(train, 'init_scale')})")
    lrs = outside("initial_lr", [specs.get("initial_lr", 0.01)])
    if lrs:
        out.append(f"initial LR {_listed(lrs)} (training: {_range(train, 'initial_lr')})")
    steps = env.get("max_cycles", ENV_DEFAULTS["max_cycles"]) * env.get(
        "interval", ENV_DEFAULTS["interval"]
    )
    if steps != TRAINING_STEPS:
        out.append(f"{steps:,} steps (training: {TRAINING_STEPS:,})")
    if env.get("optimizer", "sgd") != "sgd":
        out.append(f"{env['optimizer']} (training: SGD)")
    elif env.get("momentum", 0.0):
        out.append(f"SGD with momentum {env['momentum']:g} (training: plain SGD)")
    return out


def _without_data_dir(env: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k != "data_dir"}


def _listed(values: list[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _range(condition: Condition, key: str) -> str:
    values = condition.values_of(key)
    spec = condition.specs.get(key)
    if isinstance(spec, Mapping) and next(iter(spec)) != "choice":
        return f"{values[0]:g}..{values[1]:g}"
    return _listed(values)
