"""A bold-driver twin of each network: the baseline of `reward="vs_bold_driver"`.

The env's networks differ far more in how much they can improve (their initial LR, scales
and data) than a good schedule differs from a slightly better one on the same network. A
twin trained from the same weights, batches and initial LR by bold driver (the
`BoldDriver` controller: every LR times `up` after an interval whose val loss fell, times
`down` after one where it did not) knows each network's difficulty; rewarding the agents'
log improvement minus the twin's removes it from the return. The twin never sees the
agents' actions, so it changes the return by a term no action moves.

It is a benchmark run of `bold_driver` on the same seed, without the env around it: the
controller's rule (`BoldDriver.next_lr`) and `log_lr` actions (`log_lr_action`) go into a
`DecisionCore` in `log_lr` mode, which does the LR arithmetic, the caps and the freezing of
a diverged network as that env's core does.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ganno_env.controllers import BoldDriver, log_lr_action
from ganno_env.decision import DecisionCore
from ganno_env.engine import PopulationTrainer


class BoldDriverTwin:
    """Bold driver on a copy of the env's population; `step` returns its log improvement."""

    def __init__(self, trainer: PopulationTrainer, initial_lrs: np.ndarray, core: DecisionCore):
        """`trainer` holds the twins, just built; `core` is the env's, just started: the
        twin's own core takes its LR factors, bounds, cap, feature set and first val losses,
        and none of its guards (the safety net, the fallback, the step clip), as the
        `bold_driver` env has none."""
        self.rule = BoldDriver()
        self.trainer = trainer
        self.core = DecisionCore(
            "log_lr",
            core.lr_factors,
            core.lr_bounds,
            core.divergence_factor,
            core.max_cycles,
            core.features_version,
        )
        probe_loss, stats = trainer.probe()  # as the env's reset does: the same first batch
        # the twins start from the env's weights, so their first val losses are the env's
        self.core.start(initial_lrs, stats, probe_loss.cpu().numpy(), core.initial_val_loss)
        self.lrs = self.core.lrs.copy()  # bold driver's own, unclipped from here on
        self.previous_val_loss: np.ndarray | None = None

    @property
    def val_loss(self) -> np.ndarray:
        """The twins' capped val losses [N], as the env's infos give them."""
        return self.core.val_loss

    @property
    def diverged(self) -> np.ndarray:
        """Twins whose val loss reached the cap [N]; they are frozen."""
        return self.core.diverged

    def step(self, interval: int, knobs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Decide as bold driver, train one interval; the log improvement [N] (0 once a
        twin has diverged)."""
        if self.previous_val_loss is not None:  # its first decision keeps the initial LR
            fell = self.val_loss < self.previous_val_loss  # per network, for all its layers
            self.lrs = self.rule.next_lr(self.lrs, fell[:, None])
        live = ~self.diverged
        actions = {
            index: float(log_lr_action(lr, self.core.lr_bounds)[0])
            for index, lr in np.ndenumerate(self.lrs)
            if live[index[0]]
        }
        in_force = self.core.apply_actions(actions, live)
        lrs = torch.as_tensor(in_force * live[:, None], dtype=torch.float32)
        train_loss, stats = self.trainer.train(lrs, interval, knobs)
        val_loss, _ = self.trainer.evaluate("val", accuracy=False)
        measured = self.core.measure(stats, train_loss.cpu().numpy(), val_loss.cpu().numpy(), live)
        if measured.diverged_now.any():
            self.trainer.freeze(measured.diverged_now)
        self.previous_val_loss = measured.previous_val_loss
        return np.log(measured.previous_val_loss) - np.log(measured.val_loss)
