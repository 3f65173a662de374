"""The failover checkpoint's list in Redis (mixer/store.py): what it keeps, what it reads.

Real redis-server; the entries' contents are tested in tests/test_room.py, the
takeover itself in tests/test_failover.py.
"""

from __future__ import annotations

from redis.asyncio import Redis

from common import keys, records
from common.constants import SAMPLE_RATE
from common.records import Checkpoint
from mixer import outbox, store

SR = SAMPLE_RATE


def entry(second: int, full: bool = False, span_s: int = 3) -> Checkpoint:
    clock = (100 + second) * SR
    return Checkpoint(
        clock=clock,
        start=clock - span_s * SR,
        parts=[],
        taps=[],
        written={},
        full=full,
        in_cursor=f"{second}-0",
    )


async def stored(client: Redis, room: str) -> list[str]:
    return [
        records.decode(raw, Checkpoint).in_cursor
        for raw in await store.read_checkpoint(client, room)
    ]


async def test_the_list_keeps_the_entries_of_the_span_and_a_full_entry_starts_it_again(
    redis_url: str,
) -> None:
    client = Redis.from_url(redis_url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            store.queue_checkpoint(pipe, "r", entry(0, full=True), SR, outbox.CHECKPOINT_TTL_MS)
            for second in range(1, 10):
                store.queue_checkpoint(pipe, "r", entry(second), SR, outbox.CHECKPOINT_TTL_MS)
            await pipe.execute()
        # A 3 s span, an entry a second: older entries hold nothing a tap still needs.
        assert await stored(client, "r") == [f"{s}-0" for s in range(5, 10)]
        assert 0 < await client.pttl(keys.room_checkpoint("r")) <= outbox.CHECKPOINT_TTL_MS
        async with client.pipeline(transaction=False) as pipe:
            store.queue_checkpoint(pipe, "r", entry(10, full=True), SR, outbox.CHECKPOINT_TTL_MS)
            store.queue_checkpoint(pipe, "r", entry(11), SR, outbox.CHECKPOINT_TTL_MS)
            await pipe.execute()
        assert await stored(client, "r") == ["10-0", "11-0"]
    finally:
        await client.aclose()


async def test_a_checkpoint_an_older_mixer_left_as_a_string_reads_as_none(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.set(keys.room_checkpoint("r"), b"an older mixer's checkpoint")
        assert await store.read_checkpoint(client, "r") == []
        # The first entry of the new owner is full: it replaces the string.
        async with client.pipeline(transaction=False) as pipe:
            store.queue_checkpoint(pipe, "r", entry(0, full=True), SR, outbox.CHECKPOINT_TTL_MS)
            await pipe.execute()
        assert await stored(client, "r") == ["0-0"]
    finally:
        await client.aclose()
