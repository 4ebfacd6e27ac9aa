"""A trained GANNO policy as a learning-rate scheduler for an ordinary PyTorch training loop.

`GannoScheduler` lets the layer agents of a trained `policy.pt` set the per-layer learning
rates of your own model and optimizer, outside the env. It sees what the agents saw in
training: the same layers (`ganno_env.models.layer_groups`), the same statistics
(`ganno_env.features.layer_statistics`) and the same decision code as the env
(`ganno_env.decision.DecisionCore`: observations, LR arithmetic, clipping to the policy's
`lr_bounds`, caps on the losses), at the same rhythm: one decision before the first update,
then one every `interval` optimiser steps.

Call order: `scheduler.observe(loss)` goes after `loss.backward()` (and after any gradient
clipping or `GradScaler.unscale_`) and before `optimizer.step()`, every step::

    scheduler = GannoScheduler(optimizer, model, "policy.pt", val_loss_fn=val_loss)
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        scheduler.observe(loss)  # reads p.grad; on step 0 and every `interval` steps, sets LRs
        optimizer.step()         # applies this step's gradient with the LRs just set

`observe` adds this step's gradient to the interval's statistics. On the very first call it
first decides on the statistics of this one gradient (the env's probe), so a bad initial LR
can be cut before it is ever applied; every `interval` calls after that it decides on the
statistics of the interval just finished (weights now vs. at its start, the per-step
gradients, the mean train loss) and the current val loss, then counts this step's gradient
into the next interval, exactly as the env does. `optimizer.step()` without an `observe`
since the last step raises RuntimeError, as it would silently shift every decision.

Layers (agents): the model's parameters are grouped as in the env (`layer_groups`: a
Linear or Conv layer's weight and bias, plus any following parameters such as a norm's),
input to output. The scheduler then rewrites `optimizer.param_groups` into one group per
layer (or, for an optimizer built with several groups, e.g. weight decay on/off, one group
per original group and layer), each keeping its original group's hyper-parameters; an
optimizer that already has one group per layer is left as it is. Parameters live in their
groups, so optimizer state (momentum, Adam moments) is kept. The parameters of one layer
must start with the same LR; layers without parameters in the optimizer are not agents.
Build the scheduler before loading an optimizer state dict saved with it. A parameter shared
by several layers (tied weights) belongs to the first layer that uses it, as in the env.

Checkpoints: `state_dict()` holds everything the next decisions depend on (tensors and plain
Python values, for `torch.save` and `torch.load(weights_only=True)`); build model,
optimizer and scheduler as in the saved run, load the model's and the optimizer's state
dicts, then `load_state_dict(state)`, and the run goes on bit for bit as if never stopped
(on CPU), whatever step it was saved at. A state of another policy (by `policy_sha256`, the
hash of the policy's content) or of another model raises ValueError.

Val loss: `val_loss_fn()` returns a float (or a 0-d tensor); it is called once per decision,
under `torch.no_grad()`, and the value at the first decision is the reference "initial val
loss" of the loss-ratio features. Switch `model.eval()`/`model.train()` inside it if the
model has dropout or batch norm. Without `val_loss_fn` the interval's mean train loss
stands in for the val loss (the first step's loss at the first decision).

Defaults come from the policy: `interval` and `max_cycles` from its file when it records
them (`payload["extra"]`), else the env's 25 and 40. `progress` is decisions taken /
`max_cycles`, kept at 1 past the horizon the policy was trained for. Val losses above
`divergence_factor` (10) x the initial one are capped as in the env; the scheduler warns
once and keeps going (the env would have ended the episode there). The optimizer's LRs at
the first `observe` must lie inside the policy's `lr_bounds` (ValueError otherwise): the env
refuses such initial LRs too, rather than clip them and train at another LR than the one set.

A policy whose agents set more than the LR (`controls`, `ganno_env.knobs`) sets each of its
knobs the same way, in the param-group key the knob names (`momentum`, `weight_decay`): the
optimizer must have that key (SGD has both; Adam has no `momentum`), and the knob starts from
the group's value (a weight decay of 0 starts at the knob's lower bound, as in the env).
`history` then holds each knob's values under its name.

Works with any optimizer whose param groups have an `lr` (SGD with or without momentum,
Adam, AdamW, ...), on any device: statistics stay on the parameters' device and are read back
once per decision. Extra memory: four float32 copies of the parameters (gradient sum and
sum of squares, the interval's start weights, the last interval's mean gradient).

A model deeper or shallower than the policy's training networks works with the `shared`
and `grouped` mappings; a `per_layer` policy serves only up to the depth it was trained on
and raises ValueError otherwise. A policy trained on an older env version gets the
observation features of that version (`features_version` in its file: v1 for
`layerwise_lr_v0`); files that are not GANNO policies, or that name an env or features
version this package does not serve, raise ValueError when loaded.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import nn

from ganno_env.config import ENV_DEFAULTS
from ganno_env.decision import DecisionCore, step_clip_scale, step_ratio
from ganno_env.features import FeatureReference, LayerStats, layer_statistics, sum_sq
from ganno_env.models import layer_groups
from ganno_env.policy import (
    PolicyController,
    check_policy_actions,
    load_policy,
    module_for,
    policy_sha256,
    recorded_setting,
)

# The env's defaults, for policies whose file does not record their own pace.
DEFAULT_INTERVAL = ENV_DEFAULTS["interval"]
DEFAULT_MAX_CYCLES = ENV_DEFAULTS["max_cycles"]
DEFAULT_DIVERGENCE_FACTOR = ENV_DEFAULTS["divergence_factor"]
STATE_FORMAT = 1  # of `GannoScheduler.state_dict()`
_STATE_KEYS = (
    "format", "policy_sha256", "controller", "greedy", "policy_rng", "layer_names",
    "param_shapes", "interval", "max_cycles", "steps", "interval_steps", "observed",
    "loss_sum", "start", "grad_sum", "grad_sq_sum", "previous_mean_grad", "core", "history",
)  # fmt: skip


class GannoScheduler:
    """Per-layer LRs from a trained GANNO policy; call `observe(loss)` before each step.

    Arguments:
        optimizer: any `torch.optim.Optimizer` whose param groups have `lr`; its groups are
            rewritten into per-layer groups (see the module docstring).
        model: the `nn.Module` the optimizer trains; it defines the layers.
        policy: path to `policy.pt`, `"pretrained"` (the policy shipped in the package), or
            a loaded `PolicyController` (`load_policy`).
        interval: optimiser steps per decision; default: the policy's, else 25.
        val_loss_fn: `() -> float`, the current val loss, called once per decision; None:
            the interval's mean train loss stands in.
        max_cycles: decisions the `progress` feature counts up to; default: the policy's,
            else 40.

    After each decision `lrs` holds the per-layer LRs, `observations` the [layers, F]
    features the policy saw (the feature set of the policy's env version), and `history`
    one dict per decision (step, lrs, actions, train_loss, val_loss as the features used
    them). `policy_sha256` names the policy; `state_dict()` / `load_state_dict()` checkpoint
    the scheduler. Under a policy's step clip (`add_step_clip`), `observe` also sets each
    step's param-group LRs to the LRs in force times the clip's factor for that step's
    gradient, so `get_last_lr()` shows what the step used and `lrs` what the policy set.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        policy: str | os.PathLike | PolicyController = "policy.pt",
        interval: int | None = None,
        val_loss_fn: Callable[[], float] | None = None,
        max_cycles: int | None = None,
    ):
        if isinstance(policy, PolicyController):
            self.controller = policy
        else:
            self.controller = load_policy(policy)
        payload = self.controller.payload
        check_policy_actions(payload)
        self.policy_name = "the policy" if isinstance(policy, PolicyController) else repr(policy)
        self.policy_sha256 = policy_sha256(payload)
        self.interval = _positive_int(
            "interval", interval if interval is not None else _trained(payload, "interval")
        )
        self.max_cycles = _positive_int(
            "max_cycles", max_cycles if max_cycles is not None else _trained(payload, "max_cycles")
        )
        self.core = DecisionCore(
            payload["action_mode"],
            payload["lr_factors"],
            payload["lr_bounds"],
            _trained(payload, "divergence_factor"),
            self.max_cycles,
            self.controller.features_version,  # what the policy reads: its env version's
            [control.name for control in self.controller.controls],
            payload.get("knobs"),
            payload.get("max_step_ratio"),
            bool(payload.get("probe_cuts_only", False)),
            payload.get("fallback_step_ratio"),
            payload.get("step_clip"),
        )
        self.val_loss_fn = val_loss_fn
        self.optimizer = optimizer

        self.layer_names, self._params, self._group_index = _per_layer_groups(optimizer, model)
        self.num_layers = len(self._params)
        self._check_mapping()
        self._flat = [p for params in self._params for p in params]
        self._layer_of = [j for j, params in enumerate(self._params) for _ in params]

        self.steps = 0  # observe() calls so far
        self.observations: np.ndarray | None = None
        self.history: list[dict[str, Any]] = []
        self._start: list[torch.Tensor] | None = None
        self._grad_sum: list[torch.Tensor] = []
        self._grad_sq_sum: list[torch.Tensor] = []
        self._loss_sum: torch.Tensor | float = 0.0
        self._interval_steps = 0
        self._previous_mean_grad: list[torch.Tensor] | None = None
        self._observed = False
        self._hook = optimizer.register_step_pre_hook(self._check_order)

    # -------------------------------------------------------------------- API
    @torch.no_grad()
    def observe(self, loss: torch.Tensor | float) -> None:
        """Record this step's loss and gradients; decide on step 0 and every `interval` steps.

        Call it after `loss.backward()` and before `optimizer.step()`.
        """
        if self.steps == 0:
            self._first_decision(loss)
            self._start_interval()
        elif self._interval_steps == self.interval:
            self._interval_decision()
            self._start_interval()
        grads = self._grads()
        if self.core.step_clip is not None:
            self._clip_step(grads)
        torch._foreach_add_(self._grad_sum, grads)
        torch._foreach_addcmul_(self._grad_sq_sum, grads, grads)
        self._loss_sum = self._loss_sum + _detached(loss)
        self._interval_steps += 1
        self.steps += 1
        self._observed = True

    def get_last_lr(self) -> list[float]:
        """The LR of every optimizer param group (as torch's LR schedulers report it)."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def close(self) -> None:
        """Stop checking the call order (removes the optimizer hook); LRs stay as set."""
        self._hook.remove()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the next decisions depend on, as a copy, to checkpoint with the model.

        Tensors and plain Python values only: it saves with `torch.save` and loads with
        `torch.load(weights_only=True)`. It holds the interval's statistics so far (gradient
        sums, loss sum, steps, start weights), the last interval's mean gradient, the
        decision state (`DecisionCore.state_dict`: LRs, last factors, losses, cap, diverged,
        feature reference, decisions), the step count, `history`, the sampling state of a
        non-greedy policy, the settings `interval` and `max_cycles`, and what it must be
        loaded into: the policy (`policy_sha256`) and the model's layers and shapes.
        """
        controller = self.controller
        return {
            "format": STATE_FORMAT,
            "policy_sha256": self.policy_sha256,
            "controller": controller.name,
            "greedy": bool(controller.greedy),
            "policy_rng": controller.rng.get_state(),
            "layer_names": copy.deepcopy(self.layer_names),
            "param_shapes": self._param_shapes(),
            "interval": self.interval,
            "max_cycles": self.max_cycles,
            "steps": self.steps,
            "interval_steps": self._interval_steps,
            "observed": self._observed,
            "loss_sum": _clone(self._loss_sum),
            "start": _clone(self._start),
            "grad_sum": _clone(self._grad_sum),
            "grad_sq_sum": _clone(self._grad_sq_sum),
            "previous_mean_grad": _clone(self._previous_mean_grad),
            "core": self.core.state_dict(),
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`: the next `observe` acts as it would have in that run.

        Build the model, the optimizer and this scheduler as in the saved run, load the model
        and optimizer state dicts, then this one; the param groups get the saved LRs, and
        `interval` and `max_cycles` the saved values (as torch's LR schedulers do). Raises
        ValueError for a state of another policy (naming both sha256) or another model
        (naming both layers and shapes), before changing anything.
        """
        self._check_state(state)
        self.interval = int(state["interval"])
        self.max_cycles = int(state["max_cycles"])
        self.core.max_cycles = self.max_cycles
        self.controller.rng.set_state(state["policy_rng"])
        self.steps = int(state["steps"])
        self._interval_steps = int(state["interval_steps"])
        self._observed = bool(state["observed"])
        loss_sum = state["loss_sum"]
        self._loss_sum = loss_sum.clone() if isinstance(loss_sum, torch.Tensor) else loss_sum
        self._start = self._on_params(state["start"])
        self._grad_sum = self._on_params(state["grad_sum"]) or []
        self._grad_sq_sum = self._on_params(state["grad_sq_sum"]) or []
        self._previous_mean_grad = self._on_params(state["previous_mean_grad"])
        self.core.load_state_dict(state["core"])
        self.history = copy.deepcopy(list(state["history"]))
        core_obs = self.core.observations
        self.observations = None if core_obs is None else core_obs[0]
        if self.core.values is not None:
            self._write_values(self.core.values[0])

    def _check_state(self, state: Any) -> None:
        """ValueError unless `state` is a state_dict() of this policy and model."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"not a GannoScheduler state (format {found!r}; allowed: {STATE_FORMAT}): "
                "pass what GannoScheduler.state_dict() returned"
            )
        missing = sorted(set(_STATE_KEYS) - set(state))
        if missing:
            raise ValueError(f"the scheduler state lacks {missing}; pass a full state_dict()")
        if state["policy_sha256"] != self.policy_sha256:
            raise ValueError(
                f"the scheduler state was saved with policy sha256 {state['policy_sha256']}, "
                f"but this scheduler runs {self.policy_name} with sha256 {self.policy_sha256}; "
                "load it into a scheduler of the same policy"
            )
        controller = (self.controller.name, bool(self.controller.greedy))
        if (state["controller"], state["greedy"]) != controller:
            raise ValueError(
                f"the scheduler state was saved with controller {state['controller']!r} "
                f"(greedy={state['greedy']}), but this scheduler runs {controller[0]!r} "
                f"(greedy={controller[1]}); load it into a scheduler of the same controller"
            )
        mine = (self.layer_names, self._param_shapes())
        saved = (state["layer_names"], state["param_shapes"])
        if saved != mine:
            raise ValueError(
                f"the scheduler state was saved for a model with layers {saved[0]} of shapes "
                f"{saved[1]}, but this scheduler's model has layers {mine[0]} of shapes "
                f"{mine[1]}; load it into a scheduler of the same model and optimizer"
            )
        for key in ("start", "grad_sum", "grad_sq_sum", "previous_mean_grad"):
            tensors = state[key]
            if tensors is not None and len(tensors) not in (0, len(self._flat)):
                raise ValueError(
                    f"the scheduler state's {key!r} holds {len(tensors)} tensors, but the "
                    f"model has {len(self._flat)} parameters: a state of another model"
                )

    def _param_shapes(self) -> list[list[list[int]]]:
        return [[list(p.shape) for p in params] for params in self._params]

    def _on_params(self, tensors: Sequence[torch.Tensor] | None) -> list[torch.Tensor] | None:
        """Saved per-parameter float32 tensors, copied onto their parameters' devices."""
        if tensors is None:
            return None
        return [
            t.to(device=p.device, dtype=torch.float32, copy=True)
            for t, p in zip(tensors, self._flat)
        ]

    @property
    def _groups(self) -> list[list[dict]]:
        """Each layer's param groups, looked up now: `optimizer.load_state_dict` replaces the
        group dicts, so holding on to them would set LRs that the optimizer no longer reads."""
        groups = self.optimizer.param_groups
        return [[groups[k] for k in indices] for indices in self._group_index]

    # ------------------------------------ decision state, held by the core (network 0)
    @property
    def action_mode(self) -> str:
        return self.core.action_mode

    @property
    def lr_factors(self) -> np.ndarray:
        return self.core.lr_factors

    @property
    def lr_bounds(self) -> tuple[float, float]:
        return self.core.lr_bounds

    @property
    def divergence_factor(self) -> float:
        return self.core.divergence_factor

    @property
    def decisions(self) -> int:
        """Decisions taken so far."""
        return self.core.decisions

    @property
    def lrs(self) -> np.ndarray | None:
        """Per-layer LRs [L] in force; None before the first decision."""
        return None if self.core.lrs is None else self.core.lrs[0]

    @property
    def last_log_factor(self) -> np.ndarray:
        """ln of the factor each layer last asked for [L] (zeros before any)."""
        if self.core.last_log_factor is None:
            return np.zeros(self.num_layers)
        return self.core.last_log_factor[0]

    @property
    def feature_reference(self) -> FeatureReference | None:
        """What the features are relative to, from the first decision."""
        return self.core.feature_reference

    @property
    def initial_val_loss(self) -> float | None:
        """The val loss at the first decision (1.0 if it was not finite and positive)."""
        return _first(self.core.initial_val_loss)

    @property
    def cap(self) -> float | None:
        """`divergence_factor` x the initial val loss: the highest loss the features use."""
        return _first(self.core.cap)

    @property
    def val_loss(self) -> float | None:
        """The last val loss as the features used it (capped)."""
        return _first(self.core.val_loss)

    @property
    def diverged(self) -> bool:
        """Whether the val loss ever reached the cap."""
        return self.core.diverged is not None and bool(self.core.diverged[0])

    # -------------------------------------------------------------- decisions
    def _first_decision(self, loss: torch.Tensor | float) -> None:
        """The env's reset: statistics of the first gradient, before any update."""
        values = self._initial_values()
        grads = self._grads()
        stats = self._statistics(self._weights_flat(), None, grads, [g * g for g in grads], None, 1)
        train_loss = float(loss)
        val_loss = self._measure_val(train_loss)
        self._decide(self.core.start(values[None], stats, [train_loss], [val_loss]))

    def _initial_values(self) -> np.ndarray:
        """Every knob's value per layer [L, K], read from the param groups.

        The LR must lie inside the policy's `lr_bounds` (clipping would silently train at
        another LR); another knob's value of 0 starts it at its lower bound, as in the env.
        """
        columns = []
        for control in self.core.controls:
            key, (low, high) = control.knob.group_key, control.bounds
            values = []
            for names, groups in zip(self.layer_names, self._groups):
                if key not in groups[0]:
                    raise ValueError(
                        f"the policy sets {control.name!r}, but the optimizer's param groups "
                        f"have no {key!r}; allowed: an optimizer with one (SGD has lr, "
                        "momentum and weight_decay; Adam has no momentum)"
                    )
                value = float(groups[0][key])
                outside = not low <= value <= high and not (control.name != "lr" and value == 0)
                if outside:
                    what = "LR" if control.name == "lr" else control.name
                    raise ValueError(
                        f"layer {names} starts at {what} {value!r}, outside the policy's "
                        f"{control.name}_bounds=({low!r}, {high!r}), where GANNO would clip "
                        f"it to {min(max(value, low), high)!r}; give the optimizer initial "
                        "values inside them"
                    )
                values.append(value)
            columns.append(values)
        return np.array(columns).T

    def _interval_decision(self) -> None:
        """The env's step: statistics of the interval just trained, then the val loss."""
        steps = self._interval_steps
        stats = self._statistics(
            self._weights_flat(), self._start, self._grad_sum, self._grad_sq_sum,
            self._previous_mean_grad, steps,
        )  # fmt: skip
        self._previous_mean_grad = [g / steps for g in self._grad_sum]
        train_loss = float(self._loss_sum) / steps
        val_loss = self._measure_val(train_loss)
        measured = self.core.measure(stats, [train_loss], [val_loss])
        if measured.diverged_now[0]:
            warnings.warn(
                f"val loss {val_loss:.4g} reached {self.divergence_factor:g} x the initial "
                f"{self.initial_val_loss:.4g} after {self.steps} steps: training diverged "
                "(the env would have stopped here); the policy keeps acting on capped losses",
                RuntimeWarning,
                stacklevel=3,
            )
        self._decide(measured.observations)

    def _decide(self, observations: np.ndarray) -> None:
        """Policy actions on the core's observations [1, L, F] -> the param groups' LRs."""
        obs = observations[0]
        agents = [f"layer_{j}" for j in range(self.num_layers)]
        actions = self.controller.actions({a: obs[j] for j, a in enumerate(agents)})
        decision = self.decisions
        values = {(0, j): self._action_value(actions[a]) for j, a in enumerate(agents)}
        lrs = self.core.apply_actions(values)[0]
        self._write_values(self.core.values[0])
        self.observations = obs
        record = {
            "step": self.steps,
            "decision": decision,
            "lrs": lrs.tolist(),
            "actions": [_plain(actions[a]) for a in agents],
            "train_loss": float(self.core.train_loss[0]),
            "val_loss": self.val_loss,
        }
        for k, control in enumerate(self.core.controls[1:], start=1):
            record[control.name] = self.core.values[0, :, k].tolist()
        self.history.append(record)

    def _clip_step(self, grads: list[torch.Tensor]) -> None:
        """This step's LRs under the policy's step clip: each layer's LR in force times
        `step_clip_scale` of this step's gradient, into its param groups (the next decision
        and `lrs` keep the LRs in force)."""
        grad_sq, weight_sq = (
            torch.stack([sum_sq(layer).cpu() for layer in self._by_layer(x)], 1)
            for x in (grads, self._weights_flat())
        )
        lrs = torch.as_tensor(self.core.lrs, dtype=torch.float32)
        ratio = step_ratio(lrs, grad_sq, weight_sq)
        scale = step_clip_scale(ratio, self.core.step_clip)
        for j, groups in enumerate(self._groups):
            for group in groups:
                _set_value(group, "lr", float(lrs[0, j] * scale[0, j]))

    def _write_values(self, values: np.ndarray) -> None:
        """Every knob's values [L, K] into each layer's param groups."""
        for j, groups in enumerate(self._groups):
            for group in groups:
                for k, control in enumerate(self.core.controls):
                    _set_value(group, control.knob.group_key, float(values[j, k]))

    def _action_value(self, action: Any) -> Any:
        """A policy action as the value `DecisionCore.apply_actions` takes."""
        single = len(self.core.controls) == 1
        if self.action_mode == "discrete":
            return int(action) if single else tuple(int(a) for a in np.asarray(action))
        numbers = np.asarray(action, dtype=np.float64).reshape(-1)
        low, high = self.core.action_range()
        clipped = np.clip(numbers[: len(low)], low, high)
        return float(clipped[0]) if single else tuple(float(v) for v in clipped)

    # ------------------------------------------------------------- statistics
    def _start_interval(self) -> None:
        self._start = [w.clone() for w in self._weights_flat()]
        self._grad_sum = [torch.zeros_like(w) for w in self._start]
        self._grad_sq_sum = [torch.zeros_like(w) for w in self._start]
        self._loss_sum = 0.0
        self._interval_steps = 0

    def _weights_flat(self) -> list[torch.Tensor]:
        """Every parameter as a float32 [1, ...] tensor (a view when already float32)."""
        return [p.detach()[None].float() for p in self._flat]

    def _grads(self) -> list[torch.Tensor]:
        """This step's gradients as float32 [1, ...] tensors (zeros where p.grad is None)."""
        return [
            torch.zeros_like(p, dtype=torch.float32)[None]
            if p.grad is None
            else p.grad.detach()[None].float()
            for p in self._flat
        ]

    def _by_layer(self, tensors: Sequence[torch.Tensor] | None) -> list[list[torch.Tensor]] | None:
        if tensors is None:
            return None
        layers: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]
        for tensor, j in zip(tensors, self._layer_of):
            layers[j].append(tensor)
        return layers

    def _statistics(self, weights, start, grad_sum, grad_sq_sum, previous, steps) -> LayerStats:
        """`layer_statistics` over all layers; per layer when they sit on several devices."""
        args = [self._by_layer(t) for t in (weights, start, grad_sum, grad_sq_sum, previous)]
        if len({w.device for w in weights}) == 1:
            return layer_statistics(*args, steps)
        per_layer = [
            layer_statistics(*[None if a is None else [a[j]] for a in args], steps)
            for j in range(self.num_layers)
        ]
        return LayerStats(
            **{
                f.name: torch.cat([getattr(s, f.name).cpu() for s in per_layer], dim=1)
                for f in fields(LayerStats)
            }
        )

    # ---------------------------------------------------------------- helpers
    def _measure_val(self, train_loss: float) -> float:
        if self.val_loss_fn is None:
            return float(train_loss)
        return float(self.val_loss_fn())

    def _check_order(self, optimizer, args, kwargs) -> None:
        if not self._observed:
            raise RuntimeError(
                "optimizer.step() without scheduler.observe(loss) since the last step: call "
                "scheduler.observe(loss) after loss.backward() and before optimizer.step() "
                "(scheduler.close() stops this check)"
            )
        self._observed = False

    def _check_mapping(self) -> None:
        nets = self.controller.nets
        for j in range(self.num_layers):
            module = module_for(f"layer_{j}", self.controller.mapping, self.num_layers)
            if module not in nets:
                raise ValueError(
                    f"{self.policy_name} is a {self.controller.mapping} policy with modules "
                    f"{sorted(nets)}, but the model has {self.num_layers} layers: layer {j} "
                    f"needs module {module!r}. A per_layer policy serves only networks as deep "
                    "as it was trained on; use a shared or grouped policy for this model"
                )


def _per_layer_groups(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> tuple[list[list[str]], list[list[torch.Tensor]], list[list[int]]]:
    """Rewrite the optimizer's param groups into per-layer groups.

    Returns the parameter names, the parameters and the indices in
    `optimizer.param_groups` of the groups of each layer that the optimizer trains, input
    to output.
    """
    named = dict(model.named_parameters())
    layer_of: dict[int, int] = {}
    for j, names in enumerate(layer_groups(model)):
        for name in names:
            layer_of[id(named[name])] = j
    split: list[tuple[int, int, dict]] = []  # (layer, original group, new group)
    for g, group in enumerate(optimizer.param_groups):
        if "lr" not in group:
            raise ValueError(
                f"optimizer {type(optimizer).__name__} has no 'lr' in its param groups; "
                "allowed: optimizers with a learning rate per group (SGD, Adam, AdamW, ...)"
            )
        names = group.get("param_names")
        by_layer: dict[int, list[int]] = {}
        for k, p in enumerate(group["params"]):
            if id(p) not in layer_of:
                raise ValueError(
                    f"optimizer param group {g} holds a parameter of shape {tuple(p.shape)} "
                    f"that is not in the model {type(model).__name__}; pass the model the "
                    "optimizer trains"
                )
            by_layer.setdefault(layer_of[id(p)], []).append(k)
        hyper = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        for j, ks in by_layer.items():
            new = dict(hyper, params=[group["params"][k] for k in ks])
            if names is not None:
                new["param_names"] = [names[k] for k in ks]
            split.append((j, g, new))
    if not split:
        raise ValueError("the optimizer has no parameters")
    layers = sorted({j for j, _, _ in split})
    already_per_layer = len(split) == len(optimizer.param_groups) and all(
        len(new["params"]) == len(optimizer.param_groups[g]["params"]) for _, g, new in split
    )
    if already_per_layer:
        groups = [(j, group) for (j, _, _), group in zip(split, optimizer.param_groups)]
    else:
        split.sort(key=lambda item: (item[0], item[1]))
        optimizer.param_groups.clear()
        for _, _, new in split:
            optimizer.add_param_group(new)
        groups = [(j, group) for (j, _, _), group in zip(split, optimizer.param_groups)]
    group_index = [[k for k, (j, _) in enumerate(groups) if j == layer] for layer in layers]
    params, names = [], []
    for indices in group_index:
        layer_groups_j = [groups[k][1] for k in indices]
        members = {id(p) for group in layer_groups_j for p in group["params"]}
        # model order (weight before bias), as the env sums them
        ordered = [n for n, p in named.items() if id(p) in members]
        names.append(ordered)
        params.append([named[n] for n in ordered])
        lrs = sorted({float(group["lr"]) for group in layer_groups_j})
        if len(lrs) > 1:
            raise ValueError(
                f"layer {ordered} has parameters in param groups with LRs {lrs}; GANNO sets "
                "one LR per layer: give all parameters of a layer the same initial LR"
            )
    return names, params, group_index


def _trained(payload: dict[str, Any], key: str) -> Any:
    """A setting the policy was trained with, if its file records it; else the env default."""
    value = recorded_setting(payload, key)
    if value is not None:
        return value
    return {
        "interval": DEFAULT_INTERVAL,
        "max_cycles": DEFAULT_MAX_CYCLES,
        "divergence_factor": DEFAULT_DIVERGENCE_FACTOR,
    }[key]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}; allowed: an int >= 1")
    return int(value)


def _detached(loss: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(loss, torch.Tensor):
        return loss.detach().reshape(()).float()
    return float(loss)


def _set_value(group: dict, key: str, value: float) -> None:
    if isinstance(group[key], torch.Tensor):  # capturable / fused optimizers
        group[key].fill_(value)
    else:
        group[key] = value


def _clone(value: Any) -> Any:
    """A detached copy of a tensor or of a list of tensors (other values as they are)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _first(values: np.ndarray | None) -> float | None:
    """Network 0's value of a core state array, as a float (None before the first decision)."""
    return None if values is None else float(values[0])


def _plain(action: Any) -> Any:
    return action if isinstance(action, int) else np.asarray(action).tolist()
