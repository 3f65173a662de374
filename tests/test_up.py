"""`brigade up` (what `make run` runs): the whole system, then a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support import REPO, free_port, wait_for


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status), bytes(response.read())


def test_up_serves_the_page_and_stops_cleanly(output_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    log = (output_dir / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "brigade", "up", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 30, "the gateway's /healthz")
        status, page = get(f"{base}/")
        assert status == 200 and b"Bucket Brigade" in page
        constants = json.loads(get(f"{base}/api/constants")[1])
        assert constants["sample_rate"] == 48000
        # A room joined through the API is owned by the launcher's mixer.
        request = urllib.request.Request(
            f"{base}/api/rooms",
            data=json.dumps({"room": "choir"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            assert response.status == 201
        wait_for(
            lambda: get(f"{base}/api/rooms/choir/occupancy")[0] == 200,
            10,
            "the mixer to own the room and publish occupancy",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
        log.close()
    assert code == 0, (output_dir / "up.log").read_text()
    text = (output_dir / "up.log").read_text()
    assert "Bucket Brigade is running at http://localhost:" in text
    assert "Traceback" not in text
