"""Fixtures: a real redis-server on a free port for the whole session, flushed per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from hypothesis import HealthCheck, settings

from brigade.rediscluster import LocalRedisCluster
from tests.browser_support import require_chromium, static_page
from tests.support import RedisServer, Stack, running_stack

# Property tests check behaviour, never speed: on a busy 2-core machine (CI, or
# benchmarks running beside the suite) Hypothesis's timing checks would fail
# tests for the machine's load rather than for the code.
settings.register_profile("project", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stack(**options): the stack and module_stack fixtures' options "
        "(tests/support.py running_stack's, and chromium=True for browser tests)",
    )


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


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP and WebSocket client session for the test, closed after it."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Chromium page of the module's own, on a static server of the page's modules (no
    gateway): ``PAGE_SCRIPT`` (module constant, JavaScript) has run in it, typically
    importing the modules under test; ``PAGE_OPTIONS`` (optional) go to ``new_page``."""
    script: str = request.module.PAGE_SCRIPT
    options: dict[str, Any] = getattr(request.module, "PAGE_OPTIONS", {})
    with static_page(script, **options) as page:
        yield page


def _stack_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("stack")
    options = dict(marker.kwargs) if marker is not None else {}
    if options.pop("chromium", False):
        require_chromium()  # before starting anything
    return options


@pytest.fixture
def stack(request: pytest.FixtureRequest, redis_url: str, output_dir: Path) -> Iterator[Stack]:
    """A stack of the test's own on the test's Redis: a mixer and a gateway, unless the
    test's or module's ``@pytest.mark.stack(...)`` asks for others (``running_stack``'s
    options; ``chromium=True`` skips without Chromium). Logs in ``output_dir``."""
    with running_stack(redis_url, output_dir, **_stack_options(request)) as started:
        yield started


@pytest.fixture(scope="module")
def module_stack(
    request: pytest.FixtureRequest, redis_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Like ``stack``, one for the whole module, on ``redis_backend`` (one Redis, then a
    Redis Cluster; a module may override ``redis_backend``)."""
    log_dir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with running_stack(redis_backend.url, log_dir, **_stack_options(request)) as started:
        yield started
