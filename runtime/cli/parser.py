"""The argument parser of `runtime` and `emulator`: a usage error is one line on stderr and exit 1, like every
other error the commands answer; and what a port is."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are `error: ...` in one line (argparse prints the usage and exits 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(1)


def port(text: str) -> int:
    """A TCP port: 0 to 65535 (0: any free one). A larger number would wrap around in the socket call."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: a port is a number from 0 to 65535")
    return value


def positive(text: str) -> int:
    """A whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value
