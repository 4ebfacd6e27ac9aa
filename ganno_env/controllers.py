"""Hand-made learning-rate controllers that act through the public env API.

A controller maps the env's per-agent observations and infos to actions, so learned and
hand-made schedules run through the same code (`ganno_env.rollout`). Each controller names
the `action_mode` it needs: schedules that follow a formula use `"log_lr"` (set the LR
itself); the others use the default multiplicative `"discrete"` actions.

Schedules are written for decision t = 0 .. T-1 (T = `max_cycles`): the LR chosen at t is
used for the t-th interval. `lr0` is each layer's initial LR (from the reset infos).

A controller also says which env it can drive: `env_requirements()` are the settings that
give its actions their meaning (the action mode; for a trained policy also its LR factors
and bounds), which an env must match exactly (`check_env`, called at every reset), and
`env_defaults()` the settings it was made for that a caller may change (a policy's
`interval` and `max_cycles`). `ganno_env.rollout.make_env` builds the env from both.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ganno_env.features import FEATURES_VERSION, feature_names


def log_lr_action(lr: float, lr_bounds: Sequence[float]) -> np.ndarray:
    """The `log_lr` action [1] that sets `lr`, kept inside `lr_bounds`: its log10 in float32,
    taken with `math.log10` (numpy's can differ in the last bit)."""
    low, high = lr_bounds
    return np.array([math.log10(min(max(lr, low), high))], np.float32)


class Controller(ABC):
    """Chooses every live agent's action from what the env shows."""

    name = "controller"
    action_mode = "log_lr"

    def env_requirements(self) -> dict[str, Any]:
        """Env settings that give the actions their meaning: an env must match them."""
        return {"action_mode": self.action_mode}

    def env_defaults(self) -> dict[str, Any]:
        """Env settings the controller was made for that a caller may change."""
        return {}

    def check_env(self, config: Any) -> None:
        """ValueError naming both values when an env config differs from the requirements.

        Without it a mismatch shows up later as an action outside the space, a numpy
        broadcast error, or (for equal lengths) actions that silently mean other factors.
        """
        requirements = self.env_requirements()
        knobs = tuple(requirements.get("controls", ("lr",)))
        if tuple(getattr(config, "controls", ("lr",))) != knobs:
            raise ValueError(
                f"env controls={tuple(config.controls)!r} but controller {self.name!r} sets "
                f"{knobs!r}; build the env with ganno_env.rollout.make_env(controller, ...)"
            )
        for key, needed in requirements.items():
            used = getattr(config, key)
            if not same_setting(used, needed):
                raise ValueError(
                    f"env {key}={_plain(used)!r} but controller {self.name!r} needs "
                    f"{key}={_plain(needed)!r}; build the env with "
                    "ganno_env.rollout.make_env(controller, ...)"
                )

    def reset(self, env: Any, observations: dict, infos: dict) -> None:
        """Start of an episode: check the env, remember the initial LRs and the horizon."""
        self.check_env(env.config)
        self.env = env
        self.horizon = env.config.max_cycles
        self.t = 0
        self.lr0 = {agent: info["lr"] for agent, info in infos.items()}

    def act(self, observations: dict, infos: dict) -> dict:
        """Actions for the live agents; advances the decision counter."""
        actions = self.choose(observations, infos)
        self.t += 1
        return actions

    @abstractmethod
    def choose(self, observations: dict, infos: dict) -> dict: ...

    def set_lrs(self, lrs: dict[str, float]) -> dict[str, np.ndarray]:
        """`log_lr` actions that set each agent's LR, kept inside the env's bounds."""
        return {a: log_lr_action(lr, self.env.config.lr_bounds) for a, lr in lrs.items()}

    def describe(self) -> str:
        """Name and parameters, for reports."""
        params = {k: v for k, v in vars(self).items() if k in getattr(self, "params", ())}
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in params.items())})"


