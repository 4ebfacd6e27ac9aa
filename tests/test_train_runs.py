"""One run per training folder: what `--resume` continues, what `--overwrite` replaces,
damaged checkpoints, the folder lock, the seed, the CLI's one-line errors, and a run
whose env runners all fail.

Real RLlib runs with the smoke preset, in this process on the session's Ray
(`ray_session`) or through the `ganno` CLI, which fails before starting Ray in the error
cases here.
"""

import csv
import json
import os
import pickle
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("ray")

from ganno_env.folder_lock import FolderBusy, UsageError, folder_lock  # noqa: E402
from ganno_env.policy import load_policy  # noqa: E402
from rllib_configs.env import GannoMultiAgentEnv  # noqa: E402
from rllib_configs.ppo import build_config, get_preset  # noqa: E402
from rllib_configs.train import NoSamplesError, _train_in, train  # noqa: E402

BIN = Path(sys.executable).parent
SMOKE = get_preset("smoke")
pytestmark = pytest.mark.slow


def quiet(line: str) -> None:
    pass


def iterations(out: Path) -> list[int]:
    with open(out / "progress.csv") as f:
        return [int(row["iteration"]) for row in csv.DictReader(f)]


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def ganno_train(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([str(BIN / "ganno"), "train", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, text: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("ganno: error: ") and text in lines[0], lines[0]


def test_resume_refuses_another_preset_mapping_seed_or_env_config(ray_session, tmp_path):
    train(SMOKE, "shared", tmp_path, stop_iters=1, log=quiet)
    recorded = (tmp_path / "run.json").read_text()
    assert json.loads(recorded)["config"]["env_config"] == SMOKE.env_config
    bigger = {**SMOKE.env_config, "population": 3}
    requests = [
        (get_preset("local"), "shared", "preset: recorded 'smoke', requested 'local'"),
        (SMOKE, "per_layer", "mapping: recorded 'shared', requested 'per_layer'"),
        (get_preset("smoke", seed=1), "shared", "seed: recorded 0, requested 1"),
        (get_preset("smoke", env_config=bigger), "shared",
         "config.env_config.population: recorded 2, requested 3"),
    ]  # fmt: skip
    for preset, mapping, difference in requests:
        with pytest.raises(UsageError, match=re.escape(difference)):
            train(preset, mapping, tmp_path, stop_iters=2, resume=True, log=quiet)
    # refused before any training: the recorded run is untouched
    assert checkpoints(tmp_path) == ["iter_000001"] and iterations(tmp_path) == [1]
    assert (tmp_path / "run.json").read_text() == recorded


def test_a_run_recorded_before_a_setting_existed_resumes_with_its_default(ray_session, tmp_path):
    train(SMOKE, "shared", tmp_path, stop_iters=1, log=quiet)
    record = json.loads((tmp_path / "run.json").read_text())
    del record["config"]["critic"]  # as recorded before the setting existed
    (tmp_path / "run.json").write_text(json.dumps(record))
    network = get_preset("smoke", critic="network")
    with pytest.raises(UsageError, match=re.escape("critic: recorded 'local', requested 'net")):
        train(network, "shared", tmp_path, stop_iters=2, resume=True, log=quiet)
    train(SMOKE, "shared", tmp_path, stop_iters=2, resume=True, log=quiet)
    assert iterations(tmp_path) == [1, 2]


def test_a_used_folder_needs_resume_or_overwrite(ray_session, tmp_path):
    train(SMOKE, "shared", tmp_path, stop_iters=2, log=quiet)
    with pytest.raises(UsageError, match="--resume.*--overwrite"):
        train(SMOKE, "shared", tmp_path, stop_iters=1, log=quiet)
    assert checkpoints(tmp_path) == ["iter_000001", "iter_000002"]

    train(SMOKE, "per_layer", tmp_path, stop_iters=1, overwrite=True, log=quiet)
    assert checkpoints(tmp_path) == ["iter_000001"] and iterations(tmp_path) == [1]
    assert json.loads((tmp_path / "run.json").read_text())["mapping"] == "per_layer"
    lines = []
    train(SMOKE, "per_layer", tmp_path, stop_iters=2, resume=True, log=lines.append)
    assert any("(iteration 1)" in line for line in lines)  # not the old run's iteration 2
    assert iterations(tmp_path) == [1, 2]
    assert load_policy(tmp_path / "policy.pt").payload["mapping"] == "per_layer"


def test_resume_with_nothing_to_resume_says_so_and_stops(ray_session, tmp_path):
    with pytest.raises(UsageError, match="nothing to resume"):
        train(SMOKE, "shared", tmp_path / "new", stop_iters=1, resume=True, log=quiet)
    assert not (tmp_path / "new").exists()
    with pytest.raises(UsageError, match="nothing to resume.*no checkpoint"):
        train(SMOKE, "shared", tmp_path, stop_iters=1, resume=True, log=quiet)
    assert not (tmp_path / "run.json").exists() and not (tmp_path / "checkpoints").exists()


def test_resume_auto_starts_fresh_then_continues(ray_session, tmp_path):
    """What `ganno run` uses to pick up after an interruption."""
    lines = []
    train(SMOKE, "shared", tmp_path, stop_iters=1, resume="auto", log=lines.append)
    assert not any("resumed" in line for line in lines)
    train(SMOKE, "shared", tmp_path, stop_iters=2, resume="auto", log=lines.append)
    assert any("(iteration 1)" in line for line in lines) and iterations(tmp_path) == [1, 2]
    with pytest.raises(UsageError, match="mapping"):
        train(SMOKE, "per_layer", tmp_path, stop_iters=3, resume="auto", log=quiet)


def damage(checkpoint: Path) -> None:
    """Cut a file of the checkpoint short, as a crash while saving would."""
    weights = checkpoint / "learner_group" / "learner" / "rl_module" / "shared"
    state = weights / "module_state.pkl"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(ray_session, tmp_path):
    train(SMOKE, "shared", tmp_path, stop_iters=2, log=quiet)
    damage(tmp_path / "checkpoints" / "iter_000002")
    lines = []
    policy = train(SMOKE, "shared", tmp_path, stop_iters=3, resume=True, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "iter_000002" in warnings[0]
    assert any("resumed from" in line and "(iteration 1)" in line for line in lines)
    assert checkpoints(tmp_path) == ["iter_000001", "iter_000002", "iter_000002.damaged",
                                     "iter_000003"]  # fmt: skip
    assert iterations(tmp_path) == [1, 2, 3]
    assert load_policy(policy).payload["extra"]["iteration"] == 3

    for name in ("iter_000001", "iter_000002", "iter_000003"):
        damage(tmp_path / "checkpoints" / name)
    with pytest.raises(UsageError, match="no checkpoint .* loads"):
        train(SMOKE, "shared", tmp_path, stop_iters=4, resume=True, log=quiet)
    assert checkpoints(tmp_path) == ["iter_000001", "iter_000002", "iter_000002.damaged",
                                     "iter_000003"]  # fmt: skip


def test_train_holds_the_folder_lock_for_the_whole_run(ray_session, tmp_path):
    held = []

    def try_the_lock(line: str) -> None:
        try:
            with folder_lock(tmp_path):
                held.append(False)
        except FolderBusy as error:
            held.append(f"PID {os.getpid()}" in str(error))

    train(SMOKE, "shared", tmp_path, stop_iters=2, log=try_the_lock)
    assert len(held) >= 4 and all(held)  # header, 2 iterations, checkpoint, policy
    with folder_lock(tmp_path):  # released at the end
        pass


def test_seed_reaches_rllib_run_json_and_the_policy(tmp_path):
    proc = ganno_train("--preset", "smoke", "--out", tmp_path, "--stop-iters", 1, "--seed", 7)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "run.json").read_text())["seed"] == 7
    assert load_policy(tmp_path / "policy.pt").payload["extra"]["seed"] == 7
    # the config RLlib trained with, as its checkpoint stores it
    with open(tmp_path / "checkpoints" / "iter_000001" / "class_and_ctor_args.pkl", "rb") as f:
        assert pickle.load(f)["ctor_args_and_kwargs"][0][0]["seed"] == 7


def test_cli_mistakes_are_one_line_errors(ray_session, tmp_path):
    used, new = tmp_path / "used", tmp_path / "new"
    train(SMOKE, "shared", used, stop_iters=1, log=quiet)
    smoke = ["--preset", "smoke", "--stop-iters", 2]
    mistakes = [
        (["--preset", "local", "--out", used, "--resume"], "preset: recorded 'smoke'"),
        ([*smoke, "--out", used], "holds a run"),
        ([*smoke, "--out", new, "--resume"], "nothing to resume"),
        ([*smoke, "--out", used, "--resume", "--overwrite"], "not allowed with"),
        ([*smoke, "--out", used, "--seed", "-1"], "expected an int >= 0"),
        ([*smoke, "--out", new, "--max-step-ratio", "0"], "expected positive"),
        ([*smoke, "--out", new, "--hidden", "64,0"], "'64,0': expected ints >= 1"),
        ([*smoke, "--out", used, "--resume", "--hidden", "16"], "hidden: recorded [32, 32]"),
    ]
    for args, text in mistakes:
        assert_one_line_error(ganno_train(*args), text)
    with folder_lock(used):  # as a second `ganno train` on the folder would see it
        assert_one_line_error(ganno_train(*smoke, "--out", used, "--resume"),
                              f"PID {os.getpid()}")  # fmt: skip
    assert iterations(used) == [1] and not new.exists()


def test_conditions_file_lr_factors_population_siblings_critic_and_hidden_reach_the_policy(
    tmp_path,
):
    specs = {"initial_lr": {"log_uniform": [0.001, 0.1]}, "width": {"choice": [16, 24]}}
    conditions = tmp_path / "mine.json"
    conditions.write_text(json.dumps({"specs": specs, "description": "mine"}))
    out = tmp_path / "run"
    proc = ganno_train("--preset", "smoke", "--out", out, "--stop-iters", 1, "--conditions",
                       conditions, "--lr-factors", "0.5,1,2", "--population", 3,
                       "--max-step-ratio", 0.5, "--critic", "network",
                       "--probe-cuts-only", "--fallback-step-ratio", 0.4,
                       "--step-clip", 0.6, "--siblings", 3, "--reward", "vs_siblings",
                       "--hidden", "24,16,8")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "run.json").read_text())["config"]["critic"] == "network"
    assert json.loads((out / "run.json").read_text())["config"]["hidden"] == [24, 16, 8]
    env_config = json.loads((out / "run.json").read_text())["config"]["env_config"]
    assert env_config["conditions"] == specs
    assert env_config["lr_factors"] == [0.5, 1.0, 2.0] and env_config["population"] == 3
    assert env_config["siblings"] == 3 and env_config["reward"] == "vs_siblings"
    policy = load_policy(out / "policy.pt")
    assert policy.payload["hidden"] == [24, 16, 8]  # the exported net is the trained one
    assert policy.payload["lr_factors"] == [0.5, 1.0, 2.0]
    assert policy.payload["extra"]["conditions"] == specs
    assert policy.payload["extra"]["population"] == 3
    assert env_config["max_step_ratio"] == 0.5  # the safety net travels with the policy
    assert policy.env_requirements()["max_step_ratio"] == 0.5
    assert env_config["probe_cuts_only"] is True  # so does the rule at the probe
    assert policy.env_requirements()["probe_cuts_only"] is True
    assert env_config["fallback_step_ratio"] == 0.4  # and the fallback
    assert policy.env_requirements()["fallback_step_ratio"] == 0.4
    assert env_config["step_clip"] == 0.6  # and the step clip
    assert policy.env_requirements()["step_clip"] == 0.6


