"""The one place split-learning events get signed: ``sign_event`` with a ``meshfl.identity.Signer``.

Every split event a party writes passes through here (the parties' state machines build events, the
agents publish them), so the signature covers exactly what goes on the bus. A party without a key
writes ``signature = null``, as any unsigned participant does.
"""

from __future__ import annotations

from typing import TypeVar

from meshfl.events import Event
from meshfl.identity import Signer

E = TypeVar("E", bound=Event)

__all__ = ["Signer", "sign_event"]


def sign_event(event: E, signer: Signer | None) -> E:
    """``event`` signed by ``signer``; unchanged without one."""
    if signer is None or "signature" not in type(event).model_fields:
        return event
    return signer.sign(event)
