"""One-line text for consoles and JSONL: client errors arrive as multi-line, ANSI-coloured tracebacks."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Fault|Interrupt)\b: ")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape codes (colours)."""
    return _ANSI.sub("", text)


def first_line(text: str, limit: int = 300) -> str:
    """The first non-blank line of ``text`` without ANSI codes, at most ``limit`` characters."""
    lines = [ln.strip() for ln in strip_ansi(text).splitlines() if ln.strip()]
    return _cut(lines[0] if lines else "", limit)


def short_reason(text: str, limit: int = 300) -> str:
    """One line for a rejection reason: a traceback's last ``SomeError: message`` line (what
    happened), else the first line; without ANSI codes, at most ``limit`` characters."""
    lines = [ln.strip() for ln in strip_ansi(text).splitlines() if ln.strip()]
    raised = [ln for ln in lines if _RAISED.match(ln)]
    return _cut(raised[-1] if raised else (lines[0] if lines else ""), limit)


def _cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[:limit - 3] + "..."
