"""The JSON schema of what browsers send, generated from the types that validate it.

``docs/browser-messages.schema.json`` is this module's output; a test keeps it
current (``python -m common.browser_schema > docs/browser-messages.schema.json``
regenerates it) and the page's unit tests check what the page sends against it.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from common.commands import ClientCommand
from common.protocol import ChatLine, Hello, Ping

__all__ = ["SCHEMA_PATH", "BrowserMessage", "browser_schema", "browser_schema_text"]

BrowserMessage = Hello | Ping | ChatLine | ClientCommand
"""Every JSON text frame a browser may send, told apart by ``type``."""

SCHEMA_PATH: Final = "docs/browser-messages.schema.json"
"""Where the generated schema is kept, from the repository's root."""


def browser_schema() -> dict[str, Any]:
    """The JSON schema (2020-12) of :data:`BrowserMessage`."""
    schema: dict[str, Any] = msgspec.json.schema(BrowserMessage)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Bucket Brigade: messages a browser sends (docs/protocol.md)",
        **schema,
    }


def browser_schema_text() -> str:
    """The schema as kept in :data:`SCHEMA_PATH` (sorted keys, two-space indent)."""
    return json.dumps(browser_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(browser_schema_text(), end="")
