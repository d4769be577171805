"""domain.toml parsing, its errors, and the descriptors a domain publishes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from domain_builders import SMALL_DOMAIN, small_table, write_domain

from meshfl.domain.config import discover_domains, load_domain
from meshfl.errors import ConfigError, DataContractError
from meshfl.events import DataProductDescriptor, DataProductStatus


def _quality(descriptor: DataProductDescriptor) -> dict[str, float]:
    return {figure.name: figure.value for figure in descriptor.quality}


def test_load_small_domain(tmp_path: Path) -> None:
    folder = write_domain(tmp_path / "shop", SMALL_DOMAIN)
    config = load_domain(folder)
    assert config.name == "shop"
    assert config.root == folder.resolve()
    assert config.training.holdout_fraction == 0.2 and config.training.threads == 1
    product = config.product("shop.orders")
    assert product.status is DataProductStatus.ACTIVE
    assert product.file_format == "parquet"
    assert [c.name for c in product.columns] == ["x1", "x2", "note", "y"]
    assert product.columns[2].required is False
    assert load_domain(folder / "domain.toml") == config


def test_descriptor_measures_the_file(tmp_path: Path) -> None:
    folder = write_domain(
        tmp_path / "shop", SMALL_DOMAIN, {"data/orders.parquet": small_table(10, note_nulls=4)}
    )
    (descriptor,) = load_domain(folder).descriptors()
    assert descriptor.id == "shop.orders" and descriptor.domain == "shop"
    assert descriptor.owner == "shop-data@example.com"
    assert (descriptor.version, descriptor.contract_id, descriptor.contract_version) == (
        "2.1.0",
        "orders",
        "1.2.0",
    )
    assert descriptor.num_rows == 10
    assert descriptor.output_ports[0].location == "data/orders.parquet"
    quality = _quality(descriptor)
    assert quality["row_count"] == 10
    assert quality["completeness"] == pytest.approx(1 - 4 / 40)
    assert quality["contract_violations"] == 0
    assert quality["duplicate_rows"] == 0
    DataProductDescriptor.from_avro(descriptor.to_avro())


def test_descriptor_counts_violations_and_duplicates(tmp_path: Path) -> None:
    table = small_table(4)
    broken = pa.concat_tables([table, table]).drop_columns(["x2"])
    folder = write_domain(tmp_path / "shop", SMALL_DOMAIN, {"data/orders.parquet": broken})
    quality = _quality(load_domain(folder).descriptors()[0])
    assert quality["contract_violations"] == 1
    assert quality["duplicate_rows"] == pytest.approx(0.5)


def test_descriptor_without_file(tmp_path: Path) -> None:
    (descriptor,) = load_domain(write_domain(tmp_path / "shop", SMALL_DOMAIN)).descriptors()
    assert descriptor.num_rows is None and descriptor.quality == []


def test_descriptor_unreadable_file(tmp_path: Path) -> None:
    folder = write_domain(tmp_path / "shop", SMALL_DOMAIN)
    (folder / "data").mkdir()
    (folder / "data" / "orders.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataContractError, match="cannot read"):
        load_domain(folder).descriptors()


def test_csv_product(tmp_path: Path) -> None:
    toml = SMALL_DOMAIN.replace("data/orders.parquet", "data/orders.csv")
    folder = write_domain(tmp_path / "shop", toml)
    (folder / "data").mkdir()
    (folder / "data" / "orders.csv").write_text("x1,x2,note,y\n0.5,1,,0\n1.5,2,hello,1\n")
    (descriptor,) = load_domain(folder).descriptors()
    assert descriptor.output_ports[0].type == "csv"
    assert _quality(descriptor)["contract_violations"] == 0
    assert _quality(descriptor)["completeness"] == pytest.approx(7 / 8)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("owner = ", "team = "), "team"),  # unknown key, and owner missing
        (('logical_type = "integer"', 'logical_type = "whole"'), "data_products[0].columns"),
        (('path = "data/orders.parquet"', 'path = "/etc/orders.parquet"'), "data_products[0].path"),
        (('path = "data/orders.parquet"', 'path = "data/orders.xlsx"'), "data_products[0]"),
        (('name = "shop"', 'name = "Shop Domain"'), "name"),
        (('contract_id = "orders"', "contract_id = 7"), "data_products[0].contract_id"),
        (('status = "active"', 'status = "sunny"'), "data_products[0].status"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path: Path, change: tuple[str, str], field: str) -> None:
    toml = SMALL_DOMAIN.replace('version = "2.1.0"', 'version = "2.1.0"\nstatus = "active"')
    toml = toml.replace(*change, 1)
    folder = write_domain(tmp_path / "shop", toml)
    with pytest.raises(ConfigError) as caught:
        load_domain(folder)
    assert str(folder / "domain.toml") in str(caught.value)
    assert field in str(caught.value)


def test_duplicate_product_and_column(tmp_path: Path) -> None:
    product = SMALL_DOMAIN[SMALL_DOMAIN.index("[[data_products]]") :]
    folder = write_domain(tmp_path / "twice", SMALL_DOMAIN + product)
    with pytest.raises(ConfigError, match="duplicate data product ids"):
        load_domain(folder)
    toml = SMALL_DOMAIN.replace('name = "note"', 'name = "x1"')
    with pytest.raises(ConfigError, match="duplicate column names"):
        load_domain(write_domain(tmp_path / "cols", toml))


def test_bad_toml_missing_file_and_root_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such domain file"):
        load_domain(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"domain\.toml"):
        load_domain(write_domain(tmp_path / "syntax", "name = = 'x'"))
    with pytest.raises(ConfigError, match="root"):
        load_domain(write_domain(tmp_path / "root", 'root = "/"\n' + SMALL_DOMAIN))
    config = load_domain(write_domain(tmp_path / "shop", SMALL_DOMAIN))
    with pytest.raises(ConfigError, match="no data product"):
        config.product("shop.nothing")


def test_training_overrides(tmp_path: Path) -> None:
    toml = SMALL_DOMAIN + "\n[training]\nholdout_fraction = 0.1\nthreads = 2\n"
    config = load_domain(write_domain(tmp_path / "shop", toml))
    assert (config.training.holdout_fraction, config.training.threads) == (0.1, 2)
    with pytest.raises(ConfigError, match=r"training\.holdout_fraction"):
        load_domain(write_domain(tmp_path / "bad", SMALL_DOMAIN + "\n[training]\nholdout_fraction = 1.5\n"))


def test_example_domains_load(mesh_root: Path) -> None:
    folders = discover_domains(mesh_root)
    names = [folder.name for folder in folders]
    assert names == sorted(names) and "_testsets" not in names and "tasks" not in names
    assert len(folders) == 8
    for folder in folders:
        config = load_domain(folder)
        for descriptor in config.descriptors():
            assert descriptor.num_rows and descriptor.num_rows >= 30
            assert _quality(descriptor)["contract_violations"] == 0
            assert _quality(descriptor)["completeness"] == 1.0


def test_committed_domain_files_load() -> None:
    repo_domains = Path(__file__).resolve().parents[2] / "domains"
    configs = [load_domain(folder) for folder in discover_domains(repo_domains)]
    ids = [p.id for c in configs for p in c.data_products]
    assert len(configs) == 8 and len(set(ids)) == len(ids), (
        "product ids are the catalog key: unique in the mesh"
    )
