"""Shared output for benchmark scripts: a JSON file per benchmark and a plain table.

Every benchmark writes ``{name}.json`` (and any logs or profiles it keeps) under
:func:`results_dir`: the repository's ``bench-results/``, or the directory named by
the environment variable ``BB_BENCH_RESULTS_DIR`` when it is set and not empty
(tests/test_bench_clients.py runs the benchmarks with a temporary one, so that a
test run leaves the repository's results alone).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

RESULTS_DIR_ENV = "BB_BENCH_RESULTS_DIR"
"""The environment variable naming another directory for the results."""
DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench-results"
"""The repository's ``bench-results/``."""


def results_dir() -> Path:
    """Where the benchmarks write: ``$BB_BENCH_RESULTS_DIR``, else ``bench-results/``."""
    override = os.environ.get(RESULTS_DIR_ENV, "")
    return Path(override) if override else DEFAULT_RESULTS_DIR


def write_results(name: str, results: dict[str, object]) -> Path:
    """Write ``results`` to ``{results_dir()}/{name}.json`` (sorted keys) and return the path."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    return path


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Print ``(metric, value, target)`` rows as an aligned table under ``title``."""
    header = ("metric", "value", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    rule = "  ".join("-" * w for w in widths)
    print(title)
    print(rule)
    for row in [header, *rows]:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}".rstrip())
        if row is header:
            print(rule)
    print(rule)


def print_grid(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` of cells under ``header`` as an aligned grid under ``title``: the
    first column (what is measured) left-aligned, the others (one per run or
    condition) right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def line(row: Sequence[str]) -> str:
        cells = [
            f"{row[0]:<{widths[0]}}",
            *(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        return "  ".join(cells).rstrip()

    print(title)
    print(rule)
    print(line(header))
    print(rule)
    for row in rows:
        print(line(row))
    print(rule)
