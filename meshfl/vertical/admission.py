"""Which split tasks a domain joins: its own configuration (``[split]`` of ``domain.toml``) decides,
whatever governance asks, like ``meshfl.domain.admission`` for horizontal tasks.

A split task asks a domain to publish, every batch, a function of its private columns (the cut-layer
activations) and, with labels at governance, its label column as is. ``split_admits`` is the domain's
own say: the task must pass the task-file checks (``check_split_task``), its id must match
``[split] tasks``, the data product must be one of the domain's and match ``[split] data_products``,
every feature column must match ``[split] columns``, the bottom network must contain a linear layer
(a bottom of only ReLU, batch norm and dropout publishes the columns themselves) unless
``allow_raw_columns``, and labels go to governance only with ``share_labels`` and a label column that
matches ``[split] label_columns`` (default: the ``columns`` patterns). Whether governance
signed the task is checked before, apart (``meshfl.vertical.trust``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from meshfl.domain.config import DomainConfig
from meshfl.errors import ConfigError
from meshfl.vertical.events import SplitLabelsAt, SplitTask
from meshfl.vertical.spec import check_split_task

__all__ = ["split_admits"]


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def split_admits(config: DomainConfig, task: SplitTask) -> str | None:
    """``None`` when this domain's configuration admits ``task``, else the reason it does not."""
    try:
        check_split_task(task)
    except ConfigError as exc:
        return f"invalid split task: {exc}"
    consent = config.split
    if not _matches(task.id, consent.tasks):
        return f"task id {task.id!r} matches none of [split] tasks {consent.tasks}"
    spec = next((d for d in task.domains if d.domain == config.name), None)
    if spec is None:
        return f"the task does not name {config.name!r}"
    if spec.data_product not in {p.id for p in config.data_products}:
        return f"this domain has no data product {spec.data_product!r}"
    if not _matches(spec.data_product, consent.data_products):
        return f"data product {spec.data_product!r} matches none of [split] data_products"
    refused = [column for column in spec.columns if not _matches(column, consent.columns)]
    if refused:
        return f"columns {refused} match none of [split] columns {consent.columns}"
    if not consent.allow_raw_columns and not any(layer.kind == "linear" for layer in spec.bottom):
        return (
            "the bottom network has no linear layer: its cut would publish the raw columns"
            " (set [split] allow_raw_columns = true to agree)"
        )
    labels = task.labels
    if labels.domain == config.name and labels.at == SplitLabelsAt.GOVERNANCE:
        if not consent.share_labels:
            return "the task sends this domain's labels to governance; [split] share_labels is false"
        allowed = consent.columns if consent.label_columns is None else consent.label_columns
        if not _matches(labels.column, allowed):  # else any column could go raw, named the label
            return f"label column {labels.column!r} matches none of [split] label_columns {allowed}"
    return None
