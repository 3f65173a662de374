"""Room passwords: stored as PBKDF2-SHA256 hashes, checked in constant time.

The stored form is ``pbkdf2_sha256$ITERATIONS$SALT$HASH`` with ``SALT`` the
hex of 16 random bytes and ``HASH`` the standard base64 of the 32-byte derived
key.  An empty stored string means "no password".  Deriving a key costs tens
of milliseconds of CPU on purpose: callers inside an event loop run
:func:`hash_password` and :func:`check_password` in a thread (hashlib
releases the GIL while it derives).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

from common.errors import ValidationError

ALGORITHM: Final = "pbkdf2_sha256"
DEFAULT_ITERATIONS: Final = 200_000
MIN_ITERATIONS: Final = 1_000
MAX_ITERATIONS: Final = 10_000_000
"""Bounds on the iterations read back from a stored hash (a corrupt one must not hang us)."""

_SALT_BYTES: Final = 16
_KEY_BYTES: Final = 32


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The stored form of ``password`` (a new random salt unless one is given)."""
    if not isinstance(password, str) or not password:
        raise ValidationError("password must be a non-empty string")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValidationError(
            f"iterations must be in [{MIN_ITERATIONS}, {MAX_ITERATIONS}], got {iterations}"
        )
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    key = _derive(password, salt, iterations)
    return f"{ALGORITHM}${iterations}${salt.hex()}${base64.b64encode(key).decode('ascii')}"


def check_password(password: str | None, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (always true when ``stored`` is empty).

    The comparison of derived keys is constant-time.  Raises
    :class:`ValidationError` when ``stored`` is not a hash this module wrote.
    """
    if not stored:
        return True
    iterations, salt, expected = _parse(stored)
    if not isinstance(password, str) or not password:
        return False
    return hmac.compare_digest(_derive(password, salt, iterations), expected)


def _parse(stored: str) -> tuple[int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        raise ValidationError(f"stored password hash is not {ALGORITHM}$ITER$SALT$HASH")
    try:
        iterations = int(parts[1])
        salt = bytes.fromhex(parts[2])
        key = base64.b64decode(parts[3], validate=True)
    except (ValueError, binascii.Error):
        raise ValidationError("stored password hash is malformed") from None
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS or not salt or len(key) != _KEY_BYTES:
        raise ValidationError("stored password hash has out-of-range parameters")
    return iterations, salt, key


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8", "surrogatepass"), salt, iterations, _KEY_BYTES
    )
