"""Redaction: secrets (passwords in URLs, the dashboard token) hidden from every text we log or store.

`redact(text)` replaces the password of any URL-looking `scheme://user:password@host` with `***`, and
any configured secret (DASHBOARD_TOKEN, REDIS_PASSWORD, the passwords in REDIS_URL and DATABASE_URL) that appears as is.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from urllib.parse import unquote, urlsplit

MASK = "***"
# scheme://user:password@ : the password runs to the last '@' before the host (unencoded '@'s included)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"<>]*):(?P<password>[^\s/'\"<>]*)@")
# environment variables whose value is a secret, or a URL whose password is one
_SECRET_VARIABLES = ("DASHBOARD_TOKEN", "REDIS_PASSWORD")
_URL_VARIABLES = ("REDIS_URL", "DATABASE_URL", "BRIEFING_SOURCE_URL")
_MIN_SECRET = 4  # shorter values would mask ordinary words; a URL's password is masked by the pattern anyway

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Also hide `value` (a token, or a URL whose password to hide) wherever it appears."""
    if value:
        _registered.add(value)
        _secrets.cache_clear()


def _password_of(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


@lru_cache(maxsize=8)
def _secrets(environment: tuple[str | None, ...], registered: frozenset[str]) -> tuple[str, ...]:
    found: set[str] = set()
    tokens = environment[: len(_SECRET_VARIABLES)]
    urls = environment[len(_SECRET_VARIABLES) :]
    found.update(token for token in tokens if token)
    for url in urls:
        found.update(_password_of(url) if url else [])
    for value in registered:
        found.update(_password_of(value) if "://" in value else [value])
    # longest first, so a secret that contains another is masked whole
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def known_secrets() -> tuple[str, ...]:
    """The configured secrets present in this process's environment (and registered ones)."""
    environment = tuple(os.environ.get(name) for name in (*_SECRET_VARIABLES, *_URL_VARIABLES))
    return _secrets(environment, frozenset(_registered))


def _mask(match: re.Match[str]) -> str:
    return f"{match['head']}:{MASK}@" if match["password"] else match[0]


def redact(text: str) -> str:
    """`text` with URL passwords and configured secrets replaced by `***`."""
    if "://" in text:
        text = _USERINFO.sub(_mask, text)
    for secret in known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    return text
