"""Child processes kept running: restarted with back-off when they die, stopped in order.

``brigade up`` registers Redis, the mixers and the gateways here.  A child
that exits is logged and started again after a jittered, growing pause
(:mod:`common.backoff`); one that then stays up ``stable_s`` starts afresh
from the shortest pause.  The others are not touched, so a mixer killed under
``brigade up`` fails over exactly as in production while it restarts.
Two exits are final: a child that exits with the usage-error code (2: bad
settings will not get better) and one that failed ``give_up_after`` times in
a row; then :meth:`Supervisor.poll` reports it and the caller stops the rest.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from common.backoff import Backoff

STABLE_S: Final = 30.0
"""A child that stayed up this long counts as healthy: its next restart is quick again."""
GIVE_UP_AFTER: Final = 10
"""Failures in a row (none of them up ``STABLE_S``) after which a child is given up."""
EXIT_USAGE: Final = 2
STOP_TIMEOUT_S: Final = 10.0

Launch = Callable[[], "subprocess.Popen[bytes]"]


def say(text: str) -> None:
    """One line of the launcher's log (stderr, flushed: children write there too)."""
    print(f"brigade up: {text}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class Child:
    """One supervised process and its restart book-keeping (times in monotonic s)."""

    name: str
    launch: Launch
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at_s: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Supervisor:
    """Starts children, restarts the ones that die, stops them all in reverse order."""

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        stable_s: float = STABLE_S,
        give_up_after: int = GIVE_UP_AFTER,
    ) -> None:
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.stable_s = stable_s
        self.give_up_after = give_up_after
        self.children: list[Child] = []

    def start(self, name: str, launch: Launch, now_s: float) -> Child:
        """Start a child now; raises what ``launch`` raises (a first start must work)."""
        child = Child(name, launch)
        self.children.append(child)
        self._launch(child, now_s)
        return child

    def poll(self, now_s: float) -> Child | None:
        """Restart what died and is due; returns a child given up on (then stop all)."""
        for child in self.children:
            if child.restart_at_s is None:
                code = child.proc.poll() if child.proc is not None else None
                if code is None:
                    continue
                if code == EXIT_USAGE:
                    say(f"{child.name} exited with code {code} (bad settings); not restarting it")
                    return child
                if now_s - child.started_s >= self.stable_s:
                    child.failures = 0
                child.failures += 1
                if child.failures >= self.give_up_after:
                    say(f"{child.name} failed {child.failures} times in a row; giving up")
                    return child
                pause = self.backoff.compute(child.failures)
                child.restart_at_s = now_s + pause
                what = f"{child.name} (pid {child.pid}) {_exit_text(code)}"
                say(f"{what}; restarting in {pause:.1f} s")
            elif now_s >= child.restart_at_s:
                child.restart_at_s = None
                child.restarts += 1
                try:
                    self._launch(child, now_s)
                except (OSError, RuntimeError) as exc:
                    say(f"{child.name} could not be started: {exc}")
                    child.proc = None
                    child.failures += 1
                    child.restart_at_s = now_s + self.backoff.compute(child.failures)
        return None

    def stop(self) -> None:
        """Stop in reverse start order, each before the next: gateways say goodbye to
        their singers, mixers hand their rooms back, and Redis goes last."""
        for child in reversed(self.children):
            proc = child.proc
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in {STOP_TIMEOUT_S:g} s; killing it")
                proc.kill()
                proc.wait()

    def _launch(self, child: Child, now_s: float) -> None:
        child.proc = child.launch()
        child.started_s = now_s
        again = f" (restart {child.restarts})" if child.restarts else ""
        say(f"started {child.name}, pid {child.pid}{again}")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
