"""The browser protocol codec (common/protocol.py) and room passwords (common/passwords.py)."""

from __future__ import annotations

import contextlib
import json
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import commands as c
from common import protocol as p
from common.browser_schema import SCHEMA_PATH, browser_schema_text
from common.codes import Code
from common.errors import ValidationError
from common.passwords import MIN_ITERATIONS, check_password, hash_password
from tests.support import REPO

HELLO = {
    "type": "hello",
    "version": 1,
    "room": "choir",
    "name": "Ann",
    "role": "singer",
    "codec": "opus",
}


def parse(obj: object) -> p.ClientMessage:
    return p.parse_client_message(json.dumps(obj))


def code_of(obj: object) -> Code:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_message(obj if isinstance(obj, str) else json.dumps(obj))
    return info.value.code


# --- JSON -------------------------------------------------------------------------


def test_hello_is_parsed_with_its_options() -> None:
    msg = parse({**HELLO, "password": "pw", "resume": {"singer": "s-1", "token": "t"}, "req": 4})
    assert msg == p.Hello(1, "choir", "Ann", "singer", "opus", "pw", p.Resume("s-1", "t"), 4)
    assert parse(p.hello_message("choir", "Ann")) == p.Hello(1, "choir", "Ann", "singer", "opus")


def test_a_listener_says_so_in_its_hello_and_other_roles_are_refused() -> None:
    hello = parse(p.hello_message("choir", "Ann", role="listener"))
    assert isinstance(hello, p.Hello) and hello.role == "listener"
    assert code_of({**HELLO, "role": "conductor"}) is Code.BAD_ROLE


def test_room_names_are_case_insensitive() -> None:
    # "Choir" typed by one member and "choir" by the organiser are one room.
    for typed in ("Choir", "CHOIR", "choir"):
        hello = parse({**HELLO, "room": typed})
        assert isinstance(hello, p.Hello) and hello.room == "choir"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"version": 2}, Code.VERSION),
        ({"version": True}, Code.VERSION),
        ({"version": None}, Code.VERSION),
        ({"room": "a b"}, Code.BAD_ROOM),
        ({"room": "x" * 41}, Code.BAD_ROOM),
        ({"room": 5}, Code.BAD_ROOM),
        ({"name": ""}, Code.BAD_NAME),
        ({"name": "   "}, Code.BAD_NAME),
        ({"name": "x" * 41}, Code.BAD_NAME),
        ({"name": "a\nb"}, Code.BAD_NAME),
        ({"name": ["Ann"]}, Code.BAD_NAME),
        ({"role": "conductor"}, Code.BAD_ROLE),
        ({"codec": "mp3"}, Code.BAD_CODEC),
        ({"password": ""}, Code.BAD_PASSWORD),
        ({"password": 1234}, Code.BAD_PASSWORD),
        ({"password": "x" * 129}, Code.BAD_PASSWORD),
        ({"resume": "s-1"}, Code.BAD_RESUME),
        ({"resume": {"singer": "s 1", "token": "t"}}, Code.BAD_RESUME),
        ({"resume": {"singer": "s-1", "token": ""}}, Code.BAD_RESUME),
        ({"req": "1"}, Code.BAD_MESSAGE),
    ],
)
def test_bad_hello_fields_have_their_codes(change: dict[str, object], code: Code) -> None:
    assert code_of({**HELLO, **change}) is code


