"""Shared fixtures: one local Ray instance for the whole test session."""

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A private local Ray instance (never a cluster found on the machine)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
