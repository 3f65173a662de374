"""The domain errors raised at boundaries (callers catch, count and drop)."""


class BrigadeError(Exception):
    """Base of every error the project raises on purpose."""


class ValidationError(BrigadeError, ValueError):
    """An input (name, setting, message field) is not acceptable."""


class WireError(ValidationError):
    """A chunk or tap window on the internal wire failed to decode."""
