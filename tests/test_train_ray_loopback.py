"""The local Ray that `ganno train` starts is reachable from this machine only.

The check runs this file as a script in a new process (the test session already has its
own Ray): it starts Ray with `init_ray(None)` and reports the node's address and every
TCP address on which that process and its descendants (GCS, raylet, agents, workers)
listen, read from /proc.
"""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def process_tree(root: int) -> set[int]:
    """`root` and all its descendants."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    tree, grown = {root}, True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return tree


def listening_addresses(root: int) -> set[str]:
    """Local addresses of the TCP sockets on which `root` or a descendant listens."""
    inodes = set()
    for pid in process_tree(root):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                # /proc stores each 32-bit word of the address in the host's byte order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def report() -> dict:
    """Start Ray as `ganno train` does and describe where it listens."""
    import ray
    import ray._private.ray_constants as ray_constants

    from rllib_configs.train import init_ray

    assert init_ray(None, num_cpus=1)
    try:
        return {
            "node_ip": ray.util.get_node_ip_address(),
            "nodes": [node["NodeManagerAddress"] for node in ray.nodes()],
            "gcs": ray.get_runtime_context().gcs_address,
            "listening": sorted(listening_addresses(os.getpid())),
            # restored at once: joining a cluster later in this process still works
            "cluster_flag_after": ray_constants.ENABLE_RAY_CLUSTER,
        }
    finally:
        ray.shutdown()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_local_ray_listens_on_loopback_only():
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["node_ip"] == "127.0.0.1" and found["nodes"] == ["127.0.0.1"]
    assert found["gcs"].startswith("127.0.0.1:")
    assert found["listening"] and all(is_loopback(a) for a in found["listening"]), found
    assert found["cluster_flag_after"] is True


if __name__ == "__main__":
    print(json.dumps(report()))
