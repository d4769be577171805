"""A data product's local file against its own data contract: read, check, measure.

The contract is the list of ``Column`` s a domain publishes (after Bitol's Open Data Contract Standard,
ODCS v3: ``logicalType`` is one of string, date, number, integer, object, array, boolean). A file
conforms when every contract column is present, its Arrow type is compatible with the logical type,
and required columns hold no nulls. Extra columns in the file are allowed: a contract states what is
guaranteed, not everything a file holds.

Everything here but ``read_table`` is pure (an Arrow table in, findings out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from meshfl.errors import DataContractError
from meshfl.events import Column, QualityFigure

_TYPE_CHECKS: dict[str, Callable[[pa.DataType], bool]] = {
    "number": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t),
    "integer": pa.types.is_integer,
    "boolean": pa.types.is_boolean,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t),
    "date": lambda t: pa.types.is_date(t) or pa.types.is_timestamp(t),
    "timestamp": pa.types.is_timestamp,
    "object": pa.types.is_struct,
    "array": lambda t: pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t),
}
LOGICAL_TYPES: tuple[str, ...] = tuple(_TYPE_CHECKS)
"""The logical types a contract may use (ODCS v3, plus ``timestamp``)."""

NUMERIC_TYPES: frozenset[str] = frozenset({"number", "integer", "boolean"})
"""Logical types a model can take as a feature (cast to float32)."""

LABEL_TYPES: frozenset[str] = frozenset({"integer", "boolean"})
"""Logical types a model can take as a class label (cast to int64)."""

_CSV_TYPES: dict[str, pa.DataType] = {
    "number": pa.float64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}
FILE_FORMATS: dict[str, str] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def file_format(path: Path) -> str:
    """``parquet`` or ``csv`` from the file name; raises ``DataContractError`` for anything else."""
    try:
        return FILE_FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataContractError(
            f"{path}: unsupported data file type {path.suffix!r} (parquet or csv)"
        ) from None


def read_table(path: Path, columns: Sequence[Column], fmt: str | None = None) -> pa.Table:
    """Read a product's local file; CSV columns are parsed with the types their contract names.

    In CSV an empty field is a null, whatever the column's type.

    Raises ``DataContractError`` when the file is missing or cannot be parsed.
    """
    fmt = fmt or file_format(path)
    if not path.is_file():
        raise DataContractError(f"{path}: data file not found")
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        column_types = {c.name: _CSV_TYPES[c.logical_type] for c in columns if c.logical_type in _CSV_TYPES}
        return pa_csv.read_csv(
            path, convert_options=pa_csv.ConvertOptions(column_types=column_types, strings_can_be_null=True)
        )
    except (pa.ArrowException, OSError) as exc:
        raise DataContractError(f"{path}: cannot read as {fmt}: {exc}") from exc


def type_compatible(logical_type: str, arrow_type: pa.DataType) -> bool:
    """Whether an Arrow column type can hold values of a contract's logical type."""
    check = _TYPE_CHECKS.get(logical_type)
    return check is not None and check(arrow_type)


def contract_violations(table: pa.Table, columns: Sequence[Column]) -> list[str]:
    """Every way ``table`` breaks the contract ``columns``, as readable sentences (empty = conforms)."""
    problems: list[str] = []
    present = set(table.column_names)
    for column in columns:
        if column.name not in present:
            problems.append(f"column {column.name!r} is missing")
            continue
        data = table.column(column.name)
        if not type_compatible(column.logical_type, data.type):
            problems.append(
                f"column {column.name!r} has type {data.type}, not compatible with {column.logical_type!r}"
            )
        if column.required and data.null_count > 0:
            problems.append(f"column {column.name!r} is required but holds {data.null_count} null(s)")
    return problems


def check_contract(table: pa.Table, columns: Sequence[Column], *, product_id: str) -> None:
    """Raise ``DataContractError`` listing every violation of the contract, if any."""
    problems = contract_violations(table, columns)
    if problems:
        raise DataContractError(f"data product {product_id!r} breaks its contract: " + "; ".join(problems))


def measure_quality(table: pa.Table, columns: Sequence[Column]) -> list[QualityFigure]:
    """Quality figures measured on the file: row count, completeness, contract conformance.

    ``completeness`` is the share of non-null cells over the contract's columns that exist (the
    ODCS "completeness" dimension); ``contract_violations`` counts the findings of
    ``contract_violations`` (threshold 0).
    """
    rows = table.num_rows
    names = [c.name for c in columns if c.name in table.column_names]
    cells = rows * len(names)
    nulls = sum(table.column(name).null_count for name in names)
    completeness = 1.0 if cells == 0 else (cells - nulls) / cells
    duplicates = _duplicate_share(table, names)
    return [
        QualityFigure(name="row_count", value=float(rows), unit="rows"),
        QualityFigure(name="completeness", value=completeness, unit="ratio", threshold=1.0),
        QualityFigure(name="duplicate_rows", value=duplicates, unit="ratio"),
        QualityFigure(
            name="contract_violations", value=float(len(contract_violations(table, columns))), threshold=0
        ),
    ]


def _duplicate_share(table: pa.Table, names: list[str]) -> float:
    """Share of rows that repeat an earlier row over ``names`` (the ODCS "uniqueness" dimension)."""
    if table.num_rows == 0 or not names:
        return 0.0
    distinct = table.select(names).group_by(names).aggregate([]).num_rows
    return (table.num_rows - distinct) / table.num_rows


def non_null_mask(table: pa.Table, names: Sequence[str]) -> pa.ChunkedArray:
    """Boolean mask of the rows where none of ``names`` is null."""
    mask = pa.chunked_array([pa.array([True] * table.num_rows, type=pa.bool_())])
    for name in names:
        mask = pc.and_(mask, pc.is_valid(table.column(name)))
    return mask