def test_agents_per_env_trains_networks_of_several_depths_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    args = ("--preset", "smoke", "--out", out, "--stop-iters", 2, "--conditions", "train_depths")
    assert_one_line_error(ganno_train(*args, "--agents-per-env", 10), "agents_per_env=10")
    assert_one_line_error(ganno_train(*args), "--agents-per-env K")  # else RLlib stops mid-run
    assert not out.exists()
    proc = ganno_train(*args, "--agents-per-env", 12)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env_config = json.loads((out / "run.json").read_text())["config"]["env_config"]
    assert env_config["conditions"] == "train_depths" and env_config["agents_per_env"] == 12
    assert load_policy(out / "policy.pt").payload["extra"]["conditions"] == "train_depths"


def test_a_run_whose_env_runners_all_fail_stops_without_a_policy(ray_session, tmp_path):
    """RLlib restarts failed env runners and reports an iteration of 0 steps as a success;
    `train` stops at the first such iteration instead of exporting an untrained policy."""

    class FailingEnv(GannoMultiAgentEnv):  # local: Ray ships it to the runner by value
        """The real env, but every step after its first raises (RLlib's env check takes
        the first), as when every network's training blows up."""

        steps = 0

        def step(self, actions):
            self.steps += 1
            if self.steps > 1:
                raise RuntimeError("this env fails at every step after its first")
            return super().step(actions)

    preset = replace(SMOKE, num_env_runners=1)
    config = build_config(preset).environment(FailingEnv, env_config=preset.env_config)
    with pytest.raises(NoSamplesError, match="iteration 1 sampled no agent steps"):
        _train_in(tmp_path, config, [], preset, "shared", stop=3, log=quiet)
    assert iterations(tmp_path) == [1]
    assert not (tmp_path / "policy.pt").exists()


