"""Explicit random streams: one per (run seed, task, round, purpose), never global RNGs."""

from __future__ import annotations

import zlib

import numpy as np


def stream_seed(run_seed: int, *keys: int | str) -> int:
    """A 32-bit seed derived from the run seed and ``keys`` via ``numpy.random.SeedSequence``.

    String keys (a purpose such as ``"train"``) are hashed with CRC32, so streams for
    different purposes never collide and the result is identical in every process.
    """
    entropy = [run_seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])
