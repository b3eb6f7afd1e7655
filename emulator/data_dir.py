"""The emulator's private folder, `.emulator/` beside the manifest: the embedded Redis's AOF, the run store and
state.json (which holds REDIS_URL), so readable by its owner only and ignored by git."""

from __future__ import annotations

import json
import os
from pathlib import Path


def prepare_data_dir(root: Path) -> Path:
    """Create (or tighten) `root/.emulator` and return it. Idempotent."""
    data = root / ".emulator"
    data.mkdir(mode=0o700, exist_ok=True)
    data.chmod(0o700)
    (data / ".gitignore").write_text("*\n")
    return data


def running_emulator(root: Path) -> str | None:
    """The dashboard URL of the emulator running in `root` (its state.json names a live process), else None."""
    try:
        state = json.loads((root / ".emulator" / "state.json").read_text())
        pid, dashboard = int(state["pid"]), str(state["dashboard"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return f"{dashboard}, pid {pid}"
