"""Which Redis and which database a command uses: REDIS_URL / DATABASE_URL when either is set; else those of the
`emulator up` running next to the manifest (its `.emulator/state.json`), so that `runtime worker` or `runtime runs`
in the emulator's folder work on the emulator's app, not on a Redis at 127.0.0.1:6379 and a runs.db of their own."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runtime.errors import ConfigError
from runtime.settings import Settings, get_settings

FIX = "set REDIS_URL and DATABASE_URL to the app's, or run this in the folder where `emulator up` runs"


def command_settings(manifest: str, *, need_app: bool) -> tuple[Settings, str]:
    """The command's settings, and where their Redis and database come from (for its start line).

    With neither variable set and no emulator state next to the manifest, the defaults, unless `need_app`
    (the inspector: there is no app to inspect). A state left by an emulator that has stopped is a ConfigError:
    its folder is a local one, where the defaults would quietly start a second, empty app."""
    if os.environ.get("REDIS_URL") or os.environ.get("DATABASE_URL"):
        given = [name for name in ("REDIS_URL", "DATABASE_URL") if os.environ.get(name)]
        unset = [f"{name} is not set: the default" for name in ("REDIS_URL", "DATABASE_URL") if name not in given]
        return get_settings(), "; ".join([f"from {' and '.join(given)}", *unset])
    path = Path(manifest).resolve().parent / ".emulator" / "state.json"
    if not path.exists() and not need_app:
        return get_settings(), "the defaults: REDIS_URL and DATABASE_URL are not set and no emulator runs here"
    try:
        state = json.loads(path.read_text())
        pid, redis_url, database_url = int(state["pid"]), str(state["redis_url"]), str(state["database_url"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"no app to inspect: REDIS_URL and DATABASE_URL are not set and no emulator runs here; {FIX}"
        ) from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ConfigError(
            f"the emulator of {path.parent.parent} is not running (pid {pid} is gone); start it with `emulator up`, "
            "or set REDIS_URL and DATABASE_URL to the app's"
        ) from None
    except PermissionError:
        pass  # alive, another user's
    settings = get_settings().model_copy(update={"redis_url": redis_url, "database_url": database_url})
    return settings, f"those of the emulator running in {path.parent.parent}, pid {pid}"
