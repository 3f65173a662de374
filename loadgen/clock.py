"""A simulated singer's estimate of the room clock (docs/protocol.md, *Clock sync*).

The same method as the browser (gateway/static/clock.js): each ping/pong
exchange gives ``offset = server_ms - (t_send + t_recv) / 2`` and its round
trip; the estimate is the mean offset of the lowest-round-trip quarter of the
last 20 exchanges.  (The browser also extrapolates drift over minutes; a load
run is too short for drift to matter, so that part is left out.)

Pure: times are arguments, in milliseconds of the singer's own local clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from common.constants import SAMPLE_RATE

DEFAULT_WINDOW: Final = 20
DEFAULT_KEEP_FRACTION: Final = 0.25


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One ping/pong exchange: its midpoint (local ms), round trip and offset (ms)."""

    t_ms: float
    rtt_ms: float
    offset_ms: float


class ClockEstimator:
    """NTP-style offset (server - local) from ping/pong exchanges."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        window: int = DEFAULT_WINDOW,
        keep_fraction: float = DEFAULT_KEEP_FRACTION,
    ) -> None:
        if sample_rate <= 0 or window < 1 or not 0 < keep_fraction <= 1:
            raise ValueError(
                f"need sample_rate > 0, window >= 1, 0 < keep_fraction <= 1; got "
                f"{sample_rate}, {window}, {keep_fraction}"
            )
        self.sample_rate = sample_rate
        self.keep_fraction = keep_fraction
        self._samples: deque[ClockSample] = deque(maxlen=window)
        self._offset_ms: float | None = None
        self._rtt_ms: float | None = None

    def add(self, t_send_ms: float, t_recv_ms: float, server_clock: int) -> None:
        """Record one exchange: ping sent at ``t_send_ms``, pong (``clock``) at ``t_recv_ms``."""
        if t_recv_ms < t_send_ms:
            raise ValueError(f"pong received before its ping: {t_recv_ms} < {t_send_ms}")
        server_ms = server_clock * 1000 / self.sample_rate
        mid_ms = (t_send_ms + t_recv_ms) / 2
        self._samples.append(ClockSample(mid_ms, t_recv_ms - t_send_ms, server_ms - mid_ms))
        ordered = sorted(self._samples, key=lambda s: s.rtt_ms)
        keep = ordered[: max(1, int(len(ordered) * self.keep_fraction))]
        self._offset_ms = sum(s.offset_ms for s in keep) / len(keep)
        self._rtt_ms = sum(s.rtt_ms for s in keep) / len(keep)

    @property
    def ready(self) -> bool:
        return self._offset_ms is not None

    @property
    def samples(self) -> int:
        return len(self._samples)

    @property
    def offset_ms(self) -> float:
        """server - local, in ms (ValueError before the first exchange)."""
        if self._offset_ms is None:
            raise ValueError("no clock samples yet")
        return self._offset_ms

    @property
    def rtt_ms(self) -> float:
        """Mean round trip of the exchanges the estimate uses (ms)."""
        if self._rtt_ms is None:
            raise ValueError("no clock samples yet")
        return self._rtt_ms

    def room_clock(self, local_ms: float) -> int:
        """The estimated room clock (whole samples) at local time ``local_ms``."""
        return int((local_ms + self.offset_ms) * self.sample_rate // 1000)

    def local_ms(self, room_clock: int) -> float:
        """The local time (ms) at which the room clock will read ``room_clock``."""
        return room_clock * 1000 / self.sample_rate - self.offset_ms
