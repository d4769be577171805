"""Bounds on what a message may ask a reader to allocate, checked before anything is allocated.

A record off the bus is hostile until checked. Its bytes are bounded by the message limit (or, for a
chunked payload, by the reassembly budget), but what they *describe* is not: a shape of
``[2**62, 2**62, 0]`` carries no bytes and still overflows torch's ``numel``; a task declaring
``hidden = [2**40]`` asks every agent for terabytes. The checks here are pure, run on plain data
(the Avro datum, wire tensors, a model spec) and raise meshfl's own errors only:

* ``check_datum``: a decoded Avro datum before pydantic sees it (string, array and map sizes, depth);
* ``check_tensor_header``: one wire tensor's name, ndim, each dimension and the element count (the
  running product never leaves int64, so neither numpy nor torch can overflow on it) before its
  bytes are touched;
* ``check_wire_tensors``: the count of tensors and, given the task's model size, the total elements.

The defaults are far above what a meshfl model or event uses and far below what hurts a reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshfl.errors import CodecError, TensorCodecError

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class WireLimits:
    """What one event may hold. ``max_elements`` bounds a tensor's element count even when a zero in its
    shape means it carries no bytes (the product of its non-zero dimensions)."""

    max_tensors: int = 65_536
    max_ndim: int = 32
    max_elements: int = 2**40
    max_name_length: int = 1_024
    max_string_length: int = 1 << 20
    max_array_items: int = 1 << 22
    max_map_entries: int = 65_536
    max_depth: int = 16


DEFAULT_LIMITS = WireLimits()


@dataclass(frozen=True)
class TaskLimits:
    """Sane bounds on a training task, for task files and tasks read from the bus alike.

    A task is a request for work on every agent: ``hidden = [2**40]`` would have each allocate
    terabytes, ``local_epochs = 10**9`` train forever. The model bound leaves room for the 250M-parameter
    models meshfl is built to move; a domain's own config can admit less.
    """

    max_parameters: int = 1_000_000_000
    max_layers: int = 64
    max_width: int = 1 << 20
    max_features: int = 1 << 16
    max_classes: int = 1 << 16
    max_local_epochs: int = 1_000
    max_rounds: int = 1_000_000
    max_batch_size: int = 1 << 20


DEFAULT_TASK_LIMITS = TaskLimits()


def check_datum(datum: Any, limits: WireLimits = DEFAULT_LIMITS, *, what: str = "event") -> None:
    """Raise ``CodecError`` if a decoded Avro datum holds an oversized string, array or map.

    Records and maps both decode to dicts (fastavro); a record's keys are field names of a known schema,
    so the same bound on entries and key lengths serves both. ``bytes`` are bounded by the message.
    Every decoded event comes through here, so no path is formatted while walking: each node keeps
    its parent's entry and its key, and the path is spelled out only for the error.
    """
    max_string, max_items = limits.max_string_length, limits.max_array_items
    max_entries, max_key, max_depth = limits.max_map_entries, limits.max_name_length, limits.max_depth
    stack: list[_Node] = [(datum, 0, None, None)]
    while stack:
        entry = stack.pop()
        node, depth = entry[0], entry[1]
        if depth > max_depth:
            raise CodecError(f"{_path(entry, what)}: nested deeper than {max_depth}")
        if isinstance(node, str):
            if len(node) > max_string:
                raise CodecError(f"{_path(entry, what)}: string of {len(node)} characters > {max_string}")
        elif isinstance(node, list):
            if len(node) > max_items:
                raise CodecError(f"{_path(entry, what)}: array of {len(node)} items > {max_items}")
            stack.extend(
                (item, depth + 1, entry, index)
                for index, item in enumerate(node)
                if isinstance(item, _CONTAINERS)
            )
        elif isinstance(node, dict):
            if len(node) > max_entries:
                raise CodecError(f"{_path(entry, what)}: map of {len(node)} entries > {max_entries}")
            for key, value in node.items():
                if isinstance(key, str) and len(key) > max_key:
                    raise CodecError(f"{_path(entry, what)}: key of {len(key)} characters > {max_key}")
                if isinstance(value, _CONTAINERS):
                    stack.append((value, depth + 1, entry, key))


_CONTAINERS = (str, list, dict)  # a tuple: isinstance with ``str | list | dict`` is several times slower
_Node = tuple[Any, int, Any, "int | str | None"]
"""A node of ``check_datum``'s walk: value, depth, the parent's node (None at the top), key in it."""


def _path(entry: _Node, what: str) -> str:
    """``what`` then ``.field`` / ``[index]`` down to ``entry``, as the error names it."""
    parts: list[str] = []
    while entry[2] is not None:
        key = entry[3]
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
        entry = entry[2]
    return what + "".join(reversed(parts))


def element_count(shape: Sequence[int], limits: WireLimits = DEFAULT_LIMITS, *, name: str = "") -> int:
    """The number of elements of ``shape``, after checking ndim and every dimension.

    Each dimension must be a non-negative int; the product of the non-zero dimensions must stay within
    ``limits.max_elements`` (itself within int64), checked step by step so that it never overflows.
    """
    return _counts(shape, limits, name)[0]


def _counts(shape: Sequence[int], limits: WireLimits, name: str) -> tuple[int, int]:
    """(elements, product of the non-zero dimensions) of a checked shape."""
    if len(shape) > limits.max_ndim:
        raise TensorCodecError(f"tensor {name!r}: {len(shape)} dimensions > {limits.max_ndim}")
    nonzero = 1
    has_zero = False
    for size in shape:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TensorCodecError(f"tensor {name!r}: dimension {size!r} is not an integer")
        if size < 0:
            raise TensorCodecError(f"tensor {name!r}: negative size in shape {list(shape)}")
        if size == 0:
            has_zero = True
            continue
        if size > limits.max_elements or nonzero > limits.max_elements // size:
            raise TensorCodecError(
                f"tensor {name!r}: shape {_short(shape)} holds more than {limits.max_elements} elements"
            )
        nonzero *= size
    return (0 if has_zero else nonzero), nonzero


def check_tensor_header(name: str, shape: Sequence[int], limits: WireLimits = DEFAULT_LIMITS) -> int:
    """Check a tensor's name and shape; returns its element count (``TensorCodecError`` if out of bounds)."""
    return _header_counts(name, shape, limits)[0]