def test_hello_errors_are_fatal_and_carry_the_req() -> None:
    with pytest.raises(p.ProtocolError) as info:
        parse({**HELLO, "room": "", "req": 9})
    assert info.value.fatal
    assert info.value.req == 9


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"type": "ping", "id": 3, "t": 12.5}, p.Ping(3, 12.5)),
        ({"type": "lead", "req": 1}, p.RoomCommand(c.Lead(), 1)),
        ({"type": "start"}, p.RoomCommand(c.Start())),
        ({"type": "stop"}, p.RoomCommand(c.Stop())),
        ({"type": "halt"}, p.RoomCommand(c.Halt())),
        ({"type": "leave"}, p.RoomCommand(c.Leave())),
        ({"type": "join_bucket", "bucket": 2}, p.RoomCommand(c.JoinBucket(bucket=2))),
        ({"type": "set_delay", "delay_s": 7.5}, p.RoomCommand(c.SetDelay(delay_s=7.5))),
        ({"type": "mute", "muted": True}, p.RoomCommand(c.Mute(muted=True))),
        (
            {"type": "set_gain", "target": "s-1", "gain_db": -6},
            p.RoomCommand(c.SetGain(target="s-1", gain_db=-6.0)),
        ),
        (
            {"type": "set_gain", "target": "s-1", "gain_db": None, "req": 4},
            p.RoomCommand(c.SetGain(target="s-1", gain_db=None), 4),
        ),
        (
            {"type": "solo", "target": "s-2", "on": True},
            p.RoomCommand(c.Solo(target="s-2", on=True)),
        ),
        ({"type": "set_mix", "mix": "solo"}, p.RoomCommand(c.SetMix(mix="solo"))),
        (
            {"type": "set_rounds", "bpm": 120, "beats": 4, "repeats": 2},
            p.RoomCommand(c.SetRounds(bpm=120.0, beats=4, repeats=2)),
        ),
        ({"type": "set_leader_boost", "boost_db": 3}, p.RoomCommand(c.SetLeaderBoost(boost_db=3))),
        ({"type": "chat", "text": "  hello  "}, p.ChatLine("hello")),
    ],
)
def test_control_messages(obj: dict[str, object], expected: p.ClientMessage) -> None:
    assert parse(obj) == expected


def test_set_delay_converts_to_samples() -> None:
    assert c.SetDelay(delay_s=7.5).delay_samples == 360_000


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", Code.BAD_MESSAGE),
        ("[1, 2]", Code.BAD_MESSAGE),
        ('"hello"', Code.BAD_MESSAGE),
        ("[" * 100_000 + "]" * 100_000, Code.BAD_MESSAGE),
        ('{"type": "ping", "id": 1, "t": NaN}', Code.BAD_MESSAGE),
        ('{"type": "ping", "id": 1, "t": 1e999}', Code.BAD_MESSAGE),
        ('{"type": "ping", "id": 1' + "0" * 5000 + ', "t": 1}', Code.BAD_MESSAGE),
        ({"type": "dance"}, Code.BAD_MESSAGE),
        ({"no": "type"}, Code.BAD_MESSAGE),
        ({"type": "ping", "id": "1", "t": 1}, Code.BAD_MESSAGE),
        ({"type": "ping", "id": -1, "t": 1}, Code.BAD_MESSAGE),
        ({"type": "ping", "id": 1, "t": "now"}, Code.BAD_MESSAGE),
        ({"type": "join_bucket", "bucket": 64}, Code.BAD_BUCKET),
        ({"type": "join_bucket", "bucket": True}, Code.BAD_BUCKET),
        ({"type": "join_bucket", "bucket": 1.0}, Code.BAD_BUCKET),
        ({"type": "join_bucket"}, Code.BAD_BUCKET),
        ({"type": "set_delay", "delay_s": 0}, Code.BAD_DELAY),
        ({"type": "set_delay", "delay_s": 116}, Code.BAD_DELAY),
        ({"type": "set_delay", "delay_s": "3"}, Code.BAD_DELAY),
        ({"type": "set_gain", "target": "s-1", "gain_db": 12.5}, Code.BAD_GAIN),
        ({"type": "set_gain", "target": "s 1", "gain_db": 0}, Code.BAD_GAIN),
        ({"type": "set_gain", "gain_db": 0}, Code.BAD_GAIN),
        ({"type": "solo", "target": "s-1", "on": "yes"}, Code.BAD_MESSAGE),
        ({"type": "set_mix", "mix": "monitor"}, Code.BAD_MESSAGE),
        ({"type": "set_rounds", "bpm": 10, "beats": 4, "repeats": 2}, Code.BAD_ROUNDS),
        ({"type": "set_rounds", "bpm": 120, "beats": 4, "repeats": 21}, Code.BAD_ROUNDS),
        ({"type": "set_leader_boost", "boost_db": -1}, Code.BAD_GAIN),
        ({"type": "set_leader_boost", "boost_db": 12.5}, Code.BAD_GAIN),
        ({"type": "set_leader_boost", "boost_db": "6"}, Code.BAD_GAIN),
        ({"type": "set_leader_boost"}, Code.BAD_GAIN),
        ({"type": "set_gain", "target": "s-1", "gain_db": -60.5}, Code.BAD_GAIN),
        ({"type": "set_gain", "target": "s-1", "gain_db": -1000}, Code.BAD_GAIN),
        ('{"type": "set_gain", "target": "s-1", "gain_db": -Infinity}', Code.BAD_MESSAGE),
        ('{"type": "set_gain", "target": "s-1", "gain_db": NaN}', Code.BAD_MESSAGE),
        ('{"type": "ping", "id": 1, "t": Infinity}', Code.BAD_MESSAGE),
        ({"type": "mute", "muted": 1}, Code.BAD_MESSAGE),
        ({"type": "chat", "text": ""}, Code.BAD_MESSAGE),
        ({"type": "chat", "text": "x" * 501}, Code.BAD_MESSAGE),
        ({"type": "chat", "text": "bell\x07"}, Code.BAD_MESSAGE),
        ({"type": "chat", "text": 5}, Code.BAD_MESSAGE),
        ({"type": "lead", "req": 2**53}, Code.BAD_MESSAGE),
        ({"type": "lead", "req": False}, Code.BAD_MESSAGE),
    ],
)
def test_bad_messages_have_their_codes(raw: object, code: Code) -> None:
    assert code_of(raw) is code


