"""Entity alignment of a split task by private set intersection, as one domain's state machine.

Two phases, each a PSI between a domain and the label holder (the domain holding the labels):

1. *collect*: the holder is the PSI client with its ids; every other domain answers as a server with
   its own. The holder learns which of its ids each domain holds, hence the intersection of all.
2. *share*: every other domain is the client with its ids, the holder the server with the intersection:
   each learns which of its ids are in it, and no other id of any party.

Every party then orders the intersection the same way (``meshfl.vertical.alignment.aligned_order``) and
reports the count and a digest to governance, which sees neither ids nor ciphertexts it could use.
Pure: events in, events out; the PSI keys live in memory for one session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from meshfl.events import Event
from meshfl.tensors import to_wire
from meshfl.vertical import psi
from meshfl.vertical.alignment import aligned_order, alignment_digest
from meshfl.vertical.events import (
    SplitAlignment,
    SplitAlignStep,
    SplitLabelsAt,
    SplitReport,
    SplitReportKind,
    SplitTask,
)


@dataclass(frozen=True)
class Alignment:
    """One domain's result: for each aligned position, its local row."""

    session: str
    local_index: np.ndarray
    digest: str

    @property
    def rows(self) -> int:
        return len(self.local_index)


class Aligner:
    """Runs one alignment session for ``domain``; ``result`` is set once it knows the aligned rows."""

    def __init__(
        self,
        task: SplitTask,
        domain: str,
        ids: list[str],
        session: str,
        *,
        labels: torch.Tensor | None = None,
        max_elements: int = 10_000_000,
    ) -> None:
        self.task = task
        self.domain = domain
        self.ids = ids
        self.session = session
        self.holder = task.labels.domain
        self.members = [d.domain for d in task.domains if d.domain != self.holder]
        self._labels = labels
        self._max = max_elements
        self._collect: psi.PsiClient | None = None
        self._share: psi.PsiClient | None = None
        self._held: dict[str, list[int]] = {}
        self._pending_shares: dict[str, bytes] = {}
        self._answered: set[tuple[SplitAlignStep, str]] = set()
        self._intersection: list[str] | None = None
        self._share_server: psi.PsiServer | None = None
        self.result: Alignment | None = None

    @property
    def is_holder(self) -> bool:
        return self.domain == self.holder

    def _message(
        self, step: SplitAlignStep, recipient: str, payload: bytes, setup: bytes = b""
    ) -> SplitAlignment:
        return SplitAlignment(
            task_id=self.task.id,
            session=self.session,
            step=step,
            sender=self.domain,
            recipient=recipient,
            setup=setup,
            payload=payload,
        )

    def start(self) -> list[Event]:
        """The first messages of this party: the holder's collect requests, a member's share request."""
        if self.is_holder:
            self._collect = psi.new_client(self.ids)
            out: list[Event] = [
                self._message(SplitAlignStep.COLLECT_REQUEST, member, self._collect.request)
                for member in self.members
            ]
            return out + self._maybe_finish_holder()
        self._share = psi.new_client(self.ids)
        return [self._message(SplitAlignStep.SHARE_REQUEST, self.holder, self._share.request)]

    def handle(self, message: SplitAlignment) -> list[Event]:
        """React to a message of this session addressed to this domain (anything else is ignored)."""
        if message.session != self.session or message.recipient != self.domain:
            return []
        key = (message.step, message.sender)
        if key in self._answered:
            return []  # a duplicate
        if self.is_holder:
            return self._holder_handle(message, key)
        if message.sender != self.holder:
            return []
        if message.step == SplitAlignStep.COLLECT_REQUEST:
            self._answered.add(key)
            setup, response = psi.reply(self.ids, message.payload, max_client_elements=self._max)
            return [self._message(SplitAlignStep.COLLECT_REPLY, self.holder, response, setup)]
        if message.step == SplitAlignStep.SHARE_REPLY and self._share is not None:
            self._answered.add(key)
            held = self._share.intersection(message.setup, message.payload)
            return self._finish([self.ids[i] for i in held])
        return []

    def _holder_handle(self, message: SplitAlignment, key: tuple[SplitAlignStep, str]) -> list[Event]:
        if message.sender not in self.members:
            return []
        if message.step == SplitAlignStep.COLLECT_REPLY and self._collect is not None:
            self._answered.add(key)
            self._held[message.sender] = self._collect.intersection(message.setup, message.payload)
            return self._maybe_finish_holder()
        if message.step == SplitAlignStep.SHARE_REQUEST:
            self._answered.add(key)
            self._pending_shares[message.sender] = message.payload
            return self._answer_shares()
        return []

    def _maybe_finish_holder(self) -> list[Event]:
        if self._intersection is not None or set(self._held) != set(self.members):
            return []
        common = set(range(len(self.ids)))
        for indices in self._held.values():
            common &= set(indices)
        self._intersection = [self.ids[i] for i in sorted(common)]
        return self._finish(self._intersection) + self._answer_shares()

    def _answer_shares(self) -> list[Event]:
        if self._intersection is None:
            return []
        if self._share_server is None:  # one key and one setup for every member of the session
            self._share_server = psi.PsiServer(self._intersection, max_client_elements=self._max)
        out: list[Event] = []
        for member, request in sorted(self._pending_shares.items()):
            setup, response = self._share_server.answer(request)
            out.append(self._message(SplitAlignStep.SHARE_REPLY, member, response, setup))
        self._pending_shares.clear()
        return out

    def _finish(self, intersection: list[str]) -> list[Event]:
        ordered = aligned_order(intersection, self.session)
        row_of = {entity: row for row, entity in enumerate(self.ids)}
        local_index = np.array([row_of[entity] for entity in ordered], dtype=np.int64)
        digest = alignment_digest(self.session, ordered)
        self.result = Alignment(session=self.session, local_index=local_index, digest=digest)
        labels = []
        if self.is_holder and self.task.labels.at == SplitLabelsAt.GOVERNANCE and self._labels is not None:
            labels = to_wire({"labels": self._labels[torch.from_numpy(local_index)].to(torch.int64)})
        return [
            SplitReport(
                task_id=self.task.id,
                party=self.domain,
                kind=SplitReportKind.ALIGNED,
                session=self.session,
                rows=len(ordered),
                alignment_digest=digest,
                labels=labels,
            )
        ]
