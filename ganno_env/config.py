"""The env's keyword arguments, checked up front.

Every check raises `ValueError` naming the key, the bad value and what is allowed, before
any data is loaded or any network is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

import torch

from ganno_env.conditions import (
    DEFAULT_INITIAL_LR,
    Condition,
    check_condition_values,
    check_lrs_in_bounds,
    get_condition,
)
from ganno_env.decision import check_fallback_factors
from ganno_env.engine import OPTIMIZERS
from ganno_env.features import FEATURES_VERSION, feature_set
from ganno_env.knobs import Knob, get_knobs
from ganno_env.tasks import Task, get_task

ACTION_MODES = ("discrete", "continuous", "log_lr")
REWARD_MODES = ("log_improvement", "final", "vs_bold_driver", "vs_siblings")
RENDER_MODES = (None, "ansi", "human")


@dataclass(frozen=True)
class EnvConfig:
    """All settings of a `layerwise_lr` env. See the env module's docstring for each key."""

    task: str | Task = "digits_mlp"
    conditions: str | Mapping[str, Any] = "train"
    initial_lr: float | Sequence[float] | None = None
    population: int = 1
    siblings: int = 1
    max_cycles: int = 40
    interval: int = 25
    lr_factors: Sequence[float] = (0.5, 0.8, 1.0, 1.25, 2.0)
    lr_bounds: Sequence[float] = (1e-7, 10.0)
    action_mode: str = "discrete"
    reward: str = "log_improvement"
    divergence_factor: float = 10.0
    max_layers: int | None = None
    device: str = "cpu"
    render_mode: str | None = None
    optimizer: str = "sgd"
    momentum: float = 0.0
    data_dir: str | None = None
    val_limit: int | None = 1000
    num_threads: int | None = None
    features_version: int = FEATURES_VERSION
    controls: Sequence[str] = ("lr",)
    weight_decay: float = 0.0
    max_step_ratio: float | None = None
    probe_cuts_only: bool = False
    fallback_step_ratio: float | None = None
    step_clip: float | None = None

    def __post_init__(self) -> None:
        feature_set(self.features_version)  # ValueError naming the known versions
        _check_int("population", self.population, 1)
        _check_int("siblings", self.siblings, 1)
        if self.population % self.siblings:
            raise ValueError(
                f"siblings={self.siblings!r} with population={self.population!r}; allowed: "
                "a number of siblings that divides the population"
            )
        if self.reward == "vs_siblings" and self.siblings < 2:
            raise ValueError(
                f"reward='vs_siblings' with siblings={self.siblings!r}; allowed: siblings >= 2 "
                "(each network's reward is measured against its siblings')"
            )
        _check_int("max_cycles", self.max_cycles, 1)
        _check_int("interval", self.interval, 1)
        if self.max_layers is not None:
            _check_int("max_layers", self.max_layers, 1)
        if self.num_threads is not None:
            _check_int("num_threads", self.num_threads, 1)
        if self.val_limit is not None:
            _check_int("val_limit", self.val_limit, 1)
        factors = self.lr_factors
        if (
            isinstance(factors, (str, bytes))
            or not isinstance(factors, Sequence)
            or len(factors) < 1
            or not all(_positive(f) for f in factors)
        ):
            raise ValueError(
                f"lr_factors={factors!r}; allowed: a non-empty sequence of finite numbers > 0"
            )
        bounds = self.lr_bounds
        if (
            isinstance(bounds, (str, bytes))
            or not isinstance(bounds, Sequence)
            or len(bounds) != 2
            or not all(_positive(b) for b in bounds)
            or not bounds[0] < bounds[1]
        ):
            raise ValueError(
                f"lr_bounds={bounds!r}; allowed: (low, high) with 0 < low < high, both finite"
            )
        _check_choice("action_mode", self.action_mode, ACTION_MODES)
        _check_choice("reward", self.reward, REWARD_MODES)
        _check_choice("render_mode", self.render_mode, RENDER_MODES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not _number(self.divergence_factor) or not self.divergence_factor > 1.0:
            raise ValueError(
                f"divergence_factor={self.divergence_factor!r}; allowed: a finite number > 1"
            )
        if not _number(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum!r}; allowed: a number in [0, 1)")
        if not _number(self.weight_decay) or not self.weight_decay >= 0.0:
            raise ValueError(f"weight_decay={self.weight_decay!r}; allowed: a number >= 0")
        if self.max_step_ratio is not None and not _positive(self.max_step_ratio):
            raise ValueError(
                f"max_step_ratio={self.max_step_ratio!r}; allowed: None (no ceiling) or a "
                "finite number > 0"
            )
        if self.fallback_step_ratio is not None and not _positive(self.fallback_step_ratio):
            raise ValueError(
                f"fallback_step_ratio={self.fallback_step_ratio!r}; allowed: None (no "
                "fallback) or a finite number > 0"
            )
        check_fallback_factors(self.fallback_step_ratio, self.lr_factors)
        if self.step_clip is not None and not _positive(self.step_clip):
            raise ValueError(
                f"step_clip={self.step_clip!r}; allowed: None (no clip) or a finite number > 0"
            )
        if not isinstance(self.probe_cuts_only, bool):
            raise ValueError(f"probe_cuts_only={self.probe_cuts_only!r}; allowed: True or False")
        if self.initial_lr is not None:
            check_condition_values({"initial_lr": self.initial_lr}, "initial_lr")
        check_device(self.device)
        if not isinstance(self.task, (str, Task)):
            raise ValueError(f"task={self.task!r}; allowed: a task name or a ganno_env.Task")
        get_task(self.task)
        if not isinstance(self.conditions, (str, Mapping)):
            raise ValueError(
                f"conditions={self.conditions!r}; allowed: a condition name or a dict of "
                "field values or specs"
            )
        if isinstance(self.conditions, str):
            get_condition(self.conditions)
        else:
            self.condition()  # ValueError naming a bad field, value or spec
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir={self.data_dir!r}; allowed: a folder path (str) or None")
        self._check_initial_lrs()
        self._check_controls()

    def _check_controls(self) -> None:
        """Known knobs, LR first, each working with the base optimiser and starting from a
        setting inside its bounds (the LR's: `_check_initial_lrs`)."""
        knobs = get_knobs(self.controls)
        object.__setattr__(self, "controls", tuple(self.controls))  # a list compares unequal
        if self.reward == "vs_bold_driver" and len(knobs) > 1:  # bold driver sets LRs only
            raise ValueError(
                f"reward='vs_bold_driver' with controls={self.controls!r}; allowed: "
                "controls=('lr',) (the bold-driver twin sets nothing but the LR)"
            )
        for knob in knobs[1:]:
            if self.optimizer not in knob.optimizers:
                raise ValueError(
                    f"controls={tuple(self.controls)!r} with optimizer={self.optimizer!r}; "
                    f"allowed: the {knob.name} knob with optimizer in {knob.optimizers}"
                )
            initial, (low, high) = self.knob_setting(knob), knob.bounds
            if not low <= initial <= high and initial != 0.0:
                raise ValueError(
                    f"{knob.initial}={initial!r} is where the {knob.name} knob starts; allowed: "
                    f"[{low:g}, {high:g}] (or 0, which starts it at its lower bound)"
                )

    def knob_setting(self, knob: Knob) -> float:
        """The value a knob after the LR starts from (or keeps, where agents do not set it):
        the env setting called `knob.initial`, else the knob's default."""
        return float(getattr(self, knob.initial, knob.default))

    def _check_initial_lrs(self) -> None:
        """Every initial LR the env can start from lies inside `lr_bounds` (else ValueError).

        `initial_lr` overrides the condition's; a condition's spec is checked over all it can
        draw. Reset options are checked at reset.
        """
        if self.initial_lr is not None:
            check_lrs_in_bounds(self.initial_lr, self.lr_bounds, "initial_lr")
            return
        spec = self.condition().specs.get("initial_lr", DEFAULT_INITIAL_LR)
        named = isinstance(self.conditions, str)
        where = f"conditions={self.conditions!r}" if named else "conditions"
        check_lrs_in_bounds(spec, self.lr_bounds, where)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> EnvConfig:
        """Like EnvConfig(**kwargs), but an unknown key is a ValueError listing the known."""
        known = tuple(f.name for f in fields(cls))
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"unknown env argument(s) {unknown}; allowed: {known}")
        return cls(**kwargs)

    def condition(self) -> Condition:
        """The condition episodes are drawn from: a named one, or a dict of field values
        or specs (`{"initial_lr": {"log_uniform": [1e-4, 0.3]}}`, as in the conditions file)."""
        if isinstance(self.conditions, str):
            return get_condition(self.conditions)
        return Condition("custom", dict(self.conditions))


# Every env default, read from the dataclass: the CLI, the policy export and the training
# metadata take their defaults from here, so a default lives in one place.
ENV_DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: f.default for f in fields(EnvConfig)})


def check_device(device: Any) -> None:
    """A device string torch understands and this machine has."""
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device={device!r}; allowed: 'cpu', 'cuda', 'cuda:N'")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device={device!r}; allowed: 'cpu', 'cuda', 'cuda:N'") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}; allowed: 'cpu', 'cuda', 'cuda:N'")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but torch finds no CUDA device; use 'cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}; allowed indices: 0..{torch.cuda.device_count() - 1}"
            )


def _check_int(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key}={value!r}; allowed: an int >= {low}")


def _check_choice(key: str, value: Any, allowed: tuple) -> None:
    if not any(value == a and type(value) is type(a) for a in allowed):
        raise ValueError(f"{key}={value!r}; allowed: {allowed}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0
