"""Features v2 are scale-free: what the agents see depends on how training moves, not on
the absolute size of the LR, the weights or the gradients."""

import numpy as np
import pytest
import torch

from ganno_env import layerwise_lr_v1
from ganno_env.features import FEATURE_NAMES

torch.set_num_threads(1)
STEP_RATIO = FEATURE_NAMES.index("log10_step_ratio")
RELATIVE_LR = FEATURE_NAMES.index("log10_relative_lr")


def _episode(conditions: dict, decisions: int = 4) -> tuple[list[np.ndarray], list[float]]:
    """Observations of layer 0 and val losses over a few decisions of fixed actions."""
    env = layerwise_lr_v1.parallel_env(conditions=conditions, max_cycles=decisions, interval=5)
    obs, _ = env.reset(seed=3)
    seen, losses = [np.stack([obs[a] for a in env.agents])], [float(env.val_loss[0])]
    actions = [4, 0, 2, 3]  # x2, x0.5, x1, x1.25
    for k in range(decisions):
        obs, _, _, _, _ = env.step({a: actions[k % len(actions)] for a in env.agents})
        seen.append(np.stack([obs[a] for a in sorted(obs)]))
        losses.append(float(env.val_loss[0]))
    return seen, losses


def test_a_gradient_scale_trains_and_looks_like_the_same_lr_times_the_scale():
    """SGD with loss x 4 at LR 0.01 is SGD at LR 0.04: same losses, same observations."""
    scaled_obs, scaled_loss = _episode({"initial_lr": 0.01, "grad_scale": 4.0})
    plain_obs, plain_loss = _episode({"initial_lr": 0.04})
    np.testing.assert_allclose(scaled_loss, plain_loss, rtol=2e-4)
    for a, b in zip(scaled_obs, plain_obs):
        np.testing.assert_allclose(a, b, atol=2e-3)


def test_a_larger_initial_lr_shows_as_a_larger_step_not_as_another_lr_value():
    small, _ = _episode({"initial_lr": 0.001}, decisions=1)
    large, _ = _episode({"initial_lr": 0.1}, decisions=1)
    # at the probe: same relative LR (0), step ratio larger by log10(100) = 2
    np.testing.assert_array_equal(small[0][:, RELATIVE_LR], 0.0)
    np.testing.assert_array_equal(large[0][:, RELATIVE_LR], 0.0)
    np.testing.assert_allclose(large[0][:, STEP_RATIO] - small[0][:, STEP_RATIO], 2.0, atol=1e-4)


@pytest.mark.parametrize("initial_lr", [1e-7, 10.0])
def test_extreme_lrs_saturate_within_the_bounds(initial_lr):
    """Far outside anything trained on, features stay finite and within their bounds."""
    env = layerwise_lr_v1.parallel_env(initial_lr=initial_lr, max_cycles=3, interval=5)
    obs, _ = env.reset(seed=0)
    while env.agents:
        space = env.observation_space(env.agents[0])
        assert all(space.contains(o) for o in obs.values())
        obs, *_ = env.step({a: 2 for a in env.agents})
    assert all(np.isfinite(o).all() for o in obs.values())
