"""Strangers cannot lock a password room for its members (issue 24, item 5).

A flood of wrong passwords from many loopback addresses (tests/guessers.py)
against a real gateway and mixer: a newcomer with the right password from a
fresh address gets in, and a member resumes with its token, both while the
flood goes on and after it; and the guessing stays limited: every guesser is
refused after a few checked guesses, and the guesses checked are counted.
"""

from __future__ import annotations

import asyncio

import pytest

import gateway.rooms
from common.protocol import Resume
from gateway.checks import CheckQueue, QueueFull
from gateway.guard import Limits
from gateway.hub import Options
from gateway.rooms import PASSWORD_CHECKS
from tests.guessers import PASSWORD, ROOM, address, flood, join, outcome
from tests.support import Stack, async_wait_until
from tests.test_gateway import ClientFactory
from tests.test_gateway_guard import start

GUESSERS = 24
"""Source addresses guessing at once: more than the room's 20 wrong a minute."""


# --- the queue of password checks -------------------------------------------------------


async def test_the_check_queue_serves_the_fewest_guesses_first_and_pushes_out_the_most() -> None:
    queue = CheckQueue(slots=1, capacity=2)
    order: list[str] = []
    release = asyncio.Event()

    async def check(name: str, priority: int) -> None:
        try:
            async with queue.turn(priority):
                order.append(name)
                await release.wait()
        except QueueFull:
            order.append(f"{name} refused")

    first = asyncio.create_task(check("first", 5))
    await asyncio.sleep(0)  # one turn of the loop: the new tasks run to their first wait
    guesser = asyncio.create_task(check("guesser", 3))
    other = asyncio.create_task(check("other", 2))
    await asyncio.sleep(0)  # a turn of the loop
    assert (order, queue.waiting) == (["first"], 2)
    # Full: a newcomer (no wrong guesses) pushes out the worst waiter...
    newcomer = asyncio.create_task(check("newcomer", 0))
    await asyncio.sleep(0)  # a turn of the loop
    # ...and one no better than every waiter is refused at once.
    late = asyncio.create_task(check("late", 2))
    await asyncio.sleep(0)  # a turn of the loop
    assert order == ["first", "guesser refused", "late refused"]
    release.set()
    await asyncio.gather(first, guesser, other, newcomer, late)
    assert order[3:] == ["newcomer", "other"]


async def test_a_waiter_that_gives_up_passes_its_turn_on() -> None:
    queue = CheckQueue(slots=1, capacity=4)
    holder = asyncio.Event()
    served: list[str] = []

    async def hold() -> None:
        async with queue.turn(0):
            await holder.wait()

    async def check(name: str) -> None:
        async with queue.turn(1):
            served.append(name)

    held = asyncio.create_task(hold())
    await asyncio.sleep(0)  # a turn of the loop
    leaving, staying = asyncio.create_task(check("leaving")), asyncio.create_task(check("staying"))
    await asyncio.sleep(0)  # a turn of the loop
    leaving.cancel()
    holder.set()
    await asyncio.gather(held, staying)
    assert served == ["staying"] and queue.waiting == 0
    # The slot is free again.
    await asyncio.wait_for(check("next"), 1)


# --- a flood from many addresses ----------------------------------------------------------


@pytest.mark.stack(gateways=0)  # the mixer that answers joins
async def test_guessers_from_many_addresses_lock_out_neither_newcomers_nor_members(
    aiohttp_client: ClientFactory,
    redis_url: str,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A short queue of waiting checks, so the flood fills it: the newcomer must get
    # ahead of the guessers, not wait behind them.
    monkeypatch.setattr(gateway.rooms, "PASSWORD_QUEUE", 4)
    client = await start(aiohttp_client, redis_url, Options(reply_timeout_s=15))
    ws_url = f"http://127.0.0.1:{client.server.port}/ws"
    created = await client.post("/api/rooms", json={"room": ROOM, "password": PASSWORD})
    assert created.status == 201
    welcome = await join(ws_url, address(1000))
    assert outcome(welcome) == "welcome", welcome
    seat = Resume(welcome["singer"], welcome["token"])

    sources = [address(n) for n in range(GUESSERS)]
    guessers = flood(ws_url, sources, pause_s=0.05)
    tally = guessers.tally
    try:
        # Once the limits bite (a guesser is refused) and every guesser has been checked
        # (so a newcomer no longer competes with addresses never seen), while all of
        # them go on guessing:
        await asyncio.wait_for(guessers.refused.wait(), 120)
        await async_wait_until(
            lambda: all(tally.count(source, "bad_password") for source in sources),
            120,
            "every guesser's guess to have been checked",
        )
        during = [outcome(await join(ws_url, address(2000)))]
        during.append(outcome(await join(ws_url, address(1000), seat)))
        # Until every one of them has been refused at least once.
        await async_wait_until(
            lambda: all(tally.count(source, "rate_limited") for source in sources),
            120,
            "every guesser to have been refused",
        )
        still_guessing = guessers.still_guessing()
    finally:
        await guessers.stop()
    after = [
        outcome(await join(ws_url, address(2001))),
        outcome(await join(ws_url, address(1000), seat)),
    ]

    assert during == ["welcome", "welcome"], (during, tally.by_address)
    assert still_guessing == GUESSERS
    assert after == ["welcome", "welcome"]
    # Guessing stays limited: every guesser was refused in the end, none got more
    # than its own limit checked, and all of them together at most a few each
    # beyond the room's own allowance.
    limits = Limits()
    assert all(tally.by_address[source]["rate_limited"] >= 1 for source in sources)
    assert all(
        counts["bad_password"] <= limits.password_tries_per_min
        for counts in tally.by_address.values()
    ), tally.by_address
    checked = tally.total("bad_password")
    assert checked <= (
        GUESSERS * limits.address_room_tries + limits.room_password_tries_per_min + PASSWORD_CHECKS
    ), tally.by_address
    refusals = tally.total("rate_limited")
    assert checked + refusals == sum(sum(c.values()) for c in tally.by_address.values())
