"""Which iteration's policy a training run exports: the best one on held-in validation.

With a preset's `validate_every` > 0, the run scores its policy (`ganno_env.validation`:
greedy, on fixed networks of its own training conditions, seeds below the held-out ones)
from iteration `validate_from` on, every `validate_every` iterations and at the last one.
Each candidate is kept as `DIR/validation/iter_NNNNNN.pt` and its score appended to
`DIR/validation.jsonl`; `DIR/policy.pt` is the candidate with the lowest mean ln val loss
(a tie goes to the later iteration). Why: the policy moves a lot between PPO iterations,
and the last one is sometimes a bad draw (`docs/results.md`, "Choosing the checkpoint on
held-in networks"). Nothing here reads a held-out condition or seed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ganno_env.config import ENV_DEFAULTS
from ganno_env.jsonl import append_lines, read_lines
from ganno_env.validation import validation_score
from rllib_configs.ppo import Preset

SCORES_FILE = "validation.jsonl"
CANDIDATES = "validation"


def due(preset: Preset, iteration: int, stop: int) -> bool:
    """Whether the policy of `iteration` is a candidate."""
    if preset.validate_every <= 0 or iteration < preset.validate_from:
        return False
    return iteration % preset.validate_every == 0 or iteration == stop


def validation_settings(preset: Preset) -> dict[str, Any]:
    """What the candidates are scored on: the training conditions and env settings, on
    the CPU with one thread (the driver scores them; it may have no GPU)."""
    env = dict(preset.env_config)
    env.pop("agents_per_env", None)  # RLlib's mixed-depth wrapper; the networks are alike
    env.pop("reward", None)  # scores read final val losses: no twin to train for a reward
    env.pop("siblings", None)  # every validation network its own draw
    return {
        "conditions": env.pop("conditions", ENV_DEFAULTS["conditions"]),
        "population": int(env.pop("population", ENV_DEFAULTS["population"])),
        "networks": preset.validation_networks,
        "env_kwargs": {**env, "device": "cpu", "num_threads": 1},
    }


def score_candidate(out: Path, candidate: Path, iteration: int, preset: Preset) -> dict[str, Any]:
    """Score the candidate policy file and append its row to `DIR/validation.jsonl`."""
    began = time.perf_counter()
    score = validation_score(candidate, **validation_settings(preset))
    row = {
        "iteration": iteration,
        **score.to_dict(),
        "candidate": str(candidate.relative_to(out)),
        "seconds": round(time.perf_counter() - began, 1),
    }
    append_lines(out / SCORES_FILE, [row])
    return row


def read_scores(out: Path) -> list[dict[str, Any]]:
    """The rows of `DIR/validation.jsonl`, the last one of each iteration, by iteration."""
    rows = {row["iteration"]: row for row in read_lines(out / SCORES_FILE)}
    return [rows[i] for i in sorted(rows)]


def keep_scores_through(out: Path, iteration: int | None) -> None:
    """A new run starts without scores; a resumed one keeps those of the iterations it
    restored (later ones are trained again, so their old candidates are stale)."""
    path = out / SCORES_FILE
    if path.exists():
        rows = [] if iteration is None else read_scores(out)
        kept = "".join(json.dumps(r) + "\n" for r in rows if r["iteration"] <= iteration)
        partial = path.with_suffix(".partial")
        partial.write_text(kept)
        os.replace(partial, path)  # a crash leaves the old file or the new one, whole


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the lowest mean ln val loss; a tie goes to the later iteration."""
    return min(reversed(rows), key=lambda r: r["mean_log_val_loss"])


def export_best(out: Path, policy: Path, log: Callable[[str], None]) -> Path:
    """Write the best candidate to `policy`, with every candidate's score in its `extra`
    (`validation`); returns `policy`."""
    rows = read_scores(out)
    chosen = best(rows)
    payload = torch.load(out / chosen["candidate"], map_location="cpu", weights_only=True)
    payload["extra"] = {
        **payload["extra"],
        "validation": {
            "chosen_iteration": chosen["iteration"],
            "scores": {str(r["iteration"]): r["mean_log_val_loss"] for r in rows},
            "diverged": {str(r["iteration"]): r["diverged"] for r in rows},
            "networks": chosen["networks"],
        },
    }
    torch.save(payload, policy)
    log(
        f"policy: iteration {chosen['iteration']}, the best of {len(rows)} on held-in "
        f"validation (mean ln val loss {chosen['mean_log_val_loss']:.3f})"
    )
    return policy
