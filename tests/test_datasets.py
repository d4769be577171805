"""The example mesh: deterministic files, every row accounted for, visible label skew."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from meshfl.datasets import DATASETS, dirichlet_partition, find_testset, global_testset_path, materialize
from meshfl.domain.tasks import load_task_file
from meshfl.errors import ConfigError, DataContractError

REPO_DOMAINS = Path(__file__).resolve().parents[1] / "domains"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("mesh")
    return root, materialize(root, seed=42)


def test_deterministic_and_idempotent(materialized, tmp_path: Path) -> None:
    root, _ = materialized
    first = _files(root)
    again = materialize(root, seed=42)
    assert not any(part.written for part in [*again.domains, *again.test_sets])
    assert _files(root) == first
    materialize(tmp_path, seed=42)
    assert _files(tmp_path) == first
    other = tmp_path / "other"
    materialize(other, seed=7)
    assert (
        _files(other)["digits-retail/data/scanned-forms.parquet"]
        != first["digits-retail/data/scanned-forms.parquet"]
    )


def test_every_row_once(materialized) -> None:
    _, report = materialized
    for key, total in (("digits", 1797), ("breast-cancer", 569)):
        parts = [p for p in [*report.domains, *report.test_sets] if p.dataset == key]
        assert sum(p.rows for p in parts) == total
        for part in parts:
            assert pq.read_metadata(part.path).num_rows == part.rows == sum(part.label_counts.values())
    digits_test = next(p for p in report.test_sets if p.dataset == "digits")
    assert digits_test.rows == 360
    assert all(35 <= n <= 37 for n in digits_test.label_counts.values()), "stratified 20 %"


def test_dirichlet_skew_is_visible(materialized) -> None:
    _, report = materialized
    digits = [p for p in report.domains if p.dataset == "digits"]
    assert [p.domain for p in digits] == [d.name for d in DATASETS["digits"].domains]
    assert min(p.rows for p in digits) >= 30
    shares = np.array([[p.label_counts.get(k, 0) / p.rows for k in range(10)] for p in digits])
    assert shares.max(axis=1).min() > 0.2, "every domain has a dominant class (uniform would be 0.1)"
    distances = [0.5 * np.abs(shares[i] - shares[j]).sum() for i in range(5) for j in range(i + 1, 5)]
    assert min(distances) > 0.2, "label distributions differ between every pair of domains"


def test_files_hold_the_contract_columns(materialized) -> None:
    root, _ = materialized
    digits = pq.read_table(root / "digits-finance" / "data" / "scanned-forms.parquet")
    assert digits.column_names == [f"px{i:02d}" for i in range(64)] + ["label"]
    pixels = digits.drop_columns(["label"]).to_pandas().to_numpy()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    hospital = pq.read_table(root / "hospital-south" / "data" / "biopsy-measurements.parquet").to_pandas()
    features = hospital.drop(columns=["diagnosis"]).to_numpy(dtype=np.float64)
    assert np.allclose(features.mean(axis=0), 0.0, atol=1e-5), "standardized within the domain"
    assert np.allclose(features.std(axis=0), 1.0, atol=1e-4)


def test_committed_domain_files_match_the_generated_ones(materialized) -> None:
    root, report = materialized
    for part in report.domains:
        committed = (REPO_DOMAINS / part.domain / "domain.toml").read_text()
        assert committed == (root / part.domain / "domain.toml").read_text(), part.domain


def test_testsets_for_the_committed_tasks(materialized) -> None:
    root, _ = materialized
    digits = load_task_file(REPO_DOMAINS / "tasks" / "digits.toml")
    cancer = load_task_file(REPO_DOMAINS / "tasks" / "breast-cancer.toml")
    assert find_testset(root, digits) == global_testset_path(root, "digits")
    assert find_testset(root, cancer) == global_testset_path(root, "breast-cancer")
    with pytest.raises(DataContractError, match="no test set"):
        find_testset(root, digits.model_copy(update={"label": "colour"}))


def test_dirichlet_partition() -> None:
    labels = np.repeat(np.arange(4), 50)
    parts = dirichlet_partition(labels, 3, 0.5, seed=1, min_rows=20)
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))
    assert all(part.size >= 20 and np.all(np.diff(part) > 0) for part in parts)
    again = dirichlet_partition(labels, 3, 0.5, seed=1, min_rows=20)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    with pytest.raises(ConfigError, match="no Dirichlet"):
        dirichlet_partition(labels, 3, 0.5, seed=1, min_rows=100, max_draws=5)
    with pytest.raises(ConfigError):
        dirichlet_partition(labels, 3, 0.0, seed=1)


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset"):
        materialize(tmp_path, datasets=["mnist"])
