"""The console's fold: what an operator sees for a given sequence of bus events (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime

from meshfl.console import ConsoleView
from meshfl.events import (
    AgentStatus,
    DataProductDescriptor,
    DecisionOutcome,
    DomainHeartbeat,
    GovernanceDecision,
    ModelSpec,
    ModelUpdate,
    ModelVersion,
    PrivacyPolicy,
    PrivacySpent,
    QualityFigure,
    StrategySpec,
    TrainingTask,
)


def _task(**fields: object) -> TrainingTask:
    values: dict[str, object] = {
        "id": "t1",
        "model": ModelSpec(input_dim=4, output_dim=2),
        "features": ["a", "b", "c", "d"],
        "label": "y",
        "num_classes": 2,
        "rounds": 3,
    }
    values.update(fields)
    return TrainingTask.model_validate(values)


def _update(uid: str, domain: str, rnd: int, n: int, acc: float, loss: float) -> ModelUpdate:
    return ModelUpdate(
        update_id=uid,
        task_id="t1",
        round=rnd,
        base_version=rnd - 1,
        domain=domain,
        num_examples=n,
        metrics={"holdout_accuracy": acc, "holdout_loss": loss},
        tensors=[],
    )


def _version(number: int, updates: list[str], domains: list[str], eps: float | None = None) -> ModelVersion:
    return ModelVersion(
        task_id="t1",
        version=number,
        parent_version=number - 1 if number else None,
        round=number,
        strategy=StrategySpec(),
        contributing_updates=updates,
        contributing_domains=domains,
        tensors=[],
        sha256="ab" * 32,
        privacy=PrivacySpent(epsilon=eps, delta=1e-5) if eps is not None else None,
    )


def _decision(
    uid: str, domain: str, outcome: DecisionOutcome, policy: str, reason: str
) -> GovernanceDecision:
    return GovernanceDecision(
        decision_id=f"d-{uid}",
        task_id="t1",
        update_id=uid,
        domain=domain,
        round=1,
        outcome=outcome,
        policy=policy,
        reason=reason,
    )


def test_a_round_folds_into_progress_lineage_metrics_and_decisions() -> None:
    view = ConsoleView()
    view.apply(
        DomainHeartbeat(
            domain="a", agent_id="a-1", status=AgentStatus.IDLE, tasks=["t1"], sent_at=datetime.now(UTC)
        )
    )
    view.apply(DomainHeartbeat(domain="b", agent_id="b-1", status=AgentStatus.TRAINING, tasks=["t1"]))
    view.apply(
        DataProductDescriptor(
            id="a.p",
            domain="a",
            owner="team-a",
            version="1",
            contract_id="c",
            contract_version="2",
            quality=[QualityFigure(name="completeness", value=0.99)],
            num_rows=10,
        )
    )
    view.apply(_task())
    view.apply(_version(0, [], []))
    view.apply(_update("ua", "a", 1, 30, 0.9, 0.3))
    view.apply(_update("ub", "b", 1, 10, 0.5, 0.7))
    view.apply(_decision("ua", "a", DecisionOutcome.ACCEPTED, "policies", "all checks passed"))
    view.apply(_decision("ux", "evil", DecisionOutcome.REJECTED, "known_domain", "evil is not registered"))
    view.apply(_version(1, ["ua", "ub"], ["a", "b"]))
    view.apply(_update("ua2", "a", 2, 30, 0.95, 0.2))

    state = view.snapshot()
    assert [d["domain"] for d in state["domains"]] == ["a", "b"]
    assert state["catalog"][0]["contract"] == "c 2"
    assert state["catalog"][0]["quality"][0]["name"] == "completeness"
    (task,) = state["tasks"]
    assert (task["latest_version"], task["latest_round"], task["complete"]) == (1, 1, False)
    assert task["domains_in"] == ["a"] and task["stragglers"] == ["b"]
    assert (task["accepted"], task["rejected"]) == (1, 1)
    latest = task["versions"][-1]
    assert latest["domains"] == ["a", "b"] and latest["updates"] == ["ua", "ub"]
    assert abs(latest["accuracy"] - (0.9 * 30 + 0.5 * 10) / 40) < 1e-12
    assert abs(latest["loss"] - (0.3 * 30 + 0.7 * 10) / 40) < 1e-12
    assert state["decisions"][0]["outcome"] == "rejected"  # rejections first
    assert state["decisions"][0]["reason"] == "evil is not registered"


def test_under_dp_the_page_shows_the_budget_and_no_domain_metrics() -> None:
    view = ConsoleView()
    view.apply(_task(privacy=PrivacyPolicy(clip_norm=1.0, noise_multiplier=1.0, max_epsilon=8.0)))
    view.apply(_version(0, [], []))
    view.apply(_update("ua", "a", 1, 30, 0.9, 0.3))
    view.apply(_version(1, ["ua"], ["a"], eps=1.5))
    (task,) = view.snapshot()["tasks"]
    assert task["privacy"] == {"epsilon": 1.5, "max_epsilon": 8.0, "delta": 1e-5}
    assert "accuracy" not in task["versions"][-1]


def test_replay_verdicts_and_a_second_copy_of_a_version() -> None:
    view = ConsoleView()
    view.apply(_task())
    view.apply(_version(0, [], []))
    view.apply(_version(0, ["forged"], ["x"]))  # a later copy never replaces the first
    view.record_replay("t1", {0: {"reproduced": True, "problems": []}})
    (task,) = view.snapshot()["tasks"]
    assert task["versions"] == [
        {**task["versions"][0], "updates": [], "replay": {"reproduced": True, "problems": []}}
    ]
    view.record_replay("nope", {0: {"reproduced": False, "problems": []}})  # unknown task: ignored


def test_events_read_before_their_task_are_kept_for_it() -> None:
    view = ConsoleView()
    view.apply(_version(0, [], []))
    view.apply(_decision("ux", "evil", DecisionOutcome.REJECTED, "known_domain", "no"))
    assert view.snapshot()["tasks"] == []
    view.apply(_task())
    (task,) = view.snapshot()["tasks"]
    assert [v["version"] for v in task["versions"]] == [0]
    assert task["rejected"] == 1 and view.events_seen == 3


def test_decisions_are_bounded() -> None:
    view = ConsoleView(max_decisions=5)
    view.apply(_task())
    for i in range(20):
        view.apply(_decision(f"u{i}", "a", DecisionOutcome.REJECTED, "p", f"r{i}"))
    decisions = view.snapshot()["decisions"]
    assert [d["reason"] for d in decisions] == ["r19", "r18", "r17", "r16", "r15"]
