"""GET /docs in headless Chromium with no network: every route listed, nothing from elsewhere,
and with keys on, the key typed into the page opens the document and Swagger's "Try it out"."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.service.browser.chromium import Tab
from tests.service.browser.conftest import BEARER, assert_clean, type_key
from tests.service.conftest import ServiceProcess

OPERATIONS = """[...document.querySelectorAll('.opblock')].map((block) => [
  block.querySelector('.opblock-summary-method').textContent,
  block.querySelector('.opblock-summary-path').dataset.path,
])"""
SWAGGER_TEXT = "document.getElementById('swagger-ui').innerText"
INFO = "#operations-operations-info_info_get"


def documented_operations(service: ServiceProcess, headers: dict[str, str]) -> list[list[str]]:
    """[METHOD, path] of every operation of the service's OpenAPI document, sorted."""
    spec = httpx.get(f"{service.url}/openapi.json", headers=headers, timeout=10).json()
    return sorted([method.upper(), path] for path, ops in spec["paths"].items() for method in ops)


def test_docs_list_every_route_with_nothing_from_elsewhere(
    tab: Tab, open_service: ServiceProcess, screenshots: Path
) -> None:
    expected = documented_operations(open_service, {})
    tab.open(f"{open_service.url}/docs")
    tab.wait_for(f"document.querySelectorAll('.opblock').length === {len(expected)}")
    assert sorted(tab.evaluate(OPERATIONS)) == expected
    assert {"/embed", "/similarity", "/nli", "/v1/embeddings", "/health"} <= {
        path for _, path in expected
    }
    assert_clean(tab, open_service)
    tab.screenshot(screenshots / "docs.png", max_height=1240)


def test_docs_take_the_api_key(tab: Tab, keyed_service: ServiceProcess) -> None:
    tab.open(f"{keyed_service.url}/docs")
    tab.wait_for(f"{SWAGGER_TEXT}.includes('Unauthorized')")  # the document is behind the key
    assert tab.evaluate("document.getElementById('key-hint').hidden") is False
    type_key(tab)  # the page reloads with the key
    expected = documented_operations(keyed_service, BEARER)
    tab.wait_for(f"document.querySelectorAll('.opblock').length === {len(expected)}")
    assert sorted(tab.evaluate(OPERATIONS)) == expected
    tab.wait_for("!!document.querySelector('.btn.authorize.locked')")  # Swagger has the key too
    for step in (".opblock-summary-control", ".try-out__btn", ".execute"):
        tab.wait_for(f"!!document.querySelector('{INFO} {step}')")
        tab.evaluate(f"document.querySelector('{INFO} {step}').click()")
    status = f"document.querySelector('{INFO} .live-responses-table tbody .response-col_status')"
    assert tab.wait_for(f"{status} && {status}.innerText.trim()") == "200"
    assert_clean(tab, keyed_service)
