"""The operator's dashboard (docker/grafana/) asks only for what the processes export.

Every query (PromQL ``expr``) of every panel is checked three ways:

- the metric names it uses are exported by a real gateway, mixer, recorder and keeper
  (started on a real redis-server, a singer joined so the per-room series
  exist, and their ``/metrics`` scraped);
- Debian's ``promtool`` parses it (and docker/prometheus.yml);
- a real Prometheus (Debian's ``prometheus``), scraping those processes with
  docker/prometheus.yml's jobs, evaluates it without an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from common import keys
from common.protocol import hello_message
from tests.support import REPO, Process, RedisServer, free_port, healthy, processes, wait_for

DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "bucket-brigade.json"
PROMETHEUS_YML = REPO / "docker" / "prometheus.yml"
DATASOURCES = REPO / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every target."""

# PromQL words that are not metric names: aggregations, functions and keywords.
_NOT_METRICS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "rate",
        "irate",
        "increase",
        "delta",
        "histogram_quantile",
        "vector",
        "scalar",
        "abs",
        "clamp_min",
        "clamp_max",
        "time",
        "label_replace",
        "absent",
        "changes",
        "resets",
        "deriv",
        "predict_linear",
        "round",
        "inf",
        "nan",
    }
)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (enough PromQL for our queries)."""
    bare = _STRINGS.sub('""', expr)
    bare = _GROUPING.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", bare)))
    names = set()
    for match in _WORD.finditer(bare):
        word = match.group()
        rest = bare[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _NOT_METRICS:
            continue
        names.add(word)
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, mixer) (rate(bb_x_bucket{job="m",le!="1"}[5m])))'
        " / ignoring(a) sum without (b) (increase(bb_y_total[1m] offset 5m)) or vector(0)"
        " > bool 2 unless count(up == 0)"
    )
    assert metric_names(expr) == {"bb_x_bucket", "bb_y_total", "up"}


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found.append((panel["title"], target["expr"]))
    return found


def require(tool: str) -> str:
    """A Debian tool (``scripts/setup.sh --browser`` installs it); skip, or fail in CI."""
    path = shutil.which(tool)
    if path is not None:
        return path
    reason = f"{tool} not found: run 'make test' (scripts/setup.sh installs Debian's prometheus)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(reason)
    pytest.skip(reason)


def test_the_dashboard_and_its_provisioning_agree() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]}
    assert jobs == {"gateway", "mixer", "recorder", "keeper"}
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
            # A job a query names is one Prometheus scrapes.
            assert set(re.findall(r'job="([^"]+)"', target["expr"])) <= jobs, target["expr"]


def test_promtool_parses_every_query_and_the_scrape_configuration(tmp_path: Path) -> None:
    promtool = require("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_title, expr) in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    for args in (["check", "rules", str(path)], ["check", "config", str(PROMETHEUS_YML)]):
        result = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def state_redis_url() -> Iterator[str]:
    """The keeper's state Redis."""
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def stack(
    redis_url: str, state_redis_url: str, output_dir: Path, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A mixer, a gateway, a recorder and a keeper, each with /metrics: {job: metrics URL}."""
    env = {"REDIS_URL": redis_url}
    ports = {job: free_port() for job in ("gateway", "mixer", "recorder", "keeper")}
    with processes(output_dir) as started:
        started.append(
            Process(
                ["keeper"],
                {
                    **env,
                    "BB_STATE_REDIS_URL": state_redis_url,
                    "BB_KEEPER_ID": "keeper-dash",
                    "BB_METRICS_PORT": str(ports["keeper"]),
                },
                output_dir,
                "keeper",
            )
        )
        started.append(
            Process(
                ["mixer"],
                {**env, "BB_MIXER_ID": "mixer-dash", "BB_METRICS_PORT": str(ports["mixer"])},
                output_dir,
                "mixer",
            )
        )
        started.append(
            Process(
                ["recorder"],
                {
                    **env,
                    "BB_RECORDER_ID": "recorder-dash",
                    "BB_METRICS_PORT": str(ports["recorder"]),
                    "BB_RECORDINGS_DIR": str(tmp_path / "recordings"),
                },
                output_dir,
                "recorder",
            )
        )
        started.append(
            Process(
                ["gateway"],
                {**env, "BB_GATEWAY_ID": "gateway-dash", "BB_PORT": str(ports["gateway"])},
                output_dir,
                "gateway",
            )
        )
        base = f"http://127.0.0.1:{ports['gateway']}"
        wait_for(lambda: healthy(base), 20, "the gateway")
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: client.exists(keys.mixer_heartbeat("mixer-dash")), 20, "the mixer")
        wait_for(
            lambda: client.exists(keys.recorder_heartbeat("recorder-dash")), 20, "the recorder"
        )
        wait_for(lambda: client.exists(keys.keeper_heartbeat("keeper-dash")), 20, "the keeper")
        client.close()
        yield {job: f"127.0.0.1:{port}" for job, port in ports.items()}


def scrape(target: str) -> set[str]:
    """The names of the samples a /metrics endpoint exports."""
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


async def test_every_query_names_metrics_the_processes_export(stack: dict[str, str]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://{stack['gateway']}/ws") as ws,
    ):
        # A singer in a room, so that the per-room series exist.
        await ws.send_json(hello_message("dash", "Ann"))
        while (msg := await ws.receive_json(timeout=20))["type"] != "welcome":
            assert msg["type"] != "error", msg
        for name in ("bb_mixer_room_members", "bb_gateway_room_singers"):
            wait_for(lambda name=name: any(name in scrape(t) for t in stack.values()), 20, name)
        exported = set().union(*(scrape(target) for target in stack.values()))
    missing = {
        (title, name)
        for title, expr in queries()
        for name in metric_names(expr)
        if name not in exported | PROMETHEUS_OWN
    }
    assert not missing, sorted(missing)


def prometheus_query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 400/422: the query is wrong
        answer = json.loads(exc.read())
    return answer


def test_a_real_prometheus_scrapes_every_job_and_evaluates_every_query(
    stack: dict[str, str], tmp_path: Path, output_dir: Path
) -> None:
    binary = require("prometheus")
    spec = yaml.safe_load(PROMETHEUS_YML.read_text())
    # docker/prometheus.yml's jobs, with the compose network's DNS names replaced by
    # this machine's ports, scraped every second.
    spec["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in spec["scrape_configs"]:
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": [stack[job["job_name"]]]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(spec))
    port = free_port()
    log = (output_dir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def scraped_thrice() -> bool:
            try:
                answer = prometheus_query(base, "count_over_time(up[1m]) >= 3 and up == 1")
            except OSError:
                return False
            return {r["metric"]["job"] for r in answer["data"]["result"]} == set(stack)

        wait_for(scraped_thrice, 60, "three scrapes of every job")
        for title, expr in queries():
            answer = prometheus_query(base, expr)
            assert answer["status"] == "success", (title, expr, answer)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
