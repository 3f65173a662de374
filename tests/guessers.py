"""Password guessers from many source addresses: the whole 127.0.0.0/8 is local.

Each guesser binds its client sockets to its own loopback address (aiohttp's
``TCPConnector(local_addr=...)``), so a gateway that does not trust
``X-Forwarded-For`` sees it as a distinct client, as it would see distinct
hosts on the internet.  Used by tests/test_lockout.py and bench/guessing.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from common.protocol import Resume, hello_message

ROOM = "choir"
PASSWORD = "s3cret"


def address(n: int) -> str:
    """The ``n``-th loopback address, from 127.0.1.0 up (clear of 127.0.0.1)."""
    assert 0 <= n < 65_536, n
    return f"127.0.{1 + n // 256}.{n % 256}"


async def attempt(ws_url: str, source: str, hello: dict[str, object]) -> dict[str, Any]:
    """Send ``hello`` from ``source`` on a new socket; the ``welcome`` or error it gets."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(ws_url) as ws,
    ):
        await ws.send_json(hello)
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return {"type": "closed"}
            data: dict[str, Any] = json.loads(msg.data)
            if data["type"] in {"welcome", "error"}:
                return data


def outcome(answer: dict[str, Any]) -> str:
    """``welcome``, or the error code."""
    return "welcome" if answer["type"] == "welcome" else str(answer.get("code", answer["type"]))


@dataclass
class Tally:
    """What the guessers were answered: ``bad_password`` means the guess was checked."""

    by_address: dict[str, Counter[str]] = field(default_factory=dict)
    checked_at: list[float] = field(default_factory=list)
    """``time.monotonic()`` of every answer that shows the guess was checked."""

    def add(self, source: str, code: str) -> None:
        self.by_address.setdefault(source, Counter())[code] += 1
        if code == "bad_password":
            self.checked_at.append(time.monotonic())

    def count(self, source: str, code: str) -> int:
        counts = self.by_address.get(source)
        return 0 if counts is None else counts[code]

    def total(self, code: str) -> int:
        return sum(counts[code] for counts in self.by_address.values())


async def guesser(
    ws_url: str,
    source: str,
    tally: Tally,
    *,
    stop: asyncio.Event,
    refused: asyncio.Event,
    until_refused: bool,
    pause_s: float = 0.0,
) -> None:
    """Wrong passwords from ``source``, one after another, until ``stop`` (or a refusal).

    Every refusal sets ``refused``; after one, ``pause_s`` passes before the next guess.
    """
    n = 0
    while not stop.is_set():
        hello = hello_message(ROOM, "Eve", password=f"guess-{source}-{n}")
        n += 1
        try:
            code = outcome(await attempt(ws_url, source, hello))
        except (aiohttp.ClientError, TimeoutError):
            code = "connection_failed"
        tally.add(source, code)
        if code == "rate_limited":
            refused.set()
            if until_refused:
                return
            if pause_s:
                await asyncio.sleep(pause_s)  # the scenario: a guesser's pause when refused


@dataclass
class Flood:
    """Guessers from ``sources``, each guessing on (``pause_s`` after a refusal) until
    :meth:`stop`: what they were answered is in ``tally``; ``refused`` is set at the first
    refusal."""

    tasks: list[asyncio.Task[None]]
    tally: Tally
    stop_event: asyncio.Event
    refused: asyncio.Event

    def still_guessing(self) -> int:
        return sum(not task.done() for task in self.tasks)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def flood(ws_url: str, sources: list[str], pause_s: float) -> Flood:
    """Start a guesser from each of ``sources``."""
    tally, stop, refused = Tally(), asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(
            guesser(
                ws_url,
                source,
                tally,
                stop=stop,
                refused=refused,
                until_refused=False,
                pause_s=pause_s,
            )
        )
        for source in sources
    ]
    return Flood(tasks, tally, stop, refused)


async def join(ws_url: str, source: str, resume: Resume | None = None) -> dict[str, Any]:
    """A member's hello with the right password (and ``resume``, if given)."""
    return await attempt(
        ws_url, source, hello_message(ROOM, "Ann", password=PASSWORD, resume=resume)
    )
