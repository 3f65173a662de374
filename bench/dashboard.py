"""Render the Grafana dashboard's panels to a PNG, from the same queries, against a
real Prometheus (a development tool: Grafana is not packaged in Debian).

    python -m bench.dashboard --out /tmp/dashboard/dashboard.png

starts a private redis-server, two mixers, two gateways and a recorder (each
with its /metrics), Debian's ``prometheus`` scraping them with
docker/prometheus.yml's jobs, and ``brigade load`` singing through the
gateways; along the way it sends wrong passwords from a few loopback
addresses and kills one mixer (a failover).  Then it asks Prometheus for every
panel's queries over the run (``query_range``) and draws the panels where the
dashboard puts them.  ``--prometheus URL --start T --end T`` only renders.
Needs matplotlib (``pip install matplotlib``; not a dependency of the project).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from common.protocol import hello_message
from tests.guessers import address, attempt
from tests.support import REPO, Process, RedisServer, free_port, healthy, wait_for

DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "bucket-brigade.json"


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    result: list[Any] = answer["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def render(base: str, start: float, end: float, out: Path) -> None:
    # A development tool's dependency, not the project's: imported only here.
    importlib.import_module("matplotlib").use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    dashboard = json.loads(DASHBOARD.read_text())
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    unit_in = 0.62
    fig = plt.figure(figsize=(24 * unit_in * 1.4, rows * unit_in), facecolor="#181b1f")
    step = max(5.0, (end - start) / 300)
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        # Room inside each cell for the tick labels on the left and the title on top.
        left, bottom = (0.004, 0.006) if panel["type"] == "stat" else (0.03, 0.02)
        ax = fig.add_axes(
            (
                g["x"] / 24 + left,
                1 - (g["y"] + g["h"]) / rows + bottom,
                g["w"] / 24 - left - 0.006,
                g["h"] / rows - bottom - 0.006 - 0.45 / (rows * unit_in),
            ),
            facecolor="#111217",
        )
        ax.set_title(panel["title"], color="#d8d9da", fontsize=11, loc="left")
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        for spine in ax.spines.values():
            spine.set_color("#333")
        if panel["type"] == "stat":
            series = query_range(base, panel["targets"][0]["expr"], start, end, step)
            values = [float(v) for s in series for _, v in s["values"][-1:]]
            value = values[0] if values else math.nan
            text = "No data" if math.isnan(value) else _format(value, unit)
            steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
            color = "#73bf69"
            for threshold in steps:
                if threshold["value"] is not None and value >= threshold["value"]:
                    color = "#f2495c"
            ax.text(0.5, 0.45, text, color=color, fontsize=26, ha="center", va="center")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for target in panel["targets"]:
            for s in query_range(base, target["expr"], start, end, step):
                t = [float(x) - end for x, _ in s["values"]]
                v = [float(y) for _, y in s["values"]]
                ax.plot(
                    [x / 60 for x in t],
                    v,
                    linewidth=1.2,
                    label=legend(target["legendFormat"], s["metric"]),
                )
        ax.set_xlim((start - end) / 60, 0)
        # Headroom, as Grafana leaves: a flat line at the maximum must not hide in the frame.
        ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.12)
        ax.tick_params(colors="#aaa", labelsize=8)
        ax.grid(color="#2a2d33", linewidth=0.5)
        ax.set_xlabel("minutes before now", color="#888", fontsize=8, labelpad=1)
        if unit == "s":
            ax.set_ylabel("seconds", color="#888", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", facecolor="#181b1f", labelcolor="#ccc")
        else:
            ax.text(0.5, 0.5, "No data", color="#888", ha="center", transform=ax.transAxes)
    fig.suptitle(dashboard["title"], color="#d8d9da", fontsize=14, x=0.01, ha="left", y=0.999)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70, facecolor=fig.get_facecolor())
    print(out)


def _format(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


async def _guess(base: str, n: int) -> None:
    """A password room, and ``n`` wrong passwords for it from 6 addresses (the limits bite)."""
    async with aiohttp.ClientSession() as http:
        body = {"room": "guarded", "password": "s3cret"}
        async with http.post(base + "/api/rooms", json=body) as response:
            assert response.status == 201, response.status
    for i in range(n):
        hello = hello_message("guarded", "Eve", password=f"wrong-{i}")
        await attempt(base + "/ws", address(i % 6), hello)


def run(out: Path, minutes: float, singers: int) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="bb-dashboard-"))
    redis_server = RedisServer()
    redis_server.start()
    env = {"REDIS_URL": redis_server.url, "BB_LOG_LEVEL": "WARNING"}
    ports: dict[str, list[int]] = {"gateway": [], "mixer": [], "recorder": []}
    procs: list[Process] = []
    for i in (1, 2):
        port = free_port()
        ports["mixer"].append(port)
        procs.append(
            Process(
                ["mixer"],
                {**env, "BB_MIXER_ID": f"mixer-{i}", "BB_METRICS_PORT": str(port)},
                log_dir,
                f"mixer-{i}",
            )
        )
    port = free_port()
    ports["recorder"].append(port)
    procs.append(
        Process(
            ["recorder"],
            {
                **env,
                "BB_RECORDER_ID": "recorder-1",
                "BB_METRICS_PORT": str(port),
                "BB_RECORDINGS_DIR": str(log_dir / "recordings"),
            },
            log_dir,
            "recorder",
        )
    )
    for i in (1, 2):
        port = free_port()
        ports["gateway"].append(port)
        procs.append(
            Process(
                ["gateway"],
                {**env, "BB_GATEWAY_ID": f"gateway-{i}", "BB_PORT": str(port)},
                log_dir,
                f"gateway-{i}",
            )
        )
    spec = yaml.safe_load((REPO / "docker" / "prometheus.yml").read_text())
    spec["global"] = {"scrape_interval": "5s", "evaluation_interval": "5s"}
    for job in spec["scrape_configs"]:
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in ports[job["job_name"]]]}]
    (log_dir / "prometheus.yml").write_text(yaml.safe_dump(spec))
    prom_port = free_port()
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={log_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={log_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=(log_dir / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{prom_port}"
    urls = [f"http://127.0.0.1:{p}" for p in ports["gateway"]]
    load = None
    try:
        for url in urls:
            wait_for(lambda url=url: healthy(url), 30, url)
        start = time.time()
        seconds = minutes * 60
        load_args = [sys.executable, "-m", "brigade", "load", "--quiet"]
        for url in urls:
            load_args += ["--url", url]
        load_args += ["--singers", str(singers), "--room-size", "6", "--duration", str(seconds)]
        load = subprocess.Popen(
            load_args,
            cwd=REPO,
            stdout=(log_dir / "load.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        time.sleep(seconds * 0.4)
        asyncio.run(_guess(urls[0], 60))
        time.sleep(seconds * 0.1)
        procs[0].kill()  # mixer-1 dies: mixer-2 takes its rooms over
        print("killed mixer-1 at", round(time.time() - start), "s", flush=True)
        load.wait(seconds * 2 + 120)
        time.sleep(10)
        render(base, start, time.time(), out)
        print("logs in", log_dir)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        prometheus.terminate()
        prometheus.wait(20)
        for proc in reversed(procs):
            proc.stop()
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/dashboard/dashboard.png"))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--singers", type=int, default=18)
    parser.add_argument("--prometheus", help="only render, from this Prometheus")
    parser.add_argument("--start", type=float)
    parser.add_argument("--end", type=float)
    args = parser.parse_args()
    if args.prometheus:
        render(args.prometheus, args.start, args.end or time.time(), args.out)
    else:
        run(args.out, args.minutes, args.singers)


if __name__ == "__main__":
    main()
