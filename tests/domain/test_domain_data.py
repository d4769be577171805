"""Data contracts against local files, which products serve a task, and the tensors they give."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import torch
from domain_builders import SMALL_DOMAIN, small_table, small_task, write_domain

from meshfl.domain.config import load_domain
from meshfl.domain.contract import check_contract, contract_violations
from meshfl.domain.data import (
    load_training_data,
    load_xy_file,
    prepare_local_data,
    product_serves,
    serves,
    split_holdout,
)
from meshfl.errors import DataContractError
from meshfl.events import Column, DataProductDescriptor, DataProductStatus

CONTRACT = [
    Column(name="x1", logical_type="number"),
    Column(name="x2", logical_type="integer"),
    Column(name="note", logical_type="string", required=False),
    Column(name="y", logical_type="integer"),
]


def test_conforming_table_with_extra_column() -> None:
    table = small_table(5, note_nulls=2).append_column("extra", pa.array([b"z"] * 5))
    assert contract_violations(table, CONTRACT) == []
    check_contract(table, CONTRACT, product_id="p")


def test_missing_column() -> None:
    problems = contract_violations(small_table(5).drop_columns(["x1"]), CONTRACT)
    assert problems == ["column 'x1' is missing"]


def test_wrong_type() -> None:
    table = small_table(5).set_column(1, "x2", pa.array([0.5] * 5, pa.float64()))
    (problem,) = contract_violations(table, CONTRACT)
    assert "'x2'" in problem and "integer" in problem
    table = small_table(5).set_column(0, "x1", pa.array(["a"] * 5))
    assert "not compatible with 'number'" in contract_violations(table, CONTRACT)[0]


def test_nulls_in_required_column() -> None:
    table = small_table(5).set_column(3, "y", pa.array([0, None, 1, None, 0], pa.int64()))
    with pytest.raises(DataContractError, match="'y' is required but holds 2 null"):
        check_contract(table, CONTRACT, product_id="shop.orders")


def _descriptor(
    columns: list[Column], status: DataProductStatus = DataProductStatus.ACTIVE
) -> DataProductDescriptor:
    return DataProductDescriptor(id="p", domain="d", owner="o", version="1", status=status, columns=columns)


def test_serves() -> None:
    task = small_task()
    assert serves(_descriptor(CONTRACT), task) is None
    assert "missing feature column(s) x1" in (serves(_descriptor(CONTRACT[1:]), task) or "")
    as_string = [CONTRACT[0].model_copy(update={"logical_type": "string"}), *CONTRACT[1:]]
    assert "feature 'x1' is string, not numeric" in (serves(_descriptor(as_string), task) or "")
    label_number = [*CONTRACT[:3], Column(name="y", logical_type="number")]
    assert "not integer or boolean" in (serves(_descriptor(label_number), task) or "")
    assert "missing label column 'target'" in (
        serves(_descriptor(CONTRACT), small_task(label="target")) or ""
    )
    assert "retired" in (serves(_descriptor(CONTRACT, DataProductStatus.RETIRED), task) or "")
    assert serves(_descriptor(CONTRACT, DataProductStatus.DEPRECATED), task) is None


def _two_products(tmp_path: Path, second: pa.Table) -> Path:
    product = SMALL_DOMAIN[SMALL_DOMAIN.index("[[data_products]]") :]
    product = product.replace("shop.orders", "shop.returns").replace("orders.parquet", "returns.parquet")
    tables = {"data/orders.parquet": small_table(10), "data/returns.parquet": second}
    return write_domain(tmp_path / "shop", SMALL_DOMAIN + product, tables)


def test_load_training_data_concatenates_serving_products(tmp_path: Path) -> None:
    second = small_table(6).set_column(0, "x1", pa.array([9.0, None, 9.0, 9.0, 9.0, 9.0]))
    toml_second_optional = _two_products(tmp_path, second)
    # x1 is required in the contract, so the null breaks the second product's contract
    with pytest.raises(DataContractError, match=r"shop\.returns"):
        load_training_data(load_domain(toml_second_optional), small_task())
    fixed = small_table(6).set_column(0, "x1", pa.array([9.0] * 6))
    config = load_domain(_two_products(tmp_path / "ok", fixed))
    x, y, refs = load_training_data(config, small_task())
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (16, 2) and y.shape == (16,)
    assert [r.id for r in refs] == ["shop.orders", "shop.returns"] and refs[0].version == "2.1.0"
    assert torch.equal(x[10:, 0], torch.full((6,), 9.0))
    # a task that wants the string column as a feature is served by neither product
    with pytest.raises(DataContractError, match=r"cannot serve task.*shop\.orders.*shop\.returns"):
        load_training_data(config, small_task(features=["x1", "note"]))


def test_rows_with_nulls_in_optional_feature_are_dropped(tmp_path: Path) -> None:
    toml = SMALL_DOMAIN.replace(
        'name = "x2"\n  logical_type = "integer"',
        'name = "x2"\n  logical_type = "integer"\n  required = false',
    )
    table = small_table(8).set_column(1, "x2", pa.array([1, None, 3, None, 5, 6, 7, 8], pa.int32()))
    config = load_domain(write_domain(tmp_path / "shop", toml, {"data/orders.parquet": table}))
    x, y, _ = load_training_data(config, small_task())
    assert x.shape == (6, 2) and y.tolist() == [0, 0, 0, 1, 0, 1]
    assert x[:, 1].tolist() == [1, 3, 5, 6, 7, 8]


def test_labels_outside_num_classes(tmp_path: Path) -> None:
    table = small_table(6).set_column(3, "y", pa.array([0, 1, 2, 0, 1, 2], pa.int64()))
    config = load_domain(write_domain(tmp_path / "shop", SMALL_DOMAIN, {"data/orders.parquet": table}))
    with pytest.raises(DataContractError, match=r"outside \[0, 2\)"):
        load_training_data(config, small_task())
    assert product_serves(config.data_products[0], small_task()) is None


def test_split_holdout() -> None:
    x = torch.arange(100, dtype=torch.float32).reshape(50, 2)
    y = torch.arange(50)
    before = x.clone()
    (x_tr, y_tr), holdout = split_holdout(x, y, fraction=0.2, seed=7)
    assert holdout is not None
    x_ho, y_ho = holdout
    assert torch.equal(x_ho[:, 0], y_ho.float() * 2)
    assert (len(y_tr), len(y_ho)) == (40, 10)
    assert sorted(y_tr.tolist() + y_ho.tolist()) == list(range(50))
    assert torch.equal(x_tr[:, 0], y_tr.float() * 2)
    (again, _), other = split_holdout(x, y, fraction=0.2, seed=7)
    assert torch.equal(again, x_tr) and other is not None and torch.equal(other[1], y_ho)
    (_, _), different = split_holdout(x, y, fraction=0.2, seed=8)
    assert different is not None and not torch.equal(different[1], y_ho)
    assert split_holdout(x, y, fraction=0.0, seed=7)[1] is None
    (x_one, _), _ = split_holdout(x[:1], y[:1], fraction=0.5, seed=7)
    assert len(x_one) == 1
    assert torch.equal(x, before)


def test_example_domain_serves_digits(mesh_root: Path, digits_task) -> None:
    config = load_domain(mesh_root / "digits-retail")
    assert serves(config.descriptors()[0], digits_task) is None
    local = prepare_local_data(config, digits_task)
    n = config.descriptors()[0].num_rows
    assert local.holdout is not None
    assert len(local.y_train) + len(local.holdout[1]) == n
    assert float(local.x_train.min()) >= 0.0 and float(local.x_train.max()) <= 1.0
    hospital = load_domain(mesh_root / "hospital-north")
    assert "missing feature column(s) px00" in (serves(hospital.descriptors()[0], digits_task) or "")


def test_load_xy_file(mesh_root: Path, digits_task) -> None:
    x, y = load_xy_file(mesh_root / "_testsets" / "digits-test.parquet", digits_task)
    assert x.shape == (360, 64) and y.shape == (360,)
    with pytest.raises(DataContractError, match="missing column"):
        load_xy_file(mesh_root / "_testsets" / "breast-cancer-test.parquet", digits_task)
    with pytest.raises(DataContractError, match="not found"):
        load_xy_file(mesh_root / "_testsets" / "nothing-test.parquet", digits_task)
