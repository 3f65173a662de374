"""The Recordings panel in Chromium against the real stack (redis-server, mixer, gateway,
and for the song a recorder), with recordings made by the recorder's own code.

- An open room: the panel says there is nothing yet, then lists the recordings
  newest first with song, length, local time and leader; the player plays the
  Ogg from the gateway; the links name the right files, the stems' ZIP only
  for a recording with stems, and the ZIP downloads whole.
- A room with a password: the same list, fetched with the seat's headers (a
  request without them is refused); the player and the downloads go through
  fetched blobs; a seat the room does not know is told so in words.
- The leader's two checkboxes send ``set_recording`` and show the room's
  choice to everyone, are disabled while the song runs, and after the song
  the real recorder's recording (with stems) appears by itself.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import zipfile
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from playwright.sync_api import sync_playwright

from common import keys
from common.constants import SAMPLE_RATE
from tests.browser_support import (
    chromium_page,
    console_errors,
    fill_join,
    launch,
    poll,
    require_axe,
    tone,
    tone_level,
    write_wav,
)
from tests.recordingfiles import make_recording
from tests.support import Stack
from tests.test_browser_choir import audit

pytestmark = pytest.mark.stack(chromium=True)

ZONE = "America/New_York"
# 2026-12-01 08:00 and 08:10 UTC: 03:00 and 03:10 in New York.
T1, T2, T3 = 1796112000.0, 1796112600.0, 1796113200.0

ROWS = """() => [...document.querySelectorAll('#recordings li')].map((li) => ({
  stem: li.dataset.stem,
  song: li.querySelector('.what b').textContent,
  length: li.querySelector('.length').textContent,
  time: li.querySelector('time') ? li.querySelector('time').textContent : null,
  leader: li.querySelector('.leader') ? li.querySelector('.leader').textContent : null,
  links: [...li.querySelectorAll('a.download')].map((a) =>
    [a.textContent, a.getAttribute('href'), a.getAttribute('download')]),
  audio: li.querySelector('audio') ? li.querySelector('audio').getAttribute('src') : null,
  listen: li.querySelector('button.listen') !== null,
}))"""

DURATION = """async (selector) => {
  const audio = document.querySelector(selector);
  if (audio.readyState < 1) {
    audio.preload = 'metadata';
    await new Promise((resolve, reject) => {
      audio.addEventListener('loadedmetadata', resolve, {once: true});
      audio.addEventListener('error', () => reject(new Error(`media error ${audio.error.code}`)));
      audio.load();
    });
  }
  return audio.duration;
}"""


@pytest.fixture
def root(stack: Stack) -> Path:
    """The stack's recordings folder (emptied as the stack started), which its gateway serves."""
    stack.recordings.mkdir(exist_ok=True)
    return stack.recordings


def join(page: Any, base: str, room: str, name: str, role: str, password: str = "") -> None:
    page.goto(f"{base}/?room={room}")
    page.wait_for_selector("body[data-ready]")
    fill_join(page, name, role=role, password=password)
    page.wait_for_selector("#stage:not([hidden])", timeout=15_000)


