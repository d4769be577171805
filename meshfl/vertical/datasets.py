"""Vertically partitioned example data: the same entities, different columns in each domain.

``breast_cancer_split`` splits scikit-learn's bundled breast-cancer data (569 patients x 30 columns) like
the seed paper splits its fraud data: three domains of ten columns, the labels with the third. Each
domain misses a few patients the others hold (so alignment has work to do) and names patients by an id
column. ``generated_split`` makes the synthetic 100,000 x 30 set of the throughput benchmark. Each
writes domain folders (``domain.toml`` + Parquet) and returns what it wrote, including the pooled rows
so a centralized baseline can be trained on the very same entities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from meshfl.extras import require
from meshfl.vertical.events import SplitDomainSpec, SplitLabels, SplitLabelsAt, SplitLayer, SplitTask

KEY = "patient_id"
LABEL = "diagnosis"


@dataclass(frozen=True)
class SplitDataset:
    """What was written: the domain folders, and the pooled table for the centralized baseline."""

    root: Path
    domains: list[str]
    columns: dict[str, list[str]]
    ids: dict[str, list[str]]
    pooled_ids: list[str]
    pooled_x: np.ndarray
    pooled_y: np.ndarray
    label_domain: str


def _q(value: str) -> str:
    return json.dumps(value)


def _domain_toml(name: str, columns: list[str], labels: bool, description: str) -> str:
    lines = [
        f"# Vertical example domain: {description}. Written by meshfl.vertical.datasets.",
        f"name = {_q(name)}",
        f"owner = {_q(name + '-data@example.org')}",
        f"description = {_q(description)}",
        "",
        "[[data_products]]",
        f"id = {_q(name + '.patients')}",
        'version = "1.0.0"',
        f"name = {_q('Patients of ' + name)}",
        'tags = ["vertical", "restricted"]',
        'path = "data/patients.parquet"',
        'contract_id = "patients"',
        'contract_version = "1.0.0"',
        "",
        "[[data_products.columns]]",
        f"name = {_q(KEY)}",
        'logical_type = "string"',
        'description = "the patient, shared by the domains; aligned by private set intersection"',
        'classification = "pii"',
    ]
    for column in columns:
        lines += ["", "[[data_products.columns]]", f"name = {_q(column)}", 'logical_type = "number"']
        lines += ['description = "z-score within the domain"', 'classification = "restricted"']
    if labels:
        lines += ["", "[[data_products.columns]]", f"name = {_q(LABEL)}", 'logical_type = "integer"']
        lines += ['description = "the label"', 'classification = "restricted"']
        # what this domain agrees to in split tasks: its labels may go to governance (the paper's
        # configuration with label sharing); without it only tasks keeping them here are joined
        lines += ["", "[split]", "share_labels = true"]
    return "\n".join(lines) + "\n"


def write_split(
    root: Path,
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    domains: list[str],
    *,
    seed: int = 42,
    missing_fraction: float = 0.02,
) -> SplitDataset:
    """Write ``x`` split into ``len(domains)`` column blocks; the last domain holds the labels. Each domain
    drops ``missing_fraction`` of the patients at random; the pooled rows are those all domains hold."""
    rng = np.random.default_rng(seed)
    rows = len(x)
    ids = [f"patient-{i:06d}" for i in rng.permutation(rows)]
    blocks = np.array_split(np.arange(x.shape[1]), len(domains))
    held_by_all = np.ones(rows, dtype=bool)
    written_columns: dict[str, list[str]] = {}
    written_ids: dict[str, list[str]] = {}
    for index, (name, block) in enumerate(zip(domains, blocks, strict=True)):
        keep = rng.random(rows) >= missing_fraction
        held_by_all &= keep
        rows_here = np.flatnonzero(keep)
        rows_here = rows_here[rng.permutation(len(rows_here))]  # each domain stores its own order
        columns = [names[c] for c in block]
        block_x = x[np.ix_(rows_here, block)]
        block_x = (block_x - block_x.mean(axis=0)) / np.where(
            block_x.std(axis=0) > 0, block_x.std(axis=0), 1.0
        )
        table = {KEY: pa.array([ids[r] for r in rows_here])}
        table.update({c: pa.array(block_x[:, j].astype(np.float64)) for j, c in enumerate(columns)})
        labels = index == len(domains) - 1
        if labels:
            table[LABEL] = pa.array(y[rows_here].astype(np.int64))
        folder = root / name
        (folder / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table), folder / "data" / "patients.parquet")
        description = f"columns {block[0]}-{block[-1]}" + (" and the labels" if labels else "")
        (folder / "domain.toml").write_text(_domain_toml(name, columns, labels, description))
        written_columns[name] = columns
        written_ids[name] = [ids[r] for r in rows_here]
    pooled = np.flatnonzero(held_by_all)
    # pooled features standardized per column over the rows each domain holds, as each domain does
    pooled_x = np.empty((len(pooled), x.shape[1]), dtype=np.float32)
    for name, block in zip(domains, blocks, strict=True):
        block_all = x[:, block]
        held = np.isin(np.array(ids), np.array(written_ids[name]))
        mean, std = block_all[held].mean(axis=0), block_all[held].std(axis=0)
        pooled_x[:, block] = (block_all[pooled] - mean) / np.where(std > 0, std, 1.0)
    return SplitDataset(
        root=root,
        domains=list(domains),
        columns=written_columns,
        ids=written_ids,
        pooled_ids=[ids[r] for r in pooled],
        pooled_x=pooled_x,
        pooled_y=y[pooled].astype(np.int64),
        label_domain=domains[-1],
    )


BREAST_CANCER_DOMAINS = ["radiology", "pathology", "oncology"]


def breast_cancer_split(root: Path, *, seed: int = 42, missing_fraction: float = 0.02) -> SplitDataset:
    """The breast-cancer data as three domains of ten columns; ``oncology`` holds the diagnosis."""
    bunch = require("sklearn.datasets", "vertical").load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    return write_split(
        root,
        bunch.data,
        bunch.target,
        names,
        BREAST_CANCER_DOMAINS,
        seed=seed,
        missing_fraction=missing_fraction,
    )


def generated_split(root: Path, *, rows: int = 100_000, seed: int = 42) -> SplitDataset:
    """``rows`` x 30 synthetic rows (a noisy linear rule over all columns), three domains, no rows missing."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 30)).astype(np.float32)
    weights = rng.standard_normal(30)
    y = ((x @ weights + rng.standard_normal(rows)) > 0).astype(np.int64)
    names = [f"x{i:02d}" for i in range(30)]
    return write_split(root, x, y, names, ["alpha", "beta", "gamma"], seed=seed, missing_fraction=0.0)


