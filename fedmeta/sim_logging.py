"""Where the simulation's log records go: everything to ``<run-dir>/fedmeta.log``, one line each
to the console.

Flower's engine logs a failed ClientApp twice at ERROR (the exception, then its traceback) and
colours its console output; the ServerApp reports the same failure again in one line.  The
console keeps one plain line per record and leaves out tracebacks and Flower's echo of the
exception object; the log file keeps them all.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from fedmeta.text import first_line

LOG_FILE = "fedmeta.log"
def is_detail(record: logging.LogRecord) -> bool:
    """A traceback, or Flower's ``log(ERROR, exception)`` echo: for the log file only."""
    return isinstance(record.msg, BaseException) or str(record.msg).lstrip().startswith("Traceback")


class OneLineConsole(logging.StreamHandler):  # type: ignore[type-arg]
    """``LEVEL: first line of the message``; detail records (:func:`is_detail`) are left out."""

    def __init__(self, log_file: Path | None = None) -> None:
        super().__init__(sys.stderr)
        self.addFilter(lambda record: not is_detail(record))
        self.hint = f" (more in {log_file})" if log_file else ""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        line = first_line(text)
        more = self.hint if line != text.strip() else ""
        return f"{record.levelname:<8}: {line}{more}"


def route_flower_logs(run_dir: Path, console_level: int = logging.WARNING) -> Path:
    """Send the ``flwr`` logger's records to ``run_dir/fedmeta.log`` (INFO and up) and to a
    :class:`OneLineConsole` (``console_level`` and up) instead of Flower's console handler."""
    path = run_dir / LOG_FILE
    logger = logging.getLogger("flwr")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s: %(message)s"))
    console = OneLineConsole(path)
    console.setLevel(console_level)
    logger.addHandler(file_handler)
    logger.addHandler(console)
    logger.setLevel(logging.INFO)
    return path
