"""Which event loop a process runs on: uvloop (the default) or asyncio's own.

uvloop does the same work as asyncio's selector loop with its callbacks,
transports and timers in C: measured on bench/gateway.py it takes about a
fifth off the gateway's CPU per singer-second (docs/performance.md).  The
standard loop stays one setting away (``BB_EVENT_LOOP=asyncio``), for
debugging or for platforms without a uvloop wheel.

Before the loop starts, everything allocated so far (modules, settings,
constants: some 40 000 objects) is moved out of the garbage collector's
reach with :func:`gc.freeze`, so that its full collections only walk what
the service itself allocated since.  In the mixer a full collection took up
to 35 ms of its 100 ms tick before (bench/redis.py, 1000 singers).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

T = TypeVar("T")

EVENT_LOOPS: Final = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, T], event_loop: str = "uvloop") -> T:
    """Run ``main`` to completion on a new loop of the chosen kind."""
    if event_loop not in EVENT_LOOPS:
        main.close()
        raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {event_loop!r}")
    gc.collect()
    gc.freeze()
    if event_loop == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            main.close()
            raise RuntimeError(
                "uvloop is not installed: pip install uvloop, or set BB_EVENT_LOOP=asyncio"
            ) from None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
