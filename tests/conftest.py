"""Shared fixtures: one local Ray instance for the whole test session."""

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A private local Ray instance (never a cluster found on the machine, never
    `RAY_ADDRESS`), on loopback like the one `ganno train` starts."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        from rllib_configs.train import start_local_ray

        start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def policy_path(tmp_path):
    """A random shared policy file (`tests.helpers.random_policy`)."""
    from tests.helpers import random_policy

    return random_policy(tmp_path / "policy.pt")
