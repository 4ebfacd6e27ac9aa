"""The per-layer hyperparameters that agents set: one `Knob` object each.

A knob is everything the library needs to hand one per-layer hyperparameter to the layer
agents, in one place:

* its name and the bounds of its values;
* its discrete action factors, which multiply its *coordinate*: the value itself for the
  learning rate and weight decay, and 1 - momentum for momentum (so that factors below 1
  raise momentum towards 1 and factors above 1 lower it towards 0, on a log scale as for
  the LR);
* where its initial value comes from (`initial`: a condition field for the LR, an env
  setting for the others; `default` where the env has no setting of that name);
* the observation columns it adds when it is not the first knob: log10 of its coordinate
  and ln of the factor it last asked for;
* how the engine applies it (`update`: a change to an SGD step's direction, e.g. adding
  weight decay, or a momentum buffer; the LR scales the step and needs none);
* the key of a torch optimizer's param group it is written to (`group_key`), which is how
  `GannoScheduler` sets it in a user's loop.

The env argument `controls` names the knobs agents set, the LR first: `("lr",)` (the
default, every earlier env and policy) or `("lr", "momentum")`, `("lr", "weight_decay")`,
`("lr", "momentum", "weight_decay")`. A new knob is a new entry in `KNOBS` (and its
columns in the env's feature table); the env, the decision core, the engine, policies, the
RLlib module and the scheduler read everything from here. The LR knob's factors and bounds
are the env's `lr_factors` and `lr_bounds`, the names users already know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ganno_env.features import Feature, feature_bounds, feature_names

# A knob's change to an SGD step's direction [elements], given the weights, the knob's
# per-element values and a dict of state the knob may keep between steps (one per trainer).
Update = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True)
class Knob:
    """One per-layer hyperparameter that agents can set. See the module docstring."""

    name: str
    doc: str
    bounds: tuple[float, float]  # of the value
    factors: tuple[float, ...]  # discrete actions: multipliers of the coordinate
    initial: str  # the condition field or env setting that gives the initial value
    group_key: str  # its key in a torch optimizer's param group
    default: float = 0.0  # the initial value where no env setting is called `initial`
    one_minus: bool = False  # the coordinate is 1 - value (momentum), else the value
    update: Update | None = None  # how the engine applies it; None: it scales the step (LR)
    optimizers: tuple[str, ...] = ("sgd", "adam")  # base optimisers it works with
    columns: tuple[Feature, ...] = field(default=(), compare=False)

    def coordinate(self, values: Any) -> np.ndarray:
        """What the factors multiply: the values, or 1 - values."""
        values = np.asarray(values, dtype=np.float64)
        return 1.0 - values if self.one_minus else values

    def value(self, coordinates: Any) -> np.ndarray:
        """The values of coordinates (the inverse of `coordinate`)."""
        coordinates = np.asarray(coordinates, dtype=np.float64)
        return 1.0 - coordinates if self.one_minus else coordinates

    def coordinate_bounds(self, bounds: Sequence[float] | None = None) -> tuple[float, float]:
        """(low, high) of the coordinate for value bounds (default: the knob's)."""
        low, high = sorted(float(c) for c in self.coordinate(bounds or self.bounds))
        return low, high


def _momentum_update(
    direction: torch.Tensor, weights: torch.Tensor, momentum: torch.Tensor, state: dict
) -> torch.Tensor:
    """SGD momentum with a value per element, as `torch.optim.SGD` computes it: an element's
    buffer starts as its direction at the first step with momentum > 0, and while its
    momentum is 0 it takes the plain direction and leaves its buffer alone.

    The engine passes the same `momentum` tensor for a whole interval, so which case
    applies (momentum nowhere, everywhere, or in some elements) is worked out once per
    interval, and the two common cases take a short path."""
    if "buffer" not in state:
        state["buffer"] = torch.zeros_like(direction)
        state["started"] = torch.zeros_like(direction)  # 1 where the buffer exists
    buffer, started = state["buffer"], state["started"]
    if momentum is not state.get("momentum"):  # new values: a new interval
        on = momentum > 0
        state["momentum"], state["on"] = momentum, on
        state["case"] = "none" if not bool(on.any()) else "mixed"
        if bool(on.all()) and bool((started > 0).all()):
            state["case"] = "all"
    if state["case"] == "none":
        return direction
    if state["case"] == "all":
        return buffer.mul_(momentum).add_(direction)
    on = state["on"]
    moved = torch.where(started > 0, buffer * momentum + direction, direction)
    buffer.copy_(torch.where(on, moved, buffer))
    started.copy_(torch.where(on, 1.0, started))
    if bool(on.all()):  # every buffer exists now
        state["case"] = "all"
    return torch.where(on, buffer, direction)


def _weight_decay_update(
    direction: torch.Tensor, weights: torch.Tensor, weight_decay: torch.Tensor, state: dict
) -> torch.Tensor:
    """L2 weight decay, as `torch.optim.SGD` and `Adam` apply it: gradient + wd x weights."""
    return torch.addcmul(direction, weight_decay, weights)


def _columns(name: str, coordinate: str, low: float, high: float) -> tuple[Feature, ...]:
    return (
        Feature(f"log10_{coordinate}", low, high, f"log10 of the layer's {coordinate}"),
        Feature(f"last_log_factor_{name}", -5.0, 5.0, f"ln of the {name} factor last chosen"),
    )


KNOBS: Mapping[str, Knob] = {
    "lr": Knob(
        name="lr",
        doc="the learning rate; its columns are in every feature set (features.py)",
        bounds=(1e-7, 10.0),
        factors=(0.5, 0.8, 1.0, 1.25, 2.0),
        initial="initial_lr",
        group_key="lr",
    ),
    # engine order: weight decay changes the gradient before momentum sees it, as in torch
    "weight_decay": Knob(
        name="weight_decay",
        doc="L2 weight decay added to the gradient (coupled, as torch's SGD and Adam)",
        bounds=(1e-6, 0.1),
        factors=(0.1, 1.0, 10.0),
        initial="weight_decay",
        group_key="weight_decay",
        update=_weight_decay_update,
        columns=_columns("weight_decay", "weight_decay", -6.0, -1.0),
    ),
    "momentum": Knob(
        name="momentum",
        doc="SGD momentum; factors multiply 1 - momentum (0.5: halve the distance to 1)",
        bounds=(0.0, 0.99),
        factors=(0.5, 1.0, 2.0),
        initial="momentum",
        group_key="momentum",
        one_minus=True,
        update=_momentum_update,
        optimizers=("sgd",),
        columns=_columns("momentum", "one_minus_momentum", -2.0, 0.0),
    ),
}
FIRST = "lr"  # every `controls` starts with it: the env's LR features and rewards assume it


def get_knobs(controls: Any) -> tuple[Knob, ...]:
    """The knobs of a `controls` setting, LR first; ValueError naming what is allowed."""
    allowed = f"a tuple of knob names starting with {FIRST!r}, from {sorted(KNOBS)}"
    if isinstance(controls, (str, bytes)) or not isinstance(controls, Sequence):
        raise ValueError(f"controls={controls!r}; allowed: {allowed}, e.g. ('lr', 'momentum')")
    names = list(controls)
    unknown = [name for name in names if name not in KNOBS]
    if unknown or not names or names[0] != FIRST or len(set(names)) != len(names):
        raise ValueError(f"controls={controls!r}; allowed: {allowed}, each at most once")
    return tuple(KNOBS[name] for name in names)


def engine_order(knobs: Sequence[Knob]) -> tuple[Knob, ...]:
    """The knobs with an engine update, in the order `KNOBS` lists them (the order torch's
    optimizers apply them in), whatever the order of `controls`."""
    names = {knob.name for knob in knobs}
    return tuple(knob for knob in KNOBS.values() if knob.name in names and knob.update)


def knob_columns(knobs: Sequence[Knob]) -> tuple[Feature, ...]:
    """The observation columns the knobs after the first add, in `controls` order."""
    return tuple(column for knob in knobs[1:] for column in knob.columns)


def observation_names(features_version: int, controls: Sequence[str]) -> tuple[str, ...]:
    """Names of the observation's numbers: the feature set's, then the knobs' columns."""
    extra = knob_columns(get_knobs(controls))
    return feature_names(features_version) + tuple(column.name for column in extra)


def observation_bounds(
    features_version: int, controls: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 arrays of the observation: the feature set's, then the knobs'."""
    low, high = feature_bounds(features_version)
    extra = knob_columns(get_knobs(controls))
    low = np.concatenate([low, np.array([c.low for c in extra], dtype=np.float32)])
    high = np.concatenate([high, np.array([c.high for c in extra], dtype=np.float32)])
    return low, high


@dataclass(frozen=True)
class Control:
    """A knob as an env or a policy sets it: its action factors and value bounds (the LR's
    are the env's `lr_factors` and `lr_bounds`; the other knobs' their own)."""

    knob: Knob
    factors: tuple[float, ...]
    bounds: tuple[float, float]

    @property
    def name(self) -> str:
        return self.knob.name


def make_controls(
    controls: Sequence[str],
    lr_factors: Sequence[float],
    lr_bounds: Sequence[float],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Control, ...]:
    """The `Control` of every knob in `controls`: the LR's from `lr_factors` and
    `lr_bounds`, the others' from `settings[name]` (`{"factors": ..., "bounds": ...}`, as
    a policy file records them) or else the knob's own."""
    settings = settings or {}
    made = []
    for knob in get_knobs(controls):
        if knob.name == FIRST:
            factors, bounds = lr_factors, lr_bounds
        else:
            own = settings.get(knob.name, {})
            factors, bounds = own.get("factors", knob.factors), own.get("bounds", knob.bounds)
        low, high = bounds
        made.append(Control(knob, tuple(float(f) for f in factors), (float(low), float(high))))
    return tuple(made)


def control_settings(controls: Sequence[Control]) -> dict[str, dict[str, list[float]]]:
    """The factors and bounds of the knobs after the first, as a policy file records them."""
    return {c.name: {"factors": list(c.factors), "bounds": list(c.bounds)} for c in controls[1:]}
