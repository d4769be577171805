"""Update ids bound to their domain, so that no one can publish first under someone else's id.

An update id is bound to domain ``d`` when it is ``update_id_for(task, round, d)`` (what agents use:
a function of task, round and domain, nothing else) or when it starts with ``d/`` (ids a domain
names itself, e.g. tools that publish several updates a round). Governance rejects an update whose id
is not bound to the domain that signed it, so a squatter's copy of a predictable id shuts no one out.
"""

from __future__ import annotations

import uuid

__all__ = ["UPDATE_NAMESPACE", "is_bound", "update_id_for"]

UPDATE_NAMESPACE = uuid.UUID("0b6a3c55-7f0e-4f3c-9a3e-5d1f2f6b8c21")


def update_id_for(task_id: str, round_: int, domain: str) -> str:
    """Deterministic: the same (task, round, domain) always names the same update (a uuid5)."""
    return str(uuid.uuid5(UPDATE_NAMESPACE, f"{task_id}/{round_}/{domain}"))


def is_bound(update_id: str, task_id: str, round_: int, domain: str) -> bool:
    """Whether ``update_id`` may be used by ``domain`` for that task and round."""
    return update_id == update_id_for(task_id, round_, domain) or update_id.startswith(f"{domain}/")
