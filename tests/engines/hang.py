"""What a browser's content process is doing when its page stops answering.

A page that answers no script for tens of seconds has its content process's
main thread held. Two very different causes: the page's own JavaScript
spinning (a loop), which burns CPU on that thread, or the browser itself
waiting (a lock, a synchronous IPC), which burns none. ``main_thread`` reads
that thread's CPU time and state from ``/proc`` twice; ``verdict`` (pure)
tells which; ``report`` adds the native stacks (``gdb``, when installed) to a
file for the person reading the failure.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_S = 0.01
"""Linux's USER_HZ: /proc counts CPU time in hundredths of a second."""

SPINNING_SHARE = 0.05
"""The share of the sampled time a thread must run to be called spinning (a
loaded machine gives a busy thread far less than all of a core)."""


PAGE_PROCESS = "Isolated Web"
"""How Firefox names a site's own content process (Fission): the page's."""


@dataclass(frozen=True)
class ThreadSample:
    """One reading of a thread: CPU time (s) so far and its state letter (R, S, D…)."""

    cpu_s: float
    state: str


def parse_stat(text: str) -> ThreadSample:
    """A ``/proc/PID/task/TID/stat`` line → its CPU time (user + system) and state."""
    close = text.rfind(")")  # the command name may hold spaces and parentheses
    if close < 0:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    fields = text[close + 2 :].split()
    if len(fields) < 13:
        raise ValueError(f"a /proc stat line with {len(fields)} fields after the name")
    # After the name: state, ppid, pgrp, session, tty, tpgid, flags, 4 fault counts, utime, stime.
    return ThreadSample(cpu_s=(int(fields[11]) + int(fields[12])) * CLOCK_TICKS_S, state=fields[0])


def verdict(before: ThreadSample, after: ThreadSample, elapsed_s: float) -> str:
    """``spinning`` (it ran: the page's script, most likely a loop) or ``blocked``
    (it waited: the browser itself) from two readings ``elapsed_s`` apart."""
    ran_s = after.cpu_s - before.cpu_s
    if after.state == "R" or (elapsed_s > 0 and ran_s >= SPINNING_SHARE * elapsed_s):
        return "spinning"
    return "blocked"


def main_thread(pid: int) -> ThreadSample:
    """One reading of process ``pid``'s main thread."""
    return parse_stat(Path(f"/proc/{pid}/task/{pid}/stat").read_text())


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid`` (Firefox forks its content processes from a
    fork server, its child): (pid, command line)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    below = {pid}
    grew = True
    while grew:  # to a fixed point: pids wrap, so a child's may be lower than its parent's
        grew = False
        for child, parent in parents.items():
            if parent in below and child not in below:
                below.add(child)
                grew = True
    found: list[tuple[int, str]] = []
    for child in sorted(below - {pid}):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        found.append((child, cmdline.decode(errors="replace").strip()))
    return found


def audio_threads(pid: int) -> str:
    """Firefox's audio server threads in process ``pid`` and where each waits (the
    kernel's wchan): seen in a hang of this suite, its "AudioIPC Server RPC" thread
    waiting for PulseAudio's lock (rt_mutex_schedule) while PulseAudio's own thread
    waited for the page's audio."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
            with contextlib.suppress(OSError):
                name = (task / "comm").read_text().strip()
                if name.startswith("AudioIP") or name == "threaded-ml":
                    found.append(f"{name!r} waits in {(task / 'wchan').read_text().strip()}")
    return ", ".join(found) or "none"


def native_stacks(pid: int) -> str:
    """Every thread's native stack (``gdb``), or why there are none."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return "(no gdb installed: no native stacks)"
    try:
        done = subprocess.run(
            [gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt 30"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "(gdb did not finish in 120 s)"
    return done.stdout + done.stderr


def report(browser_pid: int, path: Path | None, sample_s: float = 2.0) -> str:
    """One line per content process of ``browser_pid`` (its sites' own ones, else
    all its tabs) saying whether its main thread spins or waits, from readings
    ``sample_s`` apart; their native stacks go to ``path`` (None: no stacks)."""
    before: dict[int, tuple[str, ThreadSample]] = {}
    for pid, cmdline in descendants(browser_pid):
        if "-contentproc" in cmdline and cmdline.endswith(" tab"):
            with contextlib.suppress(OSError, ValueError):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                before[pid] = (name, main_thread(pid))
    pages = {pid: seen for pid, seen in before.items() if seen[0].startswith(PAGE_PROCESS)}
    before = pages or before  # the sites' own processes, when Firefox has any
    time.sleep(sample_s)  # the sampling interval, not a wait for something to happen
    lines: list[str] = []
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(path.open("a")) if path is not None else None
        for pid, (name, first) in before.items():
            try:
                second = main_thread(pid)
            except (OSError, ValueError):
                continue  # it ended meanwhile
            said = verdict(first, second, sample_s)
            line = (
                f"{name!r} ({pid}): main thread {said}, state {second.state},"
                f" {second.cpu_s - first.cpu_s:.2f} s CPU in {sample_s:g} s"
            )
            lines.append(line)
            if out is not None:
                out.write(f"=== {line}\n{native_stacks(pid)}\n")
    return "; ".join(lines) or f"no content process of {browser_pid} found"
