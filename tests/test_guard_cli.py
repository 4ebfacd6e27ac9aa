"""`ganno guard`: the main job's guards (fallback, then clip) added to any policy file."""

import pytest
import torch

from ganno_env import add_fallback, add_observation_clip, load_policy, policy
from ganno_env.cli import main
from ganno_env.policy import FALLBACK_STEP_RATIO
from tests.helpers import random_policy

torch.set_num_threads(1)

# A short training pace, recorded in the file as `ganno train` records the preset's.
TRAINED_ON = {"conditions": "train", "population": 2, "interval": 3, "max_cycles": 4}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ganno: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def trained(tmp_path):
    return random_policy(tmp_path / "policy.pt", extra=TRAINED_ON)


def test_guard_writes_what_add_fallback_then_add_observation_clip_write(tmp_path, trained):
    before = trained.read_bytes()
    out = tmp_path / "guarded" / "policy.pt"
    assert main(["guard", "--policy", str(trained), "--out", str(out)]) == 0
    assert trained.read_bytes() == before, "the file given must not change"
    by_hand = add_observation_clip(
        add_fallback(trained, tmp_path / "fb.pt"), tmp_path / "by_hand.pt"
    )
    got, want = load_policy(out).payload, load_policy(by_hand).payload
    assert got["fallback_step_ratio"] == FALLBACK_STEP_RATIO
    assert got["extra"]["fallback_added"] == FALLBACK_STEP_RATIO
    assert set(got["observation_clip"]) == {"log10_relative_lr"}
    assert got["observation_clip"] == want["observation_clip"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy.pt"]  # no partial file


@pytest.mark.parametrize(
    "flags, fallback, clipped",
    [
        (["--observation-clip", "none"], FALLBACK_STEP_RATIO, None),
        (["--fallback-step-ratio", "none"], None, ["log10_relative_lr"]),
        (["--fallback-step-ratio", "0.5", "--observation-clip", "progress"], 0.5, ["progress"]),
    ],
)
def test_guard_adds_only_the_guards_asked_for(tmp_path, trained, flags, fallback, clipped):
    out = tmp_path / "guarded.pt"
    assert main(["guard", "--policy", str(trained), "--out", str(out), *flags]) == 0
    payload = load_policy(out).payload
    assert payload.get("fallback_step_ratio") == fallback
    clip = payload.get("observation_clip")
    assert (sorted(clip) if clip else None) == clipped


def test_guard_takes_the_name_pretrained(tmp_path, trained, monkeypatch, capsys):
    monkeypatch.setattr(policy, "PRETRAINED_PATH", trained)  # the name resolves here
    before = trained.read_bytes()
    out = tmp_path / "guarded.pt"
    assert main(["guard", "--policy", "pretrained", "--out", str(out)]) == 0
    assert trained.read_bytes() == before
    payload = load_policy(out).payload
    assert payload["fallback_step_ratio"] == FALLBACK_STEP_RATIO
    assert set(payload["observation_clip"]) == {"log10_relative_lr"}
    assert f"guarded policy -> {out}" in capsys.readouterr().out


def test_an_existing_out_is_kept_unless_overwrite(tmp_path, trained, capsys):
    out = tmp_path / "guarded.pt"
    out.write_bytes(b"mine")
    args = ["guard", "--policy", str(trained), "--out", str(out), "--observation-clip", "none"]
    assert main(args) == 2
    assert f"--out {str(out)!r} exists; allowed: a new path, or --overwrite" in one_line_error(
        capsys
    )
    assert out.read_bytes() == b"mine"
    assert main([*args, "--overwrite"]) == 0
    assert load_policy(out).payload["fallback_step_ratio"] == FALLBACK_STEP_RATIO


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--fallback-step-ratio", "none", "--observation-clip", "none"],
            "leave nothing to add; allowed: at most one of them none",
        ),
        (["--policy", "/nonexistent/policy.pt"], "does not exist"),
        (["--out", "{policy}"], "is the policy file itself"),
        (["--out", "{tmp}"], "is a folder; allowed: a file path"),
        (["--out", "{policy}/below/guarded.pt"], "cannot be created"),
        (["--observation-clip", "bogus"], "unknown features ['bogus']"),
        (["--fallback-step-ratio", "-1"], "expected one positive, finite number or none"),
    ],
)
def test_guard_mistakes_are_one_line_and_write_nothing(tmp_path, trained, capsys, args, message):
    defaults = {"--policy": str(trained), "--out": str(tmp_path / "new" / "guarded.pt")}
    given = dict(zip(args[::2], args[1::2], strict=True))
    values = {**defaults, **given}
    argv = ["guard"]
    for flag, value in values.items():
        argv += [flag, value.format(policy=trained, tmp=tmp_path)]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    assert message in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_policy_that_already_clips_is_refused_without_writing(tmp_path, trained, capsys):
    clipped = add_observation_clip(trained, tmp_path / "clipped.pt")
    out = tmp_path / "new" / "guarded.pt"
    assert main(["guard", "--policy", str(clipped), "--out", str(out)]) == 2
    error = one_line_error(capsys)
    assert "already clips ['log10_relative_lr']; allowed: a policy without a clip, or " in error
    assert not out.parent.exists()


