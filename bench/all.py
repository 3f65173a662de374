"""Run every benchmark: ``python -m bench.all`` (what ``make bench`` does)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

BENCHMARKS: tuple[str, ...] = (
    "bench.mixer",
    "bench.codec",
    "bench.wire",
    "bench.redis",
    "bench.gateway",
    "bench.failover",
    "bench.maintenance",
    "bench.failover_audio",
    "bench.clocksync",
    "bench.material",
    "bench.statebytes",
    "bench.recorder",
)
"""Modules exposing ``main() -> dict[str, object]``; each writes its own JSON."""


def main() -> dict[str, dict[str, object]]:
    """Run each module in :data:`BENCHMARKS` in order and collect their results."""
    results: dict[str, dict[str, object]] = {}
    for name in BENCHMARKS:
        module = importlib.import_module(name)
        run: Callable[[], dict[str, object]] = module.main
        results[name] = run()
        print()
    return results


if __name__ == "__main__":
    main()
