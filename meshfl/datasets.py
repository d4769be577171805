"""The example mesh: scikit-learn's bundled datasets split across business-like domains, offline.

* ``digits``: 1,797 handwritten 8x8 digits (64 pixels scaled to [0, 1] by /16, a fixed scale that
  needs no statistics), over five domains with label skew.
* ``breast-cancer``: 569 Wisconsin diagnostic records (30 measurements, diagnosis 0 = malignant,
  1 = benign) over three hospitals.

A stratified global test set (20 %, seeded) is held out first; it belongs to no domain and is what the
demo evaluates global models on. The rest is split with the per-class Dirichlet partition of Hsu, Qi
and Brown [2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification", arXiv:1909.06335]: for each class, shares ``p ~ Dir(alpha)`` over the domains; the
draw is repeated (same RNG stream, so still deterministic) until every domain has ``min_rows`` rows.

Breast-cancer features are standardized *within each domain* (z-scores from the domain's own rows, and
the test set from its own rows). Standardizing with statistics of the pooled data would need every
hospital's rows in one place, which is what federation avoids; raw features (areas near 1,000 next to
smoothness near 0.1) make plain SGD diverge, and ``ModelSpec`` has no normalization layer. The cost is
a mild covariate shift between domains, which federated averaging has to absorb, as in real
multi-site data where each site runs its own preprocessing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from meshfl.domain.config import DOMAIN_FILE
from meshfl.errors import ConfigError, DataContractError
from meshfl.events import TrainingTask
from meshfl.extras import require
from meshfl.logs import get_logger

log = get_logger(__name__)

TESTSETS_DIR = "_testsets"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    owner: str
    description: str


@dataclass(frozen=True)
class DatasetSpec:
    """How one bundled dataset becomes domains, a data product each, and a test set."""

    key: str
    product: str
    product_name: str
    product_description: str
    classification: str
    feature_unit: str | None
    label: str
    label_description: str
    domains: tuple[DomainSpec, ...]
    alpha: float
    min_rows: int
    loader: Callable[[], tuple[np.ndarray, np.ndarray, list[str], list[str]]]
    standardize_locally: bool
    test_fraction: float = 0.2


def _digits() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    bunch = require("sklearn.datasets", "examples").load_digits()
    names = [f"px{i:02d}" for i in range(64)]
    descriptions = [f"ink of pixel row {i // 8}, column {i % 8}, 0..1" for i in range(64)]
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64), names, descriptions


def _breast_cancer() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    bunch = require("sklearn.datasets", "examples").load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    descriptions = [f"{n} of the cell nuclei, z-score within the domain" for n in bunch.feature_names]
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), names, descriptions


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        key="digits",
        product="scanned-forms",
        product_name="Scanned forms",
        product_description="Handwritten digits cut from scanned forms, 8x8 pixels, with the keyed-in value",
        classification="internal",
        feature_unit=None,
        label="label",
        label_description="the digit written on the form, 0-9",
        domains=(
            DomainSpec(
                "digits-retail", "retail-analytics@example.com", "Order forms filled in at the stores"
            ),
            DomainSpec("digits-logistics", "logistics-data@example.com", "Delivery notes signed at the door"),
            DomainSpec("digits-finance", "finance-ops@example.com", "Cheques and payment slips"),
            DomainSpec(
                "digits-marketing", "marketing-insights@example.com", "Survey cards returned by customers"
            ),
            DomainSpec("digits-support", "support-quality@example.com", "Warranty claims sent by post"),
        ),
        alpha=0.5,
        min_rows=30,
        loader=_digits,
        standardize_locally=False,
    ),
    "breast-cancer": DatasetSpec(
        key="breast-cancer",
        product="biopsy-measurements",
        product_name="Biopsy measurements",
        product_description="Fine-needle aspirate measurements of breast masses with the confirmed diagnosis",
        classification="restricted",
        feature_unit="z-score",
        label="diagnosis",
        label_description="confirmed diagnosis: 0 = malignant, 1 = benign",
        domains=(
            DomainSpec("hospital-north", "north-clinical-data@example.org", "Northern regional hospital"),
            DomainSpec(
                "hospital-central", "central-clinical-data@example.org", "Central university hospital"
            ),
            DomainSpec("hospital-south", "south-clinical-data@example.org", "Southern regional hospital"),
        ),
        alpha=1.0,
        min_rows=60,
        loader=_breast_cancer,
        standardize_locally=True,
    ),
}


def dirichlet_partition(
    labels: np.ndarray, num_parts: int, alpha: float, *, seed: int, min_rows: int = 1, max_draws: int = 1000
) -> list[np.ndarray]:
    """Split row indices into ``num_parts`` with per-class shares drawn from ``Dir(alpha)``.

    Returns sorted index arrays that together hold every index exactly once. Raises ``ConfigError``
    if no draw in ``max_draws`` gives every part ``min_rows`` rows.
    """
    if num_parts < 1 or alpha <= 0:
        raise ConfigError(f"dirichlet_partition: need num_parts >= 1 and alpha > 0, got {num_parts}, {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_draws):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
        for k in classes:
            rows = np.flatnonzero(labels == k)
            rng.shuffle(rows)
            shares = rng.dirichlet(np.full(num_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * rows.size).astype(np.int64)
            for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
                part.append(chunk)
        merged = [np.sort(np.concatenate(p)) for p in parts]
        if min(m.size for m in merged) >= min_rows:
            return merged
    raise ConfigError(f"no Dirichlet({alpha}) draw gave all {num_parts} parts >= {min_rows} rows")


def _standardize(x: np.ndarray) -> np.ndarray:
    """Z-scores from the rows' own mean and standard deviation (constant columns stay at 0)."""
    x64 = x.astype(np.float64)
    std = x64.std(axis=0)
    return ((x64 - x64.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _table(x: np.ndarray, y: np.ndarray, names: list[str], label: str) -> pa.Table:
    arrays = [pa.array(x[:, j], type=pa.float32()) for j in range(x.shape[1])]
    arrays.append(pa.array(y, type=pa.int64()))
    return pa.Table.from_arrays(arrays, names=[*names, label])


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds ``data``; True if it was written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _label_counts(y: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(y, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


@dataclass(frozen=True)
class PartReport:
    """One written file: a domain's data product or a dataset's global test set."""

    dataset: str
    domain: str
    path: Path
    rows: int
    label_counts: dict[int, int]
    written: bool


@dataclass(frozen=True)
class MaterializeReport:
    domains: list[PartReport]
    test_sets: list[PartReport]


def global_testset_path(domains_root: Path, dataset: str) -> Path:
    return Path(domains_root) / TESTSETS_DIR / f"{dataset}-test.parquet"


def find_testset(domains_root: Path, task: TrainingTask) -> Path:
    """The global test set under ``domains_root`` that has every feature and the label of ``task``."""
    wanted = {*task.features, task.label}
    for path in sorted((Path(domains_root) / TESTSETS_DIR).glob("*-test.parquet")):
        if wanted <= set(pq.read_schema(path).names):
            return path
    raise DataContractError(
        f"no test set under {domains_root}/{TESTSETS_DIR} has the columns of task {task.id!r}"
    )


def product_path(domains_root: Path, spec: DatasetSpec, domain: str) -> Path:
    return Path(domains_root) / domain / "data" / f"{spec.product}.parquet"


def materialize_dataset(spec: DatasetSpec, domains_root: Path, *, seed: int = 42) -> list[PartReport]:
    """Write one dataset's domain files (and ``domain.toml`` where missing) and its test set."""
    x, y, names, descriptions = spec.loader()
    rest, test = require("sklearn.model_selection", "examples").train_test_split(
        np.arange(y.size), test_size=spec.test_fraction, stratify=y, random_state=seed, shuffle=True
    )
    test = np.sort(test)
    rest = np.sort(rest)
    parts = dirichlet_partition(y[rest], len(spec.domains), spec.alpha, seed=seed, min_rows=spec.min_rows)
    prepare = _standardize if spec.standardize_locally else (lambda a: a)
    reports: list[PartReport] = []
    for domain, part in zip(spec.domains, parts, strict=True):
        rows = rest[part]
        path = product_path(domains_root, spec, domain.name)
        written = _write_if_changed(
            path, _parquet_bytes(_table(prepare(x[rows]), y[rows], names, spec.label))
        )
        config = path.parent.parent / DOMAIN_FILE
        if not config.is_file():
            config.write_text(render_domain_toml(spec, domain, names, descriptions), encoding="utf-8")
        reports.append(
            PartReport(spec.key, domain.name, path, int(rows.size), _label_counts(y[rows]), written)
        )
    path = global_testset_path(domains_root, spec.key)
    written = _write_if_changed(path, _parquet_bytes(_table(prepare(x[test]), y[test], names, spec.label)))
    reports.append(PartReport(spec.key, TESTSETS_DIR, path, int(test.size), _label_counts(y[test]), written))
    return reports


def materialize(
    domains_root: Path, *, seed: int = 42, datasets: list[str] | None = None
) -> MaterializeReport:
    """Write every example dataset under ``domains_root``; idempotent, same bytes for the same seed."""
    keys = list(DATASETS) if datasets is None else datasets
    unknown = [k for k in keys if k not in DATASETS]
    if unknown:
        raise ConfigError(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    domains: list[PartReport] = []
    tests: list[PartReport] = []
    for key in keys:
        for part in materialize_dataset(DATASETS[key], Path(domains_root), seed=seed):
            (tests if part.domain == TESTSETS_DIR else domains).append(part)
            log.info("materialized", dataset=key, domain=part.domain, rows=part.rows, written=part.written)
    return MaterializeReport(domains=domains, test_sets=tests)


def _q(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these texts)."""
    return json.dumps(value, ensure_ascii=False)


def render_domain_toml(
    spec: DatasetSpec, domain: DomainSpec, names: list[str], descriptions: list[str]
) -> str:
    """The ``domain.toml`` of one example domain (written only where none exists)."""
    lines = [
        f"# Example domain of the {spec.key!r} dataset; data written by `meshfl domains materialize`.",
        f"name = {_q(domain.name)}",
        f"owner = {_q(domain.owner)}",
        f"description = {_q(domain.description)}",
        "",
        "[training]",
        "holdout_fraction = 0.2",
        "threads = 1",
        "",
        "[[data_products]]",
        f"id = {_q(domain.name + '.' + spec.product)}",
        'version = "1.0.0"',
        'status = "active"',
        f"name = {_q(spec.product_name)}",
        f"description = {_q(spec.product_description)}",
        f"tags = [{_q(spec.key)}, {_q(spec.classification)}]",
        f"path = {_q('data/' + spec.product + '.parquet')}",
        f"contract_id = {_q(spec.product)}",
        'contract_version = "1.0.0"',
    ]
    for name, description in zip(names, descriptions, strict=True):
        lines += ["", "[[data_products.columns]]", f"name = {_q(name)}", 'logical_type = "number"']
        lines += ["required = true", f"description = {_q(description)}"]
        if spec.feature_unit is not None:
            lines.append(f"unit = {_q(spec.feature_unit)}")
        lines.append(f"classification = {_q(spec.classification)}")
    lines += ["", "[[data_products.columns]]", f"name = {_q(spec.label)}", 'logical_type = "integer"']
    lines += ["required = true", f"description = {_q(spec.label_description)}"]
    lines += [f"classification = {_q(spec.classification)}", ""]
    return "\n".join(lines)
