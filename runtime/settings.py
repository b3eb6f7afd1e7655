"""Settings: every knob a deployed process reads from its environment, in one pydantic-settings class."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import quote, urlparse

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.errors import ConfigError
from runtime.queue.redis_client import parse_url
from runtime.redaction import redact


class Settings(BaseSettings):
    """Read from the environment (and a `.env` file beside the manifest, if any)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://[:password@]host:port/db, redis+sentinel://... or redis+cluster://...",
    )
    database_url: str = Field("sqlite+aiosqlite:///runs.db", description="sqlite:///path or postgresql://...")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] | None = Field(None, description="json by default when ENV=production")
    env: Literal["development", "production"] = "development"
    dashboard_token: str | None = None
    redis_password: str | None = Field(None, description="Redis's password when REDIS_URL carries none (a Secret)")
    shutdown_timeout: float = Field(30.0, gt=0, description="seconds a stopping worker lets running tasks finish")
    worker_health_port: int = Field(8001, ge=0, le=65535, description="worker's /health for probes; 0 turns it off")
    health_host: str = Field("0.0.0.0", description="address the worker's and scheduler's /health listen on")
    result_ttl: float = Field(86400.0, gt=0, description="seconds a task's result is kept in Redis")
    lease_seconds: float = Field(10.0, gt=0, description="a dead worker's tasks run again after this long")
    briefing_source_url: str | None = None
    max_body_size: int = Field(10 * 2**20, gt=0, description="bytes; a larger request body gets 413")
    request_timeout: float = Field(
        30.0, gt=0, description="seconds a client has to send a request's headers, and again its body (else 408)"
    )
    openapi: bool = Field(True, description="serve GET /openapi.json and GET /docs on the web process")
    max_arguments_size: int = Field(1_048_576, gt=0, description="bytes a run's arguments may take as JSON")
    max_steps: int = Field(1000, gt=0, description="steps a durable run may save")
    max_step_size: int = Field(4 * 2**20, gt=0, description="bytes one step's result may take as JSON")
    max_steps_size: int = Field(32 * 2**20, gt=0, description="bytes all of a run's step results may take")
    max_retry_after: int = Field(
        100, ge=0, description="times one run may raise RetryAfter; past that the run fails with the reason"
    )
    startup_timeout: float = Field(60.0, ge=0, description="seconds a process waits for Redis and the database")
    reconcile_seconds: float = Field(10.0, gt=0, description="seconds between passes that settle lost runs")
    event_dedupe_seconds: float = Field(
        86400.0, gt=0, description="seconds an event id is remembered: the same id sent again within them is ignored"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if value.partition("://")[0] in ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
            try:
                parse_url(value)
            except ValueError as exc:
                raise ValueError(
                    f"REDIS_URL={redact(value)!r} is not a Sentinel or Cluster URL ({exc}); expected "
                    "redis+sentinel://host:port[,host:port]/service_name[/db] or redis+cluster://host:port[,host:port]"
                ) from None
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.hostname or parsed.path):
            raise ValueError(
                f"REDIS_URL={redact(value)!r} is not a Redis URL; expected redis://host:port/db (e.g. redis://localhost:6379/0)"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme in ("sqlite", "sqlite+aiosqlite") and _in_memory(value):
            raise ValueError(
                f"DATABASE_URL={value!r} is an in-memory database, private to one process: the web, worker, "
                "scheduler and dashboard would each see their own runs; use a file, e.g. sqlite:///runs.db"
            )
        if scheme in ("sqlite", "sqlite+aiosqlite"):
            return value.replace("sqlite://", "sqlite+aiosqlite://", 1) if scheme == "sqlite" else value
        if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        raise ValueError(
            f"DATABASE_URL={redact(value)!r} is not a supported database URL; expected sqlite:///path/runs.db "
            "or postgresql://user:password@host:5432/db"
        )

    @model_validator(mode="after")
    def _redis_password(self) -> Settings:
        # REDIS_PASSWORD (e.g. from a Kubernetes Secret) joins a REDIS_URL that has no password of its own
        scheme, _, rest = self.redis_url.partition("://")
        if self.redis_password and scheme in _PASSWORD_SCHEMES and urlparse(self.redis_url).password is None:
            user, _, address = rest.rpartition("@")
            self.redis_url = f"{scheme}://{user}:{quote(self.redis_password, safe='')}@{address}"
        return self

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("json" if self.env == "production" else "text")


_PASSWORD_SCHEMES = ("redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")


def _in_memory(sqlite_url: str) -> bool:
    database = sqlite_url.split("://", 1)[1].removeprefix("/").split("?", 1)
    return database[0] in ("", ":memory:") or "mode=memory" in sqlite_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. A malformed value is a ConfigError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "setting"
            message = error["msg"].removeprefix("Value error, ")
            lines.append(message if name in message else f"{name}: {message}")
        raise ConfigError("; ".join(lines)) from None
