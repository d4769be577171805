"""``request_predictions``: the requester's I/O for ``meshfl predict`` (see ``meshfl.vertical.predict``)."""

from __future__ import annotations

import time
import uuid

from meshfl.bus import EventConsumer, EventProducer, ensure_topics, read_all
from meshfl.errors import MeshflError
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.events import (
    SplitActivations,
    SplitAlignment,
    SplitCommand,
    SplitEpoch,
    SplitModelVersion,
    SplitTask,
)
from meshfl.vertical.predict import PredictionRequest


def latest_version(settings: MeshflSettings, task_id: str) -> SplitModelVersion | None:
    found = None
    for env in read_all(settings, Topic.SPLIT_VERSIONS):
        version = env.event
        mine = isinstance(version, SplitModelVersion) and version.task_id == task_id
        if mine and (found is None or version.version > found.version):
            found = version
    return found


def request_predictions(
    settings: MeshflSettings,
    task: SplitTask,
    version: SplitModelVersion,
    ids: list[str],
    *,
    timeout: float = 300.0,
) -> dict[str, list[float]]:
    """Probabilities by entity id from ``version`` for the ids every domain holds (others left out)."""
    ensure_topics(settings)
    session = uuid.uuid4().hex
    requester = f"predict-{session[:8]}"
    request = PredictionRequest(
        task, requester, ids, session, max_elements=max(1, settings.max_payload_bytes // 32)
    )
    with (
        EventConsumer(
            settings, [Topic.SPLIT_ALIGNMENT, Topic.SPLIT_ACTIVATIONS], from_beginning=False
        ) as consumer,
        EventProducer(settings, client_id=requester) as producer,
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
            if (
                isinstance(event, SplitAlignment)
                and event.session == session
                and event.recipient == requester
            ):
                for topic, out in request.on_alignment(event):
                    producer.produce(topic, out, key=task.id)
                producer.flush()
            elif isinstance(event, SplitActivations):
                request.on_probabilities(event)
    return request.predictions()
