"""Lineage: from a model version back to version 0, who contributed what, trained on which data.

For each version on the chain: its parent, the updates it aggregated (domain, coordinates on the log,
the data products and data-product versions they trained on, the decision that accepted them), and
the decisions of that round that kept other updates out. Pure over a ``TaskLog``; the CLI renders it
as a tree, the report as HTML, ``--json`` as this model.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from governance.audit.log import TaskLog
from meshfl.errors import ReplayError
from meshfl.events import ModelUpdate, PrivacySpent


class ProductNode(BaseModel):
    id: str
    version: str
    name: str = ""
    owner: str = ""
    in_catalog: bool = Field(description="whether the catalog snapshot still holds this id and version")


class UpdateNode(BaseModel):
    update_id: str
    domain: str
    round: int
    base_version: int
    num_examples: int
    partition: int | None
    offset: int | None
    data_products: list[ProductNode]
    accepted_by: str = Field(description="policy and reason of the accepting decision")
    metrics: dict[str, float] = Field(default_factory=dict)


class ExclusionNode(BaseModel):
    update_id: str
    domain: str
    round: int
    policy: str
    reason: str


class VersionNode(BaseModel):
    version: int
    round: int
    parent_version: int | None
    sha256: str
    strategy: str
    created_at: datetime
    metrics: dict[str, float]
    privacy: PrivacySpent | None
    updates: list[UpdateNode]
    excluded: list[ExclusionNode]


class Lineage(BaseModel):
    task_id: str
    version: int
    chain: list[VersionNode] = Field(description="the version asked for first, then its ancestors")

    @property
    def domains(self) -> list[str]:
        """The domains whose updates made the version asked for (not its ancestors)."""
        return sorted({u.domain for u in self.chain[0].updates}) if self.chain else []

    @property
    def all_domains(self) -> list[str]:
        return sorted({u.domain for node in self.chain for u in node.updates})


def _update_node(index: TaskLog, update_id: str) -> UpdateNode:
    found, _ = index.accepted_update(update_id)
    decisions = index.accepting(update_id)
    accepted_by = f"{decisions[0].policy}: {decisions[0].reason}" if decisions else "no accepting decision"
    if found is None or not isinstance(found.event, ModelUpdate):
        copies = index.updates_by_id.get(update_id, [])
        event = copies[0].event if copies else None
        if not isinstance(event, ModelUpdate):
            return UpdateNode(
                update_id=update_id,
                domain="?",
                round=-1,
                base_version=-1,
                num_examples=0,
                partition=None,
                offset=None,
                data_products=[],
                accepted_by=accepted_by,
            )
        update, partition, offset = event, None, None
    else:
        update, partition, offset = found.event, found.partition, found.offset
    products = []
    for ref in update.data_products:
        described = index.products.get((ref.id, ref.version))
        products.append(
            ProductNode(
                id=ref.id,
                version=ref.version,
                name=described.name if described else "",
                owner=described.owner if described else "",
                in_catalog=described is not None,
            )
        )
    return UpdateNode(
        update_id=update_id,
        domain=update.domain,
        round=update.round,
        base_version=update.base_version,
        num_examples=update.num_examples,
        partition=partition,
        offset=offset,
        data_products=products,
        accepted_by=accepted_by,
        metrics=dict(update.metrics),
    )


def version_node(index: TaskLog, number: int) -> VersionNode:
    """One version with its contributing updates and the rejections of its round."""
    version = index.version(number)
    if version is None:
        raise ReplayError(f"task {index.task_id!r} has no version {number} on the log")
    excluded = (
        [
            ExclusionNode(
                update_id=d.update_id, domain=d.domain, round=d.round, policy=d.policy, reason=d.reason
            )
            for d in index.rejections()
            if d.round == version.round
        ]
        if number > 0
        else []
    )
    return VersionNode(
        version=version.version,
        round=version.round,
        parent_version=version.parent_version,
        sha256=version.sha256,
        strategy=version.strategy.name,
        created_at=version.created_at,
        metrics=dict(version.metrics),
        privacy=version.privacy,
        updates=[_update_node(index, u) for u in version.contributing_updates],
        excluded=excluded,
    )


def lineage(index: TaskLog, version: int | None = None) -> Lineage:
    """The chain from ``version`` (default: the latest) back through its parents to the first."""
    if not index.versions:
        raise ReplayError(f"task {index.task_id!r} has no published version")
    number: int | None = max(index.versions) if version is None else version
    chain: list[VersionNode] = []
    seen: set[int] = set()
    while number is not None and number not in seen:
        seen.add(number)
        node = version_node(index, number)
        chain.append(node)
        number = node.parent_version
    return Lineage(task_id=index.task_id, version=chain[0].version, chain=chain)
