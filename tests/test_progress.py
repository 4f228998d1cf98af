"""The console progress of a run (server/progress.py): plain per-round lines when stdout is not a
terminal, and the same lines plus a one-line bar with an ETA below them on a terminal."""

from __future__ import annotations

import io
import os
import re

import pytest

from server.progress import CLEAR_LINE, Progress, bar_line, clock, is_terminal

MEANS = {"train-return": 1.5, "prox-distance": 0.25}


def drive(progress: Progress) -> None:
    """Three rounds: train, evaluate and meta-test lines in the order a strategy prints them."""
    for r in (1, 2, 3):
        progress.train(r, [0, 1], MEANS, 0)
        progress.evaluate(r, [{"task-id": 0, "personal-return": 0.5}])
        progress.meta_test(r, [0.1, 0.2])


def test_not_a_terminal_prints_the_plain_lines_only():
    stream = io.StringIO()
    drive(Progress(3, stream))
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == 9 and all(re.match(r"\[fedmeta +\d+\.\ds\] (round|eval |test )", line) for line in lines)
    assert "\r" not in text and "\x1b" not in text and "ETA" not in text and text.endswith("\n")


def test_on_a_terminal_a_bar_with_eta_follows_the_lines_until_the_last_round():
    stream = io.StringIO()
    drive(Progress(3, stream, bar=True))
    chunks = stream.getvalue().split(CLEAR_LINE)[1:]  # one chunk per printed line: the line, then the bar
    assert len(chunks) == 9
    lines, bars = zip(*(chunk.split("\n") for chunk in chunks))
    assert lines[0].endswith("round    1/3  tasks [0, 1]  train-return    1.500  prox-distance  0.250")
    assert all(re.search(r"1/3 rounds .* ETA \d+:\d\d$", bar) for bar in bars[:3])
    assert all("2/3 rounds" in bar for bar in bars[3:6])
    assert bars[6:] == ("", "", "")  # the last round has trained: nothing is left below the last line


def test_bar_fits_the_terminal_width_and_extrapolates_the_mean_round_time():
    assert bar_line(2, 8, 60.0, columns=80) == "[" + "#" * 8 + "." * 22 + "] 2/8 rounds  1:00 elapsed  ETA 3:00"
    narrow = bar_line(2, 8, 60.0, columns=40)
    assert not narrow.startswith("[") and narrow == "2/8 rounds  1:00 elapsed  ETA 3:00"
    assert len(bar_line(1, 3, 5.0, columns=10)) <= 9


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (59.6, "1:00"), (61, "1:01"), (3725, "1:02:05")])
def test_clock(seconds, text):
    assert clock(seconds) == text


def test_a_real_terminal_is_detected_and_a_dumb_one_is_not(monkeypatch):
    parent, child = os.openpty()
    with os.fdopen(child, "w") as tty:
        monkeypatch.setenv("TERM", "xterm")
        assert is_terminal(tty) and Progress(2, tty).bar
        monkeypatch.setenv("TERM", "dumb")
        assert not is_terminal(tty)
    os.close(parent)
    assert not is_terminal(io.StringIO())
