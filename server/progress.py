"""One line of progress per round on stdout (Flower's own log is kept at WARNING by the runner).

When stdout is a terminal, a one-line bar with the rounds done and an ETA sits below the last
line (redrawn in place with ``\\r``; the next line clears it first).  It shows while rounds are
left, so nothing of it remains once the last round has trained.  Elsewhere (a pipe, a file, the
tests) the output is the plain lines only.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

CLEAR_LINE = "\r\x1b[K"  # back to column 0, erase to the end of the line
BAR_WIDTH = 30  # characters of the bar itself, at most


class Progress:
    """Prints ``round r/T`` lines with the round's key numbers (and, on a terminal, the bar)."""

    def __init__(self, num_rounds: int, stream: TextIO | None = None, bar: bool | None = None) -> None:
        """``bar``: draw the progress bar; default: when ``stream`` is a terminal (and ``TERM`` is not ``dumb``)."""
        self.num_rounds = num_rounds
        self.stream = stream or sys.stdout
        self.bar = is_terminal(self.stream) if bar is None else bar
        self.rounds_done = 0  # rounds whose training has finished
        self.t0 = time.monotonic()

    def _print(self, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        line = f"[fedmeta {elapsed:7.1f}s] {text}"
        if not self.bar:
            print(line, file=self.stream, flush=True)
            return
        below = ""
        if 0 < self.rounds_done < self.num_rounds:
            below = bar_line(self.rounds_done, self.num_rounds, elapsed, shutil.get_terminal_size().columns)
        self.stream.write(f"{CLEAR_LINE}{line}\n{below}")
        self.stream.flush()

    def train(self, server_round: int, tasks: list[int], means: dict[str, float], rejected: int) -> None:
        self.rounds_done = max(self.rounds_done, server_round)
        extra = f"  rejected {rejected}" if rejected else ""
        self._print(f"round {server_round:>4}/{self.num_rounds}  tasks {tasks}  "
                    f"train-return {means.get('train-return', float('nan')):8.3f}  "
                    f"prox-distance {means.get('prox-distance', float('nan')):6.3f}{extra}")

    def evaluate(self, server_round: int, rows: list[dict[str, float | int]]) -> None:
        """The training tasks' personalized return: exact where every task has one (tabular families),
        else the Monte-Carlo estimate; ``*`` marks a task without a personalized policy of its own."""
        exact = all("personal-exact-return" in row for row in rows)
        key, kind = ("personal-exact-return", "exact") if exact else ("personal-return", "Monte-Carlo")
        parts = [_task_value(row, key) for row in rows]
        adapted = any(row.get("personal-adapted") for row in rows)
        note = "  (*: adapted from w, no personalized policy yet)" if adapted else ""
        self._print(f"eval  {server_round:>4}/{self.num_rounds}  personal {kind} return: " + ", ".join(parts) + note)

    def meta_test(self, server_round: int, curve: list[float]) -> None:
        """The held-out tasks' mean Monte-Carlo return after 0..k adaptation steps."""
        steps = "  ".join(f"{j}:{value:.3f}" for j, value in enumerate(curve))
        self._print(f"test  {server_round:>4}/{self.num_rounds}  held-out Monte-Carlo return after k adaptation "
                    f"steps  {steps}")


def _task_value(row: dict[str, float | int], key: str) -> str:
    """``t<id> <value>`` (``t<id>*`` when adapted from w), with ``(<n>% opt)`` where the optimum is known."""
    value = float(row[key])
    text = f"t{row['task-id']}{'*' if row.get('personal-adapted') else ''} {value:.3f}"
    if "optimal-return" in row and key == "personal-exact-return":
        text += f" ({100 * value / float(row['optimal-return']):.0f}% opt)"
    return text


def is_terminal(stream: TextIO) -> bool:
    """``stream`` is an interactive terminal that understands ``\\r`` and ANSI erase (``TERM`` not ``dumb``)."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def bar_line(done: int, total: int, elapsed: float, columns: int) -> str:
    """``[#####.....] 3/10 rounds  0:42 elapsed  ETA 1:38``, cut to fit ``columns`` - 1 characters
    (a line that wraps could not be redrawn in place); the ETA extrapolates the mean round time."""
    eta = elapsed / done * (total - done) if done else 0.0
    text = f" {done}/{total} rounds  {clock(elapsed)} elapsed  ETA {clock(eta)}"
    width = min(BAR_WIDTH, columns - 1 - len(text) - 2)
    if width >= 5:
        filled = round(width * done / total)
        text = f"[{'#' * filled}{'.' * (width - filled)}]{text}"
    return text.strip()[:max(columns - 1, 0)]


def clock(seconds: float) -> str:
    """``M:SS``, or ``H:MM:SS`` from an hour on."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
