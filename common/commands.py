"""The commands a gateway sends a room's mixer (``bb:{R}:ctl``), defined once.

Each command is one typed :mod:`msgspec` struct whose tag is its name on
every wire: the browser sends the same object as a JSON text frame
(``{"type": "set_gain", "target": "s-1", "gain_db": -6}``), the gateway wraps
it in an :class:`Envelope` saying who sent it, and the mixer decodes the
envelope and dispatches on the command's class through one table
(``mixer/host.py``). Adding a command is one class here, one ``RoomState``
method, one table row and its docs.

Decoding validates types and ranges; the domain rules (who may do what, when)
are the room's and come back as a ``reply`` event (common/events.py).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

import msgspec

from common.codes import Code
from common.constants import SAMPLE_RATE
from common.errors import ValidationError
from common.names import check_display_name
from common.records import (
    MAX_GAIN_DB,
    MAX_LEADER_BOOST_DB,
    MAX_LYRICS_CHARS,
    MIN_GAIN_DB,
    Image,
    MaterialId,
    Mix,
    Role,
    Track,
)

__all__ = [
    "CLIENT_COMMANDS",
    "MAX_BUCKETS",
    "MAX_DELAY_S",
    "AddTrack",
    "AnyCommand",
    "ClearImage",
    "ClientCommand",
    "Command",
    "CueLyrics",
    "Disconnect",
    "Envelope",
    "Halt",
    "Join",
    "JoinBucket",
    "Lead",
    "Leave",
    "Mute",
    "SetDelay",
    "SetGain",
    "SetImage",
    "SetLeaderBoost",
    "SetLyrics",
    "SetMetronome",
    "SetMix",
    "SetRounds",
    "SetTrack",
    "Solo",
    "Start",
    "Stop",
    "SubscribeTap",
    "decode_envelope",
    "encode_envelope",
]

MAX_BUCKETS: Final = 64
MAX_DELAY_S: Final = 115.0
"""Largest custom delay (seconds): a little less than the default 120 s ring."""

SingerId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Command(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every room command; the subclass's tag is its ``type``."""

    error_code: ClassVar[Code] = Code.BAD_MESSAGE
    """The protocol error code for a command that fails to decode."""


# --- membership (sent by gateways, not by browsers) ----------------------------------


class Join(Command, tag="join", frozen=True):
    """A connection joined (or resumed) as ``name`` in ``role``.

    ``token_digest`` is the SHA-256 of the member's resume token: the mixer
    keeps it in the member record and writes it back if Redis loses it.
    ``password_hash`` is the room password hash the gateway checked the
    joiner's password against; the mixer refuses the join when it is not the
    room's own (a room never opens by accident, even right after a Redis
    restart).
    """

    name: str
    role: Role
    token_digest: str = ""
    password_hash: str = ""

    def __post_init__(self) -> None:
        check_display_name(self.name)


class Disconnect(Command, tag="disconnect", frozen=True):
    """The singer's connection closed; their place is kept for the reconnect grace."""


class SubscribeTap(Command, tag="subscribe_tap", frozen=True):
    """A non-member (a recorder) asks for a tap of its own until ``ttl_s`` passes.

    Repeat it to keep the tap alive; the sender's id names the subscription.
    """

    delay_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_DELAY_S)]
    mix: Mix = "full"
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0


# --- sent by browsers ------------------------------------------------------------------


class Leave(Command, tag="leave", frozen=True):
    """Leave the room now (no reconnect grace)."""


class Lead(Command, tag="lead", frozen=True):
    """Become the leader: bucket 0, everyone else dealt over the buckets."""


class Start(Command, tag="start", frozen=True):
    """Leader: start a song at the leader's current position."""


class Stop(Command, tag="stop", frozen=True):
    """Leader: end the song at the leader's current position."""


class Halt(Command, tag="halt", frozen=True):
    """Stop the running song at once (a no-op without one)."""


class JoinBucket(Command, tag="join_bucket", frozen=True):
    error_code: ClassVar[Code] = Code.BAD_BUCKET
    bucket: Annotated[int, msgspec.Meta(ge=0, lt=MAX_BUCKETS)]


class SetDelay(Command, tag="set_delay", frozen=True):
    error_code: ClassVar[Code] = Code.BAD_DELAY
    delay_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_DELAY_S)]

    @property
    def delay_samples(self) -> int:
        return round(self.delay_s * SAMPLE_RATE)


class Mute(Command, tag="mute", frozen=True):
    """Server-side mute of your own voice."""

    muted: bool


class SetGain(Command, tag="set_gain", frozen=True):
    """The console fader: ``target``'s mic gain in dB; null is -inf (silenced).

    A number must lie in ``MIN_GAIN_DB .. MAX_GAIN_DB`` (-60 .. +12 dB); lower
    ones are refused, not clamped (silencing is ``null``). The leader may set
    anyone's; everyone may set their own.
    """

    error_code: ClassVar[Code] = Code.BAD_GAIN
    target: SingerId
    gain_db: Annotated[float, msgspec.Meta(ge=MIN_GAIN_DB, le=MAX_GAIN_DB)] | None


class SetLeaderBoost(Command, tag="set_leader_boost", frozen=True):
    """Leader: how much louder the leader's voice is in the mix (dB)."""

    error_code: ClassVar[Code] = Code.BAD_GAIN
    boost_db: Annotated[float, msgspec.Meta(ge=0, le=MAX_LEADER_BOOST_DB)]


