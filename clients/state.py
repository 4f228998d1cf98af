"""A client's private state: θ_i (personalized policy, if the algorithm keeps one) and its optimizers' state.

It lives in ``context.state`` (per run, in memory) and, when ``client.state-dir`` is set, also in
``<state-dir>/run-<flower run id>/task-<i>.npz`` on the node's disk (atomic writes), so a SuperNode
restarted within the run resumes its θ_i, and a new run never reads another run's state.
Nothing here is ever sent to the server.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Context

from fedmeta.records import arrays_to_record, bytes_to_record, record_to_arrays, record_to_bytes
from fedmeta.results import atomic_write_bytes

PERSONAL_KEY = "personal-policy"
OPTIMIZER_KEY = "solver-state"


@dataclass
class ClientState:
    personal: dict[str, np.ndarray] | None = None
    optimizer: bytes | None = None

    @classmethod
    def load(cls, context: Context, disk_path: Path | None = None) -> ClientState:
        state = context.state
        if PERSONAL_KEY in state or OPTIMIZER_KEY in state:
            personal = record_to_arrays(state[PERSONAL_KEY]) if PERSONAL_KEY in state else None
            optimizer = record_to_bytes(state[OPTIMIZER_KEY]) if OPTIMIZER_KEY in state else None
            return cls(personal, optimizer)
        if disk_path is not None and disk_path.exists():
            with np.load(disk_path) as data:
                personal = {k[len("p:"):]: data[k] for k in data.files if k.startswith("p:")} or None
                optimizer = data["optimizer"].tobytes() if "optimizer" in data.files else None
            return cls(personal, optimizer)
        return cls()

    def save(self, context: Context, disk_path: Path | None = None) -> None:
        if self.personal is None and self.optimizer is None:
            return
        if self.personal is not None:
            context.state[PERSONAL_KEY] = arrays_to_record(self.personal)
        if self.optimizer is not None:
            context.state[OPTIMIZER_KEY] = bytes_to_record(self.optimizer)
        if disk_path is not None:
            buf = io.BytesIO()
            payload = {f"p:{k}": v for k, v in (self.personal or {}).items()}
            if self.optimizer is not None:
                payload["optimizer"] = np.frombuffer(self.optimizer, dtype=np.uint8)
            np.savez(buf, **payload)
            atomic_write_bytes(disk_path, buf.getvalue(), mode=0o600)  # θᵢ is the client's private state
