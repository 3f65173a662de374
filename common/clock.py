"""The one clock: samples at 48 kHz since the Unix epoch (NTP-synced hosts).

Only the I/O adapters read it; the cores take ``now`` as an argument.
"""

import time

from common.constants import SAMPLE_RATE


def now_samples() -> int:
    """The current room clock, in whole samples since the epoch."""
    return time.time_ns() * SAMPLE_RATE // 1_000_000_000
