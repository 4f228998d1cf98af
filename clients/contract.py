"""The outbound contract: what may leave a client, enforced on every reply by a ClientApp mod.

Allowed: parameter arrays of the shared model (one ``ArrayRecord`` named ``arrays``, float
arrays) and scalar metrics (one ``MetricRecord`` named ``metrics``, int/float values only).
Anything else (observations, actions, rewards, config or raw bytes) makes the mod replace the
reply with an error, so it never reaches the server.
"""

from __future__ import annotations

import json
import os

import numpy as np
from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable

AUDIT_ENV = "FEDMETA_AUDIT_FILE"


def contract_violation(reply: Message) -> str | None:
    """Why ``reply`` may not leave the client, or None."""
    if reply.has_error():
        return None
    content = reply.content
    if content.config_records:
        return f"config records {sorted(content.config_records)} may not leave a client"
    if set(content.array_records) - {"arrays"}:
        return f"array records {sorted(content.array_records)} may not leave a client (only 'arrays')"
    if set(content.metric_records) - {"metrics"}:
        return f"metric records {sorted(content.metric_records)} may not leave a client (only 'metrics')"
    for key, array in content.array_records.get("arrays", {}).items():
        if not np.issubdtype(array.numpy().dtype, np.floating):
            return f"array {key!r} is not a float parameter array"
    for key, value in content.metric_records.get("metrics", {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric {key!r} is not a scalar ({type(value).__name__})"
    return None


def _audit(reply: Message) -> None:
    path = os.environ.get(AUDIT_ENV)
    if not path or reply.has_error():
        return
    content = reply.content
    entry = {
        "type": reply.metadata.message_type,
        "arrays": {name: {k: list(a.numpy().shape) for k, a in rec.items()} for name, rec in content.array_records.items()},
        "metrics": {name: {k: type(v).__name__ for k, v in rec.items()} for name, rec in content.metric_records.items()},
        "configs": sorted(content.config_records),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def _audit_incoming(msg: Message, context: Context) -> None:
    path = os.environ.get(AUDIT_ENV)
    if not path:
        return
    node = {k: context.node_config[k] for k in ("partition-id", "task-id", "test-task-id") if k in context.node_config}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"incoming": msg.metadata.message_type, "node": node}) + "\n")


def contract_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Check (and, when ``FEDMETA_AUDIT_FILE`` is set, log the shape of) every outgoing reply;
    the audit also logs which node received which message type."""
    _audit_incoming(msg, context)
    reply = call_next(msg, context)
    reason = contract_violation(reply)
    if reason is not None:
        return Message(Error(code=0, reason=f"fedmeta outbound contract: {reason}"), reply_to=msg)
    _audit(reply)
    return reply
