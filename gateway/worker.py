"""Where codec work runs: on the event loop in short slices, or in a thread pool.

Measured with bench/gateway.py (100 singers, 5 packets per message, 2-core
machine): handing each batch to worker threads cost 3.4 ms of CPU per
singer-second against 2.85 ms inline.  libopus releases the GIL, but
everything around it (ctypes, numpy, msgpack) needs it, and the hand-offs
and GIL switches between the loop thread and the workers cost more than the
parallelism gains.  So by default the work runs on the loop, yielding every
``slice_ms`` (1 ms: a decode batch never holds the loop longer than that,
about as long as one Opus frame takes to encode), which keeps pong replies
and other singers' messages flowing.  ``threads > 0`` selects the pool
(one call per batch) for machines where the spare cores matter more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class CodecWorker:
    """Runs batches of codec work in order, without stalling the event loop."""

    def __init__(self, threads: int = 0, slice_ms: float = 1.0) -> None:
        if threads < 0 or slice_ms <= 0:
            raise ValueError(f"threads must be >= 0 and slice_ms > 0, got {threads}, {slice_ms}")
        self.slice_s = slice_ms / 1000
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="codec") if threads else None

    async def run(self, work: Sequence[Callable[[], T]]) -> list[T]:
        """Call each function in order and return their results."""
        if self._pool is not None:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _call_all, work)
        loop = asyncio.get_running_loop()
        results: list[T] = []
        deadline = loop.time() + self.slice_s
        for fn in work:
            results.append(fn())
            if loop.time() > deadline:
                await asyncio.sleep(0)
                deadline = loop.time() + self.slice_s
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _call_all(work: Sequence[Callable[[], T]]) -> list[T]:
    return [fn() for fn in work]
