"""Audio and protocol constants, defined once.

The browser client receives these from the gateway (``/api/constants``)
rather than keeping its own copies.
"""

from typing import Final

SAMPLE_RATE: Final = 48_000
"""Every position is an absolute sample count at this rate since the Unix epoch."""

OPUS_FRAME_SAMPLES: Final = 960
"""One 20 ms Opus frame; tap frame k covers [k*960, (k+1)*960)."""

OCC_FRAME_SAMPLES: Final = 128
"""Granularity of the ring's occupancy metadata."""

OPUS_LOOKAHEAD_SAMPLES: Final = 312
"""An Opus encoder's output lags its input by this much at 48 kHz (libopus and
WebCodecs alike). Positions on the wire are those of the *decoded* stream, so a
client sends ``start`` = first input position - 312 and places decoded audio
at ``start`` - 312 (docs/protocol.md, *Positions and the Opus delay*)."""

WIRE_VERSION: Final = 1
"""Version of the internal msgpack chunk format (gateway <-> mixer)."""

PROTOCOL_VERSION: Final = 1
"""Version of the browser WebSocket protocol (docs/protocol.md)."""

DEFAULT_RING_S: Final = 120
DEFAULT_LEAD_S: Final = 1.0
"""Downlink lead: tap frames leave the mixer this long before their play time."""

DEFAULT_BUCKET_SPACING_S: Final = 3.0
DEFAULT_N_BUCKETS: Final = 6

UPSTREAM_FRAMES_PER_MESSAGE: Final = 10
"""20 ms frames a client should put in one upstream message (200 ms).

The protocol accepts 1-50; 5-10 is the intended range. Fewer, larger
messages halve the gateway's per-message work (WebSocket frame, parse,
checks, queueing) against 5 per message, at the price of 100 ms more
upstream delay, which the bucket spacing (3 s) absorbs. Served to clients
as ``frames_per_message``."""

MAX_CHUNK_SAMPLES: Final = 2 * SAMPLE_RATE
"""Largest chunk one message may carry (2 s); larger ones are rejected on decode."""


def seconds_to_samples(seconds: float) -> int:
    """Round a duration in seconds to whole samples."""
    return round(seconds * SAMPLE_RATE)


def constants_json() -> dict[str, int | float]:
    """The constants the browser client needs, as served by the gateway."""
    return {
        "sample_rate": SAMPLE_RATE,
        "opus_frame_samples": OPUS_FRAME_SAMPLES,
        "occ_frame_samples": OCC_FRAME_SAMPLES,
        "opus_lookahead_samples": OPUS_LOOKAHEAD_SAMPLES,
        "frames_per_message": UPSTREAM_FRAMES_PER_MESSAGE,
        "protocol_version": PROTOCOL_VERSION,
        "default_lead_s": DEFAULT_LEAD_S,
        "default_bucket_spacing_s": DEFAULT_BUCKET_SPACING_S,
        "default_n_buckets": DEFAULT_N_BUCKETS,
    }
