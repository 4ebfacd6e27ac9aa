"""The cluster YAMLs pass Ray's own validation (what `ray up` runs before launching)."""

import copy
import os
import subprocess
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


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_the_dashboard_listens_on_the_head_nodes_loopback_only(path):
    config = yaml.safe_load(path.read_text())
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert "0.0.0.0" not in yaml.safe_dump(config)  # no server or rule open to everyone


def test_aws_nodes_admit_only_the_cluster_and_ssh_from_one_range(tmp_path):
    config = yaml.safe_load((CLUSTER_DIR / "aws-gpu.yaml").read_text())
    groups = [t["node_config"].get("SecurityGroupIds") for t in
              config["available_node_types"].values()]  # fmt: skip
    # a group on every node type: Ray never makes its default one (SSH from 0.0.0.0/0)
    assert groups[0] and all(g == groups[0] for g in groups)

    # the script that makes the group, with a stand-in `aws` that records its calls
    (tmp_path / "aws").write_text(
        '#!/bin/sh\necho "$@" >> "$LOG"\n'
        'case "$2" in describe-vpcs) echo vpc-1 ;; create-security-group) echo sg-1 ;; esac\n'
    )
    (tmp_path / "aws").chmod(0o755)
    log = tmp_path / "calls"
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "LOG": str(log)}
    script = str(CLUSTER_DIR / "aws-security-group.sh")
    made = subprocess.run([script], env={**env, "SSH_CIDR": "203.0.113.7/32"},
                          capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0 and made.stdout.strip() == "sg-1", made.stderr
    authorize = [c for c in log.read_text().splitlines() if "authorize-security-group" in c]
    rules = authorize[0].split("--ip-permissions ")[1]
    assert rules == (
        "IpProtocol=-1,UserIdGroupPairs=[{GroupId=sg-1}] "
        "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=203.0.113.7/32}]"
    )
    log.unlink()
    refused = subprocess.run([script], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "SSH_CIDR" in refused.stderr and not log.exists()
