"""Realistic events of every type, shared by the codec tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import torch

from meshfl.codec import SchemaStore, default_store
from meshfl.events import (
    AdmissionPolicy,
    AgentProgress,
    AgentStatus,
    Chunk,
    Column,
    DataProductDescriptor,
    DataProductRef,
    DataProductStatus,
    DecisionOutcome,
    DomainHeartbeat,
    Event,
    FederationMode,
    GovernanceDecision,
    KeyAction,
    KeyEvent,
    ModelSpec,
    ModelUpdate,
    ModelVersion,
    OutputPort,
    PrivacyPolicy,
    PrivacySpent,
    QualityFigure,
    RoundPolicy,
    Signature,
    StrategySpec,
    TrainingTask,
    UpdateChecks,
)
from meshfl.state_events import (
    DecidedUpdate,
    GovernanceState,
    LogPosition,
    OffsetDecision,
    TaskSummary,
    VersionPointer,
)
from meshfl.tensors import state_sha256, to_wire

WHEN = datetime(2026, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)


def mlp_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "layers.0.weight": torch.randn(128, 64, generator=generator),
        "layers.0.bias": torch.randn(128, generator=generator),
        "layers.2.weight": torch.randn(10, 128, generator=generator),
        "layers.2.bias": torch.randn(10, generator=generator),
    }


def sample_events() -> list[Event]:
    state = mlp_state()
    return [
        DataProductDescriptor(
            id="retail.transactions",
            domain="retail",
            owner="retail-data@example.org",
            version="2.1.0",
            status=DataProductStatus.ACTIVE,
            name="Card transactions",
            description="Daily card transactions with fraud labels",
            output_ports=[
                OutputPort(name="parquet", type="parquet", location="/data/tx.parquet", contract_id="c1")
            ],
            contract_id="c1",
            contract_version="1.0.0",
            columns=[
                Column(name="amount", logical_type="number", physical_type="double", unit="EUR"),
                Column(name="is_fraud", logical_type="boolean", classification="internal", required=False),
            ],
            quality=[QualityFigure(name="completeness", value=0.998, unit="ratio", threshold=0.99)],
            tags=["finance", "pii-free"],
            num_rows=1_250_000,
            updated_at=WHEN,
        ),
        TrainingTask(
            id="fraud-mlp",
            description="Fraud detection across banks",
            owner="risk@example.org",
            model=ModelSpec(input_dim=64, hidden=[128], output_dim=10, dropout=0.1),
            features=[f"f{i}" for i in range(64)],
            label="is_fraud",
            num_classes=10,
            strategy=StrategySpec(name="fedadam", params={"eta": 0.01, "beta_1": 0.9}),
            mode=FederationMode.ASYNC,
            rounds=20,
            local_epochs=2,
            round_policy=RoundPolicy(min_domains=3, target_domains=5, deadline_seconds=30.0, buffer_size=4),
            update_checks=UpdateChecks(max_l2_norm=10.0, norm_action="clip"),
            privacy=PrivacyPolicy(clip_norm=1.0, noise_multiplier=1.1, max_epsilon=8.0),
            admission=AdmissionPolicy(allowed_domains=["retail", "bank-b"], required_tags=["finance"]),
            created_at=WHEN,
        ),
        ModelUpdate(
            update_id="u-retail-3",
            task_id="fraud-mlp",
            round=3,
            base_version=2,
            domain="retail",
            data_products=[DataProductRef(id="retail.transactions", version="2.1.0")],
            num_examples=4096,
            metrics={"loss": 0.3125, "accuracy": 0.91},
            tensors=to_wire(state),
            created_at=WHEN,
            signature=Signature(
                signer="retail",
                key_id="0f" * 16,
                timestamp=WHEN,
                sequence=1_773_480_413_589_000,
                value=bytes(range(64)),
            ),
        ),
        ModelVersion(
            task_id="fraud-mlp",
            version=3,
            parent_version=2,
            round=3,
            strategy=StrategySpec(name="fedavg"),
            contributing_updates=["u-retail-3", "u-bank-b-3"],
            contributing_domains=["retail", "bank-b"],
            tensors=to_wire(state),
            server_state=to_wire({"m": torch.zeros(3), "v": torch.ones(3, dtype=torch.float64)}),
            sha256=state_sha256(state),
            metrics={"loss": 0.29},
            privacy=PrivacySpent(epsilon=1.7, delta=1e-5),
            created_at=WHEN,
        ),
        GovernanceDecision(
            decision_id="d-1",
            task_id="fraud-mlp",
            update_id="u-retail-3",
            domain="retail",
            round=3,
            outcome=DecisionOutcome.REJECTED,
            policy="l2_norm",
            reason="||update - global||_2 = 12.4 > 10.0",
            source_partition=0,
            source_offset=42,
            created_at=WHEN,
        ),
        DomainHeartbeat(
            domain="retail",
            agent_id="agent-7f3a",
            status=AgentStatus.TRAINING,
            data_products=["retail.transactions"],
            tasks=["fraud-mlp"],
            current_round=3,
            meshfl_version="0.1.0",
            sent_at=WHEN,
        ),
        AgentProgress(
            domain="retail", task_id="fraud-mlp", last_round=3, last_update_id="u-retail-3", updated_at=WHEN
        ),
        KeyEvent(
            domain="retail",
            key_id="0f" * 16,
            public_key=bytes(range(32)),
            action=KeyAction.REGISTERED,
            effective_at=WHEN,
            reason="first key",
        ),
        GovernanceState(
            updates_topic="meshfl.model-updates",
            updates_partition=0,
            committed_offset=41,
            log_ends=[LogPosition(topic="decisions", partition=0, offset=120)],
            tasks=[
                TaskSummary(
                    task_id="fraud-mlp",
                    versions=[
                        VersionPointer(
                            version=3,
                            search_from=[LogPosition(topic="model-versions", partition=0, offset=6)],
                        )
                    ],
                    decided=[DecidedUpdate(update_id="u-retail-4", forget_at=4)],
                    failed_round=None,
                    failed_reason=None,
                )
            ],
            open_decisions=[OffsetDecision(offset=41, update_id="u-retail-4", accepted=True, settled=False)],
            written_at=WHEN,
        ),
        Chunk(
            message_id="m-1",
            index=1,
            count=3,
            total_size=2_000_000,
            sha256="ab" * 32,
            data=b"\x00\xff" * 1000,
        ),
    ]


@pytest.fixture(scope="session")
def store() -> SchemaStore:
    return default_store()


@pytest.fixture(params=sample_events(), ids=lambda event: type(event).__name__)
def event(request: pytest.FixtureRequest) -> Event:
    return request.param
