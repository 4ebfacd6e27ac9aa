"""Check that training spreads over a Ray cluster: which nodes ran the env runners.

    python -m rllib_configs.cluster_check --address auto          # an existing cluster
    python -m rllib_configs.cluster_check --simulate-nodes 2      # head + 2 nodes, here

It trains the `smoke` preset with one env runner per worker node for a few iterations and
prints JSON: the node of every env runner, the iterations done, and the node count.
`--simulate-nodes` starts a `ray.cluster_utils.Cluster` (several raylets in this machine)
with a CPU-less head, so env runners can only run on the worker nodes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import ray

from rllib_configs.ppo import build_config, get_preset


def env_runner_nodes(algo) -> list[str]:
    """The node id of each remote env runner."""
    return algo.env_runner_group.foreach_env_runner(
        lambda runner: ray.get_runtime_context().get_node_id(), local_env_runner=False
    )


def run(num_env_runners: int, iterations: int) -> dict:
    preset = get_preset("smoke", num_env_runners=num_env_runners, evaluation_interval=0)
    algo = build_config(preset, "shared").build_algo()
    try:
        for _ in range(iterations):
            algo.train()
        nodes = env_runner_nodes(algo)
        return {
            "env_runner_nodes": nodes,
            "distinct_nodes": len(set(nodes)),
            "iterations": algo.iteration,
            "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
        }
    finally:
        algo.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="an existing cluster, e.g. auto or HOST:6379")
    where.add_argument("--simulate-nodes", type=int, help="worker nodes to start here")
    parser.add_argument("--env-runners", type=int, default=None, help="default: one per node")
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args(argv)
    cluster = None
    if args.simulate_nodes is not None:
        if args.simulate_nodes < 1:
            parser.error(f"--simulate-nodes {args.simulate_nodes}; allowed: >= 1")
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(args.simulate_nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    try:
        workers = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        report = run(args.env_runners or len(workers), args.iterations)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
