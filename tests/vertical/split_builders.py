"""Small split tasks for the tests."""

from __future__ import annotations

from meshfl.vertical.events import SplitDomainSpec, SplitLabels, SplitLabelsAt, SplitLayer, SplitTask


def bottom(width: int = 8, cut: int = 4, *, dropout: bool = True) -> list[SplitLayer]:
    layers = [SplitLayer(kind="linear", out_features=width), SplitLayer(kind="relu")]
    layers.append(SplitLayer(kind="batchnorm"))
    if dropout:
        layers.append(SplitLayer(kind="dropout", p=0.3))
    return [*layers, SplitLayer(kind="linear", out_features=cut), SplitLayer(kind="relu")]


def split_task(
    *,
    labels_at: SplitLabelsAt = SplitLabelsAt.GOVERNANCE,
    domains: int = 3,
    columns: int = 3,
    **overrides: object,
) -> SplitTask:
    names = [f"d{i}" for i in range(domains)]
    specs = [
        SplitDomainSpec(
            domain=name,
            data_product=f"{name}.rows",
            key="entity_id",
            columns=[f"c{i * columns + j}" for j in range(columns)],
            bottom=bottom(dropout=i < domains - 1),
            cut_width=4,
        )
        for i, name in enumerate(names)
    ]
    top_out = 2 if labels_at == SplitLabelsAt.GOVERNANCE else 8
    top = [
        SplitLayer(kind="linear", out_features=8),
        SplitLayer(kind="relu"),
        SplitLayer(kind="batchnorm"),
        SplitLayer(kind="linear", out_features=top_out),
    ]
    head = [] if labels_at == SplitLabelsAt.GOVERNANCE else [SplitLayer(kind="linear", out_features=2)]
    fields: dict[str, object] = {
        "id": "split-test",
        "domains": specs,
        "top": top,
        "labels": SplitLabels(domain=names[0], column="label", at=labels_at, head=head),
        "num_classes": 2,
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "seed": 7,
        **overrides,
    }
    return SplitTask.model_validate(fields)
