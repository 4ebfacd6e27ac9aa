"""rllib_configs.ship_policy: the shipped file is the policy plus its provenance."""

import json

import pytest
import torch

from ganno_env.features import FEATURES
from ganno_env.policy import PolicyNet, export_policy, load_policy
from rllib_configs.ship_policy import ship

SUMMARY = {
    "version": "unseen_v0",
    "inputs": {"suite_hash": "abc"},
    "overall": {"ganno": {"iqm_test_loss": [0.1, 0.09, 0.11]}, "oracle": {}},
    "per_condition": {"cnn": {"ganno": {"iqm_test_loss": [0.2, 0.1, 0.3]}}},
    "probability_of_improvement": {"bold_driver": {"overall": [0.6, 0.5, 0.7]}},
}


@pytest.fixture
def trained(tmp_path):
    path = tmp_path / "policy.pt"
    nets = {"shared": PolicyNet(len(FEATURES), 5, (8, 8))}
    export_policy(path, nets, "shared", {}, {"seed": 7})
    return path


def test_shipped_file_records_how_it_was_made(tmp_path, trained):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(SUMMARY))
    out = ship(trained, summary, "ganno train --preset full", "deadbeef", tmp_path / "p.pt")
    extra = torch.load(out, weights_only=True)["extra"]
    assert (extra["command"], extra["commit"], extra["seed"]) == (
        "ganno train --preset full",
        "deadbeef",
        7,
    )
    compact = extra["unseen_v0_summary"]
    assert compact["overall_iqm_test_loss"] == {"ganno": 0.1, "oracle": None}
    assert compact["ganno_iqm_test_loss_per_condition"] == {"cnn": 0.2}
    assert compact["p_ganno_better_overall"] == {"bold_driver": [0.6, 0.5, 0.7]}
    assert load_policy(out).mapping == "shared"


def test_a_summary_of_another_suite_is_refused(tmp_path, trained):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({**SUMMARY, "version": "quick_v0"}))
    with pytest.raises(ValueError, match="quick_v0"):
        ship(trained, summary, "cmd", "c", tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()
