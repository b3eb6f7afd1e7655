"""README's commands as a newcomer on Linux types them: the first installs what the emulator needs (no extras: the
dev extra is the test tools, Playwright and schemathesis among them, hundreds of MB), and none is macOS-only.
tests/install/test_bare_install.py runs `emulator up` on exactly that install."""

from __future__ import annotations

import re

from tests.conftest import ROOT

BLOCKS = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def test_the_first_command_installs_no_extras_and_starts_the_emulator() -> None:
    first = BLOCKS[0].strip()
    assert first == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/emulator up", first


def test_no_command_is_macos_only() -> None:
    lines = [line.strip() for block in BLOCKS for line in block.splitlines()]
    assert not [line for line in lines if re.match(r"(open|pbcopy|brew)\b", line)], lines
