"""Bad input fails early with a clear ValueError; any config builds or raises ValueError."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganno_env import layerwise_lr_v1


@pytest.mark.parametrize(
    "kwargs,names",
    [
        ({"task": "nope"}, ["task", "'nope'", "digits_mlp"]),
        ({"initial_lr": 0.0}, ["initial_lr", "0.0", "> 0"]),
        ({"initial_lr": -1e-3}, ["initial_lr", "> 0"]),
        ({"interval": 0}, ["interval", ">= 1"]),
        ({"max_cycles": 2.5}, ["max_cycles", "int"]),
        ({"population": 0}, ["population", ">= 1"]),
        ({"lr_factors": ()}, ["lr_factors", "non-empty"]),
        ({"lr_factors": (0.5, -2.0)}, ["lr_factors", "> 0"]),
        ({"lr_bounds": (1.0, 0.1)}, ["lr_bounds", "low < high"]),
        ({"action_mode": "box"}, ["action_mode", "'box'", "discrete"]),
        ({"reward": "sparse"}, ["reward", "log_improvement"]),
        ({"divergence_factor": 1.0}, ["divergence_factor", "> 1"]),
        ({"device": "tpu"}, ["device", "'tpu'", "cpu"]),
        ({"render_mode": "rgb_array"}, ["render_mode", "ansi"]),
        ({"optimizer": "rmsprop"}, ["optimizer", "sgd", "adam"]),
        ({"momentum": 1.0}, ["momentum", "[0, 1)"]),
        ({"max_step_ratio": 0.0}, ["max_step_ratio", "0.0", "None", "> 0"]),
        ({"max_step_ratio": float("inf")}, ["max_step_ratio", "finite"]),
        ({"probe_cuts_only": "yes"}, ["probe_cuts_only", "'yes'", "True or False"]),
        ({"fallback_step_ratio": -1}, ["fallback_step_ratio", "-1", "None", "> 0"]),
        (
            {"fallback_step_ratio": 0.3, "lr_factors": (1.0, 2.0)},
            ["fallback_step_ratio", "[1.0, 2.0]", "none below 1"],
        ),
        ({"step_clip": 0}, ["step_clip", "0", "None", "> 0"]),
        ({"step_clip": float("nan")}, ["step_clip", "nan", "finite"]),
        ({"conditions": "unseen"}, ["conditions", "'unseen'", "train"]),
        ({"conditions": {"depth": -1}}, ["depth", ">= 0"]),
        ({"conditions": {"colour": 1}}, ["colour", "initial_lr"]),
        ({"max_layers": 3}, ["max_layers", ">= 4"]),
        ({"task": "mnist_mlp"}, ["mnist_mlp", "data_dir"]),
        ({"unknown_key": 1}, ["unknown_key"]),
    ],
)
def test_bad_config_names_the_key_the_value_and_what_is_allowed(kwargs, names):
    with pytest.raises(ValueError) as error:
        layerwise_lr_v1.parallel_env(**kwargs)
    for name in names:
        assert name in str(error.value)


def test_per_layer_initial_lr_must_match_the_depth():
    env = layerwise_lr_v1.parallel_env(initial_lr=[0.1, 0.01, 0.01, 0.001])
    _, infos = env.reset(seed=0)
    assert [infos[f"layer_{j}"]["lr"] for j in range(4)] == [0.1, 0.01, 0.01, 0.001]
    env = layerwise_lr_v1.parallel_env(initial_lr=[0.1, 0.01])
    with pytest.raises(ValueError, match="exactly 4"):
        env.reset(seed=0)


def test_bad_reset_options_raise_before_training():
    env = layerwise_lr_v1.parallel_env(population=2)
    with pytest.raises(ValueError, match="initial_lr"):
        env.reset(seed=0, options={"initial_lr": float("nan")})
    with pytest.raises(ValueError, match="list of 2"):
        env.reset(seed=0, options={"conditions": [{"initial_lr": 0.1}]})
    with pytest.raises(ValueError, match="width differs"):
        env.reset(seed=0, options={"conditions": [{"width": 8}, {"width": 16}]})


anything = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 50), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.floats(-1, 3), max_size=5),
)  # fmt: skip
config_values = {
    "task": st.one_of(st.sampled_from(["digits_mlp", "wine_mlp", "moons_mlp", "x"]), anything),
    "conditions": st.one_of(
        st.sampled_from(["train", "default", "unseen_lr_high", "deeper", "nope"]),
        st.dictionaries(
            st.sampled_from(["initial_lr", "init_scale", "width", "depth", "batch_size", "bad"]),
            st.one_of(st.integers(-2, 12), st.floats(-1, 2)),
            max_size=3,
        ),
        anything,
    ),
    "initial_lr": st.one_of(st.floats(-1, 5), anything),
    "population": st.one_of(st.integers(0, 3), anything),
    "siblings": st.one_of(st.integers(0, 3), anything),
    "max_cycles": st.one_of(st.integers(0, 3), anything),
    "interval": st.one_of(st.integers(0, 3), anything),
    "lr_factors": st.one_of(st.lists(st.floats(-1, 3), max_size=4), anything),
    "lr_bounds": st.one_of(st.tuples(st.floats(-1, 20), st.floats(-1, 20)), anything),
    "action_mode": st.one_of(st.sampled_from(["discrete", "continuous", "log_lr"]), anything),
    "reward": st.one_of(
        st.sampled_from(["log_improvement", "final", "vs_bold_driver", "vs_siblings"]), anything
    ),
    "divergence_factor": st.one_of(st.floats(0, 20), anything),
    "max_layers": st.one_of(st.integers(0, 12), anything),
    "device": st.one_of(st.sampled_from(["cpu", "cuda", "cpu:0", "meta"]), anything),
    "optimizer": st.one_of(st.sampled_from(["sgd", "adam"]), anything),
    "momentum": st.one_of(st.floats(-1, 2), anything),
    "val_limit": st.one_of(st.integers(-1, 100), anything),
    "max_step_ratio": st.one_of(st.floats(-1, 2), anything),
    "probe_cuts_only": st.one_of(st.booleans(), anything),
    "fallback_step_ratio": st.one_of(st.floats(-1, 2), anything),
    "step_clip": st.one_of(st.floats(-1, 2), anything),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=config_values), st.integers(0, 2**16))
def test_any_config_builds_a_working_env_or_raises_value_error(kwargs, seed):
    try:
        env = layerwise_lr_v1.parallel_env(**kwargs)
        obs, _ = env.reset(seed=seed)
    except ValueError:
        return
    assert obs and set(obs) == set(env.agents)
    action = env.action_space(env.agents[0]).sample()
    obs, rewards, *_ = env.step({agent: action for agent in env.agents})
    for agent, value in obs.items():
        assert env.observation_space(agent).contains(value)
        assert np.isfinite(rewards[agent])


def test_defaults_are_read_from_the_env_config():
    from ganno_env.cli import build_parser
    from ganno_env.config import ENV_DEFAULTS, EnvConfig

    config = EnvConfig()
    assert all(ENV_DEFAULTS[k] == getattr(config, k) for k in ENV_DEFAULTS)
    args = build_parser().parse_args(["baselines"])
    assert (args.task, args.max_cycles, args.interval, args.device) == (
        config.task, config.max_cycles, config.interval, config.device
    )  # fmt: skip
