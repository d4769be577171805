"""Audit of a federation from its log: replay (every version's SHA-256 recomputed), lineage, report, export.

events = events_from_bus(settings, "digits-mlp")      # or events_from_file(Path("digits.avro"))
result = replay(events, "digits-mlp", governance_key=key)  # result.ok, .versions, .findings
signed = check_signatures(events, key, window_seconds=900).trusted   # forged events left out
tree = lineage(TaskLog.of(signed, "digits-mlp"), 20)
write_report(TaskLog.of(events, "digits-mlp"), Path("out/report"), result)
"""

from __future__ import annotations

from governance.audit.export import EXPORT_SCHEMA, events_from_file, export_task, file_metadata, write_events
from governance.audit.lineage import Lineage, UpdateNode, VersionNode, lineage
from governance.audit.log import AUDITED_TOPICS, LoggedEvent, TaskLog, events_from_bus
from governance.audit.replay import replay
from governance.audit.report import render_report, write_report
from governance.audit.result import Finding, ReplayResult, VersionCheck
from governance.audit.signatures import SignatureCheck, check_signatures
from governance.audit.transforms import reapply_transforms

__all__ = [
    "AUDITED_TOPICS",
    "EXPORT_SCHEMA",
    "Finding",
    "Lineage",
    "LoggedEvent",
    "ReplayResult",
    "SignatureCheck",
    "TaskLog",
    "UpdateNode",
    "VersionCheck",
    "VersionNode",
    "check_signatures",
    "events_from_bus",
    "events_from_file",
    "export_task",
    "file_metadata",
    "lineage",
    "reapply_transforms",
    "render_report",
    "replay",
    "write_events",
    "write_report",
]