class Solo(Command, tag="solo", frozen=True):
    """Leader: put ``target`` in (or take them out of) the room's solo mix."""

    target: SingerId
    on: bool


class SetMix(Command, tag="set_mix", frozen=True):
    """Choose what you hear: the full mix, or only the soloed singers."""

    mix: Mix


class SetRounds(Command, tag="set_rounds", frozen=True):
    """Leader, between songs: each voice repeats ``repeats`` times, ``beats`` at ``bpm`` apart."""

    error_code: ClassVar[Code] = Code.BAD_ROUNDS
    bpm: Annotated[float, msgspec.Meta(ge=20, le=300)]
    beats: Annotated[int, msgspec.Meta(ge=1, le=64)]
    repeats: Annotated[int, msgspec.Meta(ge=0, le=20)]


class SetTrack(Command, tag="set_track", frozen=True):
    """Leader, between songs: back the next songs with the room's track ``track`` (null: none)."""

    error_code: ClassVar[Code] = Code.BAD_TRACK
    track: MaterialId | None


class SetMetronome(Command, tag="set_metronome", frozen=True):
    """Leader, between songs: the metronome of the next songs."""

    error_code: ClassVar[Code] = Code.BAD_METRONOME
    on: bool
    bpm: Annotated[float, msgspec.Meta(ge=20, le=300)] = 100.0
    beats: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    count_in: bool = False


class SetRecording(Command, tag="set_recording", frozen=True):
    """Leader, between songs: what the recorder writes of the next songs."""

    stems: bool = False
    metronome: bool = False


class SetLyrics(Command, tag="set_lyrics", frozen=True):
    """Leader: the lyrics shown to everyone (empty: none). Lines are separated by newlines."""

    error_code: ClassVar[Code] = Code.BAD_LYRICS
    text: Annotated[str, msgspec.Meta(max_length=MAX_LYRICS_CHARS)]


class CueLyrics(Command, tag="cue_lyrics", frozen=True):
    """Leader, during a song: line ``line`` is current from the leader's position ``pos`` on."""

    error_code: ClassVar[Code] = Code.BAD_LYRICS
    line: Annotated[int, msgspec.Meta(ge=0, le=10_000)]
    pos: Annotated[int, msgspec.Meta(ge=0, lt=1 << 62)]


class ClearImage(Command, tag="clear_image", frozen=True):
    """Leader: take the room's image down."""


class AddTrack(Command, tag="add_track", frozen=True):
    """Sent by a gateway once it stored an upload (or a library track) for the leader.

    The room lists it and chooses it for the next songs; the oldest track
    nobody has chosen goes when the room holds too many.
    """

    track: Track


class SetImage(Command, tag="set_image", frozen=True):
    """Sent by a gateway once it stored the leader's image upload."""

    image: Image


ClientCommand = (
    Leave
    | Lead
    | Start
    | Stop
    | Halt
    | JoinBucket
    | SetDelay
    | Mute
    | SetGain
    | SetLeaderBoost
    | Solo
    | SetMix
    | SetRounds
    | SetTrack
    | SetMetronome
    | SetRecording
    | SetLyrics
    | CueLyrics
    | ClearImage
)
"""The commands a browser may send as JSON text frames."""

AnyCommand = Join | Disconnect | SubscribeTap | AddTrack | SetImage | ClientCommand
"""Every command: the browser's, and those only gateways send (membership, stored uploads)."""

CLIENT_COMMANDS: Final[dict[str, type[Command]]] = {
    cls.__struct_config__.tag: cls for cls in ClientCommand.__args__
}
"""Browser message ``type`` -> command class."""


def command_name(command: Command) -> str:
    """The command's tag (its ``type`` on the wire)."""
    tag = type(command).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def parse_client_command(obj: object) -> ClientCommand:
    """A browser's JSON object (already parsed) as a command; raises msgspec.ValidationError.

    Fields the command does not define (``req``) are ignored.
    """
    command: ClientCommand = msgspec.convert(obj, ClientCommand)
    return command


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One control entry: who sent ``cmd``, and where the reply goes.

    ``singer`` is the member (or subscriber) the command acts for, ``gw`` and
    ``req`` route the mixer's ``reply`` back to the waiting gateway call, and
    ``conn`` names the connection (a ``disconnect`` from a replaced
    connection is ignored).
    """

    singer: SingerId
    cmd: AnyCommand
    gw: str = ""
    req: int = 0
    conn: str = ""


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(Envelope)
_MAX_ENTRY_BYTES: Final = 64 * 1024
"""Lyrics (10 000 characters, up to 4 bytes each in UTF-8) are the largest command."""


def encode_envelope(envelope: Envelope) -> bytes:
    """The control entry's ``d`` field."""
    return _ENCODER.encode(envelope)


def decode_envelope(data: object) -> Envelope:
    """Parse and validate a control entry; raises ValidationError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError("control entry has no 'd' field")
    if len(data) > _MAX_ENTRY_BYTES:
        raise ValidationError(f"control entry of {len(data)} bytes is over {_MAX_ENTRY_BYTES}")
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise ValidationError(f"control entry: {exc}") from None
