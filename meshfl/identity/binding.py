"""Update ids bound to their domain: the id is a function of (task, round, domain), nothing else.

A domain cannot choose another domain's id (governance rejects an update whose id is not the one
its signer's domain, task and round give), so publishing first under a predictable id shuts no one
out. The same function names the update on the agent's side.
"""

from __future__ import annotations

import uuid

__all__ = ["UPDATE_NAMESPACE", "update_id_for"]

UPDATE_NAMESPACE = uuid.UUID("0b6a3c55-7f0e-4f3c-9a3e-5d1f2f6b8c21")


def update_id_for(task_id: str, round_: int, domain: str) -> str:
    """Deterministic: the same (task, round, domain) always names the same update (a uuid5)."""
    return str(uuid.uuid5(UPDATE_NAMESPACE, f"{task_id}/{round_}/{domain}"))
