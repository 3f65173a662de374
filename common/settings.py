"""One typed settings dataclass per process, read from environment and CLI.

Each field is a setting: its environment variable is ``BB_`` plus the field
name in upper case (``lead_s`` -> ``BB_LEAD_S``), except ``redis_url`` which is
``REDIS_URL``; its CLI flag is the field name with dashes (``--lead-s``).
Precedence: CLI flag, then environment, then the default.  Units are in the
names (``_s``, ``_ms``).
"""

import argparse
import dataclasses
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Self, TypeVar

from common import constants
from common.aio import EVENT_LOOPS
from common.errors import ValidationError
from common.names import check_id

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _process_id(kind: str) -> str:
    """``KIND-HOSTNAME``: stable, so ``--check`` in the same container finds it.

    Several processes of one kind on one host need distinct ids (set
    ``BB_MIXER_ID`` / ``BB_GATEWAY_ID``); a process refuses an id that a live
    process already uses.
    """
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40]
    return f"{kind}-{host or 'local'}"


def _env_name(name: str) -> str:
    return "REDIS_URL" if name == "redis_url" else f"BB_{name.upper()}"


T = TypeVar("T", bound="_Settings")


@dataclass(frozen=True)
class _Settings:
    """Shared machinery; subclasses only declare fields and ``check``."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, metadata={"help": "Redis connection URL"})
    event_loop: str = field(
        default="uvloop", metadata={"help": "event loop: uvloop (faster) or asyncio"}
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.load([], environ)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            kind = _field_type(f)
            helptext = f"{f.metadata.get('help', '')} (env {_env_name(f.name)})"
            if kind is bool:
                parser.add_argument(
                    flag,
                    dest=f.name,
                    default=None,
                    action=argparse.BooleanOptionalAction,
                    help=helptext,
                )
            else:
                parser.add_argument(flag, dest=f.name, default=None, type=kind, help=helptext)

    @classmethod
    def from_namespace(
        cls, namespace: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Self:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            cli = getattr(namespace, f.name, None)
            if cli is not None:
                values[f.name] = cli
            elif _env_name(f.name) in env:
                values[f.name] = _parse(f, env[_env_name(f.name)])
        settings = cls(**values)
        settings.check()
        return settings

    @classmethod
    def load(cls, argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Self:
        parser = argparse.ArgumentParser()
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(list(argv)), environ)

    def check(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValidationError(f"redis_url must be a redis:// URL, got {self.redis_url!r}")
        if self.event_loop not in EVENT_LOOPS:
            raise ValidationError(
                f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {self.event_loop!r}"
            )

    def replace(self, **changes: Any) -> Self:
        new = dataclasses.replace(self, **changes)
        new.check()
        return new


def _field_type(f: "dataclasses.Field[Any]") -> type:
    kind = (
        f.type
        if isinstance(f.type, type)
        else {"int": int, "float": float, "bool": bool}.get(str(f.type), str)
    )
    return kind


def _parse(f: "dataclasses.Field[Any]", raw: str) -> Any:
    kind = _field_type(f)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
        return kind(raw)
    except ValueError:
        raise ValidationError(
            f"{_env_name(f.name)}={raw!r} is not a valid {kind.__name__}"
        ) from None


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValidationError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class _ServiceSettings(_Settings):
    """What the runtime's services (mixer, recorder, keeper) share: their heartbeat and
    their own ``/metrics`` endpoint (the gateway serves it on its HTTP port)."""

    heartbeat_ttl_ms: int = field(default=3000, metadata={"help": "heartbeat key TTL, ms"})
    metrics_host: str = field(
        default="127.0.0.1", metadata={"help": "address of the /metrics endpoint"}
    )
    metrics_port: int = field(
        default=0, metadata={"help": "port of the Prometheus /metrics endpoint (0: off)"}
    )


@dataclass(frozen=True)
class MixerSettings(_ServiceSettings):
    """Settings of one mixer process (``brigade mixer``)."""

    mixer_id: str = field(
        default_factory=lambda: _process_id("mixer"), metadata={"help": "unique id of this mixer"}
    )
    ring_s: int = field(default=constants.DEFAULT_RING_S, metadata={"help": "ring length, s"})
    lead_s: float = field(
        default=constants.DEFAULT_LEAD_S,
        metadata={"help": "downlink lead: frames leave this long before play time, s"},
    )
    tick_ms: int = field(default=100, metadata={"help": "mixer tick period, ms"})
    lease_ttl_ms: int = field(
        default=1500,
        metadata={"help": "room lease time-to-live, ms (renewed every 0.5 s; the takeover time)"},
    )
    publish_ms: int = field(default=250, metadata={"help": "occupancy/stats publish period, ms"})
    tap_maxlen: int = field(default=50, metadata={"help": "MAXLEN of a tap stream (entries)"})
    levels_ms: int = field(
        default=1000, metadata={"help": "period of level-meter events while a song runs, ms"}
    )
    max_rooms: int = field(default=1000, metadata={"help": "most rooms this mixer will own"})
    reconnect_grace_s: float = field(
        default=30.0, metadata={"help": "how long a disconnected singer keeps their place, s"}
    )
    room_release_s: float = field(
        default=120.0,
        metadata={"help": "a room with nobody connected is released by its mixer after this, s"},
    )
    room_idle_delete_s: float = field(
        default=86_400.0,
        metadata={"help": "a room unused for this long is deleted with all its keys, s"},
    )
    checkpoint_ms: int = field(
        default=1000,
        metadata={"help": "period of the failover checkpoint of a room's ring, ms (0: none)"},
    )
    tap_ttl_ms: int = field(
        default=10_000, metadata={"help": "a tap stream expires this long after its last window"}
    )
    material_ttl_s: float = field(
        default=3600.0,
        metadata={"help": "a room's tracks and image expire this long after it was last in use, s"},
    )

    def check(self) -> None:
        super().check()
        check_id(self.mixer_id, "mixer_id")
        if self.ring_s * constants.SAMPLE_RATE % constants.OCC_FRAME_SAMPLES:
            raise ValidationError("ring_s * 48000 must be a multiple of 128")
        if not 10 <= self.ring_s <= 3600:
            raise ValidationError(f"ring_s must be in [10, 3600], got {self.ring_s}")
        for name in (
            "lead_s",
            "tick_ms",
            "lease_ttl_ms",
            "heartbeat_ttl_ms",
            "publish_ms",
            "tap_maxlen",
            "max_rooms",
            "reconnect_grace_s",
            "levels_ms",
            "room_release_s",
            "room_idle_delete_s",
            "tap_ttl_ms",
            "material_ttl_s",
        ):
            _positive(name, getattr(self, name))
        if self.checkpoint_ms < 0:
            raise ValidationError(
                f"checkpoint_ms must be 0 (off) or positive, got {self.checkpoint_ms}"
            )
        if self.lease_ttl_ms < 1000:
            raise ValidationError(
                f"lease_ttl_ms must be at least 1000 (leases are renewed every 500 ms), "
                f"got {self.lease_ttl_ms}"
            )
        if self.lead_s >= self.ring_s / 2:
            raise ValidationError("lead_s must be well under half the ring")


@dataclass(frozen=True)
class RecorderSettings(_ServiceSettings):
    """Settings of one recorder process (``brigade recorder``)."""

    recorder_id: str = field(
        default_factory=lambda: _process_id("recorder"),
        metadata={"help": "unique id of this recorder"},
    )
    recordings_dir: str = field(
        default="./recordings", metadata={"help": "folder the recordings are written to"}
    )
    recordings_keep: int = field(
        default=20, metadata={"help": "recordings kept per room (the oldest go first)"}
    )
    recordings_max_mb: int = field(
        default=2000, metadata={"help": "total size of the recordings kept, MB"}
    )
    lease_ttl_ms: int = field(
        default=3000,
        metadata={"help": "recording lease time-to-live, ms (renewed every 0.5 s; the takeover)"},
    )
    poll_ms: int = field(
        default=1000, metadata={"help": "how often the rooms' songs are looked at, ms"}
    )

    def check(self) -> None:
        super().check()
        check_id(self.recorder_id, "recorder_id")
        for name in ("recordings_keep", "recordings_max_mb", "heartbeat_ttl_ms", "poll_ms"):
            _positive(name, getattr(self, name))
        if self.lease_ttl_ms < 1000:
            raise ValidationError(
                f"lease_ttl_ms must be at least 1000 (leases are renewed every 500 ms), "
                f"got {self.lease_ttl_ms}"
            )


@dataclass(frozen=True)
class GatewaySettings(_Settings):
    """Settings of one gateway process (``brigade gateway``)."""

    gateway_id: str = field(
        default_factory=lambda: _process_id("gateway"),
        metadata={"help": "unique id of this gateway"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "port to listen on"})
    max_message_bytes: int = field(
        default=64 * 1024, metadata={"help": "largest WebSocket message accepted, bytes"}
    )
    max_messages_per_s: int = field(
        default=60, metadata={"help": "per-connection message rate limit"}
    )
    send_queue_frames: int = field(
        default=150, metadata={"help": "per-client downstream queue bound, frames"}
    )
    default_capacity: int = field(
        default=100, metadata={"help": "singers per room unless the room sets its own"}
    )
    default_listeners: int = field(
        default=10_000,
        metadata={
            "help": "listeners per room (listen-only links, no members) unless the room "
            "sets its own"
        },
    )
    allowed_origins: str = field(
        default="", metadata={"help": "comma-separated Origins allowed besides the gateway's own"}
    )
    in_maxlen: int = field(default=2000, metadata={"help": "MAXLEN of a room's input stream"})
    downstream_ms: int = field(
        default=200,
        metadata={"help": "send tap audio to listeners this often, ms (0: as the mixer publishes)"},
    )
    listener_downstream_ms: int = field(
        default=400,
        metadata={
            "help": "send a tap that only listeners hear (no members) this often, ms "
            "(fewer, larger writes to each of a concert's listeners)"
        },
    )
    reconnect_grace_s: float = field(
        default=30.0, metadata={"help": "how long a disconnected singer keeps their place, s"}
    )
    heartbeat_ttl_ms: int = field(default=3000, metadata={"help": "heartbeat key TTL, ms"})
    public_host: str = field(
        default="",
        metadata={
            "help": "comma-separated host names browsers use to reach this deployment "
            "(localhost, IP addresses and the allowed origins' hosts are always accepted)"
        },
    )
    trust_forwarded_for: bool = field(
        default=False,
        metadata={
            "help": "take the client address from the last X-Forwarded-For entry "
            "(only behind a proxy that sets it, like compose's nginx)"
        },
    )
    tls_cert: str = field(
        default="",
        metadata={
            "help": "serve HTTPS with this PEM certificate chain (with tls_key; "
            "brigade up --https makes one); empty: plain HTTP"
        },
    )
    tls_key: str = field(default="", metadata={"help": "the PEM private key of tls_cert"})
    password_tries_per_min: int = field(
        default=5, metadata={"help": "wrong room passwords per client address per minute"}
    )
    room_password_tries_per_min: int = field(
        default=20, metadata={"help": "wrong passwords per room per minute (all clients)"}
    )
    rooms_per_min: int = field(
        default=10, metadata={"help": "rooms one client address may create per minute"}
    )
    room_cap: int = field(default=10_000, metadata={"help": "most rooms in the deployment"})
    idle_timeout_s: float = field(
        default=15.0,
        metadata={"help": "close HTTP connections without a complete request for this long, s"},
    )
    material_ttl_s: float = field(
        default=3600.0,
        metadata={"help": "a room's tracks and image expire this long after it was last in use, s"},
    )
    tracks_dir: str = field(
        default="",
        metadata={"help": "folder of backing tracks offered to every room (scanned on request)"},
    )
    recordings_dir: str = field(
        default="./recordings",
        metadata={"help": "the recorder's folder: each room's recordings are served from it"},
    )

    def check(self) -> None:
        super().check()
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValidationError("tls_cert and tls_key go together: give both or neither")
        check_id(self.gateway_id, "gateway_id")
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"port must be in [0, 65535], got {self.port}")
        for name in (
            "max_message_bytes",
            "max_messages_per_s",
            "send_queue_frames",
            "default_capacity",
            "default_listeners",
            "in_maxlen",
            "reconnect_grace_s",
            "heartbeat_ttl_ms",
            "password_tries_per_min",
            "room_password_tries_per_min",
            "rooms_per_min",
            "room_cap",
            "idle_timeout_s",
            "material_ttl_s",
        ):
            _positive(name, getattr(self, name))
        if not 0 <= self.listener_downstream_ms <= 600:
            raise ValidationError(
                f"listener_downstream_ms must be in [0, 600], got {self.listener_downstream_ms}"
            )
        if not 0 <= self.downstream_ms <= 500:
            # Frames leave the mixer lead_s (1 s) ahead of their play time.
            raise ValidationError(f"downstream_ms must be in [0, 500], got {self.downstream_ms}")


@dataclass(frozen=True)
class KeeperSettings(_ServiceSettings):
    """Settings of the keeper (``brigade keeper``): the rooms' durable state, without the audio."""

    keeper_id: str = field(
        default_factory=lambda: _process_id("keeper"),
        metadata={"help": "unique id of this keeper"},
    )
    state_redis_url: str = field(
        default="redis://127.0.0.1:6380/0",
        metadata={
            "help": "the small Redis with an append-only file that keeps a copy of every "
            "room's meta, members, song, tokens, tracks and image"
        },
    )
    copy_ms: int = field(
        default=1000, metadata={"help": "a changed key is copied at most this often, ms"}
    )

    def check(self) -> None:
        super().check()
        if not self.state_redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValidationError(
                f"state_redis_url must be a redis:// URL, got {self.state_redis_url!r}"
            )
        check_id(self.keeper_id, "keeper_id")
        for name in ("copy_ms", "heartbeat_ttl_ms"):
            _positive(name, getattr(self, name))


Settings = _Settings
"""The base of every process's settings (redis_url, event_loop, env + CLI parsing)."""
