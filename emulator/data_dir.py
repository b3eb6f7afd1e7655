"""The emulator's private folder, `.emulator/` beside the manifest: the embedded Redis's AOF, the run store and
state.json (which holds REDIS_URL), so readable by its owner only and ignored by git."""

from __future__ import annotations

from pathlib import Path


def prepare_data_dir(root: Path) -> Path:
    """Create (or tighten) `root/.emulator` and return it. Idempotent."""
    data = root / ".emulator"
    data.mkdir(mode=0o700, exist_ok=True)
    data.chmod(0o700)
    (data / ".gitignore").write_text("*\n")
    return data