def test_errors_keep_the_req_of_a_bad_control_message() -> None:
    with pytest.raises(p.ProtocolError) as info:
        parse({"type": "join_bucket", "bucket": "one", "req": 12})
    assert info.value.req == 12
    assert not info.value.fatal


def test_server_messages_are_compact_json() -> None:
    text = p.dumps(p.error_message(Code.TOO_LARGE, "too big", req=3))
    assert json.loads(text) == {
        "type": "error",
        "code": "too_large",
        "message": "too big",
        "fatal": True,
        "req": 3,
    }
    assert " " not in p.dumps(p.pong_message(p.Ping(1, 2.0), 99))
    with pytest.raises(ValueError, match="Out of range"):
        p.dumps({"t": float("nan")})


# --- binary ---------------------------------------------------------------------


def test_upstream_opus_round_trip() -> None:
    packets = [b"\x01" * 10, b"\x02" * 300, b"\x03"]
    data = p.encode_upstream_opus(7, 8, 123_456_789_000, packets)
    assert data[:20] == struct.pack("<BBHIIq", 1, 1, 3, 7, 8, 123_456_789_000)
    up = p.parse_upstream(data)
    assert up == p.Upstream(p.CODEC_OPUS, 7, 8, 123_456_789_000, tuple(packets), b"")
    assert up.samples == 3 * 960


def test_upstream_pcm16_round_trip() -> None:
    pcm = struct.pack("<4h", 1, -2, 32767, -32768)
    up = p.parse_upstream(p.encode_upstream_pcm16(1, 2, 3, pcm))
    assert (up.codec, up.stream, up.seq, up.start, up.pcm, up.samples) == (2, 1, 2, 3, pcm, 4)


def test_downstream_round_trip() -> None:
    data = p.encode_downstream_opus(288_000, 960 * 5, [b"ab", b"cde"])
    assert data[:16] == struct.pack("<BBHIq", 2, 1, 2, 288_000, 4800)
    down = p.parse_downstream(data)
    assert (down.delay, down.start, down.packets, down.samples) == (
        288_000,
        4800,
        (b"ab", b"cde"),
        1920,
    )
    pcm = p.parse_downstream(p.encode_downstream_pcm16(5, 6, b"\x00\x01" * 960))
    assert (pcm.codec, pcm.samples) == (p.CODEC_PCM16, 960)


