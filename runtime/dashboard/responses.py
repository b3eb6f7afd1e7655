"""What the dashboard's answers share: JSON with secrets masked, errors as `{"error": ...}`, and the
`limit` query parameter of its lists."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from runtime.redaction import redact
from runtime.web.errors import FastJSONResponse


class RedactedJSONResponse(FastJSONResponse):
    """JSON with every password in a URL and every configured secret masked."""

    def render(self, content: Any) -> bytes:
        body = super().render(content)
        redacted = redact(body.decode())
        return redacted.encode()


def _error(status: int, message: str) -> Response:
    return RedactedJSONResponse({"error": message}, status_code=status)


def _limit(request: Request, default: int = 100) -> int:
    try:
        return max(1, min(1000, int(request.query_params.get("limit", default))))
    except ValueError:
        raise HTTPException(400, "limit must be a whole number from 1 to 1000") from None