def paper_bottom(*, dropout: bool) -> list[SplitLayer]:
    """The seed paper's bottom: Linear(10,32), ReLU, BatchNorm, Dropout(0.3) (not in the third domain),
    Linear(32,16), ReLU."""
    layers = [
        SplitLayer(kind="linear", out_features=32),
        SplitLayer(kind="relu"),
        SplitLayer(kind="batchnorm"),
    ]
    if dropout:
        layers.append(SplitLayer(kind="dropout", p=0.3))
    return [*layers, SplitLayer(kind="linear", out_features=16), SplitLayer(kind="relu")]


def paper_top(*, labels_at: SplitLabelsAt, num_classes: int = 2) -> list[SplitLayer]:
    """Linear(48,32), ReLU, BatchNorm, Linear(32,32), ReLU, BatchNorm, then Linear(32,2) with labels at
    governance; without label sharing the top stops at 32 and the label owner applies Linear(32,2)."""
    layers = [
        SplitLayer(kind="linear", out_features=32),
        SplitLayer(kind="relu"),
        SplitLayer(kind="batchnorm"),
        SplitLayer(kind="linear", out_features=32),
        SplitLayer(kind="relu"),
        SplitLayer(kind="batchnorm"),
    ]
    if labels_at == SplitLabelsAt.GOVERNANCE:
        layers.append(SplitLayer(kind="linear", out_features=num_classes))
    return layers


def paper_task(
    dataset: SplitDataset, *, task_id: str, labels_at: SplitLabelsAt, **overrides: object
) -> SplitTask:
    """The paper's split task over ``dataset`` (Adam 1e-4, 35 epochs, batch 256 unless overridden)."""
    last = len(dataset.domains) - 1
    specs = [
        SplitDomainSpec(
            domain=name,
            data_product=f"{name}.patients",
            key=KEY,
            columns=dataset.columns[name],
            bottom=paper_bottom(dropout=index < last),
            cut_width=16,
        )
        for index, name in enumerate(dataset.domains)
    ]
    head = [] if labels_at == SplitLabelsAt.GOVERNANCE else [SplitLayer(kind="linear", out_features=2)]
    fields: dict[str, object] = {
        "id": task_id,
        "description": f"split learning after Li and Toor (arXiv 2403.17878), labels at {labels_at.value}",
        "domains": specs,
        "top": paper_top(labels_at=labels_at),
        "labels": SplitLabels(domain=dataset.label_domain, column=LABEL, at=labels_at, head=head),
        "num_classes": 2,
        "epochs": 35,
        "batch_size": 256,
        "learning_rate": 1e-4,
        "seed": 42,
        **overrides,
    }
    return SplitTask.model_validate(fields)