def test_ganno_train_reports_a_run_that_samples_nothing_in_one_line(monkeypatch, tmp_path, capsys):
    import rllib_configs.train
    from ganno_env import cli

    def samples_nothing(*args, **kwargs):
        raise NoSamplesError("iteration 1 sampled no agent steps:\nevery env runner failed")

    monkeypatch.setattr(rllib_configs.train, "train", samples_nothing)
    assert cli.main(["train", "--preset", "smoke", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "ganno: error: iteration 1 sampled no agent steps: every env runner failed"
    ]


# -- ganno run: the fallback and the clip added after training -------------------------------


def test_the_main_job_benchmarks_its_policy_with_the_fallback_and_the_clip(ray_session, tmp_path):
    from benchmarks.runner import file_hash
    from ganno_env import cli
    from ganno_env.policy import FALLBACK_STEP_RATIO

    out = tmp_path / "main"

    def benchmarked_policies() -> set[str]:
        lines = (out / "bench" / "results.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        return {r["inputs"]["policy_hash"] for r in rows if r["controller"] == "ganno"}

    def report() -> tuple[dict, str]:
        summary = json.loads((out / "bench" / "summary.json").read_text())
        return summary["policy"], (out / "bench" / "report.md").read_text()

    assert cli.main(["run", "--quick", "--out", str(out)]) == 0
    trained = out / "train" / "policy.pt"
    guarded, clipped = out / "train" / "policy_fallback.pt", out / "train" / "policy_clipped.pt"
    assert load_policy(trained).env_requirements()["fallback_step_ratio"] is None
    assert "observation_clip" not in load_policy(trained).payload
    assert load_policy(guarded).payload["extra"]["fallback_added"] == FALLBACK_STEP_RATIO
    payload = load_policy(clipped).payload  # the fallback's copy, clipped
    low, high = payload["observation_clip"]["log10_relative_lr"]
    assert low <= 0.0 <= high and payload["fallback_step_ratio"] == FALLBACK_STEP_RATIO
    assert benchmarked_policies() == {file_hash(clipped)}
    said, text = report()
    assert said["policy_hash"] == file_hash(clipped) and said["fallback_added_after_training"]
    assert said["observation_clip"] == {"log10_relative_lr": [low, high]}
    ratio = f"with the fallback at step ratio {FALLBACK_STEP_RATIO}, added after training"
    assert ratio in text and f"`log10_relative_lr` clipped to [{low:.3g}, {high:.3g}]" in text
    # no clip: the fallback's copy (training resumes as finished; its runs join the folder)
    assert cli.main(["run", "--quick", "--out", str(out), "--observation-clip", "none"]) == 0
    assert benchmarked_policies() == {file_hash(clipped), file_hash(guarded)}
    said, text = report()
    assert said["policy_hash"] == file_hash(guarded) and said["observation_clip"] is None
    assert "`log10_relative_lr` clipped to" not in text
    # neither: the policy as trained
    neither = ["--fallback-step-ratio", "none", "--observation-clip", "none"]
    assert cli.main(["run", "--quick", "--out", str(out), *neither]) == 0
    assert benchmarked_policies() == {file_hash(clipped), file_hash(guarded), file_hash(trained)}
    said, text = report()
    assert said["policy_hash"] == file_hash(trained) and said["fallback_step_ratio"] is None
    assert "with no fallback, no safety net." in text
    # the step clip, asked for: added last, to the clipped copy, and benchmarked
    assert cli.main(["run", "--quick", "--out", str(out), "--step-clip", "0.5"]) == 0
    step_clipped = out / "train" / "policy_step_clip.pt"
    payload = load_policy(step_clipped).payload
    assert payload["step_clip"] == 0.5 and "observation_clip" in payload
    assert file_hash(step_clipped) in benchmarked_policies()
    said, text = report()
    assert said["policy_hash"] == file_hash(step_clipped) and said["step_clip"] == 0.5
    assert "every step clipped to step ratio 0.5" in text
