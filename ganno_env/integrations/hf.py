"""GannoScheduler as a Hugging Face `Trainer` callback (`pip install 'ganno[hf]'`).

    from ganno_env.integrations.hf import GannoTrainerCallback

    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.add_callback(GannoTrainerCallback("pretrained", trainer=trainer))
    trainer.train()

At the start of training (`on_train_begin`: the Trainer has built its optimizer and LR
scheduler) the callback builds a `GannoScheduler` on the model and the optimizer (the torch
optimizer inside Accelerate's `AcceleratedOptimizer`), whose param groups it rewrites into
one group per layer and per original group (the Trainer's weight-decay and no-decay
groups). It calls `scheduler.observe(loss)` in `on_pre_optimizer_step`, after the step's
backward passes and gradient clipping and before `optimizer.step()`, once per optimizer
step (also with `gradient_accumulation_steps > 1`). See docs/transformers.md.

The Trainer's LR scheduler (`lr_scheduler_type`, linear by default) sets every group's LR to
`base_lr * factor` after each step, which would undo GANNO's per-layer LRs, and its warmup
would start at LR 0. The callback therefore puts each group back at its base LR and replaces
the scheduler with torch's `ConstantLR(factor=1.0)`, which leaves LRs as they are, and
warns once, naming the scheduler it replaced. The Trainer's logged `learning_rate` is then
the first layer's LR; each layer's LR is logged as `ganno/lr_layer{j}` (through
`Trainer.log`, so to every `report_to` integration and to `trainer.state.log_history`) at
each of the Trainer's training logs (`logging_steps`).

The loss of a step: no callback event receives it, and the Trainer computes it in
`training_step` (the model's loss, or your `compute_loss`). The callback therefore needs the
trainer (`trainer=`): it wraps `trainer.training_step` to record what it returns for each
micro-batch, the loss already divided for gradient accumulation, and observes their sum: the
step's mean loss, the value the Trainer logs as `loss` for that step.

Gradients are those the optimizer is about to apply: clipped when `max_grad_norm > 0`, the
default (which also unscales fp16 gradients; with fp16 keep it on, or the statistics see
the loss scale). Resuming a Trainer checkpoint (`resume_from_checkpoint`) is not supported:
its optimizer state has the per-layer groups, while the Trainer builds a new optimizer with
its own two groups before any callback runs.
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

require("transformers", "hf", "ganno_env.integrations.hf")
require("accelerate", "hf", "ganno_env.integrations.hf (the Trainer needs accelerate)")
from transformers import (  # noqa: E402
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)


class GannoTrainerCallback(TrainerCallback):
    """Per-layer LRs from a trained GANNO policy in `Trainer.train` (see the module docstring).

    Arguments are those of `GannoScheduler`: `policy` (a `policy.pt` path, `"pretrained"` or
    a `PolicyController`), `val_loss_fn` (`() -> float`, called once per decision; None:
    the interval's mean train loss stands in), `interval` and `max_cycles` (default: the
    policy's); `trainer` is the Trainer to add the callback to, once
    (`trainer.add_callback(callback)`). `scheduler` is the `GannoScheduler` of the current
    training (None before).
    """

    def __init__(
        self,
        policy: str | os.PathLike | PolicyController,
        val_loss_fn: Callable[[], float] | None = None,
        interval: int | None = None,
        max_cycles: int | None = None,
        *,
        trainer: Trainer,
    ):
        # Loaded now, so that a wrong path fails when the callback is made, not mid-training.
        self.controller = policy if isinstance(policy, PolicyController) else load_policy(policy)
        self.val_loss_fn = val_loss_fn
        self.interval = interval
        self.max_cycles = max_cycles
        self.trainer = trainer
        self.scheduler: GannoScheduler | None = None
        self._losses: list[torch.Tensor] = []
        self._training = False
        self._warned = False
        training_step = trainer.training_step

        def recording_training_step(*args: Any, **kwargs: Any) -> torch.Tensor:
            loss = training_step(*args, **kwargs)
            if self._training:
                self._losses.append(loss.detach().float())
            return loss

        trainer.training_step = recording_training_step

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler on the Trainer's optimizer; replace its LR scheduler."""
        trainer = self.trainer
        added = sum(callback is self for callback in trainer.callback_handler.callbacks)
        if added != 1 or model is not trainer.model:
            raise ValueError(
                "GannoTrainerCallback must be added once to the Trainer it was made with: "
                "trainer.add_callback(GannoTrainerCallback(policy, trainer=trainer))"
            )
        inner = optimizer
        while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
            inner = inner.optimizer  # accelerate's AcceleratedOptimizer and the like
        replaced = trainer.lr_scheduler
        base_lrs = getattr(replaced, "base_lrs", None)
        if base_lrs is not None and len(base_lrs) == len(inner.param_groups):
            for group, lr in zip(inner.param_groups, base_lrs):
                group["lr"] = lr  # e.g. warmup set them to 0 when the scheduler was made
        if self.scheduler is not None:  # an earlier train() with this callback
            self.scheduler.close()
        self.scheduler = GannoScheduler(
            inner,
            model,
            self.controller,
            interval=self.interval,
            val_loss_fn=self.val_loss_fn,
            max_cycles=self.max_cycles,
        )
        constant = torch.optim.lr_scheduler.ConstantLR(inner, factor=1.0, total_iters=0)
        trainer.lr_scheduler = trainer.callback_handler.lr_scheduler = constant
        if not self._warned:
            kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
            warnings.warn(
                f"GannoTrainerCallback replaced the Trainer's LR scheduler "
                f"{type(replaced).__name__} (lr_scheduler_type={kind!r}) "
                "with ConstantLR(factor=1.0): GANNO sets the per-layer LRs",
                UserWarning,
                stacklevel=2,
            )
            self._warned = True
        self._losses = []
        self._training = True

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Observe the step's loss and gradients (deciding every `interval` steps)."""
        if not self._training:
            return
        if not self._losses:
            raise RuntimeError(
                "GannoTrainerCallback saw no training_step since the last optimizer step: "
                "was trainer.training_step replaced after the callback was made?"
            )
        loss = torch.stack(self._losses).sum()
        self._losses = []
        self.scheduler.observe(loss)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Log each layer's LR next to the Trainer's training logs."""
        if self.scheduler is None or self.scheduler.lrs is None or not logs or "loss" not in logs:
            return
        self.trainer.log(
            {f"ganno/lr_layer{j}": float(lr) for j, lr in enumerate(self.scheduler.lrs)}
        )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Stop observing; the LRs stay as GANNO set them."""
        self._training = False
        if self.scheduler is not None:
            self.scheduler.close()
