"""The schema store: every ``.avsc`` of the contract, current and released, by fingerprint and full name.

Layout of the schemas directory (``schemas/`` in the repository, ``meshfl/_schemas`` in a wheel)::

    *.avsc                  one file per event (the current version)
    types/*.avsc            named types shared by several events (Tensor, StrategySpec), defined once
    released/<v>/...        the same layout, frozen as released version <v>

Event files refer to shared types by full name. Loading expands each event into a self-contained schema:
every named type is defined inline at its first use (with its full name) and referenced by name after, as
the Avro specification requires. That expanded form is what the Schema Registry receives and what the
Parsing Canonical Form, and so the CRC-64-AVRO fingerprint of single-object encoding, is computed over:
any Avro implementation can parse it alone and recompute the same fingerprint.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form

from meshfl.errors import ConfigError, UnknownSchemaError
from meshfl.logs import get_logger

log = get_logger(__name__)

CURRENT = "current"
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def schemas_dir() -> Path:
    """``meshfl/_schemas`` of an installed wheel, else ``<repo>/schemas`` of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_schemas", package.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"no Avro schemas found: neither {package / '_schemas'} nor {package.parent / 'schemas'}"
    )


@dataclass(frozen=True)
class StoredSchema:
    """One compiled writer/reader schema: its self-contained JSON, canonical form and fingerprint."""

    full_name: str
    version: str
    schema: dict[str, Any] = field(repr=False)
    canonical: str = field(repr=False)
    fingerprint: bytes  # 8 bytes: CRC-64-AVRO of ``canonical``, little-endian as on the wire
    parsed: dict[str, Any] = field(repr=False, compare=False)

    @property
    def fingerprint_hex(self) -> str:
        """The 64-bit fingerprint as 16 hex digits, most significant first."""
        return f"{int.from_bytes(self.fingerprint, 'little'):016x}"

    @property
    def schema_str(self) -> str:
        return json.dumps(self.schema, separators=(",", ":"))


def compile_schema(schema: dict[str, Any], version: str = CURRENT) -> StoredSchema:
    """Parse a self-contained schema and compute its canonical form and fingerprint."""
    try:
        parsed = parse_schema(copy.deepcopy(schema), named_schemas={})
        canonical = to_parsing_canonical_form(parsed)
        raw_fingerprint = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"invalid Avro schema {schema.get('name')!r} ({version}): {exc}") from exc
    return StoredSchema(
        full_name=str(parsed["name"]),
        version=version,
        schema=schema,
        canonical=canonical,
        fingerprint=raw_fingerprint,
        parsed=parsed,
    )


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _definitions(node: Any, namespace: str | None, found: dict[str, dict[str, Any]], source: Path) -> None:
    """Collect every named type defined in ``node`` by full name (a name defined twice must match)."""
    if isinstance(node, list):
        for branch in node:
            _definitions(branch, namespace, found, source)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in _NAMED:
        full = _full_name(node["name"], node.get("namespace", namespace))
        inner = full.rpartition(".")[0] or None
        previous = found.get(full)
        if previous is not None and json.dumps(previous, sort_keys=True) != json.dumps(node, sort_keys=True):
            raise ConfigError(f"{source}: named type {full} is defined twice, differently")
        found[full] = node
        for child in node.get("fields", []):
            _definitions(child["type"], inner, found, source)
    elif kind in ("array", "map"):
        _definitions(node.get("items", node.get("values")), namespace, found, source)
    elif isinstance(kind, dict | list):
        _definitions(kind, namespace, found, source)