def local(created: float) -> str:
    return dt.datetime.fromtimestamp(created, zoneinfo.ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M")


def api(room: str, name: str) -> str:
    return f"/api/rooms/{room}/recordings/{name}"


def stem_of(sidecar: dict[str, Any]) -> str:
    return str(sidecar["flac"]).removesuffix(".flac")


def zip_files(sidecar: dict[str, Any]) -> list[str]:
    return [s["file"] for s in sidecar["stems"]] + [sidecar["lof"], sidecar["rpp"]]


def check_zip(data: bytes, folder: Path, sidecar: dict[str, Any]) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == zip_files(sidecar)
        for name in archive.namelist():
            assert archive.read(name) == (folder / name).read_bytes()


def test_an_open_rooms_recordings_play_and_download_from_the_panel(
    stack: Stack, root: Path, output_dir: Path
) -> None:
    with chromium_page(timezone_id=ZONE, viewport={"width": 1180, "height": 900}) as page:
        errors = console_errors(page)
        join(page, stack.base, "open", "Lis", "spectator")
        poll(page, "!document.querySelector('#recordings-empty').hidden", "nothing yet")
        assert page.inner_text("#recordings-empty") == "No recordings yet."

        first = make_recording(root, "open", 1, T1, leader="Ann", seconds=1.0)
        second = make_recording(root, "open", 2, T2, leader="Bo", stems=["Bo", "Cy"])
        page.click("#recordings-refresh")
        poll(page, "document.querySelectorAll('#recordings li').length === 2", "two listed")
        assert page.is_hidden("#recordings-empty")
        rows = page.evaluate(ROWS)
        assert [r["stem"] for r in rows] == [stem_of(second), stem_of(first)]
        assert [(r["song"], r["length"], r["time"], r["leader"]) for r in rows] == [
            ("Song 2", "0:01", local(T2), "led by Bo"),
            ("Song 1", "0:01", local(T1), "led by Ann"),
        ]
        for row, sidecar, stems in ((rows[0], second, True), (rows[1], first, False)):
            want = [
                ["Mix (Ogg)", api("open", sidecar["ogg"]), sidecar["ogg"]],
                ["FLAC", api("open", sidecar["flac"]), sidecar["flac"]],
            ]
            if stems:
                zipped = f"{stem_of(sidecar)}.stems.zip"
                want.append(["Stems (zip)", api("open", zipped), zipped])
            assert row["links"] == want
            # An open room: the player streams the file from the gateway.
            assert row["audio"] == api("open", sidecar["ogg"]) and not row["listen"]
        duration = page.evaluate(DURATION, "#recordings li:first-child audio")
        assert abs(duration - 1.0) < 0.05

        with page.expect_download() as download:
            page.click("#recordings li:first-child a:text('Stems (zip)')")
        assert download.value.suggested_filename == f"{stem_of(second)}.stems.zip"
        check_zip(Path(download.value.path()).read_bytes(), root / "open", second)
        with page.expect_download() as download:
            page.click("#recordings li:nth-child(2) a:text('FLAC')")
        assert download.value.suggested_filename == first["flac"]
        got = Path(download.value.path()).read_bytes()
        assert got == (root / "open" / first["flac"]).read_bytes()

        # A newer one goes on top; the rows already shown stay.
        page.evaluate("window.kept = document.querySelector('#recordings li')")
        third = make_recording(root, "open", 3, T3, leader="Ann")
        page.click("#recordings-refresh")
        poll(page, "document.querySelectorAll('#recordings li').length === 3", "three listed")
        assert page.evaluate(ROWS)[0]["stem"] == stem_of(third)
        assert page.evaluate("document.querySelectorAll('#recordings li')[1] === window.kept")
        page.screenshot(path=str(output_dir / "open-room.png"), full_page=True)
        audit(page, require_axe(), output_dir / "axe-open-room.json")
        assert not errors, errors


def test_a_password_rooms_recordings_need_the_seat(
    stack: Stack, root: Path, output_dir: Path
) -> None:
    with chromium_page(timezone_id=ZONE, viewport={"width": 1180, "height": 900}) as page:
        errors = console_errors(page)
        sidecar = make_recording(root, "closed", 4, T2, leader="Ann", stems=["Ann"], track=True)
        join(page, stack.base, "closed", "Lis", "spectator", password="secret")
        poll(page, "document.querySelectorAll('#recordings li').length === 1", "listed")
        [row] = page.evaluate(ROWS)
        assert (row["song"], row["length"], row["time"]) == ("Song 4", "0:01", local(T2))
        zipped = f"{stem_of(sidecar)}.stems.zip"
        assert [link[:2] for link in row["links"]] == [
            ["Mix (Ogg)", api("closed", sidecar["ogg"])],
            ["FLAC", api("closed", sidecar["flac"])],
            ["Stems (zip)", api("closed", zipped)],
        ]
        # Without the seat's headers the gateway refuses: a plain link could not work.
        refused = page.evaluate(
            "(u) => fetch(u).then((r) => r.status)", api("closed", sidecar["ogg"])
        )
        assert refused == 401
        assert row["audio"] is None and row["listen"]

        page.click("#recordings button.listen")
        poll(page, "document.querySelector('#recordings audio') !== null", "the player")
        src = page.get_attribute("#recordings audio", "src")
        assert src is not None and src.startswith("blob:")
        assert abs(page.evaluate(DURATION, "#recordings audio") - 1.0) < 0.05

        folder = root / "closed"
        for label, name in (("FLAC", sidecar["flac"]), ("Stems (zip)", zipped)):
            with page.expect_download() as download:
                page.click(f"#recordings a:text('{label}')")
            assert download.value.suggested_filename == name
            data = Path(download.value.path()).read_bytes()
            if name == zipped:
                check_zip(data, folder, sidecar)
            else:
                assert data == (folder / name).read_bytes()
            href = page.get_attribute(f"#recordings a:text('{label}')", "href")
            assert href is not None and href.startswith("blob:")

        # A seat the room does not know: told in words, the list stays.
        seat = page.evaluate("sessionStorage.getItem('bb.seat')")
        page.evaluate(
            """() => {
              const seat = JSON.parse(sessionStorage.getItem('bb.seat'));
              sessionStorage.setItem('bb.seat', JSON.stringify({...seat, token: 'wrong'}));
            }"""
        )
        page.click("#recordings-refresh")
        poll(
            page,
            "document.querySelector('#recordings-status').textContent.includes('no longer')",
            "the refusal in words",
        )
        assert page.evaluate("document.querySelectorAll('#recordings li').length") == 1
        page.evaluate("(s) => sessionStorage.setItem('bb.seat', s)", seat)
        page.click("#recordings-refresh")
        poll(page, "document.querySelector('#recordings-status').textContent === ''", "ok")
        page.screenshot(path=str(output_dir / "password-room.png"), full_page=True)
        # The browser logs the two refusals provoked above, and nothing else.
        assert [e.rsplit("(", 1)[-1] for e in errors] == ["Unauthorized)", "Forbidden)"]


@pytest.mark.stack(chromium=True, recorders=1)
def test_the_leader_chooses_stems_and_the_song_appears_by_itself(
    stack: Stack, root: Path, output_dir: Path
) -> None:
    # Three buckets 1.5 s apart (the least the mixer takes): the recording is ready a few
    # seconds after the song.
    stack.redis.hset(
        keys.room_meta("rec"),
        mapping={"created_at": time.time(), "n_buckets": 3, "bucket_spacing_s": 1.5},
    )
    stack.redis.sadd(keys.ROOMS, "rec")
    mic = write_wav(output_dir / "ann-440.wav", tone(440, 2.0, SAMPLE_RATE), SAMPLE_RATE)
    with sync_playwright() as pw:
        browsers = [launch(pw, mic), launch(pw)]
        try:
            ann, ben = (b.new_page(viewport={"width": 1180, "height": 900}) for b in browsers)
            errors = console_errors(ann, ben)
            join(ann, stack.base, "rec", "Ann", "singer")
            join(ben, stack.base, "rec", "Ben", "spectator")
            ann.click("#lead")
            poll(ann, "bbDebug.state.leader === bbDebug.me.singer_id", "Ann leads")
            poll(ann, "!document.querySelector('#recording-options').hidden", "Ann's options")
            assert ben.is_hidden("#recording-options")
            assert not ann.is_checked("#rec-stems") and not ann.is_checked("#rec-clicks")

            ann.check("#rec-stems")
            poll(ann, "bbDebug.state.song.recording.stems === true", "stems chosen")
            ann.check("#rec-clicks")
            poll(ann, "bbDebug.state.song.recording.metronome === true", "clicks chosen")
            ann.uncheck("#rec-clicks")
            poll(ann, "bbDebug.state.song.recording.metronome === false", "clicks off again")
            poll(
                ben,
                "document.querySelector('#recording-summary').textContent.includes('stems')",
                "Ben sees what is recorded",
            )
            assert ann.is_checked("#rec-stems") and not ann.is_checked("#rec-clicks")
            assert ben.inner_text("#recording-summary") == (
                "Recordings of the next songs hold the mix, and each singer's voice alone (stems)."
            )

            ann.click("#start")
            poll(ann, "bbDebug.state.song.running", "the song runs")
            poll(ann, "document.querySelector('#rec-stems').disabled", "no changes mid-song")
            assert ann.is_disabled("#rec-clicks") and ann.is_visible("#recording-options-hint")
            assert ben.inner_text("#recording-summary").startswith("This song's recording holds")
            ann.wait_for_timeout(2500)  # Ann sings
            ann.click("#stop")
            poll(ben, "bbDebug.state.song.running === false", "the song ended")
            poll(
                ben,
                "document.querySelector('#recordings-status').textContent.includes('Song 1 ended')",
                "the page waits for the recording",
            )
            # Nobody presses Refresh: the pages look until the recorder has saved it.
            for page in (ann, ben):
                poll(page, "document.querySelectorAll('#recordings li').length === 1", "it", 90)
            assert not ann.is_disabled("#rec-stems")
            [sidecar_path] = (root / "rec").glob("*.json")
            sidecar = json.loads(sidecar_path.read_text())
            assert [s["name"] for s in sidecar["stems"]] == ["Ann"]
            [row] = ben.evaluate(ROWS)
            assert row["song"] == "Song 1" and row["leader"] == "led by Ann"
            assert [link[0] for link in row["links"]] == ["Mix (Ogg)", "FLAC", "Stems (zip)"]
            assert ben.inner_text("#recordings-status") == ""
            with ben.expect_download() as download:
                ben.click("#recordings a:text('Stems (zip)')")
            check_zip(Path(download.value.path()).read_bytes(), root / "rec", sidecar)
            with zipfile.ZipFile(download.value.path()) as archive:
                stem = archive.read(sidecar["stems"][0]["file"])
            sung, rate = sf.read(io.BytesIO(stem), dtype="float32")
            assert rate == SAMPLE_RATE
            assert tone_level(sung, 440, SAMPLE_RATE) > 0.05  # her voice, alone
            ann.screenshot(path=str(output_dir / "ann.png"), full_page=True)
            audit(ann, require_axe(), output_dir / "axe-leader.json")
            ben.screenshot(path=str(output_dir / "ben.png"), full_page=True)
            assert not errors, errors
        finally:
            for b in browsers:
                b.close()
