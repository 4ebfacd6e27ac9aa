"""GannoTrainerCallback: GannoScheduler inside the Hugging Face `Trainer`, on CPU, no downloads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from ganno_env.integrations.hf import GannoTrainerCallback  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
LR = 1e-3


class Tokens(torch.utils.data.Dataset):
    """Random token sequences; the label says whether token 7 occurs."""

    def __init__(self, size: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (size, 12), generator=g)
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert():
    """A 2-block BERT classifier built from a config: 15 layers for GANNO, no download."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def make_trainer(tmp_path, size=256, **args):
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        learning_rate=LR,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **args,
    )
    return transformers.Trainer(model=tiny_bert(), args=arguments, train_dataset=Tokens(size))


def layer_lrs(optimizer, scheduler):
    """Each layer's LRs as the optimizer's param groups (decay and no-decay) hold them."""
    return [
        {optimizer.param_groups[k]["lr"] for k in indices} for indices in scheduler._group_index
    ]


def test_train_sets_and_logs_per_layer_lrs(policy_path, tmp_path):
    # The default linear schedule with warmup starts at LR 0 and ends at 0: had it kept
    # control, the first decision would refuse LR 0 and the final LRs would be 0.
    trainer = make_trainer(tmp_path, max_steps=30, warmup_steps=3, logging_steps=5)
    callback = GannoTrainerCallback(policy_path, interval=4, trainer=trainer)
    trainer.add_callback(callback)
    replaced = r"replaced the Trainer's LR scheduler LambdaLR \(lr_scheduler_type='linear'\)"
    with pytest.warns(UserWarning, match=replaced):
        trainer.train()

    scheduler = callback.scheduler
    assert isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.ConstantLR)
    assert trainer.state.global_step == scheduler.steps == 30
    assert [h["step"] for h in scheduler.history] == list(range(0, 30, 4))
    lrs = [float(lr) for lr in scheduler.lrs]
    assert scheduler.num_layers == 15
    assert len(set(lrs)) > 1 and all(lr != LR and lr > 0 for lr in lrs)
    # the torch optimizer inside Accelerate's wrapper trains with the scheduler's LRs
    optimizer = trainer.optimizer.optimizer
    assert scheduler.optimizer is optimizer
    assert len(optimizer.param_groups) > scheduler.num_layers  # weight decay groups kept apart
    assert layer_lrs(optimizer, scheduler) == [{lr} for lr in lrs]
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, trainer.args.weight_decay}
    # logged with each training log, as that step's LRs
    logged = [entry for entry in trainer.state.log_history if "ganno/lr_layer0" in entry]
    assert [entry["step"] for entry in logged] == [5, 10, 15, 20, 25, 30]
    assert [logged[-1][f"ganno/lr_layer{j}"] for j in range(15)] == lrs
    by_step = {h["step"]: h["lrs"] for h in scheduler.history}
    assert [logged[0][f"ganno/lr_layer{j}"] for j in range(15)] == by_step[4]


def test_gradient_accumulation_observes_each_optimizer_step_once(policy_path, tmp_path):
    # 9 batches an epoch in pairs: 5 steps, the last with one micro-batch
    trainer = make_trainer(
        tmp_path, size=9 * 16, num_train_epochs=2, gradient_accumulation_steps=2, logging_steps=1
    )
    callback = GannoTrainerCallback(policy_path, interval=3, trainer=trainer)
    trainer.add_callback(callback)
    seen: list[float] = []
    micro_batches = []
    training_step = trainer.training_step

    def counting_training_step(*args, **kwargs):
        micro_batches.append(1)
        return training_step(*args, **kwargs)

    trainer.training_step = counting_training_step
    build = callback.on_train_begin

    def on_train_begin(*args, **kwargs):
        build(*args, **kwargs)
        observe = callback.scheduler.observe

        def recording(loss):
            seen.append(float(loss))
            observe(loss)

        callback.scheduler.observe = recording

    callback.on_train_begin = on_train_begin
    with pytest.warns(UserWarning, match="replaced"):
        trainer.train()

    assert len(micro_batches) == 18
    assert trainer.state.global_step == callback.scheduler.steps == len(seen) == 10
    # each observation is the step's loss as the Trainer logs it (the mean over its batches)
    assert seen == [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_the_callback_belongs_to_one_trainer_once(policy_path, tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2)
    callback = GannoTrainerCallback(policy_path, trainer=trainer)
    trainer.add_callback(callback)
    trainer.add_callback(callback)
    with pytest.raises(ValueError, match="added once to the Trainer it was made with"):
        trainer.train()


def test_imported_only_when_asked_and_missing_transformers_names_the_extra():
    code = (
        "import sys, ganno_env, ganno_env.integrations\n"
        "loaded = [m for m in ('transformers', 'accelerate', 'lightning') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "sys.modules['transformers'] = None  # not installed\n"
        "try:\n"
        "    from ganno_env.integrations import GannoTrainerCallback\n"
        "except ImportError as error:\n"
        "    assert \"pip install 'ganno[hf]'\" in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    from ganno_env.integrations import GannoTrainerCallback as lazy

    assert lazy is GannoTrainerCallback
