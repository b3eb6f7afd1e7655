"""The dashboard's request guards: Host and Origin checks against DNS rebinding and cross-site requests,
JSON-only writes, and the DASHBOARD_TOKEN bearer token."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.dashboard.responses import _error

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def local_addresses(host: str, port: int) -> list[str]:
    """The `host:port` values a browser sends in `Host` for a server on `host` (and on loopback) at `port`."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if host:  # as printed by `emulator up`, 0.0.0.0 included (other pages are still refused by Origin)
        names.add(f"[{host}]" if ":" in host else host)
    return sorted(f"{name}:{port}" for name in names)


class RequestGuard:
    """Refuses (403) writes whose body is not JSON, and, with `allowed_hosts`, requests whose `Host` or
    `Origin` is not one of those `host:port` addresses."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str] | None = None) -> None:
        self.app = app
        self.hosts = {host.lower() for host in allowed_hosts} if allowed_hosts is not None else None
        self.origins = {f"http://{host}" for host in self.hosts or ()}

    def refusal(self, scope: Scope) -> str | None:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        if self.hosts is not None:
            host = headers.get("host", "").lower()
            if host not in self.hosts:
                return f"this dashboard answers only on {', '.join(sorted(self.hosts))}, not Host {host!r}"
            origin = headers.get("origin")
            if origin is not None and origin.lower() not in self.origins:
                return f"requests from other sites are refused (Origin {origin!r})"
            # a browser's no-cors GET from another page carries no Origin, but says where it comes from;
            # following a link to the dashboard (a navigation) stays allowed
            fetched_from = headers.get("sec-fetch-site", "same-origin")
            if fetched_from in ("cross-site", "same-site") and headers.get("sec-fetch-mode") != "navigate":
                return f"requests from other pages are refused (Sec-Fetch-Site {fetched_from!r})"
        if scope["method"] in WRITES:
            has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
            media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if has_body and media_type != "application/json":
                return "send the request body as JSON, with 'Content-Type: application/json'"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (reason := self.refusal(scope)) is not None:
            await _error(403, reason)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenAuth:
    """Requires DASHBOARD_TOKEN as a bearer token, a `token` query parameter or cookie."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    @staticmethod
    def given(request: Request) -> str:
        """The token the request carries: `Authorization: Bearer <token>` (any case), else the query or cookie."""
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            return value.strip() if scheme.lower() == "bearer" else ""
        return request.query_params.get("token", "") or request.cookies.get("dashboard_token", "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/health", "/health/live"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = self.given(request)
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            if scope["path"] in ("/", "/favicon.ico") or scope["path"].startswith("/assets/"):
                # the page, its scripts and icon hold no data; it asks for the token when the API answers 401
                await self.app(scope, receive, send)
                return
            response = _error(401, "this dashboard needs DASHBOARD_TOKEN: send 'Authorization: Bearer <token>'")
            await response(scope, receive, send)
            return
        if request.query_params.get("token"):

            async def send_with_cookie(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", []).append(
                        (b"set-cookie", f"dashboard_token={self.token}; HttpOnly; SameSite=Strict; Path=/".encode())
                    )
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)
