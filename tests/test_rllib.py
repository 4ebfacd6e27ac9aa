"""Training with RLlib: mappings, export, restore, clusters, fault tolerance, depth.

In-process tests share one local Ray instance (`ray_session`); tests that need their own
Ray (a new process, a simulated cluster, a head node for `ray job submit`) run it in a
subprocess and stop what they started by PID.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ray")

from ray.rllib.core.columns import Columns  # noqa: E402

from ganno_env import layerwise_lr_v1  # noqa: E402
from ganno_env.policy import load_policy  # noqa: E402
from rllib_configs.env import GannoMultiAgentEnv, MixedDepthEnv, NetworkViewEnv  # noqa: E402
from rllib_configs.ppo import build_config, get_preset  # noqa: E402
from rllib_configs.train import export_from, train  # noqa: E402

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def progress_rows(out):
    with open(Path(out) / "progress.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("mapping", ["shared", "grouped", "per_layer"])
def test_smoke_training_writes_checkpoints_metrics_and_a_policy(ray_session, tmp_path, mapping):
    policy_path = train(get_preset("smoke"), mapping, tmp_path, stop_iters=2, log=lambda s: None)
    rows = progress_rows(tmp_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(float(r["agent_steps"]) >= 80 for r in rows)
    assert np.isfinite(float(rows[1]["eval_mean_return"]))  # evaluated on held-out LRs
    assert (tmp_path / "checkpoints" / "iter_000002").is_dir()
    assert any((tmp_path / "tb").iterdir())
    payload = torch.load(policy_path, weights_only=True)
    expected = {"shared": {"shared"}, "grouped": {"first", "hidden", "last"},
                "per_layer": {f"layer_{j}" for j in range(4)}}[mapping]  # fmt: skip
    assert set(payload["modules"]) == expected and payload["mapping"] == mapping
    controller = load_policy(policy_path)
    env = layerwise_lr_v1.parallel_env(population=2, max_cycles=3)
    obs, _ = env.reset(seed=0)
    actions = controller.actions(obs)
    assert set(actions) == set(env.agents)
    env.step(actions)


def test_exported_policy_acts_like_the_rllib_module(ray_session, tmp_path):
    preset = get_preset("smoke", evaluation_interval=0)
    algo = build_config(preset, "grouped").build_algo()
    try:
        algo.train()
        export_from(algo, tmp_path / "policy.pt", preset, "grouped")
        controller = load_policy(tmp_path / "policy.pt")
        weights = algo.learner_group.get_weights()
        env = layerwise_lr_v1.parallel_env(population=2, max_cycles=4, conditions="unseen_lr")
        obs, _ = env.reset(seed=5)
        compared = live_steps = 0
        while env.agents:
            # a network that diverged (LR 3 is in unseen_lr) leaves: only live agents act
            obs = {agent: obs[agent] for agent in env.agents}
            live_steps += len(obs)
            ours = controller.actions(obs)
            for agent, value in obs.items():
                module_id = algo.config.policy_mapping_fn(agent, None)
                module = algo.get_module(module_id)
                module.set_state(weights[module_id])
                out = module.forward_inference({Columns.OBS: torch.as_tensor(value[None])})
                dist = module.get_inference_action_dist_cls().from_logits(
                    out[Columns.ACTION_DIST_INPUTS]
                )
                assert int(dist.to_deterministic().sample()[0]) == ours[agent]
                compared += 1
            obs, *_ = env.step(ours)
        assert compared == live_steps >= 2 * 4  # every live agent at every decision
    finally:
        algo.stop()


def default_sigint():
    """In the child before exec: Ctrl-C as in a terminal. Python installs its handler only
    where SIGINT is not ignored, and a test run started as a background job ignores it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(args, env=None, **kwargs):
    return subprocess.Popen(
        [str(BIN / "ganno"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, **(env or {})}, start_new_session=True,
        preexec_fn=default_sigint, **kwargs,
    )  # fmt: skip


def test_ctrl_c_leaves_a_checkpoint_that_resumes_in_a_new_process(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["train", "--preset", "smoke", "--out", str(out), "--stop-iters", "200"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "progress.csv").exists() and len(progress_rows(out)) >= 3:
                break
            time.sleep(0.5)
        else:
            pytest.fail("training produced no progress within 120 s")
        second = subprocess.run([str(BIN / "ganno"), "train", "--preset", "smoke", "--out",
                                 str(out), "--resume"], capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        assert second.returncode == 2 and f"(PID {proc.pid})" in second.stderr, second.stderr
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    interrupted_at = max(int(r["iteration"]) for r in progress_rows(out))
    assert (out / "checkpoints" / f"iter_{interrupted_at:06d}").is_dir()

    stop = interrupted_at + 2
    proc = run_cli(["train", "--preset", "smoke", "--out", str(out), "--resume",
                    "--stop-iters", str(stop)])  # fmt: skip
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert f"(iteration {interrupted_at})" in output
    assert [int(r["iteration"]) for r in progress_rows(out)] == list(range(1, stop + 1))
    assert load_policy(out / "policy.pt").payload["extra"]["iteration"] == stop


def test_env_runners_land_on_different_nodes_of_a_cluster():
    proc = subprocess.run(
        [sys.executable, "-m", "rllib_configs.cluster_check", "--simulate-nodes", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cluster_nodes"] == 3 and report["iterations"] == 2
    assert len(report["env_runner_nodes"]) == 2 and report["distinct_nodes"] == 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_to_a_local_head_node(ray_session, tmp_path):
    """Runs beside the session's local Ray, as a user's laptop might."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    port, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # socket paths must stay short
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         f"--temp-dir={temp_dir}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         # the test session's own Ray holds the default agent ports
         f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}",
         f"--metrics-export-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}",
         f"--ray-client-server-port={free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the job server answers once the head is up
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                                   capture_output=True, env=env)  # fmt: skip
            if probe.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"the head node's job server did not answer at {address}")
        out = tmp_path / "job"
        submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--",
                  str(BIN / "ganno"), "train", "--preset", "smoke", "--out", str(out),
                  "--stop-iters", "1"]  # fmt: skip
        for _ in range(30):  # the job agent starts a little after the job server answers
            job = subprocess.run(submit, capture_output=True, text=True, env=env, timeout=400)
            if "No available agent" not in job.stdout + job.stderr:
                break
            time.sleep(2)
        assert job.returncode == 0, job.stdout + job.stderr
        assert "succeeded" in job.stdout + job.stderr
        assert (out / "policy.pt").exists()
        assert "Started a local Ray instance" not in job.stdout  # it joined the cluster
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_training_survives_a_killed_env_runner(ray_session):
    preset = get_preset("smoke", num_env_runners=2, evaluation_interval=0)
    algo = build_config(preset, "shared").build_algo()
    try:
        algo.train()
        pids = algo.env_runner_group.foreach_env_runner(
            lambda runner: os.getpid(), local_env_runner=False
        )
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)  # an env runner this test's algorithm started
        iterations, restarts = [], 0
        for _ in range(6):
            result = algo.train()
            iterations.append(algo.iteration)
            restarts = result["fault_tolerance"]["num_remote_worker_restarts"]
            if restarts >= 1 and result["fault_tolerance"]["num_healthy_workers"] == 2:
                break
        assert iterations == list(range(2, 2 + len(iterations)))
        assert restarts >= 1
        new_pids = algo.env_runner_group.foreach_env_runner(
            lambda runner: os.getpid(), local_env_runner=False
        )
        assert pids[0] not in new_pids and len(new_pids) == 2
    finally:
        algo.stop()


def test_presets_take_a_dict_of_fixed_conditions():
    fixed = {"conditions": {"initial_lr": 0.01, "depth": 2}, "population": 2}
    config = build_config(get_preset("smoke", env_config=fixed), "grouped")
    assert config.policy_mapping_fn("net1_layer2", None) == "last"


def test_grouped_mapping_refuses_conditions_of_varying_depth():
    preset = get_preset("smoke", env_config={"conditions": "deeper"})
    with pytest.raises(ValueError, match="grouped"):
        build_config(preset, "grouped")


@pytest.mark.parametrize("action_mode", ["discrete", "continuous"])
def test_agents_that_set_lr_and_momentum_train_and_export(ray_session, tmp_path, action_mode):
    """Two knobs: RLlib trains a MultiDiscrete (or Box(2)) policy, and the exported file's
    greedy actions are the RLlib module's."""
    env_config = {**get_preset("smoke").env_config, "controls": ["lr", "momentum"],
                  "action_mode": action_mode}  # fmt: skip
    preset = get_preset("smoke", env_config=env_config, evaluation_interval=0)
    algo = build_config(preset, "shared").build_algo()
    try:
        algo.train()
        export_from(algo, tmp_path / "policy.pt", preset, "shared")
        controller = load_policy(tmp_path / "policy.pt")
        assert controller.env_requirements()["controls"] == ("lr", "momentum")
        env = layerwise_lr_v1.parallel_env(population=2, max_cycles=2, controls=("lr", "momentum"),
                                           action_mode=action_mode)  # fmt: skip
        obs, _ = env.reset(seed=5)
        module = algo.get_module("shared")
        module.set_state(algo.learner_group.get_weights()["shared"])
        ours = controller.actions(obs)
        batch = torch.as_tensor(np.stack([obs[a] for a in env.agents]))
        out = module.forward_inference({Columns.OBS: batch})
        dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
        theirs = dist.to_deterministic().sample().numpy()
        assert theirs.shape == (len(env.agents), 2)
        np.testing.assert_allclose(np.stack([ours[a] for a in env.agents]), theirs, rtol=1e-5)
        env.step(ours)
    finally:
        algo.stop()


def test_networks_of_several_depths_train_under_fixed_agent_ids(ray_session, tmp_path):
    """train_depths draws 1, 2, 3 or 5 hidden layers per episode; RLlib 2.60 stops with a NaN
    step count when agent ids come and go, so MixedDepthEnv keeps 12 agents in every
    episode (populations 6, 4, 3, 2)."""
    config = {"conditions": "train_depths", "agents_per_env": 12, "max_cycles": 3, "interval": 3}
    fixed = {"conditions": {"initial_lr": 0.01}, "population": 1, "max_cycles": 3, "interval": 3}
    preset = get_preset("smoke", env_config=config, eval_env_config=fixed, train_batch_size=144,
                        minibatch_size=72, evaluation_interval=2, validate_every=0)  # fmt: skip
    policy = train(preset, "shared", tmp_path, stop_iters=6, log=lambda s: None)
    rows = progress_rows(tmp_path)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 7))
    assert all(float(r["env_steps"]) > 0 for r in rows)
    assert any(r["eval_mean_return"] not in ("", "nan") for r in rows)  # the plain eval env
    controller = load_policy(policy)
    for depth in (1, 6):
        env = layerwise_lr_v1.parallel_env(conditions={"depth": depth}, max_cycles=2)
        obs, _ = env.reset(seed=0)
        assert len(controller.actions(obs)) == depth + 1


def test_network_view_env_shows_each_agent_its_own_layer_then_its_network():
    config = {"conditions": "train", "population": 2, "max_cycles": 2, "interval": 2,
              "num_threads": 1}  # fmt: skip
    plain, view = GannoMultiAgentEnv(config), NetworkViewEnv(config)
    size, layers = view.local_size, view.max_layers
    assert (size, layers) == (plain.observation_spaces["net0_layer0"].shape[0], 4)
    plain_obs, _ = plain.reset(seed=3)
    view_obs, _ = view.reset(seed=3)
    for _ in range(2):
        assert sorted(view_obs) == sorted(plain_obs)
        for agent, features in view_obs.items():
            assert view.observation_spaces[agent].contains(features)
            np.testing.assert_array_equal(features[:size], plain_obs[agent])
            network = agent.split("_")[0]
            block = features[size:].reshape(layers, size)
            for layer in range(layers):
                np.testing.assert_array_equal(block[layer], plain_obs[f"{network}_layer{layer}"])
        keep = {agent: 3 for agent in plain_obs}  # factor 1.0
        plain_obs, *_ = plain.step(keep)
        view_obs, *_ = view.step(keep)
    first, second = view_obs["net0_layer0"], view_obs["net1_layer0"]
    assert not np.array_equal(first[size:], second[size:])  # each agent sees its own network


def test_a_network_critic_trains_and_exports_an_actor_for_the_plain_env(ray_session, tmp_path):
    preset = get_preset("smoke", evaluation_interval=0, critic="network")
    algo = build_config(preset).build_algo()
    try:
        algo.train()
        export_from(algo, tmp_path / "policy.pt", preset, "shared")
        module = algo.get_module("shared")
        module.set_state(algo.learner_group.get_weights()["shared"])
    finally:
        algo.stop()
    config = {"conditions": "train", "population": 2, "max_cycles": 3, "num_threads": 1}
    view = NetworkViewEnv(config)
    obs, _ = view.reset(seed=1)
    batch = torch.as_tensor(np.stack(list(obs.values())))
    others = batch.clone()
    others[:, view.local_size :] += 0.5  # what the other layers show changes
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: batch})[Columns.ACTION_DIST_INPUTS]
        logits_others = module.forward_inference({Columns.OBS: others})[Columns.ACTION_DIST_INPUTS]
        values = module.compute_values({Columns.OBS: batch})
        values_others = module.compute_values({Columns.OBS: others})
    torch.testing.assert_close(logits, logits_others)  # the actor reads its own layer only
    assert not torch.allclose(values, values_others)  # the critic reads the network
    controller = load_policy(tmp_path / "policy.pt")
    assert controller.payload["obs_size"] == view.local_size
    plain_obs = {agent: features[: view.local_size] for agent, features in obs.items()}
    greedy = logits.argmax(dim=-1).tolist()
    assert controller.actions(plain_obs) == dict(zip(obs, greedy))


def test_critic_settings_are_checked_before_ray_starts():
    with pytest.raises(ValueError, match=r"critic='central'; allowed: \('local', 'network'\)"):
        build_config(get_preset("smoke", critic="central"))
    mixed = {"conditions": "train_depths", "agents_per_env": 12}
    preset = get_preset("smoke", critic="network", env_config=mixed)
    with pytest.raises(ValueError, match="critic='network' with agents_per_env"):
        build_config(preset)


def test_conditions_of_several_layer_counts_need_agents_per_env():
    """Without MixedDepthEnv, RLlib 2.60 trains a few iterations on varying depths and then
    stops with a NaN step count; build_config refuses before Ray starts."""
    preset = get_preset("smoke", env_config={"conditions": "train_depths"})
    with pytest.raises(ValueError, match=r"\[2, 3, 4, 6\] layers.*a multiple of 12"):
        build_config(preset)
    build_config(get_preset("smoke", env_config={"conditions": "train_tasks"}))  # all 4 layers


def test_agents_per_env_refuses_a_mapping_that_reads_the_layer():
    preset = get_preset("smoke", env_config={"conditions": "train_depths", "agents_per_env": 12})
    with pytest.raises(ValueError, match="agents_per_env"):
        build_config(preset, "per_layer")


def test_mixed_depth_env_keeps_its_agent_ids_and_routes_each_to_its_layer():
    env = MixedDepthEnv({"conditions": "train_depths", "agents_per_env": 12, "max_cycles": 2,
                         "interval": 2, "num_threads": 1})  # fmt: skip
    assert env.populations == {1: 6, 2: 4, 3: 3, 5: 2}
    layer_counts = set()
    obs, infos = env.reset(seed=0)
    for episode in range(8):
        if episode:
            obs, infos = env.reset()
        assert sorted(obs) == sorted(env.possible_agents)
        layer_counts.add(1 + max(info["layer"] for info in infos.values()))
        # agent_K is the K-th layer in network order: the last one is the output layer
        assert (infos["agent_0"]["network"], infos["agent_0"]["layer"]) == (0, 0)
        networks = len({info["network"] for info in infos.values()})
        assert infos["agent_11"]["layer"] == 12 // networks - 1
        lrs = {agent: info["lr"] for agent, info in infos.items()}
        keep, double = 2, 4  # indices of the factors 1.0 and 2.0
        actions = {agent: keep for agent in obs} | {"agent_5": double}
        obs, _, _, _, infos = env.step(actions)
        for agent, info in infos.items():
            factor = 2.0 if agent == "agent_5" else 1.0
            assert info["lr"] == pytest.approx(factor * lrs[agent])
    assert layer_counts == {2, 3, 4, 6}
    with pytest.raises(ValueError, match="agents_per_env=10 is not a multiple of 3"):
        MixedDepthEnv({"conditions": "train_depths", "agents_per_env": 10})


def test_mixed_depth_env_episodes_follow_its_first_seed():
    """RLlib seeds an env once; the later episodes' networks must follow from that seed
    (and stay below the benchmark's held-out seeds)."""
    config = {"conditions": "train_depths", "agents_per_env": 12, "max_cycles": 1,
              "interval": 1, "num_threads": 1}  # fmt: skip

    def episodes(seed):
        env = MixedDepthEnv(config)
        drawn = []
        for episode in range(5):
            env.reset(seed=seed if episode == 0 else None)
            drawn.append([(c.depth, c.seed) for c in env.par_env.episode_conditions])
        return drawn

    first = episodes(7)
    assert first == episodes(7) and first != episodes(8)
    assert all(seed < 1_000_000 for episode in first for _, seed in episode)
