"""The env, the benchmark's rollouts and the pretrained policy on CUDA, against the CPU.

Skipped without a GPU. The same seeds give the same networks, batches and decisions on
both devices; only float rounding differs (other kernels), so the results agree closely,
not bit for bit.
"""

import numpy as np
import pytest
import torch

from ganno_env import layerwise_lr_v1
from ganno_env.policy import load_policy
from ganno_env.rollout import make_env, rollout

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def play(device: str, task: str, actions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Observations and rewards of one episode of fixed actions, stacked per step."""
    env = layerwise_lr_v1.parallel_env(task=task, device=device, population=4, max_cycles=4,
                                       interval=5, conditions="train_wide")  # fmt: skip
    observations, _ = env.reset(seed=3)
    seen, rewards = [np.stack(list(observations.values()))], []
    for action in actions:
        observations, reward, _, _, _ = env.step({agent: action for agent in env.agents})
        seen.append(np.stack(list(observations.values())))
        rewards.append(np.array(list(reward.values())))
    return np.stack(seen), np.stack(rewards)


@pytest.mark.parametrize("task", ["digits_mlp", "digits_cnn"])  # hand-batched and vmap paths
def test_an_episode_on_cuda_matches_the_cpu(task):
    actions = [0, 4, 2, 3]  # cut, raise, keep, raise: both directions of the LR
    cpu_obs, cpu_rewards = play("cpu", task, actions)
    cuda_obs, cuda_rewards = play("cuda", task, actions)
    assert np.isfinite(cuda_obs).all() and np.isfinite(cuda_rewards).all()
    np.testing.assert_allclose(cuda_obs, cpu_obs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(cuda_rewards, cpu_rewards, rtol=1e-3, atol=1e-3)


def test_the_pretrained_policy_trains_alike_on_cuda():
    """What `ganno bench --device cuda --policy pretrained` runs: the first decision (from
    the probe) is the same on both devices; later ones may part at a near-tie of the greedy
    argmax, as rounding differs, so the final losses agree on average, not network by
    network."""
    runs = {}
    for device in ("cpu", "cuda"):
        controller = load_policy("pretrained")
        env = make_env(controller, device=device, population=8, conditions="train_wide")
        runs[device] = rollout(env, controller, seed=5)
    for cpu, cuda in zip(runs["cpu"], runs["cuda"]):
        assert cuda.lr_schedule[0] == pytest.approx(cpu.lr_schedule[0], rel=1e-6)
        assert np.isfinite(cuda.final_val_loss) and not cuda.diverged
    mean_log_loss = {d: np.mean([np.log(r.final_val_loss) for r in runs[d]]) for d in runs}
    assert abs(mean_log_loss["cuda"] - mean_log_loss["cpu"]) < 0.15
