"""The aligned order of a split task's rows and the batches of each epoch (pure functions).

After private set intersection every party holds the same set of entity ids. Each orders them by
``SHA-256(session || id)``, which every party computes alone and which no one else learns, so row
``p`` means the same entity everywhere and nothing but positions and batch numbers is ever named on
the bus. The last ``test_fraction`` of positions is held out; each epoch shuffles the training
positions with a generator seeded by (task seed, epoch), the same in every process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np


def _sort_key(session: str, entity: str) -> bytes:
    return hashlib.sha256(f"{session}\x00{entity}".encode()).digest()


def aligned_order(entities: Sequence[str], session: str) -> list[str]:
    """The intersection's ids in the session's order (duplicates dropped)."""
    return sorted(set(entities), key=lambda entity: _sort_key(session, entity))


def alignment_digest(session: str, ordered: Sequence[str]) -> str:
    """SHA-256 over the session and the ordered ids: parties compare it without showing an id."""
    digest = hashlib.sha256(session.encode() + b"\x00")
    for entity in ordered:
        encoded = entity.encode()
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


def split_rows(rows: int, test_fraction: float) -> tuple[int, int]:
    """(train rows, test rows): the test rows are the last positions."""
    test = math.floor(rows * test_fraction)
    return rows - test, test


def _chunks(positions: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of ``batch_size``; a last batch of one row joins the one before (batch norm needs two)."""
    batches = [positions[start : start + batch_size] for start in range(0, len(positions), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] = np.concatenate([batches[-2], batches[-1]])
        batches.pop()
    return batches


def train_batches(train_rows: int, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """The training positions of one epoch, shuffled by (seed, epoch), in batches."""
    order = np.random.default_rng([seed, epoch]).permutation(train_rows)
    return _chunks(order, batch_size)


def eval_batches(train_rows: int, test_rows: int, batch_size: int) -> list[np.ndarray]:
    """The held-out positions in order, in batches."""
    return _chunks(np.arange(train_rows, train_rows + test_rows), batch_size)
