"""Every ```python block of README.md and docs/*.md runs as printed.

A block runs in a fresh namespace inside a temporary folder. Blocks that read files a reader
would have (`runs/local/policy.pt`) or names defined by the reader's own code (the scheduler
fragment) get them from a setup function below; nothing in a block is rewritten. Blocks that
are not run here are listed in `NOT_RUN` with the reason; a new block runs by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ganno_env.features import FEATURE_NAMES
from ganno_env.policy import PolicyNet, export_policy

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
SLOW_DEMO = "a training demo of 10-20 s; tests/test_integrations.py::test_doc_example_runs runs it"

# (page, first line of the block) -> why it is not run here
NOT_RUN = {
    ("docs/benchmarl.md", "# benchmarl_demo.py: BenchMARL's MAPPO on GANNO's default task, a few iterations"): (  # noqa: E501
        "BenchMARL needs its own environment (it pins torchrl<0.12); "
        "tests/test_integrations.py::test_benchmarl_doc_script runs it there"
    ),
    ("docs/skrl.md", "# skrl_demo.py: MAPPO, one policy per layer agent and a critic on the global state"): SLOW_DEMO,  # noqa: E501
    ("docs/supersuit.md", "# sb3_demo.py: one PPO policy shared by every layer, through SuperSuit's vector env"): SLOW_DEMO,  # noqa: E501
    ("docs/torchrl.md", "# torchrl_demo.py: PPO with a shared policy and a centralised critic (MAPPO) on GANNO"): SLOW_DEMO,  # noqa: E501
    ("docs/torchrl.md", 'env = make_torchrl_env(conditions="deeper", seed=0)  # 10 possible layers per network'): (  # noqa: E501
        "the lines of the demo above to change, with '...' for the unchanged ones: not a program"
    ),
}  # fmt: skip

LOCAL_FACTORS = (0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0)  # rllib_configs.ppo.WIDE_FACTORS


def random_policy(path: Path, lr_factors: tuple[float, ...]) -> None:
    """A policy file as `ganno train` writes it, with random weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    env_config = {"conditions": "train", "lr_factors": lr_factors}
    extra = {"preset": "local", "interval": 25, "max_cycles": 40, "divergence_factor": 10.0}
    nets = {"shared": PolicyNet(len(FEATURE_NAMES), len(lr_factors))}
    export_policy(path, nets, "shared", env_config, extra)


def local_policy(namespace: dict[str, Any]) -> None:
    """The README's `runs/local/policy.pt`: the `local` preset trains with 7 LR factors."""
    random_policy(Path("runs/local/policy.pt"), LOCAL_FACTORS)


def scheduler_loop(namespace: dict[str, Any]) -> None:
    """What the scheduler fragment takes from the reader's loop: a model, its optimizer,
    batches, a val loss function, and `policy.pt` in the working folder."""
    import torch.nn.functional as F

    from ganno_env import GannoScheduler
    from ganno_env.datasets import load_dataset

    random_policy(Path("policy.pt"), (0.5, 0.8, 1.0, 1.25, 2.0))
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))  # fmt: skip
    x, y = data.x_train[:960], data.y_train[:960]

    def val_loss() -> float:
        return F.cross_entropy(model(data.x_val), data.y_val).item()

    namespace.update(
        F=F,
        GannoScheduler=GannoScheduler,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        batches=list(zip(x.split(32), y.split(32))),  # 30 steps: decisions at 0 and 25
        val_loss=val_loss,
    )


def main_job_policy(namespace: dict[str, Any]) -> None:
    """The main job's `policy_fallback.pt`, recording a short training pace so that the
    block's 64 training networks take seconds."""
    path = Path("runs/main/train/policy_fallback.pt")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    extra = {"conditions": "train", "population": 4, "interval": 3, "max_cycles": 4}
    nets = {"shared": PolicyNet(len(FEATURE_NAMES), len(LOCAL_FACTORS))}
    export_policy(path, nets, "shared", {"lr_factors": LOCAL_FACTORS}, extra)


def preset_seed0_policy(namespace: dict[str, Any]) -> None:
    """`runs/clip_s0/policy.pt`, a policy of the `local` preset that the return-spread
    measurement of docs/results.md samples from (random weights here)."""
    random_policy(Path("runs/clip_s0/policy.pt"), LOCAL_FACTORS)


def sibling_policies(namespace: dict[str, Any]) -> None:
    """`runs/sib_sN/policy.pt` (N = 0, 1, 2), the policies trained against their siblings
    whose returns the siblings measurement of docs/results.md samples (random weights here)."""
    for n in range(3):
        random_policy(Path(f"runs/sib_s{n}/policy.pt"), LOCAL_FACTORS)


def sibling_benchmark_folders(namespace: dict[str, Any]) -> None:
    """`runs/heldin_sN` and `runs/bench_sN`, benchmark folders of the siblings policies:
    here one policy each on two seeds, ahead of bold driver on seed 1 only, and a summary
    naming the inputs its numbers come from."""
    import json

    for suite in ("heldin", "bench"):
        for n in range(3):
            folder = Path(f"runs/{suite}_s{n}")
            folder.mkdir(parents=True)
            rows = [
                {"condition": "c", "seed": seed, "controller": controller, "test_loss": loss,
                 "inputs": {"policy_hash": f"p{n}" if controller == "ganno" else None}}
                for seed, ours, theirs in ((0, 0.5, 0.4), (1, 0.2, 0.3))
                for controller, loss in (("ganno", ours), ("bold_driver", theirs))
            ]  # fmt: skip
            lines = "".join(json.dumps(row) + "\n" for row in rows)
            (folder / "results.jsonl").write_text(lines)
            inputs = {"ganno": {"policy_hash": f"p{n}"}, "bold_driver": {"policy_hash": None}}
            (folder / "summary.json").write_text(json.dumps({"inputs": inputs}))


