"""GannoScheduler as a PyTorch Lightning callback (`pip install 'ganno[lightning]'`).

    from ganno_env.integrations.lightning import GannoLightningCallback

    trainer = lightning.Trainer(callbacks=[GannoLightningCallback("pretrained")], ...)
    trainer.fit(module, train_loader)

`GannoLightningCallback` builds a `GannoScheduler` on the LightningModule and the trainer's
optimizer when fitting starts (`on_fit_start`: the optimizer exists, a checkpoint's optimizer
state is not loaded yet) and calls `scheduler.observe(loss)` in `on_before_optimizer_step`,
after the backward passes of the step and before `optimizer.step()`, once per optimizer
step (also with `accumulate_grad_batches > 1`). Each layer's LR is logged on every step as
`ganno/lr_layer{j}` through `pl_module.log_dict` (so to the trainer's logger, every
`log_every_n_steps`, and into `trainer.callback_metrics`). See docs/lightning.md.

The loss of a step: no Lightning hook before the optimizer step receives it, so the callback
records the loss of each micro-batch in `on_before_backward` and observes their mean. That
hook gets the loss as Lightning backpropagates it: divided by `accumulate_grad_batches`, and
under 16-bit AMP multiplied by the gradient scaler's scale; the callback undoes both, so
the observed loss is the mean of what `training_step` returned over the step's micro-batches
(as the GannoScheduler expects: the same number whatever the accumulation).

Lightning calls `on_before_optimizer_step` before it clips gradients
(`gradient_clip_val`), so the statistics see the gradients before clipping; under AMP they
are already unscaled. A step whose `training_step` returned None trains nothing and is not
observed. LR schedulers from `configure_optimizers` would overwrite the per-layer LRs: the
callback removes them and warns. It needs automatic optimisation with one optimizer; with
manual optimisation call `GannoScheduler.observe` yourself.

Checkpoints: the scheduler's `state_dict()` goes into Lightning checkpoints as the
callback's state. On `trainer.fit(model, ckpt_path=...)` Lightning hands that state to the
callback before it builds the optimizer; the callback builds the scheduler in
`on_fit_start` (rewriting the param groups to the per-layer groups the checkpoint's
optimizer state was saved with), Lightning then loads the optimizer state, and
`on_train_start` loads the scheduler state, so the run goes on as if never stopped.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ganno_env.integrations._common import require
from ganno_env.policy import PolicyController, load_policy
from ganno_env.scheduler import GannoScheduler

require("lightning.pytorch", "lightning", "ganno_env.integrations.lightning")
import lightning.pytorch as pl  # noqa: E402


class GannoLightningCallback(pl.Callback):
    """Per-layer LRs from a trained GANNO policy in `Trainer.fit` (see the module docstring).

    Arguments are those of `GannoScheduler`: `policy` (a `policy.pt` path, `"pretrained"` or
    a `PolicyController`), `val_loss_fn` (`() -> float`, called once per decision; None:
    the interval's mean train loss stands in), `interval` and `max_cycles` (default: the
    policy's). `scheduler` is the `GannoScheduler` of the current fit (None before).
    """

    def __init__(
        self,
        policy: str | os.PathLike | PolicyController,
        val_loss_fn: Callable[[], float] | None = None,
        interval: int | None = None,
        max_cycles: int | None = None,
    ):
        super().__init__()
        # Loaded now, so that a wrong path fails when the callback is made, not mid-fit.
        self.controller = policy if isinstance(policy, PolicyController) else load_policy(policy)
        self.val_loss_fn = val_loss_fn
        self.interval = interval
        self.max_cycles = max_cycles
        self.scheduler: GannoScheduler | None = None
        self._losses: list[torch.Tensor] = []
        self._pending_state: dict[str, Any] | None = None  # from a checkpoint, until loaded

    # ------------------------------------------------------------------- fit
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the scheduler: the optimizer exists, its checkpoint state is not loaded yet."""
        if not pl_module.automatic_optimization:
            raise ValueError(
                "GannoLightningCallback needs automatic optimization; with manual optimization "
                "call GannoScheduler.observe(loss) yourself before each optimizer.step()"
            )
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"GannoLightningCallback drives one optimizer; configure_optimizers gave "
                f"{len(trainer.optimizers)}"
            )
        configs = trainer.strategy.lr_scheduler_configs
        if configs:
            names = ", ".join(type(config.scheduler).__name__ for config in configs)
            warnings.warn(
                f"GannoLightningCallback removed the LR scheduler(s) {names} from "
                "configure_optimizers: they would overwrite the per-layer LRs GANNO sets",
                UserWarning,
                stacklevel=2,
            )
            trainer.strategy.lr_scheduler_configs = []
        if self.scheduler is not None:  # an earlier fit with this callback
            self.scheduler.close()
        self.scheduler = GannoScheduler(
            trainer.optimizers[0],
            pl_module,
            self.controller,
            interval=self.interval,
            val_loss_fn=self.val_loss_fn,
            max_cycles=self.max_cycles,
        )
        # Lightning runs a step's closure (training_step, backward, on_before_optimizer_step)
        # inside optimizer.step(), after the optimizer's step pre-hooks, so the scheduler's
        # call-order check would fire before every observe; this callback keeps the order.
        self.scheduler.close()
        self._losses = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Load a checkpoint's scheduler state, now that Lightning has loaded the optimizer's."""
        if self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        """Record a micro-batch's loss as `training_step` returned it."""
        loss = loss.detach().float()
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:  # 16-bit AMP scales the loss before this hook
            loss = loss / scaler.get_scale()
        self._losses.append(loss * trainer.accumulate_grad_batches)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Observe the step's mean loss and gradients (deciding every `interval` steps); log LRs."""
        if not self._losses:  # training_step returned None: no backward, nothing to observe
            return
        loss = torch.stack(self._losses).mean()
        self._losses = []
        self.scheduler.observe(loss)
        pl_module.log_dict(
            {f"ganno/lr_layer{j}": float(lr) for j, lr in enumerate(self.scheduler.lrs)},
            on_step=True,
            on_epoch=False,
        )

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, saved in Lightning checkpoints with this callback."""
        if self._pending_state is not None:  # loaded from a checkpoint, not yet in force
            return {"scheduler": self._pending_state}
        if self.scheduler is None:
            return {}
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's scheduler state until `on_train_start` can load it."""
        self._pending_state = state_dict.get("scheduler")
