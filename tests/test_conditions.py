"""The versioned condition file: held-out conditions are outside the training support."""

import numpy as np
import pytest

from ganno_env import get_condition, get_task, load_conditions
from ganno_env.conditions import CONDITION_FIELDS, Condition, held_out_conditions, in_support

REQUIRED_HELD_OUT = {
    "unseen_lr_low", "unseen_lr_high", "init_scale_small", "init_scale_large", "batch_small",
    "batch_large", "deeper", "wider", "other_dataset", "cnn",
}  # fmt: skip


def test_the_file_names_the_training_distribution_and_every_held_out_condition():
    conditions = load_conditions()
    assert REQUIRED_HELD_OUT <= {c.name for c in held_out_conditions()}
    assert not conditions["train"].held_out
    lr = conditions["train"].specs["initial_lr"]
    assert lr == {"log_uniform": [1e-4, 0.3]}


def training_value(field, sample):
    """A field's value as the training distribution would produce it (task defaults)."""
    task = get_task(sample.task or "digits_mlp")
    defaults = {"width": task.width, "depth": task.depth, "batch_size": task.batch_size,
                "task": task.name}  # fmt: skip
    value = getattr(sample, field)
    return defaults.get(field) if value is None else value


@pytest.mark.parametrize("held_out", sorted(REQUIRED_HELD_OUT))
def test_held_out_conditions_are_never_sampled_by_train(held_out):
    train = get_condition("train")
    condition = get_condition(held_out)
    rng = np.random.default_rng(0)
    for seed in range(50):
        sample = condition.sample(rng, seed)
        outside = []
        for field in ("task", "initial_lr", "init_scale", "batch_size", "width", "depth"):
            value = training_value(field, sample)
            spec = train.specs.get(field, training_value(field, train.sample(rng, 0)))
            outside.append(not in_support(spec, value))
        assert any(outside), f"{held_out} drew {sample}, which train can produce"


def test_sampling_is_seeded_and_in_support():
    train = get_condition("train")
    a = [train.sample(np.random.default_rng(s), s) for s in range(20)]
    b = [train.sample(np.random.default_rng(s), s) for s in range(20)]
    assert a == b
    assert all(1e-4 <= c.initial_lr <= 0.3 for c in a)
    assert len({c.initial_lr for c in a}) == 20


def test_bad_specs_name_the_condition_and_field():
    with pytest.raises(ValueError, match="'mine'.*spec kinds"):
        Condition("mine", {"initial_lr": {"gaussian": [0, 1]}})
    with pytest.raises(ValueError, match="'mine'.*init_scale"):
        Condition("mine", {"init_scale": {"choice": [1.0, -1.0]}})
    assert set(CONDITION_FIELDS) == {
        "task", "initial_lr", "init_scale", "batch_size", "width", "depth", "seed"
    }  # fmt: skip
