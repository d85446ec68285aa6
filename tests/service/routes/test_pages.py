"""GET /docs and GET /playground over HTTP: served from the package with a strict
Content-Security-Policy, naming no other host, open without a key, and the playground's switch.
(tests/service/browser runs them in Chromium.)"""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest

from service.routes.pages import DOCS, PAGE_CSP, PLAYGROUND, WEB, Page
from tests.service.conftest import AppClient
from tests.service.test_auth import DIGEST
from tests.service.test_middleware import CSP, SECURITY

pytestmark = pytest.mark.anyio
SWAGGER_UI = WEB / "swagger-ui"
REFERENCE = re.compile(r'(?:src|href)="([^"]+)"')
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def files_of(page: Page) -> list[str]:
    """The paths of the files a page's HTML loads (all relative to the page's folder)."""
    html = (WEB / page.html).read_text()
    return [f"/{ref}" for ref in REFERENCE.findall(html) if "/static/" in ref]


def own_files() -> list[str]:
    """The pages' HTML, scripts and stylesheets written for this service (Swagger UI aside),
    relative to `service/web`."""
    paths = [*WEB.glob("*.html"), *WEB.glob("*/*.js"), *WEB.glob("*/*.css")]
    return sorted(str(p.relative_to(WEB)) for p in paths if SWAGGER_UI not in p.parents)


async def test_pages_and_their_files_are_served_with_a_strict_csp(
    client: httpx.AsyncClient,
) -> None:
    for page in (DOCS, PLAYGROUND):
        answer = await client.get(page.path)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert answer.headers["content-security-policy"] == PAGE_CSP
        assert SECURITY.items() <= dict(answer.headers).items()
        assert len(files_of(page)) >= 4
        for path in files_of(page):
            file = await client.get(path)
            assert file.status_code == 200, path
            assert file.headers["content-type"].startswith(TYPES[path[path.rfind(".") :]])
            assert file.headers["content-security-policy"] == CSP  # the API's: not a page
            assert SECURITY.items() <= dict(file.headers).items()
    assert "'unsafe-inline'" not in PAGE_CSP
    assert "'unsafe-eval'" not in PAGE_CSP


@pytest.mark.parametrize("path", own_files())
def test_pages_name_no_host_and_run_no_inline_script(path: str) -> None:
    text = (WEB / path).read_text(encoding="utf-8")
    assert "://" not in text  # every reference is relative: the service's own host
    if path.endswith(".html"):
        assert re.findall(r"<script(?![^>]*\ssrc=)", text) == []  # no inline script
        assert " style=" not in text
        assert all(ref.startswith(("docs", "playground")) for ref in REFERENCE.findall(text))


async def test_only_the_package_pages_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/redoc", "/docs/oauth2-redirect", "/docs/static/nothing.js"):
        assert (await client.get(path)).status_code == 404, path
    assert (await client.get("/docs/static/playground.js")).status_code == 404
    assert (await client.get("/playground/static/swagger-ui-bundle.js")).status_code == 404


async def test_the_playground_can_be_turned_off(app_client: AppClient) -> None:
    async with app_client(playground=False) as client:
        page = await client.get("/playground")
        script = await client.get("/playground/static/playground.js")
        docs = await client.get("/docs")
    assert page.status_code == script.status_code == 404
    assert page.json()["error_type"] == "not_found"
    assert page.headers["content-security-policy"] == CSP
    assert docs.status_code == 200


async def test_pages_open_without_a_key_the_api_not(app_client: AppClient) -> None:
    async with app_client(api_key_hashes=[DIGEST]) as client:
        for page in (DOCS, PLAYGROUND):
            assert (await client.get(page.path)).status_code == 200
            for path in files_of(page):
                assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/openapi.json")).status_code == 401
        assert (await client.get("/info")).status_code == 401
        assert (await client.get("/docsx")).status_code == 401  # only the pages themselves


def test_swagger_ui_is_the_pinned_release() -> None:
    sums = (SWAGGER_UI / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 5
    for line in sums:
        digest, name = line.split()
        assert hashlib.sha256((SWAGGER_UI / name).read_bytes()).hexdigest() == digest, name
    version = (SWAGGER_UI / "VERSION").read_text().strip()
    assert f'PACKAGE_VERSION:"{version}"' in (SWAGGER_UI / "swagger-ui-bundle.js").read_text()
    assert "Apache License" in (SWAGGER_UI / "LICENSE").read_text()


async def test_requests_for_pages_are_counted_by_page(client: httpx.AsyncClient) -> None:
    await client.get("/docs")
    await client.get("/docs/static/docs.js")
    await client.get("/playground/static/nothing.js")
    metrics = (await client.get("/metrics")).text
    assert 'gensen_requests_total{route="/docs",status="200"} 1.0' in metrics
    assert 'gensen_requests_total{route="/docs/static",status="200"} 1.0' in metrics
    assert 'gensen_requests_total{route="/playground/static",status="404"} 1.0' in metrics
