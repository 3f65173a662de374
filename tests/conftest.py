"""Fixtures: a real redis-server on a free port for the whole session, flushed per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings

from brigade.rediscluster import LocalRedisCluster
from tests.support import RedisServer

# Property tests check behaviour, never speed: on a busy 2-core machine (CI, or
# benchmarks running beside the suite) Hypothesis's timing checks would fail
# tests for the machine's load rather than for the code.
settings.register_profile("project", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of the session's own: 3 masters + 3 replicas on loopback.

    Without redis-cli (package redis-tools, scripts/setup.sh installs it) the
    cluster tests are skipped, except in CI where they fail.
    """
    if shutil.which("redis-cli") is None and os.environ.get("CI") != "true":
        pytest.skip("redis-cli is not installed (apt-get install redis-tools)")
    cluster = LocalRedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_cluster() -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of the test's own (3 + 3), for tests that kill nodes or move slots."""
    nodes = LocalRedisCluster()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


Backend = RedisServer | LocalRedisCluster
"""One Redis or a Redis Cluster: both have ``url``; :func:`flush` empties either."""


def flush(backend: Backend) -> None:
    if isinstance(backend, LocalRedisCluster):
        backend.flush()
        return
    client = redis.Redis(port=backend.port)
    client.flushall()
    client.close()


@pytest.fixture(scope="module", params=["one-redis", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> Backend:
    """The module's tests run on one Redis, then on a Redis Cluster (emptied first)."""
    name: str = request.param
    backend: Backend = request.getfixturevalue(
        "redis_server" if name == "one-redis" else "redis_cluster"
    )
    flush(backend)
    return backend


@pytest.fixture(params=["one-redis", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """Like ``redis_url``, once on one Redis and once on the session's Redis Cluster."""
    name: str = request.param
    backend: Backend = request.getfixturevalue(
        "redis_server" if name == "one-redis" else "redis_cluster"
    )
    flush(backend)
    return backend.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the session's redis-server, emptied before each test."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own (for tests that stop and restart it)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """Folder for a test's artefacts (logs, screenshots): test-output/<test name>/."""
    default = Path(__file__).resolve().parent.parent / "test-output"
    root = Path(os.environ.get("BB_TEST_OUTPUT") or default)
    name: str = request.node.name
    path = root / name.replace("/", "_").replace("[", "-").replace("]", "")
    path.mkdir(parents=True, exist_ok=True)
    return path
