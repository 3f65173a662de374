"""Logging set-up, called only from a process's ``main``."""

import logging
import os


def configure(level: str | None = None) -> None:
    """One line per record on stderr; level from the argument or ``BB_LOG_LEVEL``."""
    name = (level or os.environ.get("BB_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, name, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
