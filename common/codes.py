"""The refusal codes, defined once (docs/protocol.md, *Errors*).

The gateway sends them in ``error`` messages; the mixer answers a refused
command with one (``Reply.code``, common/events.py) and each room command
names the one its bad fields get (common/commands.py). Pure: no I/O.
"""

from enum import StrEnum
from typing import Final


class Code(StrEnum):
    """The ``code`` of an ``error`` message (docs/protocol.md, *Errors*)."""

    BAD_MESSAGE = "bad_message"
    VERSION = "version"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    HELLO_TIMEOUT = "hello_timeout"
    BAD_NAME = "bad_name"
    BAD_ROOM = "bad_room"
    BAD_ROLE = "bad_role"
    BAD_CODEC = "bad_codec"
    BAD_PASSWORD = "bad_password"
    BAD_RESUME = "bad_resume"
    ROOM_FULL = "room_full"
    LISTENERS_FULL = "listeners_full"
    BAD_AUDIO = "bad_audio"
    AUDIO_FUTURE = "audio_future"
    AUDIO_OLD = "audio_old"
    SPECTATOR = "spectator"
    LISTENER = "listener"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_SINGER = "unknown_singer"
    NOT_LEADER = "not_leader"
    SONG_RUNNING = "song_running"
    NO_SONG = "no_song"
    BAD_BUCKET = "bad_bucket"
    BAD_DELAY = "bad_delay"
    BAD_GAIN = "bad_gain"
    BAD_ROUNDS = "bad_rounds"
    BAD_TRACK = "bad_track"
    BAD_METRONOME = "bad_metronome"
    BAD_LYRICS = "bad_lyrics"
    SPECTATOR_CANNOT_LEAD = "spectator_cannot_lead"
    UNAVAILABLE = "unavailable"


FATAL_CODES: Final = frozenset(
    {
        Code.VERSION,
        Code.HELLO_TIMEOUT,
        Code.BAD_NAME,
        Code.BAD_ROOM,
        Code.BAD_ROLE,
        Code.BAD_CODEC,
        Code.BAD_PASSWORD,
        Code.BAD_RESUME,
        Code.ROOM_FULL,
        Code.LISTENERS_FULL,
        Code.TOO_LARGE,
    }
)
"""Codes after which the server closes the connection."""