def test_a_fallback_already_there_is_kept_and_another_ratio_refused(tmp_path, trained, capsys):
    guarded = add_fallback(trained, tmp_path / "fb.pt")
    out = tmp_path / "guarded.pt"
    assert main(["guard", "--policy", str(guarded), "--out", str(out)]) == 0
    assert "fallback 0.33 already there" in capsys.readouterr().out
    payload = load_policy(out).payload
    assert payload["fallback_step_ratio"] == FALLBACK_STEP_RATIO
    assert set(payload["observation_clip"]) == {"log10_relative_lr"}
    other = ["guard", "--policy", str(guarded), "--out", str(tmp_path / "other.pt")]
    assert main([*other, "--fallback-step-ratio", "0.5"]) == 2
    assert "runs under fallback_step_ratio=0.33; allowed: --fallback-step-ratio 0.33" in (
        one_line_error(capsys)
    )
    assert main([*other, "--observation-clip", "none"]) == 2
    assert "already carries the guards asked for" in one_line_error(capsys)
    assert not (tmp_path / "other.pt").exists()


def test_a_step_clip_is_added_last_and_kept_or_refused_like_the_fallback(tmp_path, trained, capsys):
    out = tmp_path / "guarded.pt"
    assert main(["guard", "--policy", str(trained), "--out", str(out), "--step-clip", "0.5"]) == 0
    assert "every step clipped to step ratio 0.5" in capsys.readouterr().out
    payload = load_policy(out).payload
    assert (payload["step_clip"], payload["extra"]["step_clip_added"]) == (0.5, 0.5)
    assert payload["fallback_step_ratio"] == FALLBACK_STEP_RATIO
    # the observation clip is measured before the step clip, as `ganno run` measures it
    by_hand = add_observation_clip(add_fallback(trained, tmp_path / "fb.pt"), tmp_path / "c.pt")
    assert payload["observation_clip"] == load_policy(by_hand).payload["observation_clip"]
    without = load_policy(tmp_path / "c.pt").payload
    assert "step_clip" not in without and "step_clip" not in load_policy(trained).payload

    again = ["guard", "--policy", str(out), "--out", str(tmp_path / "again.pt")]
    assert main([*again, "--observation-clip", "none", "--step-clip", "0.5"]) == 2
    assert "already carries the guards asked for" in one_line_error(capsys)
    assert main([*again, "--observation-clip", "none", "--step-clip", "0.4"]) == 2
    assert "runs under step_clip=0.5; allowed: --step-clip 0.5 or none" in one_line_error(capsys)
    assert main([*again, "--step-clip", "0"]) == 2
    assert "expected one positive, finite number or none" in one_line_error(capsys)
    assert not (tmp_path / "again.pt").exists()
