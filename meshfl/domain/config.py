"""A domain's configuration: the folder ``domains/<name>/`` and its ``domain.toml``.

A domain owns its data products (local Parquet or CSV files, never read outside the domain) and
publishes only their descriptors: id, version, owner, data contract (columns with logical types),
and quality figures measured on the local file. The descriptor follows Bitol's Open Data Product
Standard (ODPS) and its contract the Open Data Contract Standard (ODCS v3)::

    name = "digits-retail"
    owner = "retail-analytics@example.com"
    description = "Scanned order forms of the retail domain"
    signing_key = "keys/retail.key"      # optional, relative to the folder

    [[data_products]]
    id = "digits-retail.scanned-forms"
    version = "1.0.0"
    path = "data/scanned-forms.parquet"  # relative to the folder
    contract_id = "scanned-forms"
    contract_version = "1.0.0"
      [[data_products.columns]]
      name = "label"
      logical_type = "integer"

    [training]                           # optional overrides of local training
    holdout_fraction = 0.2
    threads = 1

    [split]                              # optional: what it agrees to in vertical (split) tasks
    share_labels = false                 # its labels never go to governance unless true
    # label_columns = ["label"]          # which columns may be those labels (default: as columns)
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meshfl.domain.contract import FILE_FORMATS, LOGICAL_TYPES, file_format, measure_quality, read_table
from meshfl.errors import ConfigError
from meshfl.events import Column, DataProductDescriptor, DataProductStatus, OutputPort
from meshfl.logs import get_logger

log = get_logger(__name__)

DOMAIN_FILE = "domain.toml"
_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataProductConfig(_Strict):
    """One data product of the domain and its data contract."""

    id: str = Field(pattern=_NAME_PATTERN, description="unique in the mesh: the catalog's key")
    version: str = "1.0.0"
    status: DataProductStatus = DataProductStatus.ACTIVE
    name: str = ""
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    path: Path = Field(description="the local file, relative to the domain folder")
    format: Literal["parquet", "csv"] | None = Field(None, description="default: from the file name")
    contract_id: str = Field(min_length=1)
    contract_version: str = "1.0.0"
    columns: list[Column] = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: Path) -> Path:
        if value.is_absolute():
            raise ValueError("must be relative to the domain folder")
        return value

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: list[Column]) -> list[Column]:
        names = [c.name for c in columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate column names {duplicates}")
        for column in columns:
            if column.logical_type not in LOGICAL_TYPES:
                raise ValueError(
                    f"column {column.name!r}: unknown logical_type {column.logical_type!r};"
                    f" known: {', '.join(LOGICAL_TYPES)}"
                )
        return columns

    @model_validator(mode="after")
    def _known_format(self) -> Self:
        if self.format is None and self.path.suffix.lower() not in FILE_FORMATS:
            raise ValueError(
                f"path: cannot tell the format of {self.path.name!r}; set format = parquet | csv"
            )
        return self

    @property
    def file_format(self) -> str:
        return self.format or file_format(self.path)


class TrainingOverrides(_Strict):
    """How this domain trains locally, whatever the task."""

    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="local rows kept out for evaluation")
    threads: int = Field(1, ge=1, description="torch intra-op threads the agent sets before training")
    tasks: list[str] = Field(
        default_factory=lambda: ["*"], description="task ids this domain trains (shell patterns)"
    )
    max_parameters: int = Field(300_000_000, ge=1, description="largest model this domain trains")
    max_local_epochs: int = Field(100, ge=1, description="most local epochs a round may ask of it")


class SplitConsent(_Strict):
    """What this domain agrees to in vertical (split) tasks, whatever the bus asks
    (``meshfl.vertical.admission``)."""

    tasks: list[str] = Field(default_factory=lambda: ["*"], description="split task ids it joins (patterns)")
    data_products: list[str] = Field(
        default_factory=lambda: ["*"], description="data products whose columns it trains on (patterns)"
    )
    columns: list[str] = Field(
        default_factory=lambda: ["*"], description="feature columns a bottom network may read (patterns)"
    )
    share_labels: bool = Field(
        False, description="let its label column go to governance (a task with labels at governance)"
    )
    label_columns: list[str] | None = Field(
        None,
        description="label columns share_labels lets go to governance (patterns; default: as columns)",
    )
    allow_raw_columns: bool = Field(
        False, description="join a task whose bottom has no linear layer (it would publish the columns)"
    )
    keep_versions: int = Field(5, ge=1, le=10_000, description="versions whose parts it keeps for predict")


class DomainConfig(_Strict):
    """A parsed ``domain.toml``; ``root`` is the folder it was read from (not a TOML key)."""

    name: str = Field(pattern=_NAME_PATTERN)
    owner: str = Field(min_length=1)
    description: str = ""
    signing_key: Path | None = None
    data_products: list[DataProductConfig] = Field(default_factory=list)
    training: TrainingOverrides = Field(default_factory=TrainingOverrides)
    split: SplitConsent = Field(default_factory=SplitConsent)
    root: Path

    @model_validator(mode="after")
    def _unique_products(self) -> Self:
        ids = [p.id for p in self.data_products]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate data product ids {duplicates}")
        return self

    def product(self, product_id: str) -> DataProductConfig:
        for product in self.data_products:
            if product.id == product_id:
                return product
        raise ConfigError(f"domain {self.name!r} has no data product {product_id!r}")

    def product_path(self, product: DataProductConfig) -> Path:
        return self.root / product.path

    def signing_key_path(self) -> Path | None:
        return None if self.signing_key is None else self.root / self.signing_key

    def descriptor(self, product: DataProductConfig) -> DataProductDescriptor:
        """The product's catalog entry; row count and quality are measured when the file exists.

        Raises ``DataContractError`` if the file exists but cannot be read.
        """
        path = self.product_path(product)
        num_rows: int | None = None
        quality = []
        updated_at = datetime.now(UTC)
        if path.is_file():
            table = read_table(path, product.columns, product.file_format)
            num_rows = table.num_rows
            quality = measure_quality(table, product.columns)
            updated_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        else:
            log.warning("data product file missing", domain=self.name, product=product.id, path=str(path))
        return DataProductDescriptor(
            id=product.id,
            domain=self.name,
            owner=self.owner,
            version=product.version,
            status=product.status,
            name=product.name,
            description=product.description,
            output_ports=[
                OutputPort(
                    name="local-file",
                    type=product.file_format,
                    location=product.path.as_posix(),
                    description="kept inside the domain; only the model updates leave it",
                    contract_id=product.contract_id,
                )
            ],
            contract_id=product.contract_id,
            contract_version=product.contract_version,
            columns=list(product.columns),
            quality=quality,
            tags=list(product.tags),
            num_rows=num_rows,
            updated_at=updated_at.replace(microsecond=updated_at.microsecond // 1000 * 1000),
        )

    def descriptors(self) -> list[DataProductDescriptor]:
        """One descriptor per data product, in the order of ``domain.toml``."""
        return [self.descriptor(product) for product in self.data_products]


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
        parts.append(f"{where or '<root>'}: {error['msg']}")
    return "; ".join(parts)


def load_domain(path: Path | str) -> DomainConfig:
    """Parse a domain folder (or its ``domain.toml``); raises ``ConfigError`` naming file and field."""
    path = Path(path)
    file = path / DOMAIN_FILE if path.is_dir() else path
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: no such domain file") from exc
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    if "root" in data:
        raise ConfigError(f"{file}: root: not a domain.toml key (it is the folder of the file)")
    try:
        return DomainConfig.model_validate({**data, "root": file.parent.resolve()})
    except ValidationError as exc:
        raise ConfigError(f"{file}: {_format_errors(exc)}") from exc


def discover_domains(root: Path | str) -> list[Path]:
    """The folders directly under ``root`` that hold a ``domain.toml``, sorted by name."""
    root = Path(root)
    return sorted(child for child in root.iterdir() if (child / DOMAIN_FILE).is_file())