def _header(kind: int = 1, codec: int = 1, count: int = 1, start: int = 0) -> bytes:
    return struct.pack("<BBHIIq", kind, codec, count, 0, 0, start)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "shorter than its 20-byte header"),
        (_header()[:19], "shorter"),
        (_header(kind=2) + b"\x01\x00x", "kind must be 0x01"),
        (_header(codec=3) + b"\x01\x00x", "codec must be"),
        (_header(count=0), "count must be 1-50"),
        (_header(count=51) + b"\x01\x00x" * 51, "count must be 1-50"),
        (_header(count=2) + b"\x01\x00x", "ends before the length of packet 1"),
        (_header() + b"\x00\x00", "packet 0 is 0 bytes"),
        (_header() + b"\xdd\x05" + b"x" * 1501, "packet 0 is 1501 bytes"),
        (_header() + b"\x05\x00abc", "says 5 bytes, only 3 remain"),
        (_header() + b"\x01\x00xTRAILING", "8 bytes after the last"),
        (_header(codec=2, count=3) + b"\x00\x00", "payload is 2 bytes"),
        (_header(codec=2, count=0), "count must be 1-48000"),
        (_header(start=-5) + b"\x01\x00x", "not a valid position"),
    ],
)
def test_bad_upstream_is_bad_audio(data: bytes, fragment: str) -> None:
    with pytest.raises(p.ProtocolError, match=fragment) as info:
        p.parse_upstream(data)
    assert info.value.code is Code.BAD_AUDIO


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_upstream_parser_only_raises_protocol_errors(data: bytes) -> None:
    try:
        p.parse_upstream(data)
    except p.ProtocolError as exc:
        assert exc.code is Code.BAD_AUDIO


@settings(max_examples=300)
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=120),
)
def test_upstream_parser_with_plausible_headers(
    kind: int, codec: int, count: int, payload: bytes
) -> None:
    data = struct.pack("<BBHIIq", kind, codec, count, 1, 2, 3) + payload
    try:
        up = p.parse_upstream(data)
    except p.ProtocolError:
        return
    # Whatever is accepted is exactly what a client would have encoded.
    if up.codec == p.CODEC_OPUS:
        assert p.encode_upstream_opus(1, 2, 3, up.packets) == data
    else:
        assert p.encode_upstream_pcm16(1, 2, 3, up.pcm) == data


@settings(max_examples=200)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**62),
    st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=50),
)
def test_upstream_round_trips(stream: int, seq: int, start: int, packets: list[bytes]) -> None:
    up = p.parse_upstream(p.encode_upstream_opus(stream, seq, start, packets))
    assert (up.stream, up.seq, up.start, list(up.packets)) == (stream, seq, start, packets)


