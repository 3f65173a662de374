"""WebKitGTK (Safari's engine): Debian's MiniBrowser driven by ``WebKitWebDriver``
(``webkit2gtk-driver``) through selenium, under a private Xvfb. ``SE_OFFLINE``
keeps selenium from looking for a driver to download.

WebKitWebDriver has no init scripts: ``add_init_script`` scripts run right after
each navigation instead, before the test touches the page (the page reads
getUserMedia and WebCodecs only when the person joins, so that is early enough).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.webkitgtk.options import Options
from selenium.webdriver.webkitgtk.service import Service

from tests.engines.page import KEEP_ERRORS, require_program
from tests.support import missing

MINIBROWSER_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu")
MINIBROWSER_ARGS = (
    "--automation",
    "--enable-media-stream=true",
    "--enable-mock-capture-devices=true",
)


def minibrowser() -> str:
    """MiniBrowser from ``libwebkit2gtk-4.1-0``; skip, or fail in CI, when missing."""
    for base in MINIBROWSER_DIRS:
        path = Path(base) / "webkit2gtk-4.1" / "MiniBrowser"
        if path.is_file():
            return str(path)
    reason = (
        "WebKitGTK's MiniBrowser not found: run 'make test'"
        " (scripts/setup.sh installs webkit2gtk-driver)"
    )
    missing(reason)


@contextlib.contextmanager
def xvfb(log_dir: Path) -> Iterator[str]:
    """A private X server on a free display; yields its ``DISPLAY``."""
    binary = require_program("Xvfb", "xvfb")
    read_fd, write_fd = os.pipe()
    log = (log_dir / "xvfb.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as reader:
            number = reader.readline().strip()
        assert number, f"Xvfb did not start: {(log_dir / 'xvfb.log').read_text()}"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class WebKitPage:
    """The MiniBrowser window of one WebKitWebDriver session."""

    engine = "webkit"

    def __init__(self, driver: webdriver.WebKitGTK) -> None:
        self.driver = driver
        self.init_scripts: list[str] = [KEEP_ERRORS]

    def add_init_script(self, script: str) -> None:
        self.init_scripts.append(script)

    def goto(self, url: str) -> None:
        self.driver.get(url)
        for script in self.init_scripts:
            self.driver.execute_script(script)

    def js(self, expression: str) -> Any:
        text = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"Promise.resolve().then(() => ({expression}))"
            ".then((v) => done(JSON.stringify(v === undefined ? null : v)),"
            " (e) => done(JSON.stringify({__error: String(e)})));"
        )
        value = json.loads(text)
        if isinstance(value, dict) and "__error" in value:
            raise RuntimeError(f"{expression}: {value['__error']}")
        return value

    def click(self, selector: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, selector).click()

    def fill(self, selector: str, text: str) -> None:
        element = self.driver.find_element(By.CSS_SELECTOR, selector)
        element.clear()
        element.send_keys(text)

    def screenshot(self, path: Path) -> None:
        self.driver.save_screenshot(str(path))

    def errors(self) -> list[str]:
        return [str(e) for e in self.js("window.__errors || []")]


@contextlib.contextmanager
def webkit(log_dir: Path, display: str, pulse_server: str) -> Iterator[WebKitPage]:
    """A MiniBrowser with a mock microphone under ``display``; yields its page."""
    driver_path = require_program("WebKitWebDriver", "webkit2gtk-driver")
    options = Options()
    options.binary_location = minibrowser()
    for arg in MINIBROWSER_ARGS:
        options.add_argument(arg)
    os.environ["SE_OFFLINE"] = "true"
    env = {**os.environ, "DISPLAY": display, "PULSE_SERVER": pulse_server, "SE_OFFLINE": "true"}
    service = Service(
        executable_path=driver_path, env=env, log_output=str(log_dir / "webkitdriver.log")
    )
    driver = webdriver.WebKitGTK(options=options, service=service)
    try:
        driver.set_window_size(1280, 800)
        driver.set_script_timeout(120)
        yield WebKitPage(driver)
    finally:
        driver.quit()
