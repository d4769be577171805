"""Where a meshfl round goes, read from the daemons' structlog JSON lines (no extra instrumentation).

For round ``r`` the critical path runs through the domain whose update was decided last:

    governance "model version published" (version r-1)
      a. version commit, delivery to the agent, decode, local data load, update encode  (minus training)
      -- local training (train_seconds) --
    agent "chunked event queued" (the update, encoded and queued)
      b. update publish: produce and flush (no transaction since session 4)
    agent "update published"
      c. governance fetch, reassembly, decode, checks
    governance "decision" (that update)
      d. until the round is ready (other updates in the same batch)
    governance "round ready"
      e. aggregate, version encode, produce
    governance "model version published" (version r)
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

SEGMENTS: dict[str, str] = {
    "a": "version commit + delivery + decode + data load + update encode",
    "b": "update publish (produce + flush)",
    "c": "update fetch + decode + checks at governance",
    "d": "wait for the rest of the batch",
    "e": "aggregate + version encode + produce",
}


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "timestamp" in record:
            record["_t"] = datetime.fromisoformat(record["timestamp"]).timestamp()
            yield record


@dataclass
class _AgentRound:
    queued: float | None = None
    published: float | None = None


def _agent_rounds(path: Path) -> tuple[str | None, dict[int, _AgentRound]]:
    domain = None
    rounds: dict[int, _AgentRound] = {}
    last_queued: float | None = None
    for record in _lines(path):
        if record.get("event") == "chunked event queued" and record.get("event_type") == "ModelUpdate":
            last_queued = record["_t"]
        elif record.get("event") == "update published":
            domain = record.get("domain", domain)
            rounds[int(record["round"])] = _AgentRound(queued=last_queued, published=record["_t"])
            last_queued = None
    return domain, rounds


def breakdown(
    governance_log: Path, agent_logs: list[Path], train_seconds: Mapping[tuple[int, str], float]
) -> dict[int, dict[str, float]]:
    """Seconds of each segment (``SEGMENTS``) per round from 2 on; rounds lacking a log line are left out.

    ``train_seconds`` maps (round, domain) to the agent's reported training time.
    """
    published: dict[int, float] = {}
    ready: dict[int, float] = {}
    decided: dict[int, dict[str, float]] = {}
    for record in _lines(governance_log):
        event = record.get("event")
        if event == "model version published":
            published[int(record["version"])] = record["_t"]
        elif event == "round ready":
            ready[int(record["round"])] = record["_t"]
        elif event == "decision" and record.get("outcome") == "accepted":
            decided.setdefault(int(record["round"]), {})[record["domain"]] = record["_t"]
    agents: dict[str, dict[int, _AgentRound]] = {}
    for path in agent_logs:
        domain, rounds = _agent_rounds(path)
        if domain is not None:
            agents[domain] = rounds
    result: dict[int, dict[str, float]] = {}
    for round_, decisions in sorted(decided.items()):
        if round_ < 2 or round_ - 1 not in published or round_ not in published or round_ not in ready:
            continue
        last = max(decisions, key=decisions.__getitem__)
        agent = agents.get(last, {}).get(round_)
        train = train_seconds.get((round_, last))
        if agent is None or agent.queued is None or agent.published is None or train is None:
            continue
        result[round_] = {
            "a": agent.queued - published[round_ - 1] - train,
            "train": train,
            "b": agent.published - agent.queued,
            "c": decisions[last] - agent.published,
            "d": ready[round_] - decisions[last],
            "e": published[round_] - ready[round_],
        }
    return result


def median_segments(rounds: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    if not rounds:
        return {}
    keys = next(iter(rounds.values())).keys()
    return {key: statistics.median(r[key] for r in rounds.values()) for key in keys}
