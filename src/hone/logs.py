"""Log records made safe for a terminal: control characters in them are escaped, not written raw.

hone serve logs text a client controls (a path, an input name inside an error message). Written
raw, an ANSI escape in it would recolour or rewrite the operator's terminal, and a newline would
forge a log line. ``EscapeControl`` is a logging filter for the handlers hone installs: it formats
the record's message and its traceback once, escapes C0/C1 control characters (as ``repr`` writes
them, ``\\x1b``), and keeps the traceback's own line breaks.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with each control character written as its escape (``\\x1b``, ``\\n``, ...)."""
    pattern = _CONTROL_BUT_LINES if keep_newlines else _CONTROL
    return pattern.sub(lambda match: repr(match.group())[1:-1], text)


class EscapeControl(logging.Filter):
    """Escapes control characters in every record's message and traceback (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = escape_control(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = escape_control(record.exc_text, keep_newlines=True)
        return True