@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_downstream_parser_only_raises_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(p.ProtocolError):
        p.parse_downstream(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
_fields = st.sampled_from(
    [
        "type",
        "version",
        "room",
        "name",
        "role",
        "codec",
        "password",
        "resume",
        "req",
        "id",
        "t",
        "bucket",
        "delay_s",
        "muted",
        "text",
        "singer",
        "token",
    ]
)
_types = st.sampled_from(
    [
        "hello",
        "ping",
        "lead",
        "start",
        "stop",
        "halt",
        "join_bucket",
        "set_delay",
        "mute",
        "chat",
        "leave",
        "other",
    ]
)


@settings(max_examples=500)
@given(_types, st.dictionaries(_fields, _json, max_size=6))
def test_json_parser_only_raises_protocol_errors(kind: str, fields: dict[str, object]) -> None:
    with contextlib.suppress(p.ProtocolError):
        p.parse_client_message(json.dumps({**fields, "type": kind}))


@settings(max_examples=300)
@given(st.text(max_size=100) | st.binary(max_size=100))
def test_json_parser_survives_any_text(text: str | bytes) -> None:
    try:
        p.parse_client_message(text)
    except p.ProtocolError as exc:
        assert isinstance(exc, ValidationError)


# --- passwords --------------------------------------------------------------------


def test_password_hash_round_trip() -> None:
    stored = hash_password("sesame", iterations=MIN_ITERATIONS)
    algorithm, iterations, _salt, _key = stored.split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", str(MIN_ITERATIONS))
    assert "sesame" not in stored
    assert check_password("sesame", stored)
    assert not check_password("Sesame", stored)
    assert not check_password(None, stored)
    assert not check_password("", stored)
    assert hash_password("sesame", iterations=MIN_ITERATIONS) != stored  # a fresh salt


def test_no_stored_password_lets_everyone_in() -> None:
    assert check_password(None, "")
    assert check_password("anything", "")


def test_same_salt_same_hash() -> None:
    salt = b"0123456789abcdef"
    one = hash_password("pw", iterations=MIN_ITERATIONS, salt=salt)
    assert one == hash_password("pw", iterations=MIN_ITERATIONS, salt=salt)
    assert check_password("pw\ud800", hash_password("pw\ud800", iterations=MIN_ITERATIONS))


@pytest.mark.parametrize(
    "stored",
    [
        "md5$1$aa$bb",
        "pbkdf2_sha256$1000$zz$AAAA",
        "pbkdf2_sha256$10$00$" + "A" * 44,
        "pbkdf2_sha256$1000$00$not-base64!",
        "pbkdf2_sha256$1000$00$QUJD",
        "pbkdf2_sha256$99999999999$00$" + "A" * 43 + "=",
        "pbkdf2_sha256$1000$00",
    ],
)
def test_malformed_stored_hashes_are_refused(stored: str) -> None:
    with pytest.raises(ValidationError):
        check_password("pw", stored)


def test_hash_password_validates_its_arguments() -> None:
    with pytest.raises(ValidationError):
        hash_password("")
    with pytest.raises(ValidationError):
        hash_password("pw", iterations=10)


# --- the error table in docs/protocol.md agrees with the code ---------------------------

DOCS = REPO / "docs" / "protocol.md"


def documented_field_codes() -> tuple[dict[str, str], set[str]]:
    """docs/protocol.md, *Field errors*: the command -> code table, and the commands
    named as getting ``bad_message``."""
    text = DOCS.read_text()
    section = text[text.index("**Field errors.**") : text.index("Errors that carry a `req`")]
    table = dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|$", section, flags=re.MULTILINE))
    others = section[section.index("Every other message") :]
    named = set(re.findall(r"`(\w+)`", others[: others.index("gets")]))
    return table, named


def test_the_documented_field_error_codes_are_the_commands_own() -> None:
    table, others = documented_field_codes()
    assert len(table) >= 9
    for kind, cls in c.CLIENT_COMMANDS.items():
        if kind in table:
            assert cls.error_code == table[kind], kind
        else:
            assert cls.error_code == "bad_message", kind
            assert kind in others, f"{kind} is in neither the table nor the bad_message list"
    assert others - {"ping", "chat"} == set(c.CLIENT_COMMANDS) - set(table)


@pytest.mark.parametrize("kind", sorted(c.CLIENT_COMMANDS))
def test_missing_and_wrong_typed_fields_get_the_documented_code(kind: str) -> None:
    table, _others = documented_field_codes()
    expected = Code(table.get(kind, "bad_message"))
    cls = c.CLIENT_COMMANDS[kind]
    fields = cls.__struct_fields__
    for name in fields:
        # An object is a wrong type for every field of every command.
        assert code_of({"type": kind, name: {"nested": [1]}}) is expected, (kind, name)
    if set(fields) - _defaults(cls):
        assert code_of({"type": kind}) is expected, kind  # a required field is missing


def _defaults(cls: type[c.Command]) -> set[str]:
    fields = cls.__struct_fields__
    defaults = cls.__struct_defaults__
    return set(fields[len(fields) - len(defaults) :])


def test_the_browser_schema_file_is_current() -> None:
    """docs/browser-messages.schema.json is generated from the types: regenerate it with
    ``python -m common.browser_schema > docs/browser-messages.schema.json``."""
    kept = (Path(__file__).resolve().parent.parent / SCHEMA_PATH).read_text()
    assert kept == browser_schema_text()
