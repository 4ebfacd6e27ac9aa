"""One decision core: the env and GannoScheduler both decide through ganno_env.decision."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ganno_env
from ganno_env import GannoScheduler, layerwise_lr_v1
from ganno_env.decision import DecisionCore
from ganno_env.features import FEATURES, LayerStats
from ganno_env.models import MLP
from ganno_env.policy import PolicyNet, export_policy

PACKAGE = Path(ganno_env.__file__).parent
# calls that make a decision: only the core may make them
DECISION_CALLS = (r"observation_features\(", r"FeatureReference\.at_start\(", r"requested_lr\(")


def test_only_the_core_makes_decision_calls():
    callers = {
        pattern: sorted(
            path.relative_to(PACKAGE).as_posix()
            for path in PACKAGE.rglob("*.py")
            if re.search(r"(?<!def )" + pattern, path.read_text())
        )
        for pattern in DECISION_CALLS
    }
    assert callers == {pattern: ["decision.py"] for pattern in DECISION_CALLS}


def test_env_and_scheduler_read_their_state_from_a_core(tmp_path):
    env = layerwise_lr_v1.parallel_env(max_cycles=2, interval=3)
    env.reset(seed=0)
    env.step({a: 4 for a in env.agents})
    assert isinstance(env.core, DecisionCore)
    assert np.shares_memory(env.lrs, env.core.values) and env.val_loss is env.core.val_loss
    assert env.num_moves == env.core.decisions == 1

    export_policy(tmp_path / "p.pt", {"shared": PolicyNet(len(FEATURES), 5)}, "shared", {})
    model = MLP(8, 16, 1, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = GannoScheduler(optimizer, model, tmp_path / "p.pt", interval=2)
    F.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    scheduler.observe(1.0)
    assert isinstance(scheduler.core, DecisionCore)
    assert np.shares_memory(scheduler.lrs, scheduler.core.lrs)
    assert scheduler.decisions == scheduler.core.decisions == 1


def test_a_diverging_network_is_capped_and_reported_once():
    core = DecisionCore("discrete", (0.5, 1.0, 2.0), (1e-4, 1.0), 10.0, max_cycles=4)
    stats = LayerStats(*(torch.full((2, 3), 0.5) for _ in range(5)))
    obs = core.start(np.full((2, 3), 0.1), stats, [2.0, np.nan], [2.0, np.inf])
    assert np.isfinite(obs).all()
    np.testing.assert_array_equal(core.initial_val_loss, [2.0, 1.0])  # non-finite: 1.0
    np.testing.assert_array_equal(core.train_loss, [2.0, 10.0])  # non-finite: the cap

    lrs = core.apply_actions({(0, 0): 2, (1, 2): 0})
    np.testing.assert_allclose(lrs, [[0.2, 0.1, 0.1], [0.1, 0.1, 0.05]])
    first = core.measure(stats, [1.0, 5.0], [np.nan, 3.0])
    np.testing.assert_array_equal(first.diverged_now, [True, False])
    np.testing.assert_array_equal(first.val_loss, [20.0, 3.0])  # capped at 10 x initial
    again = core.measure(stats, [1.0, 5.0], [np.nan, 3.0])
    assert not again.diverged_now.any() and core.diverged.tolist() == [True, False]

    live = np.array([False, True])  # a network that is done keeps its LRs and losses
    core.apply_actions({(0, 1): 2, (1, 1): 2}, live)
    np.testing.assert_allclose(core.lrs, [[0.2, 0.1, 0.1], [0.1, 0.2, 0.05]])
    kept = core.measure(stats, [7.0, 1.0], [7.0, 1.0], live)
    np.testing.assert_array_equal(kept.val_loss, [20.0, 1.0])
    assert np.isfinite(kept.observations).all()


def _stats(weight_rms, grad_rms):
    zeros = torch.zeros_like(torch.as_tensor(weight_rms))
    return LayerStats(torch.as_tensor(weight_rms), torch.as_tensor(grad_rms), zeros, zeros, zeros)


def test_the_safety_net_holds_every_lr_in_force_under_its_ceiling():
    core = DecisionCore("discrete", (0.5, 1.0, 4.0), (1e-4, 10.0), 10.0, 4, max_step_ratio=0.1)
    # ceilings 0.1 x weight RMS / gradient RMS: 0.2, 0.4, 1e8 (no gradient to speak of), 1e-5
    probe = _stats([[1.0, 2.0, 1.0, 1.0]], [[0.5, 0.5, 1e-9, 1e4]])
    core.start(np.full((1, 4), 1.0), probe, [2.0], [2.0])
    np.testing.assert_allclose(core.lr_ceiling, [[0.2, 0.4, 1e8, 1e-4]])  # never below 1e-4

    # a kept LR is held under the ceiling too; below it the factors act as without the net
    lrs = core.apply_actions({(0, 0): 1, (0, 1): 0, (0, 2): 2, (0, 3): 1})
    np.testing.assert_allclose(lrs, [[0.2, 0.4, 4.0, 1e-4]])
    np.testing.assert_allclose(core.last_log_factor, [[0.0, np.log(0.5), np.log(4.0), 0.0]])

    # the ceiling follows the latest statistics: smaller gradients allow larger LRs
    core.measure(_stats([[1.0, 2.0, 1.0, 1.0]], [[0.01, 0.5, 1e-9, 1e4]]), [1.0], [1.0])
    lrs = core.apply_actions({(0, 0): 2, (0, 1): 2, (0, 2): 2, (0, 3): 2})
    np.testing.assert_allclose(lrs, [[0.8, 0.4, 10.0, 1e-4]])

    off = DecisionCore("discrete", (0.5, 1.0, 4.0), (1e-4, 10.0), 10.0, 4)
    off.start(np.full((1, 4), 1.0), probe, [2.0], [2.0])
    np.testing.assert_array_equal(off.apply_actions({(0, 0): 1, (0, 3): 2}), [[1, 1, 1, 4]])


def test_probe_cuts_only_keeps_a_raise_at_the_probe_and_allows_it_after():
    core = DecisionCore("discrete", (0.5, 1.0, 4.0), (1e-4, 10.0), 10.0, 4, probe_cuts_only=True)
    stats = _stats(torch.ones(1, 3), torch.ones(1, 3))
    core.start(np.full((1, 3), 0.1), stats, [2.0], [2.0])
    lrs = core.apply_actions({(0, 0): 2, (0, 1): 0, (0, 2): 1})  # raise, cut, keep
    np.testing.assert_allclose(lrs, [[0.1, 0.05, 0.1]])
    np.testing.assert_allclose(core.last_log_factor, [[np.log(4.0), np.log(0.5), 0.0]])
    core.measure(stats, [1.0], [1.0])
    np.testing.assert_allclose(core.apply_actions({(0, 0): 2}), [[0.4, 0.05, 0.1]])

    free = DecisionCore("discrete", (0.5, 1.0, 4.0), (1e-4, 10.0), 10.0, 4)
    free.start(np.full((1, 3), 0.1), stats, [2.0], [2.0])
    np.testing.assert_allclose(free.apply_actions({(0, 0): 2}), [[0.4, 0.1, 0.1]])


def test_the_fallback_cuts_every_layer_of_a_network_that_leaves_the_training_support():
    core = DecisionCore("discrete", (0.25, 1.0, 4.0), (1e-4, 10.0), 10.0, 4,
                        fallback_step_ratio=0.1)  # fmt: skip
    # step ratios at LR 1: network 0's last layer 0.2 (outside), network 1's all 0.05
    probe = _stats([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [[0.01, 0.05, 0.2], [0.05] * 3])
    core.start(np.ones((2, 3)), probe, [2.0, 2.0], [2.0, 2.0])
    np.testing.assert_allclose(core.fallback_lr, [[10.0, 2.0, 0.5], [2.0, 2.0, 2.0]])
    raise_all = {(i, j): 2 for i in range(2) for j in range(3)}
    keep_1 = {(1, j): 1 for j in range(3)}
    lrs = core.apply_actions({**raise_all, **keep_1})
    np.testing.assert_allclose(lrs, [[0.25] * 3, [1.0] * 3])  # network 1 acts as it asks
    np.testing.assert_allclose(core.last_log_factor, [[np.log(4.0)] * 3, [0.0] * 3])  # asked

    # the threshold follows the latest statistics (LR 2 now), and an LR asked for beyond it
    # counts as one in force: network 1's raise of its first layer to 4 cuts it back
    core.measure(_stats(torch.ones(2, 3), torch.full((2, 3), 0.05)), [1.0, 1.0], [1.0, 1.0])
    raise_first = {(0, 0): 2, (0, 1): 2, (0, 2): 2, (1, 0): 2}
    np.testing.assert_allclose(core.apply_actions(raise_first), [[1.0] * 3, [0.25] * 3])
    core.measure(_stats(torch.ones(2, 3), torch.full((2, 3), 0.2)), [1.0, 1.0], [1.0, 1.0])
    np.testing.assert_allclose(core.apply_actions({}), [[0.25] * 3, [0.25] * 3])  # one cut
    # as many cuts as it takes to bring every layer back within the threshold: at gradient
    # RMS 10 it is LR 0.01, so LR 0.25 is cut three times, to 0.25 / 64
    core.measure(_stats(torch.ones(2, 3), torch.full((2, 3), 10.0)), [1.0, 1.0], [1.0, 1.0])
    np.testing.assert_allclose(core.fallback_lr, 0.01)
    np.testing.assert_allclose(core.apply_actions(raise_all), np.full((2, 3), 0.25 / 64))

    # never below the lower LR bound, where the fallback holds the LRs while the steps stay
    # too large, and lets them go up once they are not
    low = DecisionCore("discrete", (0.25, 1.0, 4.0), (1e-4, 10.0), 10.0, 4,
                       fallback_step_ratio=0.1)  # fmt: skip
    low.start(
        np.full((1, 3), 2e-4), _stats(torch.ones(1, 3), torch.full((1, 3), 1e6)), [2.0], [2.0]
    )
    np.testing.assert_allclose(low.apply_actions({}), [[1e-4] * 3])
    low.measure(_stats(torch.ones(1, 3), torch.full((1, 3), 1e6)), [1.0], [1.0])
    np.testing.assert_allclose(low.apply_actions({(0, 0): 2}), [[1e-4] * 3])  # asked beyond
    low.measure(_stats(torch.ones(1, 3), torch.full((1, 3), 1e-3)), [1.0], [1.0])
    np.testing.assert_allclose(low.apply_actions({(0, 0): 2}), [[4e-4, 1e-4, 1e-4]])

    with pytest.raises(ValueError, match=r"lr_factors=\[1.0, 2.0\] has none below 1"):
        DecisionCore("discrete", (1.0, 2.0), (1e-4, 10.0), 10.0, 4, fallback_step_ratio=0.1)

    off = DecisionCore("discrete", (0.25, 1.0, 4.0), (1e-4, 10.0), 10.0, 4)
    off.start(np.ones((2, 3)), probe, [2.0, 2.0], [2.0, 2.0])
    np.testing.assert_allclose(off.apply_actions(raise_all), 4.0)

    # with the safety net as well, its ceiling still holds after the fallback's cut
    both = DecisionCore("discrete", (0.25, 1.0, 4.0), (1e-4, 10.0), 10.0, 4,
                        max_step_ratio=0.01, fallback_step_ratio=0.1)  # fmt: skip
    both.start(np.ones((2, 3)), probe, [2.0, 2.0], [2.0, 2.0])
    np.testing.assert_allclose(both.apply_actions({}), [[0.25, 0.2, 0.05], [0.2, 0.2, 0.2]])


def test_a_state_saved_before_the_safety_net_loads_without_a_ceiling():
    core = DecisionCore("discrete", (0.5, 1.0, 2.0), (1e-4, 1.0), 10.0, 4, max_step_ratio=0.1)
    core.start(np.full((2, 3), 0.5), _stats(torch.ones(2, 3), torch.ones(2, 3)), [1, 1], [1, 1])
    state = core.state_dict()
    np.testing.assert_allclose(state["lr_ceiling"].numpy(), 0.1)
    del state["lr_ceiling"], state["fallback_lr"]
    core.load_state_dict(state)
    assert core.lr_ceiling.shape == (2, 3) and np.isinf(core.lr_ceiling).all()
    assert core.fallback_lr.shape == (2, 3) and np.isinf(core.fallback_lr).all()
