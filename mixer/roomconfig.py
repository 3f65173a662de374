"""A room's timing and size, and the refusal every room command may raise.

Pure: no I/O and no clock. Buckets are numbered ``0 .. n_buckets - 1``: bucket 0 is the
leader's, buckets ``1 .. n - 2`` are spread among the singers, the last one holds the
listen-only spectators. Bucket ``i`` has delay ``(i + 1) * bucket_spacing``
(:func:`common.listening.bucket_delay`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from common.codes import Code
from common.constants import (
    DEFAULT_BUCKET_SPACING_S,
    DEFAULT_LEAD_S,
    DEFAULT_N_BUCKETS,
    DEFAULT_RING_S,
    OCC_FRAME_SAMPLES,
    SAMPLE_RATE,
    seconds_to_samples,
)
from common.errors import BrigadeError, ValidationError
from common.listening import bucket_delay
from common.records import Rounds

__all__ = ["CommandError", "RoomConfig"]

_MIN_DELAY_MARGIN: Final = seconds_to_samples(0.25)
"""A delay must exceed the downlink lead by this much, or frames would be read before written."""

_MAX_DELAY_MARGIN: Final = seconds_to_samples(5.0)
"""A delay must stay this far inside the ring, so late writes and reads still fit in it."""

_REPEAT_SLACK: Final = seconds_to_samples(1.0)
"""Margin kept between the last repeat's source and the ring's oldest sample (late taps)."""


class CommandError(BrigadeError):
    """A command the room refused; ``code`` is for machines, ``message`` for humans."""

    def __init__(self, code: Code | str, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message


@dataclass(frozen=True)
class RoomConfig:
    """A room's timing and size; all durations in samples.

    Invariants (checked at construction, ValidationError otherwise): the
    ring is a positive multiple of 128 samples, the lead is positive, there
    are at least 3 buckets (leader, singers, spectators), and every bucket's
    delay lies in ``[min_delay, max_delay]``.
    """

    ring_samples: int = DEFAULT_RING_S * SAMPLE_RATE
    lead_samples: int = seconds_to_samples(DEFAULT_LEAD_S)
    bucket_spacing: int = seconds_to_samples(DEFAULT_BUCKET_SPACING_S)
    n_buckets: int = DEFAULT_N_BUCKETS
    capacity: int = 100

    def __post_init__(self) -> None:
        for name in ("ring_samples", "lead_samples", "bucket_spacing", "n_buckets", "capacity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{name} must be an integer, got {type(value).__name__}")
        if self.ring_samples <= 0 or self.ring_samples % OCC_FRAME_SAMPLES:
            raise ValidationError(
                f"ring_samples must be a positive multiple of {OCC_FRAME_SAMPLES}, "
                f"got {self.ring_samples}"
            )
        if self.lead_samples <= 0:
            raise ValidationError(f"lead_samples must be positive, got {self.lead_samples}")
        if self.bucket_spacing <= 0:
            raise ValidationError(f"bucket_spacing must be positive, got {self.bucket_spacing}")
        if self.n_buckets < 3:
            raise ValidationError(f"n_buckets must be at least 3, got {self.n_buckets}")
        if self.capacity < 1:
            raise ValidationError(f"capacity must be at least 1, got {self.capacity}")
        if self.bucket_delay(0) < self.min_delay:
            raise ValidationError(
                f"bucket 0's delay {self.bucket_delay(0)} is below the minimum {self.min_delay} "
                "(lead + 0.25 s)"
            )
        last = self.bucket_delay(self.n_buckets - 1)
        if last > self.max_delay:
            raise ValidationError(
                f"the last bucket's delay {last} exceeds the maximum {self.max_delay} (ring - 5 s)"
            )

    @property
    def min_delay(self) -> int:
        """Smallest delay a member may have: the lead plus 0.25 s."""
        return self.lead_samples + _MIN_DELAY_MARGIN

    @property
    def max_delay(self) -> int:
        """Largest delay a member may have: the ring minus 5 s."""
        return self.ring_samples - _MAX_DELAY_MARGIN

    @property
    def spectator_bucket(self) -> int:
        return self.n_buckets - 1

    def bucket_delay(self, bucket: int) -> int:
        """The delay of bucket ``bucket`` (0-based): ``(bucket + 1) * bucket_spacing``."""
        return bucket_delay(bucket, self.bucket_spacing)

    def room_for_repeats(self, delay: int) -> int:
        """How many samples of repeats fit in the ring behind a tap at ``delay``."""
        # A tap at `delay` reads position p at p + delay - lead (up to 50 frames late),
        # and its last repeat needs p - span still inside the ring then.
        return self.ring_samples - delay + self.lead_samples - _REPEAT_SLACK

    def rounds_fit(self, rounds: Rounds, delay: int) -> bool:
        """Whether ``rounds``' repeats fit in the ring behind a tap at ``delay``."""
        return rounds.span_samples <= self.room_for_repeats(delay)
