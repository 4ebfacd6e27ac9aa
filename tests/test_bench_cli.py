"""User mistakes on the command line: one line on stderr, exit status 2, no traceback, and
nothing done (no output folder created) before the mistake is found."""

import subprocess
import sys
from pathlib import Path

import pytest

from ganno_env.cli import main

GANNO = str(Path(sys.executable).parent / "ganno")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ganno: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quick", "--policy", "/nonexistent/policy.pt"], "does not exist"),
        (["--quick", "--policy", "{file}"], "is not a GANNO policy file"),
        (["--quick", "--out", "{file}"], "is a file"),
        (["--quick", "--out", "{file}/below"], "cannot be created"),
        (
            ["--suite", "nope"],
            "suite='nope' is unknown; allowed: a shipped suite ['harder', 'heldin', 'quick'",
        ),
        (["--quick", "--suite", "unseen"], "--quick and --suite 'unseen' exclude each other"),
        (["--quick", "--seeds", "9"], "--seeds 9; allowed: 1..3"),
        (["--quick", "--seeds", "0"], "argument --seeds: '0': expected an int >= 1"),
        (["--quick", "--controllers", "constant,bogus"], "unknown controllers ['bogus']"),
        (["--quick", "--controllers", "ganno"], "controllers ['ganno'] need --policy FILE"),
        (["--quick", "--device", "tpu"], "device='tpu'"),
    ],
)
def test_bench_mistakes_are_one_line_and_found_before_any_work(tmp_path, capsys, args, message):
    file = tmp_path / "a_file"
    file.write_text("not a policy\n")
    out = tmp_path / "out"
    args = [a.replace("{file}", str(file)) for a in args]
    assert main(["bench", "--out", str(out), *args]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_run_and_baselines_mistakes_are_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    file = tmp_path / "a_file"
    file.write_text("")
    assert main(["run", "--quick", "--out", str(file)]) == 2
    assert "is a file" in one_line_error(capsys)
    for bad in ("0", "off", "0.3,0.4"):
        args = ["run", "--quick", "--out", str(tmp_path / "out"), "--fallback-step-ratio", bad]
        assert main(args) == 2
        expected = f"--fallback-step-ratio: {bad!r}: expected one positive, finite number or none"
        assert expected in one_line_error(capsys)
    for bad in ("lr", "log10_relative_lr,speed", ""):
        args = ["run", "--quick", "--out", str(tmp_path / "out"), "--observation-clip", bad]
        assert main(args) == 2
        error = one_line_error(capsys)
        assert f"--observation-clip: {bad!r}: unknown features" in error
        assert "expected none or some of ['log10_relative_lr'" in error
    assert not (tmp_path / "out").exists()
    assert main(["baselines", "--device", "tpu", "--seeds", "1", "--max-cycles", "1"]) == 2
    assert "device='tpu'" in one_line_error(capsys)


def test_a_missing_policy_file_prints_no_traceback(tmp_path):
    """The console script itself, as a user runs it (this used to be a FileNotFoundError)."""
    done = subprocess.run(
        [GANNO, "bench", "--quick", "--policy", "/nonexistent", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "ganno: error: --policy '/nonexistent' does not exist; allowed: a policy.pt file\n"
    )
    assert not (tmp_path / "o").exists()
