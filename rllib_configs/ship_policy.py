"""Ship a trained policy inside the package as `load_policy("pretrained")`.

    python -m rllib_configs.ship_policy --policy runs/full/policy.pt \\
        --summary runs/full/bench/summary.json --command "ganno train --preset full ..."

The shipped file is the `policy.pt` itself (weights-only data) plus, in its `extra`, what a
user needs to trust it: the training command, the commit it was trained at, the training
seed, the features version, and its `unseen_v0` benchmark summary (overall and per-condition
IQM test loss, probabilities of improvement). Needs neither Ray nor a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ganno_env.policy import PRETRAINED_PATH, load_policy

SUITE_VERSION = "unseen_v0"


def compact_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers a user wants to see in the file: IQMs and chances of improvement."""
    if summary.get("version") != SUITE_VERSION:
        raise ValueError(f"summary of {summary.get('version')!r}; allowed: {SUITE_VERSION!r}")

    def iqm(metrics: dict[str, Any]) -> float | None:
        value = metrics.get("iqm_test_loss")
        return None if value is None else float(value[0])

    return {
        "suite": summary["version"],
        "inputs": summary.get("inputs"),
        "overall_iqm_test_loss": {c: iqm(m) for c, m in summary["overall"].items()},
        "ganno_iqm_test_loss_per_condition": {
            cond: iqm(row["ganno"]) for cond, row in summary["per_condition"].items()
        },
        "p_ganno_better_overall": {
            base: entry["overall"] for base, entry in summary["probability_of_improvement"].items()
        },
    }


def git_commit() -> str:
    """The commit the package is at, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def ship(
    policy: Path, summary: Path, command: str, commit: str, out: Path = PRETRAINED_PATH
) -> Path:
    """Write `out`: the policy file with its provenance and benchmark summary in `extra`."""
    load_policy(policy)  # refuses anything the package could not run
    payload = torch.load(policy, map_location="cpu", weights_only=True)
    payload["extra"] = {
        **payload.get("extra", {}),
        "command": command,
        "commit": commit,
        "seed": payload.get("extra", {}).get("seed"),
        "unseen_v0_summary": compact_summary(json.loads(Path(summary).read_text())),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    load_policy(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True, help="a trained policy.pt")
    parser.add_argument("--summary", type=Path, required=True, help="its unseen summary.json")
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--commit", default=None, help="default: this checkout's HEAD")
    parser.add_argument("--out", type=Path, default=PRETRAINED_PATH)
    args = parser.parse_args(argv)
    path = ship(args.policy, args.summary, args.command, args.commit or git_commit(), args.out)
    print(f"shipped {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