def _header_counts(name: str, shape: Sequence[int], limits: WireLimits) -> tuple[int, int]:
    if not isinstance(name, str) or len(name) > limits.max_name_length:
        shown = name[:40] if isinstance(name, str) else name
        raise TensorCodecError(f"tensor name {shown!r}... longer than {limits.max_name_length} characters")
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TensorCodecError(f"tensor name {name[:40]!r} is not valid UTF-8: {exc.reason}") from exc
    return _counts(shape, limits, name)


def check_wire_tensors(
    headers: Sequence[tuple[str, Sequence[int]]],
    limits: WireLimits = DEFAULT_LIMITS,
    *,
    max_total_elements: int | None = None,
) -> None:
    """Check the tensors of one event by (name, shape); ``max_total_elements`` is the task's model size.

    A model of N scalars has no business receiving a tensor, or a set of tensors, of more than N (nor a
    tensor whose non-zero dimensions multiply past N, even if a zero makes it empty): so an update of a
    10-parameter model cannot make governance allocate gigabytes before its spec is checked.
    """
    if len(headers) > limits.max_tensors:
        raise TensorCodecError(f"{len(headers)} tensors > {limits.max_tensors}")
    total = 0
    for name, shape in headers:
        elements, nonzero = _header_counts(name, shape, limits)
        total += elements
        if max_total_elements is not None and max(total, nonzero) > max_total_elements:
            raise TensorCodecError(
                f"tensors hold more than the model's {max_total_elements} elements (at {name[:80]!r})"
            )


def spec_elements(expected: Mapping[str, tuple[Sequence[int], object]]) -> int:
    """Total elements of a model's expected tensors (name -> (shape, dtype))."""
    total = 0
    for shape, _ in expected.values():
        count = 1
        for size in shape:
            count *= int(size)
        total += count
    return total


def _short(shape: Sequence[int]) -> str:
    shown = list(shape[:8])
    return f"{shown}{'...' if len(shape) > 8 else ''}"