def torchrl_import(namespace: dict[str, Any]) -> None:
    """The group_map block continues the page's demo, which imports make_torchrl_env."""
    pytest.importorskip("torchrl")
    from ganno_env.integrations.torchrl import make_torchrl_env

    namespace["make_torchrl_env"] = make_torchrl_env


SETUP: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("README.md", "import torch"): local_policy,
    ("README.md", 'scheduler = GannoScheduler(optimizer, model, policy="policy.pt", val_loss_fn=val_loss)'): scheduler_loop,  # noqa: E501
    ("README.md", "from ganno_env import add_fallback"): scheduler_loop,
    ("README.md", "from ganno_env import add_observation_clip"): main_job_policy,
    ("README.md", "from ganno_env import add_step_clip"): scheduler_loop,
    ("docs/torchrl.md", "pop = 4"): torchrl_import,
    ("docs/results.md", "import numpy as np"): preset_seed0_policy,
    ("docs/results.md", "# the siblings' returns, per pair of alike networks"): sibling_policies,
    ("docs/results.md", "# paired wins against bold driver: the same condition and seed, per suite and policy file"): sibling_benchmark_folders,  # noqa: E501
}  # fmt: skip


def _check_policy_rollout(ns: dict[str, Any]) -> None:
    assert len(ns["results"]) == 4 and len(ns["controller"].payload["lr_factors"]) == 7
    assert tuple(ns["env"].config.lr_factors) == LOCAL_FACTORS


def _check_decisions(ns: dict[str, Any]) -> None:
    assert [h["step"] for h in ns["scheduler"].history] == [0, 25]


def _check_guarded(ns: dict[str, Any]) -> None:
    assert ns["scheduler"].core.fallback_step_ratio == 0.33  # the copy of policy.pt, guarded


def _check_clipped(ns: dict[str, Any]) -> None:
    from ganno_env import load_policy

    low, high = load_policy("clipped.pt").payload["observation_clip"]["log10_relative_lr"]
    assert low <= 0.0 <= high


def _check_step_clipped(ns: dict[str, Any]) -> None:
    from ganno_env import load_policy

    assert load_policy("step_clip.pt").env_requirements()["step_clip"] == 0.5


def _check_return_spread(ns: dict[str, Any]) -> None:
    """64 networks' returns per run; each twin's run pays a reward other than the plain one."""
    import numpy as np

    runs = ns["runs"]
    assert all(len(r) == 64 and np.isfinite(r).all() for r in runs.values())
    for twin in ("bold", "constant"):
        assert not np.allclose(runs[twin], runs[None])
    assert not np.allclose(runs["bold"], runs["constant"])  # the swapped rule took effect


def _check_sibling_spread(ns: dict[str, Any]) -> None:
    """Three policies' spreads; the actions they sample part siblings that start alike."""
    spread = ns["spread"]
    assert sorted(spread) == [0, 1, 2]
    for total, difference, correlation in spread.values():
        assert total > 0 and difference > 0 and -1 <= correlation <= 1


def _check_paired_wins(ns: dict[str, Any]) -> None:
    """Each policy file of each suite: two runs, one of them ahead of bold driver."""
    keys = {(suite, f"p{n}") for suite in ("heldin", "bench") for n in range(3)}
    assert set(ns["runs"]) == keys and all(ns["runs"][k] == 2 for k in keys)
    assert all(ns["wins"][k] == 1 for k in keys)


def _check_groups(ns: dict[str, Any]) -> None:
    assert sorted(ns["env"].group_map) == [f"net{i}" for i in range(4)]


# What each block must have left behind, beyond running without an error.
CHECKS: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("README.md", "import torch"): _check_policy_rollout,
    ("README.md", 'scheduler = GannoScheduler(optimizer, model, policy="policy.pt", val_loss_fn=val_loss)'): _check_decisions,  # noqa: E501
    ("README.md", "from ganno_env import add_fallback"): _check_guarded,
    ("README.md", "from ganno_env import add_observation_clip"): _check_clipped,
    ("README.md", "from ganno_env import add_step_clip"): _check_step_clipped,
    ("docs/torchrl.md", "pop = 4"): _check_groups,
    ("docs/results.md", "import numpy as np"): _check_return_spread,
    ("docs/results.md", "# the siblings' returns, per pair of alike networks"): _check_sibling_spread,  # noqa: E501
    ("docs/results.md", "# paired wins against bold driver: the same condition and seed, per suite and policy file"): _check_paired_wins,  # noqa: E501
}  # fmt: skip


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)


SNIPPETS = [(page, block.splitlines()[0], block) for page in PAGES for block in python_blocks(page)]


@pytest.mark.parametrize(
    "page, first_line, code", SNIPPETS, ids=[f"{p}:{line[:40]}" for p, line, _ in SNIPPETS]
)
def test_snippet_runs(page, first_line, code, tmp_path, monkeypatch):
    key = (page, first_line)
    if key in NOT_RUN:
        pytest.skip(NOT_RUN[key])
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    if key in SETUP:
        SETUP[key](namespace)
    exec(compile(code, f"{page} ({first_line})", "exec"), namespace)
    if key in CHECKS:
        CHECKS[key](namespace)


def test_markers_name_blocks_that_exist():
    """A marker for a block that was edited or removed would silently stop applying."""
    keys = {(page, first_line) for page, first_line, _ in SNIPPETS}
    for marker in (NOT_RUN, SETUP, CHECKS):
        assert set(marker) <= keys, set(marker) - keys
