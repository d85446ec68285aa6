"""Headless Chromium driven over the Chrome DevTools Protocol, for the browser tests.

Debian's `chromium` runs on a temporary profile with every host name but 127.0.0.1 unresolvable
(`--host-resolver-rules`), as on a network without internet access. A `Tab` records every
request the page makes, every script error and every Content-Security-Policy violation, and
waits for what it expects by polling the page: no fixed sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

EXECUTABLES = ("chromium", "chromium-browser")
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 60.0
FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests may run as root (CI)
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
)
# Runs in every page before its own scripts (DevTools scripts are not subject to the page's CSP).
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def find_chromium() -> str | None:
    """The Chromium executable on PATH, if any."""
    for name in EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Tab:
    """One page target: navigate, evaluate, wait, screenshot; what it requested and broke."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.requests: list[str] = []
        self.errors: list[str] = []
        self._next_id = 0
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH_VIOLATIONS)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result; events met meanwhile are recorded."""
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self._record(message)

    def _record(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll until `expression` is truthy in the page; its value. Fails with the last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression!r} still {value!r} after {timeout} s")

    def open(self, url: str) -> None:
        """Load `url` and wait until the document and its files have loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def violations(self) -> list[str]:
        """The Content-Security-Policy violations the current page reported."""
        return list(self.evaluate("window.__violations || []"))

    def screenshot(self, path: Path, max_height: int | None = None) -> None:
        """A PNG of the page, as tall as its content or `max_height` pixels, at `path`."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        height = min(height, max_height or height)
        clip = {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.contextmanager
def chromium(executable: str) -> Iterator[Tab]:
    """A headless Chromium with one tab; the browser and its profile are removed afterwards.

    It runs in a process group of its own, ended whole: its helper processes (renderer, GPU,
    zygote) may outlive the browser process for a moment and still write to the profile.
    """
    with tempfile.TemporaryDirectory(
        prefix="gensen-chromium-", ignore_cleanup_errors=True
    ) as profile:
        process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = _devtools_port(Path(profile), process)
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(t for t in targets if t["type"] == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
                yield Tab(socket)
        finally:
            _end_group(process)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the browser's process group, SIGKILL to what is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """The DevTools port Chromium chose, read from the file it writes in its profile."""
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before it listened")
        if active.exists() and active.read_text().strip():
            return int(active.read_text().split()[0])
        time.sleep(0.1)
    raise TimeoutError(f"chromium did not listen within {START_TIMEOUT_S} s")