class ScheduleController(Controller):
    """A schedule that multiplies each layer's initial LR by `multiplier(t, T)`."""

    @abstractmethod
    def multiplier(self, t: int, horizon: int) -> float: ...

    def choose(self, observations: dict, infos: dict) -> dict:
        m = self.multiplier(self.t, self.horizon)
        return self.set_lrs({agent: self.lr0[agent] * m for agent in observations})


class Constant(ScheduleController):
    """The initial LR throughout."""

    name = "constant"

    def multiplier(self, t: int, horizon: int) -> float:
        return 1.0


class StepDecay(ScheduleController):
    """Multiply by `gamma` at each milestone (fractions of the run)."""

    name = "step_decay"
    params = ("gamma", "milestones")

    def __init__(self, gamma: float = 0.1, milestones: tuple[float, ...] = (0.5, 0.75)):
        self.gamma, self.milestones = gamma, milestones

    def multiplier(self, t: int, horizon: int) -> float:
        return self.gamma ** sum(t >= m * horizon for m in self.milestones)


class ExponentialDecay(ScheduleController):
    """Decay geometrically to `final` x lr0 at the last decision."""

    name = "exponential_decay"
    params = ("final",)

    def __init__(self, final: float = 0.01):
        self.final = final

    def multiplier(self, t: int, horizon: int) -> float:
        return self.final ** (t / max(horizon - 1, 1))


class CosineAnnealing(ScheduleController):
    """lr0 x (floor + (1 - floor) (1 + cos(pi t / T)) / 2): half a cosine down to floor."""

    name = "cosine"
    params = ("floor",)

    def __init__(self, floor: float = 0.0):
        self.floor = floor

    def multiplier(self, t: int, horizon: int) -> float:
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t / horizon))


