"""A bold-driver twin of each network: the baseline of `reward="vs_bold_driver"`.

The env's networks differ far more in how much they can improve (their initial LR, scales
and data) than a good schedule differs from a slightly better one on the same network. A
twin trained from the same weights, batches and initial LR by bold driver (the
`BoldDriver` controller: every LR times `up` after an interval whose val loss fell, times
`down` after one where it did not) knows each network's difficulty; rewarding the agents'
log improvement minus the twin's removes it from the return. The twin never sees the
agents' actions, so it changes the return by a term no action moves.

It reproduces a benchmark run of `bold_driver` on the same seed exactly: its LRs go
through float32 log10 as the controller's `log_lr` actions do, are clipped to the LR
bounds, and a twin whose val loss reaches the cap is frozen as the env freezes a network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from ganno_env.controllers import BoldDriver
from ganno_env.decision import DecisionCore
from ganno_env.engine import PopulationTrainer


class BoldDriverTwin:
    """Bold driver on a copy of the env's population; `step` returns its log improvement."""

    def __init__(self, trainer: PopulationTrainer, initial_lrs: np.ndarray, core: DecisionCore):
        """`core` is the env's, just started: the twin takes its LR bounds, its first
        (capped) val losses and its cap on the losses (`DecisionCore.safe`)."""
        rule = BoldDriver()
        self.up, self.down = rule.up, rule.down
        self.trainer = trainer
        self.core = core
        self.lrs = np.array(initial_lrs, dtype=np.float64)  # bold driver's own, unclipped
        self.val_loss = core.val_loss.copy()  # capped, as infos give it
        self.previous_val_loss: np.ndarray | None = None
        self.diverged = np.zeros(len(self.val_loss), dtype=bool)
        self.trainer.probe()  # as the env's reset does: the same first batch

    def step(self, interval: int, knobs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Decide as bold driver, train one interval; the log improvement [N] (0 once a
        twin has diverged)."""
        if self.previous_val_loss is not None:  # its first decision keeps the initial LR
            fell = self.val_loss < self.previous_val_loss
            self.lrs = self.lrs * np.where(fell, self.up, self.down)[:, None]
        live = ~self.diverged
        in_force = self._as_log_lr_action(np.clip(self.lrs, *self.core.lr_bounds))
        self.trainer.train(torch.as_tensor(in_force * live[:, None]), interval, knobs)
        val_loss, _ = self.trainer.evaluate("val", accuracy=False)
        capped = self.core.safe(val_loss.cpu().numpy())  # the cap where not finite or above
        diverged_now = live & (capped >= self.core.cap)
        capped = np.where(live, capped, self.val_loss)
        self.previous_val_loss, self.val_loss = self.val_loss, capped
        self.diverged |= diverged_now
        if diverged_now.any():
            self.trainer.freeze(diverged_now)
        return np.log(self.previous_val_loss) - np.log(self.val_loss)

    def _as_log_lr_action(self, lrs: np.ndarray) -> np.ndarray:
        """The LRs [N, L] that `log_lr` actions set: 10 ** their float32 log10 (`math.log10`,
        as `Controller.set_lrs` takes it; numpy's can differ in the last bit), computed in
        float64 and clipped to the bounds as the env does, in float32 as the engine takes
        them."""
        logs = np.array([math.log10(lr) for lr in lrs.ravel()], dtype=np.float32)
        powers = 10.0 ** logs.astype(np.float64).reshape(lrs.shape)
        return np.clip(powers, *self.core.lr_bounds).astype(np.float32)
