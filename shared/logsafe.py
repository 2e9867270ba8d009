"""Log lines that a sender cannot forge.

Event ids, hostnames and Defender's error messages reach log lines. A value with a newline and a
fake prefix (``"\\n2026-03-20 CRITICAL ..."``) would otherwise print a standalone forged line, and a
NUL or an ANSI escape would reach the log raw. Rather than trusting every call site to escape
every argument, the record factory escapes control characters in the *formatted* message and in
an exception's own text (the traceback's frames are our code and keep their newlines), for every
logger of the process: one mechanism, nothing to forget.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def neutralise(text: str) -> str:
    r"""Control characters as visible escapes: a newline becomes ``\n``, NUL ``\x00``."""

    def escape(m: re.Match[str]) -> str:
        ch = m.group(0)
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
        return named or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")

    return _CONTROL.sub(escape, text)


class SafeRecord(logging.LogRecord):
    """A LogRecord whose message and exception text are single, honest lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.exc_info and self.exc_info[1] is not None:
            exc = self.exc_info[1]
            frames = "".join(traceback.format_tb(exc.__traceback__))
            last = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
            self.exc_text = f"Traceback (most recent call last):\n{frames}{neutralise(last)}"

    def getMessage(self) -> str:
        return neutralise(super().getMessage())


def install() -> None:
    """Make every record of this process a SafeRecord (idempotent; call once per entry point)."""
    if logging.getLogRecordFactory() is not SafeRecord:
        logging.setLogRecordFactory(SafeRecord)
