"""Decode-and-validate micro-benchmarks of the wire formats: ``python -m bench.wire``.

What every chunk, tap window and control message pays at a process's edge:
the internal header (common/wire.py) and the browser's hello, ping and chat
(common/protocol.py). Each figure is the median over rounds of the mean time
per call within a round. Prints a table and writes ``bench-results/wire.json``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Final

import numpy as np

from bench.results import print_table, write_results
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from common.protocol import dumps, hello_message, parse_client_message
from common.wire import decode_chunk, decode_tap, encode_chunk, encode_tap

CALLS_PER_ROUND: Final = 2000
ROUNDS: Final = 30
START: Final = 1_700_000_000 * SAMPLE_RATE


def _median_us(call: Callable[[], object]) -> float:
    for _ in range(CALLS_PER_ROUND // 10):  # warm-up
        call()
    per_call: list[float] = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(CALLS_PER_ROUND):
            call()
        per_call.append((time.perf_counter_ns() - start) / CALLS_PER_ROUND / 1000)
    return statistics.median(per_call)


def cases() -> dict[str, Callable[[], object]]:
    """Each measured call, by name: one realistic message each."""
    chunk = encode_chunk("choir", "s-1", 3, 7, START, np.zeros(4800, np.float32))
    tiny_chunk = encode_chunk("choir", "s-1", 3, 7, START, np.zeros(1, np.float32))
    tap = encode_tap("choir", SAMPLE_RATE, START - START % 960, START, np.zeros(960, np.float32))
    hello = dumps(hello_message("choir", "Ann", password="secret", req=1))
    ping = '{"type":"ping","id":5,"t":1234.5,"req":6}'
    chat = '{"type":"chat","text":"hello there","req":7}'
    return {
        "decode_chunk_100ms_us": lambda: decode_chunk(chunk),
        "decode_chunk_header_us": lambda: decode_chunk(tiny_chunk),
        "decode_tap_frame_us": lambda: decode_tap(tap),
        "parse_hello_us": lambda: parse_client_message(hello),
        "parse_ping_us": lambda: parse_client_message(ping),
        "parse_chat_us": lambda: parse_client_message(chat),
    }


def main() -> dict[str, object]:
    """Measure, print a table, write bench-results/wire.json and return the results."""
    results: dict[str, object] = {
        name: round(_median_us(call), 3) for name, call in cases().items()
    }
    results.update(calls_per_round=CALLS_PER_ROUND, rounds=ROUNDS, frame_samples=OPUS_FRAME_SAMPLES)
    print_table(
        "wire: decode + validate, µs per message",
        [(name, f"{value}", "") for name, value in results.items() if name.endswith("_us")],
    )
    write_results("wire", results)
    return results


if __name__ == "__main__":
    main()
