"""One decision of the layer agents: the code that the env and `GannoScheduler` share.

A decision reads top to bottom: the statistics of the interval just trained and its losses
-> observations -> the agents' actions -> new per-layer LRs -> caps and safe values for the
losses that the next observations and rewards use. `DecisionCore` holds what that needs
from one decision to the next and is the only code that does it, so a change to an
observation or to the LR arithmetic lands once and the scheduler keeps seeing exactly what
the agents saw in training. It knows nothing of PettingZoo or torch optimizers; it takes
numbers and returns numbers:

* the env (`ganno_env.layerwise_lr`) is a shell that adds the trainer, agent ids, action
  checks, rewards, terminations and infos;
* `GannoScheduler` is a shell that adds the gradient statistics of a user's loop, the
  policy's forward pass and the optimizer's param groups.

Every state array has a leading population axis N ([N, L] per layer, [N] per network); the
scheduler is the case N=1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ganno_env.conditions import is_finite_number
from ganno_env.features import (
    FEATURES_VERSION,
    FeatureReference,
    LayerStats,
    feature_set,
    observation_features,
)
from ganno_env.knobs import Control, knob_columns, make_controls


@dataclass(frozen=True)
class Measurement:
    """What one interval's measurement decided, per network [N]."""

    observations: np.ndarray  # [N, L, F] for the next actions
    previous_val_loss: np.ndarray  # the capped val loss before the interval
    val_loss: np.ndarray  # the capped val loss now; networks not live keep theirs
    diverged_now: np.ndarray  # bool: live networks that reached the cap for the first time


