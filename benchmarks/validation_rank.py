"""Does held-in validation rank policies as the held-out benchmark does?

Training picks its checkpoint by `ganno_env.validation.validation_score` (networks of the
training conditions). That is only worth doing if the score orders policies the way
`unseen_v0` does. This prints, for policies already benchmarked, each one's validation
score next to its benchmark ratio (IQM test loss of `ganno` over the oracle's) and the
Spearman rank correlation between the two::

    python -m benchmarks.validation_rank s0=runs/s0/policy.pt:runs/s0_summary.json \
        s1=runs/s1/policy.pt:runs/s1_summary.json ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch

from ganno_env.validation import validation_score


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = values.argsort(kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        result[tied] = result[tied].mean()
    return result


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (the Pearson correlation of the ranks)."""
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"need two lists of equal length >= 3; got {len(a)} and {len(b)}")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def benchmark_ratio(summary_path: str) -> float:
    """IQM test loss of `ganno` over the oracle's, from a benchmark's summary.json."""
    overall = json.loads(open(summary_path).read())["overall"]
    return overall["ganno"]["iqm_test_loss"][0] / overall["oracle"]["iqm_test_loss"][0]


def parse_entry(text: str) -> tuple[str, str, str]:
    name, sep, rest = text.partition("=")
    policy, colon, summary = rest.rpartition(":")
    if not (sep and colon and name and policy and summary):
        raise ValueError(f"{text!r}; allowed: NAME=POLICY.pt:SUMMARY.json")
    return name, policy, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", nargs="+", help="NAME=POLICY.pt:SUMMARY.json")
    parser.add_argument("--conditions", default="train_wide")
    parser.add_argument("--networks", type=int, default=128)
    args = parser.parse_args(argv)
    try:
        entries = [parse_entry(text) for text in args.entries]
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(1)
    scores, ratios = [], []
    print("| policy | validation: mean ln val loss | diverged | benchmark ratio to oracle |")
    print("|---|---|---|---|")
    for name, policy, summary in entries:
        score = validation_score(policy, args.conditions, networks=args.networks,
                                 env_kwargs={"num_threads": 1})  # fmt: skip
        ratio = benchmark_ratio(summary)
        scores.append(score.mean_log_val_loss)
        ratios.append(math.log(ratio))
        print(f"| {name} | {score.mean_log_val_loss:.3f} | {score.diverged}/{score.networks} "
              f"| {ratio:.2f} |", flush=True)  # fmt: skip
    if len(entries) >= 3:
        print(f"Spearman rank correlation, validation score vs benchmark ratio: "
              f"{spearman(scores, ratios):.2f} over {len(entries)} policies")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
