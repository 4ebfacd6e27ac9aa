"""The versioned condition file: held-out conditions are outside the training support."""

import numpy as np
import pytest

from benchmarks.suites import parse_suite
from ganno_env import get_condition, get_task, load_conditions
from ganno_env.conditions import (
    CONDITION_FIELDS,
    Condition,
    held_out_conditions,
    held_out_overlap,
    in_support,
    mixture,
)

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


TRAINING_CONDITIONS = (
    "train", "train_wide", "train_tasks", "train_depths", "train_hot", "train_wide_hot",
    "train_wide_inputs",
)  # fmt: skip


@pytest.mark.parametrize("training", TRAINING_CONDITIONS)
@pytest.mark.parametrize("held_out", sorted(REQUIRED_HELD_OUT))
def test_held_out_conditions_are_never_sampled_by_train(held_out, training):
    train = get_condition(training)
    assert not train.held_out
    condition = get_condition(held_out)
    rng = np.random.default_rng(0)
    for seed in range(50):
        sample = condition.sample(rng, seed)
        outside = []
        fields = (
            "task", "initial_lr", "init_scale", "grad_scale", "batch_size", "width", "depth",
            "input_scale",
        )  # fmt: skip
        for field in fields:
            value = training_value(field, sample)
            spec = train.specs.get(field, training_value(field, train.sample(rng, 0)))
            outside.append(not in_support(spec, value))
        assert any(outside), f"{held_out} drew {sample}, which train can produce"


@pytest.mark.parametrize("training", TRAINING_CONDITIONS)
def test_training_effective_lrs_stay_apart_from_held_out_lrs(training):
    """For SGD, LR x gradient scale is the step size that counts: its whole training range
    lies strictly between the held-out LRs (`unseen_lr_low` < it < `unseen_lr_high`)."""
    specs = get_condition(training).specs
    lr = specs["initial_lr"]["log_uniform"]
    scale = specs.get("grad_scale", 1.0)
    scale = scale["log_uniform"] if isinstance(scale, dict) else [scale, scale]
    low, high = lr[0] * scale[0], lr[1] * scale[1]
    held_low = max(get_condition("unseen_lr_low").values_of("initial_lr"))
    held_high = min(get_condition("unseen_lr_high").values_of("initial_lr"))
    assert held_low < low <= high < held_high


def test_sampling_is_seeded_and_in_support():
    train = get_condition("train")
    a = [train.sample(np.random.default_rng(s), s) for s in range(20)]
    b = [train.sample(np.random.default_rng(s), s) for s in range(20)]
    assert a == b
    assert all(1e-4 <= c.initial_lr <= 0.3 for c in a)
    assert len({c.initial_lr for c in a}) == 20


def test_bad_specs_name_the_condition_and_field():
    with pytest.raises(ValueError, match="'mine': initial_lr: .*gaussian.*one of"):
        Condition("mine", {"initial_lr": {"gaussian": [0, 1]}})
    with pytest.raises(ValueError, match=r"'mine': depth: int_uniform \[5, 2\] is inverted"):
        Condition("mine", {"depth": {"int_uniform": [5, 2]}})
    with pytest.raises(ValueError, match=r"'mine': width: choice \[\] is empty"):
        Condition("mine", {"width": {"choice": []}})
    with pytest.raises(ValueError, match="'mine'.*init_scale"):
        Condition("mine", {"init_scale": {"choice": [1.0, -1.0]}})
    assert set(CONDITION_FIELDS) == {
        "task", "initial_lr", "init_scale", "grad_scale", "batch_size", "width", "depth",
        "input_scale", "seed",
    }  # fmt: skip


def test_every_training_condition_is_named_in_the_honesty_tests():
    trainable = {name for name, c in load_conditions().items() if not c.held_out}
    assert trainable - {"default"} == set(TRAINING_CONDITIONS)


def test_a_mixture_draws_its_parts_by_weight_and_its_specs_cover_them():
    wide, hot = get_condition("train_wide"), get_condition("train_hot")
    mixed = get_condition("train_wide_hot")
    assert [(part.name, weight) for part, weight in mixed.parts] == [
        ("train_wide", 3.0), ("train_hot", 1.0)
    ]  # fmt: skip
    draws = [mixed.sample(np.random.default_rng(s), s) for s in range(2000)]
    assert draws == [mixed.sample(np.random.default_rng(s), s) for s in range(2000)]
    in_hot = [all(in_support(hot.specs[k], getattr(d, k)) for k in hot.specs) for d in draws]
    # train_hot's corner holds a quarter of the draws, train_wide alone puts ~0.4% there
    assert 0.22 < np.mean(in_hot) < 0.28
    for draw in draws:
        for key, spec in mixed.specs.items():
            assert in_support(spec, getattr(draw, key)), (key, draw)
    assert mixed.specs == wide.specs  # train_hot lies inside train_wide
    assert not held_out_overlap(mixed)


def test_a_mixture_with_a_held_out_part_is_held_out_and_overlaps():
    wide = get_condition("train_wide")
    wider = Condition("wider_mine", {**wide.specs, "width": 256}, held_out=True)
    mixed = mixture("leaky", [(wide, 1), (wider, 1)])
    assert mixed.held_out
    assert mixed.specs["width"] == {"choice": [32, 64, 128, 256]}
    assert any("'wider'" in problem for problem in held_out_overlap(mixed))
    lows = Condition("lows", {**wide.specs, "initial_lr": {"choice": [1e-6, 1e-5]}})
    assert mixture("m", [(wide, 1), (lows, 1)]).specs["initial_lr"] == {
        "log_uniform": [1e-6, 0.3]
    }  # fmt: skip


def test_a_mixture_names_bad_weights_and_parts_that_cannot_be_joined():
    wide, tasks = get_condition("train_wide"), get_condition("train_tasks")
    with pytest.raises(ValueError, match=r"mixture 'm': weights \[0\]; allowed: finite"):
        mixture("m", [(wide, 0)])
    with pytest.raises(ValueError, match="mixture 'm': task: set in some parts only"):
        mixture("m", [(wide, 1), (tasks, 1)])
    ranged = Condition("ranged", {"init_scale": {"uniform": [0.5, 1.0]}})
    with pytest.raises(ValueError, match="mixture 'm': init_scale: .* cannot be joined"):
        mixture("m", [(wide, 1), (ranged, 1)])


def test_a_mixtures_content_names_its_parts_and_weights_and_a_suite_hash_sees_them():
    wide, hot = get_condition("train_wide"), get_condition("train_hot")
    assert wide.content() == dict(wide.specs)
    mixed = get_condition("train_wide_hot")
    assert mixed.content() == {"mixture": [[wide.content(), 3.0], [hot.content(), 1.0]]}
    other_weights = mixture("train_wide_hot", [(wide, 1), (hot, 1)])
    assert other_weights.specs == mixed.specs and other_weights.content() != mixed.content()
    # its envelope equals train_wide's specs: the suite hash must still tell them apart
    suites = [parse_suite({"version": "v", "conditions": [name]}, "s")
              for name in ("train_wide", "train_wide_hot")]  # fmt: skip
    assert suites[0].content_hash() != suites[1].content_hash()
