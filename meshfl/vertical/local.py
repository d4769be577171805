"""A domain's own side of a split task: its columns and entity ids read from its data product, and its
part's checkpoints on local disk (never on the bus: only their SHA-256 travels).

Checkpoints are safetensors files named by the part's canonical SHA-256 (``meshfl.tensors``), so the
part a version names is found by its hash, and a file that does not hash to its name is never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from safetensors.torch import load_file, save_file

from meshfl.domain.config import DomainConfig
from meshfl.domain.contract import check_contract, read_table
from meshfl.errors import ConfigError
from meshfl.tensors import state_sha256
from meshfl.vertical.events import SplitDomainSpec, SplitTask


@dataclass(frozen=True)
class LocalColumns:
    """A domain's rows for a split task: entity ids, features (float32) and, at the holder, labels."""

    ids: list[str]
    x: torch.Tensor
    y: torch.Tensor | None
    data_products: list[str]

    def rows(self, positions: np.ndarray, local_index: np.ndarray) -> torch.Tensor:
        """Features of aligned positions, given the local row of each aligned position."""
        return self.x[torch.from_numpy(local_index[positions])]


def domain_spec(task: SplitTask, domain: str) -> SplitDomainSpec:
    for spec in task.domains:
        if spec.domain == domain:
            return spec
    raise ConfigError(f"split task {task.id} has no domain {domain!r}")


def load_columns(config: DomainConfig, task: SplitTask) -> LocalColumns:
    """Read the task's columns (and key, and labels at the holder) from the domain's data product.

    Rows with a null key or feature are left out (they cannot be aligned or trained on)."""
    spec = domain_spec(task, config.name)
    product = config.product(spec.data_product)
    table = read_table(config.product_path(product), product.columns, product.file_format)
    check_contract(table, product.columns, product_id=product.id)
    wanted = [spec.key, *spec.columns]
    holder = task.labels.domain == config.name
    if holder:
        wanted.append(task.labels.column)
    missing = [name for name in wanted if name not in table.column_names]
    if missing:
        raise ConfigError(f"data product {product.id} lacks the columns {missing}")
    keep = None
    for name in wanted:
        valid = pc.is_valid(table[name])
        keep = valid if keep is None else pc.and_(keep, valid)
    table = table.filter(keep)
    ids = [str(value) for value in table[spec.key].to_pylist()]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"data product {product.id}: the key {spec.key!r} repeats")
    x = np.column_stack([table[name].to_numpy(zero_copy_only=False) for name in spec.columns])
    y = None
    if holder:
        y = torch.from_numpy(table[task.labels.column].to_numpy(zero_copy_only=False).astype(np.int64))
    return LocalColumns(
        ids=ids,
        x=torch.from_numpy(x.astype(np.float32)),
        y=y,
        data_products=[f"{product.id}@{product.version}"],
    )


class CheckpointStore:
    """Parts by SHA-256 in ``<root>``: ``save`` returns the hash, ``load`` checks it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.safetensors"

    def save(self, state: dict[str, torch.Tensor]) -> str:
        tensors = {name: tensor.detach().contiguous().clone() for name, tensor in state.items()}
        sha = state_sha256(tensors)
        target = self.path(sha)
        if not target.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            save_file(tensors, str(partial))
            partial.replace(target)
        return sha

    def retain(self, keep: set[str]) -> list[str]:
        """Delete every part not in ``keep`` (bounded retention); returns the hashes deleted."""
        if not self.root.is_dir():
            return []
        gone = []
        for path in self.root.glob("*.safetensors"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
                gone.append(path.stem)
        return sorted(gone)

    def load(self, sha256: str) -> dict[str, torch.Tensor]:
        target = self.path(sha256)
        if not target.is_file():
            raise ConfigError(f"no checkpoint {sha256[:12]} in {self.root}")
        state = load_file(str(target))
        if state_sha256(state) != sha256:
            raise ConfigError(f"checkpoint {target} does not hash to its name")
        return state
