"""``request_predictions``: the requester's I/O for ``meshfl predict`` (see ``meshfl.vertical.predict``).

A request is signed: the requester is ``<principal>~<tag>`` and signs its command and its alignment
messages with the principal's key (governance's, or any key governance registered); the domains and
governance refuse an unsigned one. What comes back (alignment replies, probabilities) is checked
against the senders' keys before it is used; only governance-signed versions are offered.
"""

from __future__ import annotations

import time
import uuid

from meshfl.bus import EventConsumer, EventProducer, ensure_topics, read_all
from meshfl.errors import MeshflError, SignatureError
from meshfl.identity import Signer, TrustRegistry
from meshfl.identity.trust import governance_public_key, read_registry
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.events import (
    PRINCIPAL_SEPARATOR,
    SplitActivations,
    SplitAlignment,
    SplitCommand,
    SplitEpoch,
    SplitModelVersion,
    SplitReport,
    SplitReportKind,
    SplitTask,
)
from meshfl.vertical.predict import PredictionRequest
from meshfl.vertical.trust import SplitTrust


def split_versions(settings: MeshflSettings, task_id: str) -> dict[int, SplitModelVersion]:
    """The task's versions by number, governance-signed only (the first signed copy of each)."""
    registry = TrustRegistry(governance_public_key(settings))
    found: dict[int, SplitModelVersion] = {}
    for env in read_all(settings, Topic.SPLIT_VERSIONS):
        version = env.event
        if not isinstance(version, SplitModelVersion) or version.task_id != task_id:
            continue
        try:
            registry.verify(version)
        except SignatureError:
            continue
        found.setdefault(version.version, version)
    return dict(sorted(found.items()))


def request_predictions(
    settings: MeshflSettings,
    task: SplitTask,
    version: SplitModelVersion,
    ids: list[str],
    *,
    signer: Signer,
    timeout: float = 300.0,
) -> dict[str, list[float]]:
    """Probabilities by entity id from ``version`` for the ids every domain holds (others left out).

    ``signer``: the principal the request is made as. Raises ``MeshflError`` when a party refuses
    the request (its reason: e.g. that version's parts are no longer kept) or on the timeout."""
    ensure_topics(settings)
    session = uuid.uuid4().hex
    requester = f"{signer.identity}{PRINCIPAL_SEPARATOR}predict-{session[:8]}"
    request = PredictionRequest(
        task, requester, ids, session, max_elements=max(1, settings.max_payload_bytes // 32)
    )
    trust = SplitTrust(
        read_registry(settings), window_seconds=settings.signature_window_seconds, reader=requester
    )
    with (
        EventConsumer(
            settings,
            [Topic.SPLIT_ALIGNMENT, Topic.SPLIT_ACTIVATIONS, Topic.SPLIT_CONTROL],
            from_beginning=False,
        ) as consumer,
        EventProducer(settings, client_id=requester, signer=signer) as producer,
    ):
        command = SplitEpoch(
            task_id=task.id,
            command=SplitCommand.PREDICT,
            session=session,
            epoch=version.version,
            attempt=0,
            base_version=version.version,
            base_parts={part.party: part.sha256 for part in version.parts},
            requester=requester,
        )
        producer.produce(Topic.SPLIT_CONTROL, command, key=task.id)
        producer.flush()
        for topic, event in request.start():
            producer.produce(topic, event, key=task.id)
        producer.flush()
        deadline = time.monotonic() + timeout
        while not request.done:
            if time.monotonic() > deadline:
                raise MeshflError(
                    f"no predictions within {timeout:.0f} s (are governance and every domain running?)"
                )
            env = consumer.poll(0.2)
            if env is None:
                continue
            event = env.event
            if getattr(event, "recipient", None) != requester and not isinstance(event, SplitReport):
                continue
            if isinstance(event, SplitReport) and event.session != session:
                continue
            if not trust.accept(env):
                continue
            if isinstance(event, SplitReport) and event.kind == SplitReportKind.REFUSED:
                raise MeshflError(f"{event.party} refused the prediction: {event.reason}")
            if isinstance(event, SplitAlignment) and event.session == session:
                for topic, out in request.on_alignment(event):
                    producer.produce(topic, out, key=task.id)
                producer.flush()
            elif isinstance(event, SplitActivations):
                request.on_probabilities(event)
    return request.predictions()
