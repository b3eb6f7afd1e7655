"""Redis clients from REDIS_URL: one server, a Sentinel-managed master, or a Redis Cluster.

- `redis://`, `rediss://`, `unix://`: one server (redis-py's own URL forms).
- `redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]`: the master Sentinel names;
  after a failover the client asks the sentinels again and reconnects to the new master.
- `redis+cluster://[:password@]host:port[,host:port...]`: a Redis Cluster (every queue's keys share a hash
  tag, so each queue's scripts run in one slot).
The `rediss+` forms of the last two use TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.maint_notifications import MaintNotificationsConfig

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class RedisTarget:
    """What a REDIS_URL names: `kind` is "server", "sentinel" or "cluster"."""

    kind: str
    url: str
    hosts: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_url(url: str) -> RedisTarget:
    """The target of a Redis URL, or a ValueError saying what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {', '.join(s + '://' for s in SCHEMES)}")
    if scheme in ("redis", "rediss", "unix"):
        if not rest.split("?", 1)[0].strip("/"):
            raise ValueError("no host (or socket path)")
        return RedisTarget("server", url)
    kind = scheme.split("+", 1)[1]
    credentials, _, address = rest.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    hostlist, _, path = address.partition("/")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{item.strip()!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    service, db = "", 0
    if kind == "sentinel":
        if not parts:
            raise ValueError("no service name; expected redis+sentinel://host:port[,host:port]/service_name[/db]")
        service = parts[0]
        if len(parts) > 1:
            if not parts[1].isdigit():
                raise ValueError(f"database {parts[1]!r} is not a number")
            db = int(parts[1])
    elif parts:
        raise ValueError("a cluster URL takes no path (a Redis Cluster has only database 0)")
    return RedisTarget(
        kind,
        url,
        hosts,
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
        scheme.startswith("rediss"),
    )


def async_client(
    url: str, *, max_connections: int = 50, timeout: float = 10, socket_connect_timeout: float = 5
) -> redis.asyncio.Redis:
    """An asyncio client. One server: a blocking pool (a burst waits up to `timeout` for a free connection
    instead of failing). A cluster client is returned typed as `Redis`: it offers the commands we use.

    Maintenance notifications (Redis Cloud's push messages before a node moves) are off: while they are on,
    redis-py 8's pool hands out a connection the server closed (Redis restarted) without checking it, and with
    no retry the first command on each such connection failed with "Connection closed by server"."""
    target = parse_url(url)
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if target.kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            target.hosts,
            sentinel_kwargs={"socket_connect_timeout": socket_connect_timeout},
            socket_connect_timeout=socket_connect_timeout,
            ssl=target.tls,
        )
        master = sentinel.master_for(target.service, db=target.db, max_connections=max_connections, **common)
        return cast(redis.asyncio.Redis, master)
    if target.kind == "cluster":
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in target.hosts]
        cluster = redis.asyncio.cluster.RedisCluster(
            startup_nodes=nodes,
            max_connections=max_connections,
            socket_connect_timeout=socket_connect_timeout,
            ssl=target.tls,
            **common,
        )
        return cast(redis.asyncio.Redis, cluster)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=socket_connect_timeout,
        maint_notifications_config=common["maint_notifications_config"],
    )
    return redis.asyncio.Redis.from_pool(pool)


def sync_client(url: str, *, socket_timeout: float | None = None, socket_connect_timeout: float = 5) -> redis.Redis:
    """A blocking client (for threads apart from the event loop, e.g. the lease keeper)."""
    target = parse_url(url)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    timeouts: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout}
    if target.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            target.hosts, sentinel_kwargs=dict(timeouts), ssl=target.tls, **timeouts
        )
        return cast(redis.Redis, sentinel.master_for(target.service, db=target.db, **auth))  # type: ignore[no-untyped-call]
    if target.kind == "cluster":
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in target.hosts]  # type: ignore[no-untyped-call]
        cluster = redis.cluster.RedisCluster(startup_nodes=nodes, ssl=target.tls, **auth, **timeouts)
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(url, **timeouts)


def is_cluster(client: Any) -> bool:
    """Whether `client` talks to a Redis Cluster (a command's keys must then share one slot)."""
    return isinstance(client, redis.asyncio.cluster.RedisCluster | redis.cluster.RedisCluster)
