"""GannoLightningCallback: GannoScheduler inside `lightning.Trainer.fit`, on CPU."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from ganno_env.integrations.lightning import GannoLightningCallback  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
LR = 0.05
BATCHES = 5  # per epoch


class Classifier(pl.LightningModule):
    """A 3-layer MLP; records each training_step loss (micro-batch) it returns."""

    def __init__(self, scheduler_factory=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
        )
        self.scheduler_factory = scheduler_factory
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=LR, momentum=0.9)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


def data(batches=BATCHES, batch_size=16, seed=1):
    """A fixed-order loader (no shuffling, no workers) and a val batch."""
    g = torch.Generator().manual_seed(seed)
    n = batches * batch_size
    x, y = torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False
    )
    return loader, (torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g))


def val_loss_of(module, val):
    def val_loss():
        return F.cross_entropy(module.net(val[0]), val[1]).item()

    return val_loss


def make_trainer(callback, tmp_path, max_epochs, logger=False, **kwargs):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=[callback],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        default_root_dir=tmp_path,
        **kwargs,
    )


def observed_losses(callback):
    """Wrap the fit's scheduler.observe (once built) to record the losses it is given."""
    seen: list[float] = []
    build = callback.on_fit_start

    def on_fit_start(trainer, pl_module):
        build(trainer, pl_module)
        observe = callback.scheduler.observe

        def recording(loss):
            seen.append(float(loss))
            observe(loss)

        callback.scheduler.observe = recording

    callback.on_fit_start = on_fit_start
    return seen


def layer_lrs(optimizer, scheduler):
    """Each layer's LR as the optimizer's param groups hold it."""
    return [
        {optimizer.param_groups[k]["lr"] for k in indices} for indices in scheduler._group_index
    ]


def test_fit_sets_and_logs_per_layer_lrs(policy_path, tmp_path):
    loader, val = data()
    module = Classifier()
    callback = GannoLightningCallback(policy_path, val_loss_fn=val_loss_of(module, val), interval=4)
    logger = pl.loggers.CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(callback, tmp_path, max_epochs=6, logger=logger, log_every_n_steps=1)
    trainer.fit(module, loader)

    scheduler = callback.scheduler
    assert trainer.global_step == scheduler.steps == 6 * BATCHES
    assert [h["step"] for h in scheduler.history] == list(range(0, 30, 4))
    lrs = [float(lr) for lr in scheduler.lrs]
    assert scheduler.num_layers == 3
    assert len(set(lrs)) > 1 and all(lr != LR for lr in lrs)
    # the optimizer trains with the scheduler's LRs, one per layer
    assert layer_lrs(trainer.optimizers[0], scheduler) == [{lr} for lr in lrs]
    # logged through the module: in callback_metrics and in the logger's file
    for j, lr in enumerate(lrs):
        assert trainer.callback_metrics[f"ganno/lr_layer{j}"].item() == pytest.approx(lr)
    logger.save()
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("ganno/lr_layer0")]
    assert len(rows) == trainer.global_step
    assert [float(rows[-1][f"ganno/lr_layer{j}"]) for j in range(3)] == pytest.approx(lrs)
    # every logged LR is that step's: the first decision's before step 4, the second's after
    first, second = scheduler.history[0]["lrs"], scheduler.history[1]["lrs"]
    assert float(rows[3]["ganno/lr_layer2"]) == pytest.approx(first[2])
    assert float(rows[4]["ganno/lr_layer2"]) == pytest.approx(second[2])


@pytest.mark.parametrize("batches", [10, 9])  # 9: the epoch's last step has one micro-batch
def test_gradient_accumulation_observes_each_optimizer_step_once(policy_path, tmp_path, batches):
    loader, _ = data(batches=batches)
    module = Classifier()
    callback = GannoLightningCallback(policy_path, interval=3)
    seen = observed_losses(callback)
    trainer = make_trainer(callback, tmp_path, max_epochs=2, accumulate_grad_batches=2)
    trainer.fit(module, loader)

    steps_per_epoch = (batches + 1) // 2
    assert trainer.global_step == callback.scheduler.steps == len(seen) == 2 * steps_per_epoch
    assert len(module.losses) == 2 * batches
    # each observation is the mean training_step loss of that optimizer step's micro-batches
    expected = []
    for epoch in range(2):
        losses = module.losses[epoch * batches : (epoch + 1) * batches]
        expected += [sum(losses[i : i + 2]) / len(losses[i : i + 2]) for i in range(0, batches, 2)]
    assert seen == pytest.approx(expected, rel=1e-6)


