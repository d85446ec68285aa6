"""Fixtures of the browser tests: Debian's headless Chromium against real services on loopback.

Where Chromium is not installed the tests skip and say how to install it. Screenshots go to
pytest's temporary folder; with `GENSEN_SCREENSHOTS=DIR` they go to DIR instead, and the pages
serve the shipped bundle (models/gensen-base) as the README shows them (`make screenshots`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.settings import DEFAULT_BUNDLE
from tests.service.browser.chromium import Tab, chromium, find_chromium
from tests.service.conftest import ServiceProcess

KEY = "gensen-browser-test-key"
BEARER = {"Authorization": f"Bearer {KEY}"}
MAX_INPUT_CHARS = 80  # of the keyed service: a longer sentence is the API's 413
SCREENSHOTS = "GENSEN_SCREENSHOTS"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Chromium's executable; the test skips where it is not installed."""
    found = find_chromium()
    if found is None:
        pytest.skip("chromium is not installed (as root: `make install-browser`)")
    return found


@pytest.fixture
def tab(chromium_path: str) -> Iterator[Tab]:
    """A tab of a new headless Chromium that resolves no host but 127.0.0.1."""
    with chromium(chromium_path) as opened:
        yield opened


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the screenshots go to."""
    folder = os.environ.get(SCREENSHOTS)
    if not folder:
        return tmp_path_factory.mktemp("screenshots")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def open_service(request: pytest.FixtureRequest) -> Iterator[ServiceProcess]:
    """The service without keys: the tests' tiny bundle, or the shipped one for the README."""
    if not os.environ.get(SCREENSHOTS):
        yield request.getfixturevalue("served")
        return
    service = ServiceProcess(DEFAULT_BUNDLE)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def keyed_service(tiny_bundle: Path) -> Iterator[ServiceProcess]:
    """The service with an API key required, and a small `--max-input-chars`."""
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    service = ServiceProcess(
        tiny_bundle,
        "--max-input-chars",
        str(MAX_INPUT_CHARS),
        env={"GENSEN_API_KEY_HASHES": digest},
    )
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def assert_only_own_host(requests: list[str], service: ServiceProcess) -> None:
    """Every request of the page went to the service itself (data: URIs are no request)."""
    own = urlsplit(service.url).netloc
    elsewhere = [
        url for url in requests if not url.startswith("data:") and urlsplit(url).netloc != own
    ]
    assert requests
    assert not elsewhere


def assert_clean(tab: Tab, service: ServiceProcess) -> None:
    """No script error, no Content-Security-Policy violation, no request to another host."""
    assert tab.errors == []
    assert tab.violations() == []
    assert_only_own_host(tab.requests, service)


def type_key(tab: Tab) -> None:
    """Type the API key into the page's bar and submit it."""
    tab.evaluate(
        f"document.getElementById('key-input').value = {KEY!r};"
        "document.getElementById('key').requestSubmit()"
    )
