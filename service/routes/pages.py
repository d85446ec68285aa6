"""Browser pages: the interactive API docs at GET /docs and the playground at GET /playground.

Each page is one HTML file in `service/web/` and its static files, served by the service itself
at `<page>/static/`: nothing is loaded from anywhere else, so the pages work on a network without
internet access. Swagger UI's files are vendored, pinned and checksummed in
`service/web/swagger-ui/` with their licence. The pages run no inline script or style, so their
Content-Security-Policy allows scripts, styles, images and requests from the service only.

The pages and their files are open without an API key (`service.auth`): they hold no data, and
every API call they make carries the key typed into them, as any client's would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request, Response
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from service.routes.deps import DirectRoute

WEB = Path(__file__).resolve().parent.parent / "web"
PAGE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # Swagger UI's stylesheet draws its icons from data: URIs
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


@dataclass(frozen=True, slots=True)
class Page:
    """A page: its path, its HTML file and the folders of `service/web` its files come from."""

    path: str
    html: str
    folders: tuple[str, ...]


DOCS = Page("/docs", "docs.html", ("docs", "swagger-ui", "shared"))
PLAYGROUND = Page("/playground", "playground.html", ("playground", "shared"))


class FilesMount(Mount):
    """A page's files; the mount names itself as the request's route, so that the request
    metrics count them under `<page>/static` rather than with unknown paths."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, with this mount as the route."""
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def install_pages(app: FastAPI, *, playground: bool) -> None:
    """Serve the docs page, and the playground unless it is off (then /playground is a 404)."""
    for page in (DOCS, PLAYGROUND) if playground else (DOCS,):
        _serve(app, page)


def _serve(app: FastAPI, page: Page) -> None:
    """The page's HTML at its path (outside the OpenAPI document), its files below it."""
    html = (WEB / page.html).read_bytes()

    async def endpoint(request: Request) -> Response:
        return Response(
            html,
            media_type="text/html; charset=utf-8",
            headers={"content-security-policy": PAGE_CSP},
        )

    app.router.add_api_route(
        page.path,
        endpoint,
        methods=["GET"],
        include_in_schema=False,
        route_class_override=DirectRoute,
    )
    folders = [("service", f"web/{folder}") for folder in page.folders]
    app.router.routes.append(FilesMount(f"{page.path}/static", StaticFiles(packages=folders)))