def _expand(node: Any, namespace: str | None, named: dict[str, dict[str, Any]], defined: set[str]) -> Any:
    """Return ``node`` with full names everywhere and each named type defined inline at its first use."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _full_name(node, namespace)
        if full in defined:
            return full
        if full not in named:
            raise ConfigError(f"unknown Avro type {full!r}")
        return _expand(named[full], full.rpartition(".")[0] or None, named, defined)
    if isinstance(node, list):
        return [_expand(branch, namespace, named, defined) for branch in node]
    kind = node["type"]
    out = {key: value for key, value in node.items() if key != "namespace"}
    if kind in _NAMED:
        full = _full_name(node["name"], node.get("namespace", namespace))
        if full in defined:
            raise ConfigError(f"named type {full} is defined twice in one schema")
        defined.add(full)
        out["name"] = full
        inner = full.rpartition(".")[0] or None
        if "fields" in node:
            out["fields"] = [
                {**child, "type": _expand(child["type"], inner, named, defined)} for child in node["fields"]
            ]
    elif kind == "array":
        out["items"] = _expand(node["items"], namespace, named, defined)
    elif kind == "map":
        out["values"] = _expand(node["values"], namespace, named, defined)
    elif kind not in _PRIMITIVES:
        return _expand(kind, namespace, named, defined)
    return out


def _load_tree(root: Path, version: str) -> list[StoredSchema]:
    """Compile every event schema of one directory (current or one released version)."""
    documents: dict[Path, dict[str, Any]] = {}
    for path in sorted([*root.glob("*.avsc"), *root.glob("types/*.avsc")]):
        try:
            documents[path] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read Avro schema {path}: {exc}") from exc
    named: dict[str, dict[str, Any]] = {}
    for path, document in documents.items():
        _definitions(document, None, named, path)
    compiled = []
    for path, document in documents.items():
        if path.parent != root:
            continue  # shared types are compiled as part of the events that use them
        compiled.append(compile_schema(_expand(document, None, named, set()), version))
    return compiled


class SchemaStore:
    """Every known schema, indexed by fingerprint (writers) and by full name (the current reader)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else schemas_dir()
        self._by_fingerprint: dict[bytes, StoredSchema] = {}
        self._current: dict[str, StoredSchema] = {}
        self._history: dict[str, list[StoredSchema]] = {}
        released = self.root / "released"
        trees = [(self.root, CURRENT)]
        if released.is_dir():
            versions = sorted(
                (p for p in released.iterdir() if p.is_dir()), key=lambda p: _version_key(p.name)
            )
            trees = [(path, path.name) for path in versions] + trees
        for path, version in trees:
            for stored in _load_tree(path, version):
                self._add(stored)
        if not self._current:
            raise ConfigError(f"no event schemas under {self.root}")
        log.debug("schemas loaded", root=str(self.root), names=len(self._current), fingerprints=len(self))

    def _add(self, stored: StoredSchema) -> None:
        self._by_fingerprint.setdefault(stored.fingerprint, stored)
        history = self._history.setdefault(stored.full_name, [])
        if all(known.fingerprint != stored.fingerprint for known in history):
            history.append(stored)
        if stored.version == CURRENT:
            self._current[stored.full_name] = stored

    def __len__(self) -> int:
        return len(self._by_fingerprint)

    def __iter__(self) -> Iterator[StoredSchema]:
        return iter(self._by_fingerprint.values())

    def names(self) -> list[str]:
        """Full names of the current event schemas."""
        return sorted(self._current)

    def current(self, full_name: str) -> StoredSchema:
        """The current (reader) schema of a record name."""
        try:
            return self._current[full_name]
        except KeyError:
            raise UnknownSchemaError(f"no current schema named {full_name!r}") from None

    def by_fingerprint(self, raw: bytes) -> StoredSchema:
        """The writer schema with this 8-byte little-endian fingerprint."""
        stored = self._by_fingerprint.get(bytes(raw))
        if stored is None:
            value = int.from_bytes(raw, "little") if len(raw) == 8 else None
            shown = f"{value:016x}" if value is not None else raw.hex()
            raise UnknownSchemaError(f"unknown writer schema fingerprint {shown} (not in {self.root})")
        return stored

    def find(self, raw: bytes) -> StoredSchema | None:
        return self._by_fingerprint.get(bytes(raw))

    def history(self, full_name: str) -> list[StoredSchema]:
        """Every distinct version of a record, released ones oldest first, the current one last."""
        return list(self._history.get(full_name, []))

    def released(self, full_name: str) -> list[StoredSchema]:
        """The released versions of a record (which may include one equal to the current)."""
        return [stored for stored in self._history.get(full_name, []) if stored.version != CURRENT]


def _version_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 62, name)
