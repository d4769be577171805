"""Data contract: the update was trained on registered data products that can serve the task.

Every data product the update names (``data_products`` refs) must be registered by the update's domain
with exactly that id and version, be ``active``, and hold every feature and the label of the task as a
column of a numeric logical type (ODCS logical types; see ``NUMERIC_LOGICAL_TYPES``). Every named product
must pass, not just one: the update was trained on all of them. The reason names the missing and the
wrongly typed columns, which is what the domain's data owner needs to fix the product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject, summarize
from meshfl.events import DataProductDescriptor, DataProductStatus, TrainingTask

NUMERIC_LOGICAL_TYPES: frozenset[str] = frozenset({"integer", "number", "double", "float", "long", "int"})
"""Logical types a model can train on directly (compared case-insensitively)."""


def contract_problems(product: DataProductDescriptor, task: TrainingTask) -> list[str]:
    """Why ``product`` cannot serve ``task`` (empty when it can)."""
    problems: list[str] = []
    if product.status != DataProductStatus.ACTIVE:
        problems.append(f"status is {product.status.value}, not active")
    types = {column.name: column.logical_type for column in product.columns}
    needed = [*task.features, task.label]
    missing = [name for name in needed if name not in types]
    wrong = [
        f"{name}:{types[name]}"
        for name in needed
        if name in types and types[name].lower() not in NUMERIC_LOGICAL_TYPES
    ]
    if missing:
        problems.append(f"missing columns {summarize(missing)}")
    if wrong:
        problems.append(f"non-numeric columns {summarize(wrong)}")
    return problems


def serves_task(product: DataProductDescriptor, task: TrainingTask) -> bool:
    return not contract_problems(product, task)


@dataclass(frozen=True)
class DataContract:
    name: ClassVar[str] = "data_contract"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        update = candidate.update
        if not update.data_products:
            return reject(self.name, "update names no data product it was trained on")
        problems: list[str] = []
        for ref in update.data_products:
            product = ctx.resolve(update.domain, ref)
            if product is None:
                registered = sorted(p.version for p in ctx.products_of(update.domain) if p.id == ref.id)
                known = f"registered versions: {summarize(registered)}" if registered else "not registered"
                problems.append(f"{ref.id}@{ref.version} is not in the catalog ({known})")
                continue
            problems.extend(f"{ref.id}@{ref.version}: {p}" for p in contract_problems(product, ctx.task))
        if problems:
            return reject(self.name, f"task {ctx.task.id!r}: " + "; ".join(problems))
        refs = ", ".join(f"{ref.id}@{ref.version}" for ref in update.data_products)
        return accept(self.name, f"{refs} serve(s) task {ctx.task.id!r}")