class DecisionCore:
    """Per-network decision state and the arithmetic of every decision.

    Arguments are the settings the agents were trained with: `action_mode` ("discrete",
    "continuous" or "log_lr"), `lr_factors`, `lr_bounds`, `divergence_factor` (the cap on
    the val loss, times the initial one), `max_cycles` (what `progress` counts up to),
    `features_version` (the observation feature set the agents read, `FEATURE_SETS`) and
    `controls`, the knobs the agents set (`ganno_env.knobs`; the LR first, whose factors
    and bounds are `lr_factors` and `lr_bounds`), with `knob_settings` the factors and
    bounds of the others where they are not the knobs' own. `max_step_ratio` (None: off)
    is a safety net: no layer's LR in force exceeds the LR at which one SGD step would
    change its weights by that fraction (`lr * grad_rms / weight_rms`, the step ratio
    feature, from the latest statistics), whatever the agents ask: set to the largest
    step ratio that training shows, no step beyond that can be taken. `probe_cuts_only`:
    at the first decision (the probe: one gradient, no update, no loss change seen yet) an
    LR may be cut or kept but not raised; a raise waits for the first interval's evidence.
    `fallback_step_ratio` (None: off): a network any of whose layers' step ratio, at the LR
    in force or at the one its agents ask for, exceeds it has left the support the agents
    were trained on, where their actions mean nothing; at that decision every layer's LR is
    cut from the one in force by the smallest LR factor instead, as many times as it takes
    to bring every layer's step back within it. `step_clip` (None: off) acts on every
    optimiser step, not at decisions: a layer whose step would change its weights by more
    than that fraction (`step_clip_scale`) takes the step scaled down to it, while its LR
    stays as the agents set it; a clip on the update's size as in Adafactor and LARS,
    against the few steps that kill a network between two decisions.

    State, set by `start` (None before): `values` and `last_log_factors` [N, L, K] (one
    column per knob; `lrs` and `last_log_factor` are the LR's); `initial_val_loss`, `cap`,
    `val_loss`, `train_loss` [N] (capped, finite); `diverged` [N]; `feature_reference`;
    `observations` [N, L, F], the latest; `lr_ceiling` [N, L], the highest LR the safety
    net allows now (inf when off); `fallback_lr` [N, L], the LR above which a layer's step
    triggers the fallback (inf when off); `decisions`, the actions applied so far.
    `state_dict` / `load_state_dict` save and restore it.
    """

    def __init__(
        self,
        action_mode: str,
        lr_factors: Sequence[float],
        lr_bounds: Sequence[float],
        divergence_factor: float,
        max_cycles: int,
        features_version: int = FEATURES_VERSION,
        controls: Sequence[str] = ("lr",),
        knob_settings: Mapping[str, Mapping[str, Any]] | None = None,
        max_step_ratio: float | None = None,
        probe_cuts_only: bool = False,
        fallback_step_ratio: float | None = None,
        step_clip: float | None = None,
    ):
        feature_set(features_version)  # ValueError naming the known versions
        self.features_version = int(features_version)
        self.action_mode = action_mode
        self.controls: tuple[Control, ...] = make_controls(
            controls, lr_factors, lr_bounds, knob_settings
        )
        self.lr_factors = np.asarray(lr_factors, dtype=np.float64)
        low, high = lr_bounds
        self.lr_bounds = (float(low), float(high))
        self.divergence_factor = float(divergence_factor)
        self.max_cycles = int(max_cycles)
        self.max_step_ratio = None if max_step_ratio is None else float(max_step_ratio)
        self.probe_cuts_only = bool(probe_cuts_only)
        self.fallback_step_ratio = (
            None if fallback_step_ratio is None else float(fallback_step_ratio)
        )
        check_fallback_factors(self.fallback_step_ratio, lr_factors)
        if step_clip is not None and not (is_finite_number(step_clip) and step_clip > 0):
            raise ValueError(f"step_clip={step_clip!r}; allowed: None or a finite number > 0")
        self.step_clip = None if step_clip is None else float(step_clip)
        self.decisions = 0
        self.values: np.ndarray | None = None
        self.last_log_factors: np.ndarray | None = None
        self.initial_val_loss: np.ndarray | None = None
        self.cap: np.ndarray | None = None
        self.val_loss: np.ndarray | None = None
        self.train_loss: np.ndarray | None = None
        self.diverged: np.ndarray | None = None
        self.feature_reference: FeatureReference | None = None
        self.observations: np.ndarray | None = None
        self.lr_ceiling: np.ndarray | None = None
        self.fallback_lr: np.ndarray | None = None

    @property
    def lrs(self) -> np.ndarray | None:
        """The LRs [N, L]: the first knob's values."""
        return None if self.values is None else self.values[..., 0]

    @property
    def last_log_factor(self) -> np.ndarray | None:
        """ln of the LR factor each layer last asked for [N, L]."""
        return None if self.last_log_factors is None else self.last_log_factors[..., 0]

    def knob_values(self, name: str) -> np.ndarray | None:
        """The values [N, L] of the knob called `name` (one of `controls`)."""
        names = [c.name for c in self.controls]
        if name not in names:
            raise ValueError(f"knob {name!r} is not controlled here; controls: {names}")
        return None if self.values is None else self.values[..., names.index(name)]

    def action_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The intervals [K] of a Box action's numbers, one per knob (`box_action_ranges`);
        the env's action space and the scheduler both use them."""
        return box_action_ranges(self.action_mode, self.controls)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """A copy of the decision state: tensors (the arrays, exactly) and plain Python values.

        It saves with `torch.save` and loads with `torch.load(weights_only=True)`, so a
        training run can stop at any step and go on in another process with the same
        decisions. The settings (action mode, factors, bounds, ...) are not in it: they come
        from the policy.
        """
        reference = self.feature_reference
        return {
            "decisions": int(self.decisions),
            **{name: _tensor(getattr(self, name)) for name in _STATE_ARRAYS},
            "feature_reference": None
            if reference is None
            else {name: _tensor(getattr(reference, name)) for name in _REFERENCE_ARRAYS},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (arrays back to numpy, with their dtypes).

        A state saved before knobs existed (`lrs` and `last_log_factor` [N, L]) loads as
        the LR's column."""
        if "values" not in state and "lrs" in state:
            state = {**state, **{new: _column(state[old]) for old, new in _OLD_NAMES.items()}}
        for name in ("lr_ceiling", "fallback_lr"):  # saved before the safety net, fallback
            if name not in state and "values" in state:
                state = {**state, name: _no_ceiling(state["values"])}
        missing = sorted({"decisions", "feature_reference", *_STATE_ARRAYS} - set(state))
        if missing:
            raise ValueError(f"decision state lacks {missing}; pass what state_dict() returned")
        self.decisions = int(state["decisions"])
        for name in _STATE_ARRAYS:
            setattr(self, name, _array(state[name]))
        reference = state["feature_reference"]
        self.feature_reference = (
            None
            if reference is None
            else FeatureReference(**{name: _array(reference[name]) for name in _REFERENCE_ARRAYS})
        )

    # ------------------------------------------------- statistics -> observations
    def start(self, values: Any, stats: LayerStats, train_loss: Any, val_loss: Any) -> np.ndarray:
        """The first decision, before any update: observations [N, L, F] of the probe.

        `values` are the initial values of the knobs: [N, L, K], or the initial LRs [N, L]
        when the LR is the only knob; each is clipped to its knob's bounds. `stats` are the
        probe gradient's statistics, `train_loss` and `val_loss` [N] the probe's loss and
        the val loss as measured (any value). The val loss sets the reference of the loss
        features and the cap; a non-finite or non-positive one uses 1.0, so no feature is
        ever NaN.
        """
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 2:
            values = values[..., None]
        if values.shape[-1] != len(self.controls):
            raise ValueError(
                f"start() got values for {values.shape[-1]} knobs; controls are "
                f"{[c.name for c in self.controls]}"
            )
        lows = np.array([c.bounds[0] for c in self.controls])
        highs = np.array([c.bounds[1] for c in self.controls])
        self.values = np.clip(values, lows, highs)
        self.last_log_factors = np.zeros(self.values.shape)
        self.decisions = 0
        val_loss = np.asarray(val_loss, dtype=np.float64)
        self.initial_val_loss = np.where(np.isfinite(val_loss) & (val_loss > 0), val_loss, 1.0)
        self.cap = self.divergence_factor * self.initial_val_loss
        self.val_loss = np.minimum(self.initial_val_loss, self.cap)
        self.train_loss = self.safe(train_loss)
        self.diverged = np.zeros(len(val_loss), dtype=bool)
        self.feature_reference = FeatureReference.at_start(self.lrs, stats)
        self.lr_ceiling = self._ceiling(stats, self.max_step_ratio)
        self.fallback_lr = self._ceiling(stats, self.fallback_step_ratio)
        ones = np.ones(len(val_loss))
        return self._observe(stats, ones, 0 * ones)

    def measure(
        self, stats: LayerStats, train_loss: Any, val_loss: Any, live: np.ndarray | None = None
    ) -> Measurement:
        """After an interval: cap its losses, update the state, observe for the next actions.

        `train_loss` (the interval's mean) and `val_loss` are [N] as measured (any value).
        Networks not `live` (default: all live) keep their losses. A live network whose val
        loss reaches the cap or is not finite diverges; it is reported once.
        """
        val_loss = np.asarray(val_loss, dtype=np.float64)
        live = self._live(live)
        crossed = ~np.isfinite(val_loss) | (val_loss >= self.cap)
        diverged_now = live & crossed & ~self.diverged
        capped = np.where(live, self.safe(val_loss), self.val_loss)
        previous, self.val_loss = self.val_loss, capped
        self.train_loss = np.where(live, self.safe(train_loss), self.train_loss)
        self.diverged |= diverged_now
        self.lr_ceiling = np.where(
            live[:, None], self._ceiling(stats, self.max_step_ratio), self.lr_ceiling
        )
        self.fallback_lr = np.where(
            live[:, None], self._ceiling(stats, self.fallback_step_ratio), self.fallback_lr
        )
        observations = self._observe(
            stats, self.val_loss / self.initial_val_loss, np.log(capped) - np.log(previous)
        )
        return Measurement(observations, previous, capped, diverged_now)

    def _observe(
        self, stats: LayerStats, val_ratio: np.ndarray, val_change: np.ndarray
    ) -> np.ndarray:
        """The agents' observations [N, L, F]: the feature set (`observation_features`), then
        each further knob's columns (log10 of its coordinate, its last log-factor)."""
        observations = observation_features(
            self.lrs, stats, self.feature_reference, self.train_loss / self.initial_val_loss,
            val_ratio, val_change, min(self.decisions / self.max_cycles, 1.0),
            self.last_log_factor, self.features_version,
        )  # fmt: skip
        if len(self.controls) > 1:
            per_knob = [
                np.stack([np.log10(c.knob.coordinate(self.values[..., k])),
                          self.last_log_factors[..., k]], -1)
                for k, c in enumerate(self.controls) if k > 0
            ]  # fmt: skip
            columns = knob_columns([c.knob for c in self.controls])
            low, high = [c.low for c in columns], [c.high for c in columns]
            knob_observations = np.clip(np.concatenate(per_knob, -1), low, high)
            observations = np.concatenate([observations, knob_observations.astype(np.float32)], -1)
        self.observations = observations
        return self.observations

    # ----------------------------------------------- actions -> new knob values
    def apply_actions(
        self, values: Mapping[tuple[int, int], Any], live: np.ndarray | None = None
    ) -> np.ndarray:
        """New knob values from the actions' values; returns the new LRs [N, L].

        `values` maps (network, layer) to an in-space action's value: one number when the LR
        is the only knob, else one per knob (see `requested_lr`, applied to each knob's
        coordinate). A layer without one keeps its values, and networks not `live` keep all
        of theirs. Each knob's coordinate is clipped to its bounds; `last_log_factors`
        records what each layer asked for, before clipping.
        """
        single = len(self.controls) == 1
        current = np.stack(
            [c.knob.coordinate(self.values[..., k]) for k, c in enumerate(self.controls)], -1
        )
        requested = current.copy()
        for (i, j), value in values.items():
            parts = [value] if single else list(value)
            for k, (control, part) in enumerate(zip(self.controls, parts)):
                requested[i, j, k] = requested_lr(
                    requested[i, j, k], self.action_mode, part, control.factors
                )
        bounds = [c.knob.coordinate_bounds(c.bounds) for c in self.controls]
        clipped = np.clip(requested, [b[0] for b in bounds], [b[1] for b in bounds])
        new_values = np.stack(
            [c.knob.value(clipped[..., k]) for k, c in enumerate(self.controls)], -1
        )
        # values of unchanged coordinates stay bit for bit (1 - (1 - m) may round)
        new_values = np.where(clipped == current, self.values, new_values)
        # the safety net holds every LR in force under its ceiling, a kept one too
        new_values[..., 0] = np.minimum(new_values[..., 0], self.lr_ceiling)
        if self.probe_cuts_only and self.decisions == 0:  # no raise before any evidence
            new_values[..., 0] = np.minimum(new_values[..., 0], self.values[..., 0])
        # outside the training support, in force or asked for: the network is cut back
        outside = (self.values[..., 0] > self.fallback_lr).any(1) | (
            new_values[..., 0] > self.fallback_lr
        ).any(1)
        if outside.any():
            cut = np.minimum(self._back_inside(outside), self.lr_ceiling)  # the net holds
            new_values[..., 0] = np.where(outside[:, None], cut, new_values[..., 0])
        live = self._live(live)[:, None, None]
        self.last_log_factors = np.log(requested / current)
        self.values = np.where(live, new_values, self.values)
        self.decisions += 1
        return self.lrs

    def _back_inside(self, outside: np.ndarray) -> np.ndarray:
        """The LRs [N, L] of the `outside` networks cut by the smallest LR factor on every
        layer, as many times as it takes to bring each layer's step within the fallback's
        step ratio at the latest statistics (or to the lower LR bound); the others' as
        they are."""
        lrs = self.values[..., 0].copy()
        factor, low = self.lr_factors.min(), self.lr_bounds[0]
        cutting = outside.copy()
        while cutting.any():
            lrs[cutting] = np.maximum(lrs[cutting] * factor, low)
            cutting &= ((lrs > self.fallback_lr) & (lrs > low)).any(1)
        return lrs

    # ------------------------------------------------------ caps and safe values
    def _ceiling(self, stats: LayerStats, step_ratio: float | None) -> np.ndarray:
        """The LR [N, L] whose step ratio after these statistics is `step_ratio` (the safety
        net's ceiling, the fallback's threshold), never below the lower LR bound; inf when
        `step_ratio` is None (off)."""
        if step_ratio is None:  # no copy off the device for nothing
            return np.full(tuple(stats.weight_rms.shape), np.inf)
        weight_rms = _array(stats.weight_rms).astype(np.float64)
        grad_rms = _array(stats.grad_rms).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ceiling = step_ratio * weight_rms / grad_rms
        ceiling = np.where(np.isfinite(ceiling), ceiling, np.inf)  # no gradient: no ceiling
        return np.maximum(ceiling, self.lr_bounds[0])

    def safe(self, losses: Any) -> np.ndarray:
        """Losses [N] for features, rewards and infos: non-finite or huge ones become the cap."""
        losses = np.asarray(losses, dtype=np.float64)
        return np.where(np.isfinite(losses), np.minimum(losses, self.cap), self.cap)

    def _live(self, live: np.ndarray | None) -> np.ndarray:
        return np.ones(len(self.values), dtype=bool) if live is None else live


_STATE_ARRAYS = (
    "values",
    "last_log_factors",
    "initial_val_loss",
    "cap",
    "val_loss",
    "train_loss",
    "diverged",
    "observations",
    "lr_ceiling",
    "fallback_lr",
)
_REFERENCE_ARRAYS = ("lrs", "weight_rms", "grad_rms")
_OLD_NAMES = {"lrs": "values", "last_log_factor": "last_log_factors"}  # before knobs


def _column(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """An LR-only state array [N, L] as the knob arrays [N, L, 1]."""
    return None if tensor is None else tensor[..., None]


def _no_ceiling(values: torch.Tensor | None) -> torch.Tensor | None:
    """`lr_ceiling` or `fallback_lr` for a state saved before them: inf for every layer."""
    return None if values is None else torch.full(values.shape[:2], float("inf"))


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    """A CPU tensor copy of a state array, same dtype and values (None stays None)."""
    return None if array is None else torch.from_numpy(np.array(array, copy=True))


def _array(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().cpu().numpy().copy()


def step_ratio(lrs: torch.Tensor, grad_sq: torch.Tensor, weight_sq: torch.Tensor) -> torch.Tensor:
    """Each layer's step ratio [N, L] for one optimiser step, `lr * rms(grad) / rms(weight)`
    (the plain SGD step's relative size), from the layer's sums of squares."""
    return lrs * (grad_sq / weight_sq).sqrt()


def step_clip_scale(ratio: torch.Tensor, step_clip: float) -> torch.Tensor:
    """The factor [N, L] (at most 1) on each layer's LR for one step under the step clip: it
    brings a step ratio (`step_ratio`) above `step_clip` down to it. Where the ratio is
    within it, or is not a finite number (a layer with zero weights, a diverged network),
    the factor is 1. The engine and `GannoScheduler` both call it, so a clipped step is the
    same in training, benchmark and a user's loop."""
    clipped = (ratio > step_clip) & torch.isfinite(ratio)
    return torch.where(clipped, step_clip / ratio, torch.ones_like(ratio))


def check_fallback_factors(step_ratio: float | None, lr_factors: Sequence[float]) -> None:
    """ValueError when the fallback is on (`step_ratio` not None) but no LR factor below 1
    is there for it to cut by; the env's config, the decision core and `add_fallback` ask."""
    factors = [float(f) for f in lr_factors]
    if step_ratio is not None and min(factors) >= 1.0:
        raise ValueError(
            f"fallback_step_ratio={step_ratio!r} cuts by the smallest LR factor, but "
            f"lr_factors={factors!r} has none below 1; allowed: factors with one below 1, "
            "or fallback_step_ratio=None"
        )


def box_action_range(
    action_mode: str, lr_factors: Sequence[float], lr_bounds: Sequence[float]
) -> tuple[float, float]:
    """The interval of a Box action's number for one knob: log10 of its bounds (log_lr) or
    ln of its smallest and largest factor (continuous)."""
    if action_mode == "log_lr":
        low, high = np.log10(lr_bounds)
    else:
        low, high = np.log(np.min(lr_factors)), np.log(np.max(lr_factors))
    return low, high


def box_action_ranges(
    action_mode: str, controls: Sequence[Control]
) -> tuple[np.ndarray, np.ndarray]:
    """The intervals [K] of a Box action's numbers, one per knob (`box_action_range` of its
    factors and coordinate bounds). The env's space, the scheduler and a policy's clipping
    of its own outputs all read them from here."""
    ranges = [
        box_action_range(action_mode, c.factors, c.knob.coordinate_bounds(c.bounds))
        for c in controls
    ]
    return np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges])


def requested_lr(lr: float, action_mode: str, value: Any, lr_factors: Any) -> float:
    """The LR an in-space action asks for, before clipping to the LR bounds.

    `value` is the action's index (discrete) or its number, inside the Box (continuous:
    ln of the factor; log_lr: log10 of the LR).
    """
    if action_mode == "discrete":
        return lr * float(lr_factors[int(value)])
    if action_mode == "log_lr":
        return 10.0**value
    return lr * float(np.exp(value))
