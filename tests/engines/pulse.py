"""A private PulseAudio for the browsers' sound (Firefox's AudioContext never
starts without a sound server): its own runtime dir, a null sink, an anonymous
unix socket; started and killed by the fixture."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.engines.page import require_program
from tests.support import wait_until


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End a process started in its own session, with its children (content processes)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def pulseaudio(log_dir: Path) -> Iterator[str]:
    """A private PulseAudio with a null sink; yields its ``PULSE_SERVER`` value."""
    binary = require_program("pulseaudio", "pulseaudio")
    runtime = Path(tempfile.mkdtemp(prefix="bb-pulse-"))
    socket = runtime / "native"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime)}
    log = (log_dir / "pulseaudio.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--system=no",
            "-n",
            "--log-target=stderr",
            "--load=module-null-sink sink_name=null",
            f"--load=module-native-protocol-unix socket={socket} auth-anonymous=1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: socket.exists() or proc.poll() is not None, 15, "PulseAudio's socket")
        assert proc.poll() is None, f"pulseaudio exited: {(log_dir / 'pulseaudio.log').read_text()}"
        yield f"unix:{socket}"
    finally:
        stop_group(proc)
        log.close()
