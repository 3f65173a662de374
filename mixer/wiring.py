"""The mixer's settings as its pure parts take them (samples, planner settings)."""

from __future__ import annotations

from common.constants import SAMPLE_RATE, seconds_to_samples
from common.settings import MixerSettings
from mixer.host import HostTiming
from mixer.planner import PlannerSettings

__all__ = ["host_timing", "planner_settings"]


def host_timing(settings: MixerSettings) -> HostTiming:
    """A room host's periods, in samples."""
    return HostTiming(
        publish=seconds_to_samples(settings.publish_ms / 1000),
        levels=seconds_to_samples(settings.levels_ms / 1000),
        grace=round(settings.reconnect_grace_s * SAMPLE_RATE),
        checkpoint=seconds_to_samples(settings.checkpoint_ms / 1000),
        tap_ttl=seconds_to_samples(settings.tap_ttl_ms / 3000),
    )


def planner_settings(settings: MixerSettings) -> PlannerSettings:
    """What the maintenance planner decides with."""
    return PlannerSettings(
        mixer_id=settings.mixer_id,
        max_rooms=settings.max_rooms,
        lease_ttl_ms=settings.lease_ttl_ms,
        heartbeat_ttl_ms=settings.heartbeat_ttl_ms,
        release_samples=seconds_to_samples(settings.room_release_s),
        idle_delete_s=settings.room_idle_delete_s,
        material_period_s=min(60.0, settings.material_ttl_s / 3),
    )