class WarmupCosine(ScheduleController):
    """Linear warm-up from lr0 / warmup_steps over `warmup` of the run, then cosine to 0."""

    name = "warmup_cosine"
    params = ("warmup",)

    def __init__(self, warmup: float = 0.1):
        self.warmup = warmup

    def multiplier(self, t: int, horizon: int) -> float:
        steps = max(1, round(self.warmup * horizon))
        if t < steps:
            return (t + 1) / steps
        progress = (t - steps) / max(horizon - steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class ReduceOnPlateau(Controller):
    """Cut the LR by `factor` when val loss has not improved by `threshold` (relative)
    for `patience` decisions, like torch.optim.lr_scheduler.ReduceLROnPlateau."""

    name = "reduce_on_plateau"
    params = ("factor", "patience", "threshold")

    def __init__(self, factor: float = 0.5, patience: int = 2, threshold: float = 1e-3):
        self.factor, self.patience, self.threshold = factor, patience, threshold

    def reset(self, env: Any, observations: dict, infos: dict) -> None:
        super().reset(env, observations, infos)
        self.lr = dict(self.lr0)
        self.best = {}
        self.bad = {}

    def choose(self, observations: dict, infos: dict) -> dict:
        for agent in observations:
            loss = infos[agent]["val_loss"]
            best = self.best.get(agent, math.inf)
            if loss < best * (1.0 - self.threshold):
                self.best[agent], self.bad[agent] = loss, 0
            else:
                self.bad[agent] = self.bad.get(agent, 0) + 1
                if self.bad[agent] > self.patience:
                    self.lr[agent] *= self.factor
                    self.bad[agent] = 0
        return self.set_lrs({agent: self.lr[agent] for agent in observations})


class BoldDriver(Controller):
    """Grow the LR by `up` while val loss falls, cut it by `down` when it rises."""

    name = "bold_driver"
    params = ("up", "down")

    def __init__(self, up: float = 1.25, down: float = 0.5):
        self.up, self.down = up, down

    def reset(self, env: Any, observations: dict, infos: dict) -> None:
        super().reset(env, observations, infos)
        self.lr = dict(self.lr0)
        self.previous = {agent: info["val_loss"] for agent, info in infos.items()}

    def choose(self, observations: dict, infos: dict) -> dict:
        for agent in observations:
            loss = infos[agent]["val_loss"]
            if self.t > 0:
                self.lr[agent] = float(self.next_lr(self.lr[agent], loss < self.previous[agent]))
            self.previous[agent] = loss
        return self.set_lrs({agent: self.lr[agent] for agent in observations})

    def next_lr(self, lr: Any, fell: Any) -> Any:
        """The rule: the LR times `up` where the val loss fell over the last interval, times
        `down` where it did not (numbers or arrays; the bold-driver twin calls it too)."""
        return lr * np.where(fell, self.up, self.down)


class LayerwiseTrustRatio(Controller):
    """LARS-like: layer j gets lr0 x r_j / mean(r) with r_j = |w_j| / |g_j| per element,
    recomputed every decision from the observations, so the network's mean LR stays lr0
    and layers with small gradients relative to their weights move faster.

    |w| / |g| is read from the observations of the env's features version (any version
    works, so it runs on old envs too): with features v2 from the step-ratio feature
    (lr |g| / |w|) and the layer's LR, with v1 from log10 weight and gradient RMS."""

    name = "lars"

    def reset(self, env: Any, observations: dict, infos: dict) -> None:
        super().reset(env, observations, infos)
        version = getattr(env.config, "features_version", FEATURES_VERSION)
        self.names = feature_names(version)

    def trust_ratio(self, observation: np.ndarray, lr: float) -> float:
        """|w| / |g| of a layer from its observation (in the env's features version)."""
        if "log10_step_ratio" in self.names:
            return lr / 10.0 ** float(observation[self.names.index("log10_step_ratio")])
        log_w = float(observation[self.names.index("log10_weight_rms")])
        return 10.0 ** (log_w - float(observation[self.names.index("log10_grad_rms")]))

    def choose(self, observations: dict, infos: dict) -> dict:
        ratios = {a: self.trust_ratio(o, infos[a]["lr"]) for a, o in observations.items()}
        by_network: dict[int, list[str]] = {}
        for agent in observations:
            by_network.setdefault(infos[agent]["network"], []).append(agent)
        lrs = {}
        for agents in by_network.values():
            mean = float(np.mean([ratios[a] for a in agents]))
            for a in agents:
                lrs[a] = self.lr0[a] * ratios[a] / mean
        return self.set_lrs(lrs)


class RandomFactors(Controller):
    """Uniformly random discrete action for every layer (seeded)."""

    name = "random"
    action_mode = "discrete"
    params = ("seed",)

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def choose(self, observations: dict, infos: dict) -> dict:
        return {a: int(self.rng.integers(self.env.action_space(a).n)) for a in observations}


def same_setting(a: Any, b: Any) -> bool:
    """Equal env settings: numbers and number sequences up to float rounding, names and
    sequences of names (`controls`) exactly."""
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return a == b
    if _names(a) or _names(b):
        return _names(a) and _names(b) and tuple(a) == tuple(b)
    try:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=1e-9, atol=0.0))


def _plain(value: Any) -> Any:
    """Sequences as tuples of floats (or of names), for messages that read like the env's
    kwargs."""
    if _names(value):
        return tuple(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(float(v) for v in value)
    return value


def _names(value: Any) -> bool:
    """A non-empty sequence of strings, such as `controls`."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, str) for v in value)
    )


HAND_MADE = {
    cls.name: cls
    for cls in (
        Constant,
        StepDecay,
        ExponentialDecay,
        CosineAnnealing,
        WarmupCosine,
        ReduceOnPlateau,
        BoldDriver,
        LayerwiseTrustRatio,
        RandomFactors,
    )
}


def make_controller(name: str, **params: Any) -> Controller:
    """A hand-made controller by name; ValueError lists the names."""
    if name not in HAND_MADE:
        raise ValueError(f"controller={name!r} is unknown; known: {sorted(HAND_MADE)}")
    return HAND_MADE[name](**params)
