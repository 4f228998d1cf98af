"""One line of progress per round on stdout (Flower's own log is kept at WARNING by the runner)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints ``round r/T`` lines with the round's key numbers."""

    def __init__(self, num_rounds: int, stream=None) -> None:  # type: ignore[no-untyped-def]
        self.num_rounds = num_rounds
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()

    def _print(self, text: str) -> None:
        print(f"[fedmeta {time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def train(self, server_round: int, tasks: list[int], means: dict[str, float], rejected: int) -> None:
        extra = f"  rejected {rejected}" if rejected else ""
        self._print(f"round {server_round:>4}/{self.num_rounds}  tasks {tasks}  "
                    f"train-return {means.get('train-return', float('nan')):8.3f}  "
                    f"prox-distance {means.get('prox-distance', float('nan')):6.3f}{extra}")

    def evaluate(self, server_round: int, rows: list[dict[str, float | int]]) -> None:
        parts = []
        for row in rows:
            value = row.get("personal-exact-return", row["personal-return"])
            if "optimal-return" in row:
                parts.append(f"t{row['task-id']} {value:.3f} ({100 * value / row['optimal-return']:.0f}% opt)")
            else:
                parts.append(f"t{row['task-id']} {value:.3f}")
        self._print(f"eval  {server_round:>4}/{self.num_rounds}  personal return: " + ", ".join(parts))

    def meta_test(self, server_round: int, curve: list[float]) -> None:
        steps = "  ".join(f"{j}:{value:.3f}" for j, value in enumerate(curve))
        self._print(f"test  {server_round:>4}/{self.num_rounds}  held-out return after k adaptation steps  {steps}")
