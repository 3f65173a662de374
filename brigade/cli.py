"""``brigade SUBCOMMAND ...``: one entry point for services and tools.

Each subcommand lives in its own module and is imported only when used, so
``brigade mixer`` never imports aiohttp and ``brigade gateway`` never imports
the ring.
"""

import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("brigade.up", "start Redis (if needed), a mixer and a gateway locally"),
    "mixer": ("mixer.__main__", "run a mixer process (owns rooms, mixes, publishes taps)"),
    "gateway": ("gateway.__main__", "run a gateway (web client, WebSocket, Opus)"),
    "recorder": ("recorder.__main__", "record every song (FLAC and Ogg Opus files)"),
    "keeper": ("keeper.__main__", "keep the rooms' state in a small durable Redis (no audio)"),
    "inspect": ("inspector.command", "show rooms, owners, members, streams from Redis"),
    "load": ("loadgen.cli", "simulate singers over real WebSockets"),
    "cluster": ("brigade.clusterbalance", "Redis Cluster: balance the rooms over the masters"),
}


def usage() -> str:
    lines = ["usage: brigade SUBCOMMAND [options]  (brigade SUBCOMMAND --help)", ""]
    lines += [f"  {name:<8} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    entry = SUBCOMMANDS.get(args[0])
    if entry is None:
        print(f"brigade: unknown subcommand {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    code: int = module.main(args[1:])
    return code
