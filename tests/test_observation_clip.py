"""A policy that holds its observations inside the range its training conditions show."""

import numpy as np
import pytest
import torch

from ganno_env import add_observation_clip, load_policy
from ganno_env.features import FEATURE_NAMES, OBS_HIGH, OBS_LOW
from ganno_env.observation_clip import training_ranges
from tests.helpers import random_policy

torch.set_num_threads(1)

# A short training pace, recorded in the file as `ganno train` records the preset's.
TRAINED_ON = {"conditions": "train", "population": 2, "interval": 3, "max_cycles": 4}
RELATIVE_LR = FEATURE_NAMES.index("log10_relative_lr")


def trained_policy(path, **extra):
    return random_policy(path, extra={**TRAINED_ON, **extra})


def with_clip(path, out, clip):
    payload = torch.load(path, weights_only=True)
    payload["observation_clip"] = clip
    torch.save(payload, out)
    return out


def test_the_ranges_come_from_episodes_of_the_recorded_training_conditions(tmp_path):
    policy = trained_policy(tmp_path / "p.pt")
    small = training_ranges(policy, FEATURE_NAMES, networks=2, seed=5)
    large = training_ranges(policy, FEATURE_NAMES, networks=6, seed=5)
    assert training_ranges(policy, FEATURE_NAMES, networks=2, seed=5) == small  # seeded
    for name in FEATURE_NAMES:  # more networks: the first ones' episodes and more
        assert large[name][0] <= small[name][0] <= small[name][1] <= large[name][1]
    low, high = small["log10_relative_lr"]
    assert low <= 0.0 <= high and high - low > 0  # it reads 0 at the first decision, then moves
    assert small["progress"][0] == 0.0
    assert small["progress"][1] == pytest.approx(3 / TRAINED_ON["max_cycles"])
    assert training_ranges(policy, networks=2, seed=5) == {"log10_relative_lr": [low, high]}


def test_a_clipped_policy_acts_beyond_the_range_as_at_its_edge(tmp_path):
    free = load_policy(trained_policy(tmp_path / "p.pt"))
    clip = {"log10_relative_lr": [-0.5, 0.5]}
    clipped = load_policy(with_clip(tmp_path / "p.pt", tmp_path / "c.pt", clip))
    rng = np.random.default_rng(0)
    rows = rng.uniform(OBS_LOW, OBS_HIGH, size=(64, len(FEATURE_NAMES))).astype(np.float32)
    observations = {f"net{i}_layer0": row for i, row in enumerate(rows)}
    at_edge = {}
    for agent, row in observations.items():
        edge = row.copy()
        edge[RELATIVE_LR] = np.clip(edge[RELATIVE_LR], -0.5, 0.5)
        at_edge[agent] = edge
    assert clipped.actions(observations) == free.actions(at_edge)
    assert free.actions(observations) != free.actions(at_edge), "the clip must change actions"


def test_add_observation_clip_writes_a_copy_that_records_its_ranges(tmp_path):
    policy = trained_policy(tmp_path / "p.pt")
    out = add_observation_clip(policy, tmp_path / "clipped.pt", networks=2, seed=5)
    copy = load_policy(out)
    assert copy.payload["observation_clip"] == training_ranges(policy, networks=2, seed=5)
    assert copy.payload["extra"]["observation_clip_from"] == {
        "conditions": "train",
        "networks": 2,
        "seed": 5,
    }
    assert "observation_clip" not in load_policy(policy).payload  # the original stays as it was
    with pytest.raises(ValueError, match="already clips its observations"):
        add_observation_clip(out, tmp_path / "twice.pt", networks=2)
    assert not (tmp_path / "twice.pt").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"features": ["lr"]}, r"features=\['lr'\]; allowed: some of the policy's"),
        ({"features": []}, r"features=\[\]; allowed"),
        ({"features": "log10_relative_lr"}, r"allowed: a list of names, e.g. \['log10_relative"),
        ({"networks": 0}, r"networks=0; allowed: an int >= 1"),
        ({"networks": True}, r"networks=True; allowed"),
        ({"seed": -1}, r"seed=-1; allowed: an int >= 0"),
        ({"seed": 999_999, "networks": 4}, r"reaches seed 1000002; allowed: seeds below 1000000"),
    ],
)
def test_bad_arguments_are_refused_before_any_episode(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        training_ranges(trained_policy(tmp_path / "p.pt"), **kwargs)


def test_a_policy_that_records_no_or_held_out_training_conditions_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"records no training conditions"):
        training_ranges(random_policy(tmp_path / "p.pt"), networks=2)
    held_out = trained_policy(tmp_path / "h.pt", conditions="unseen_lr_high")
    refused = r"'unseen_lr_high' is held out .*\(the clip's range must not see"
    with pytest.raises(ValueError, match=refused):
        training_ranges(held_out, networks=2)


@pytest.mark.parametrize(
    "clip, message",
    [
        ({}, r"observation_clip=\{\}; allowed: a non-empty dict"),
        ({"lr": [0, 1]}, r"names 'lr'; allowed: the features it reads"),
        ({"log10_relative_lr": [1, 0]}, r"\[1, 0\]; allowed: \[low, high\], both finite"),
        ({"log10_relative_lr": [0, float("inf")]}, r"\[0, inf\]; allowed"),
        ({"log10_relative_lr": [0]}, r"\[0\]; allowed"),
    ],
)
def test_a_damaged_clip_in_a_file_is_a_clear_error(tmp_path, clip, message):
    path = with_clip(trained_policy(tmp_path / "p.pt"), tmp_path / "c.pt", clip)
    with pytest.raises(ValueError, match=message):
        load_policy(path)
