"""The cluster YAMLs pass Ray's own validation (what `ray up` runs before launching)."""

import copy
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
util = pytest.importorskip("ray.autoscaler._private.util")

CLUSTER_DIR = Path(__file__).parent.parent / "rllib_configs" / "cluster"
YAMLS = sorted(CLUSTER_DIR.glob("*.yaml"))


def test_there_is_a_cloud_and_an_on_prem_example():
    providers = {yaml.safe_load(p.read_text())["provider"]["type"] for p in YAMLS}
    assert {"aws", "local"} <= providers


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_cluster_yaml_passes_ray_validation(path):
    config = yaml.safe_load(path.read_text())
    prepared = util.prepare_config(copy.deepcopy(config))
    util.validate_config(prepared)
    commands = " ".join(prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"])
    assert commands.count("RAY_AUTH_MODE=token") == 2
    assert any("ganno[rllib]" in c for c in prepared["setup_commands"])


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_validation_would_catch_a_broken_yaml(path):
    config = yaml.safe_load(path.read_text())
    config["idle_timeout_minute"] = 5  # a misspelt key
    with pytest.raises(Exception, match="idle_timeout_minute"):
        util.validate_config(util.prepare_config(config))