def test_checkpoint_resumes_the_schedule_identically(policy_path, tmp_path):
    """Fit 6 epochs at once, or 2, checkpoint, then fit(ckpt_path=...) to 6 with new objects."""

    def fit(max_epochs, ckpt_path=None):
        loader, val = data()
        module = Classifier()
        callback = GannoLightningCallback(
            policy_path, val_loss_fn=val_loss_of(module, val), interval=3
        )
        trainer = make_trainer(callback, tmp_path, max_epochs=max_epochs)
        trainer.fit(module, loader, ckpt_path=ckpt_path)
        return module, callback, trainer

    module, callback, trainer = fit(6)
    half_module, half_callback, half_trainer = fit(2)
    assert half_callback.scheduler.steps == 10  # mid-interval: decisions at 0, 3, 6, 9
    checkpoint = tmp_path / "half.ckpt"
    half_trainer.save_checkpoint(checkpoint)
    states = torch.load(checkpoint, weights_only=True)["callbacks"]  # plain tensors and values
    assert [state["scheduler"]["steps"] for state in states.values() if "scheduler" in state] == [
        10
    ]
    resumed_module, resumed_callback, resumed_trainer = fit(6, ckpt_path=checkpoint)

    assert resumed_trainer.global_step == trainer.global_step == 30
    assert resumed_module.losses == module.losses[10:]  # bit for bit, step by step
    assert resumed_callback.scheduler.history == callback.scheduler.history
    assert list(resumed_callback.scheduler.lrs) == list(callback.scheduler.lrs)
    for name, param in module.named_parameters():
        assert torch.equal(param, dict(resumed_module.named_parameters())[name]), name
    momentum = [s["momentum_buffer"] for s in trainer.optimizers[0].state.values()]
    resumed = [s["momentum_buffer"] for s in resumed_trainer.optimizers[0].state.values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed))
    assert layer_lrs(resumed_trainer.optimizers[0], resumed_callback.scheduler) == layer_lrs(
        trainer.optimizers[0], callback.scheduler
    )


def test_lr_schedulers_of_configure_optimizers_are_removed(policy_path, tmp_path):
    loader, _ = data()
    module = Classifier(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1))
    callback = GannoLightningCallback(policy_path, interval=4)
    trainer = make_trainer(callback, tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="removed the LR scheduler.*StepLR"):
        trainer.fit(module, loader)
    assert trainer.lr_scheduler_configs == []
    lrs = [float(lr) for lr in callback.scheduler.lrs]
    assert layer_lrs(trainer.optimizers[0], callback.scheduler) == [{lr} for lr in lrs]


def test_manual_optimization_is_refused(policy_path, tmp_path):
    class Manual(Classifier):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

    loader, _ = data()
    trainer = make_trainer(GannoLightningCallback(policy_path), tmp_path, max_epochs=1)
    with pytest.raises(ValueError, match="automatic optimization"):
        trainer.fit(Manual(), loader)


def test_imported_only_when_asked_and_missing_lightning_names_the_extra():
    code = (
        "import sys, ganno_env, ganno_env.integrations\n"
        "loaded = [m for m in ('lightning', 'pytorch_lightning', 'transformers', 'accelerate')\n"
        "          if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "sys.modules['lightning'] = sys.modules['lightning.pytorch'] = None  # not installed\n"
        "try:\n"
        "    from ganno_env.integrations import GannoLightningCallback\n"
        "except ImportError as error:\n"
        "    assert \"pip install 'ganno[lightning]'\" in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    from ganno_env.integrations import GannoLightningCallback as lazy

    assert lazy is GannoLightningCallback
