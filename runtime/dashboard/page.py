"""The dashboard's page and the scripts and styles it loads (static/, package data: no build step), with
the headers they are served with."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from runtime.dashboard.responses import _error

PAGE = Path(__file__).parent / "static" / "dashboard.html"
ASSETS = PAGE.parent  # the page's ES modules and style sheet, static/dashboard*.{js,css}: no build step
ICON = ASSETS / "dashboard-icon.svg"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "x-frame-options": "DENY",  # no other site may frame it (clickjacking its Replay and Delete buttons)
    "content-security-policy": "frame-ancestors 'none'",
}


async def asset(request: Request) -> Response:
    """One of the page's files, runtime/dashboard/static/dashboard*.js or .css (package data), by plain name only."""
    name = request.path_params["name"]
    path = ASSETS / name
    if "/" in name or not name.startswith("dashboard") or path.suffix not in ASSET_TYPES or not path.is_file():
        return _error(404, f"no dashboard asset named {name!r}")
    return FileResponse(path, media_type=ASSET_TYPES[path.suffix], headers=PAGE_HEADERS)


async def favicon(request: Request) -> Response:
    """/favicon.ico, which browsers ask for whatever the page links: the page's SVG icon (no 404 per load)."""
    return FileResponse(ICON, media_type=ASSET_TYPES[".svg"], headers={"cache-control": "max-age=86400"})
