"""The emulator loads apps through `load_application` too: a handler module that exits while being
imported is a problem it serves (503 naming it), not a crashed app process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Process
from tests.emulator.test_up import make_app, start_emulator


def test_a_module_calling_sys_exit_on_import_is_served_as_the_error(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    app = make_app(tmp_path / "app")
    emulator = start_emulator(spawn, app)
    source = app / "app_mod.py"
    good = source.read_text()

    errors = emulator.count("reload failed")
    source.write_text("import sys\nsys.exit(3)\n" + good)
    emulator.wait_for_count("reload failed", errors + 1)
    response = httpx.get(f"{emulator.web}/hello", timeout=10)
    assert response.status_code == 503, response.text
    assert "importing 'app_mod' called sys.exit(3); a module must not exit when imported" in response.text
    assert emulator.process.process.poll() is None

    reloads = emulator.count("reloaded")
    source.write_text(good)
    emulator.wait_for_count("reloaded", reloads + 1)
    assert httpx.get(f"{emulator.web}/hello", timeout=10).status_code == 200
