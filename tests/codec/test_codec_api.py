from __future__ import annotations

import re
from pathlib import Path

import meshfl.codec
import meshfl.tensors
from meshfl.codec import SingleObjectCodec, default_store

PACKAGE = Path(meshfl.codec.__file__).resolve().parent.parent


def test_codec_exports() -> None:
    assert sorted(meshfl.codec.__all__) == [
        "EventCodec",
        "RegistryCodec",
        "SchemaStore",
        "SingleObjectCodec",
        "StoredSchema",
        "default_store",
        "make_codec",
        "schemas_dir",
    ]
    assert all(hasattr(meshfl.codec, name) for name in meshfl.codec.__all__)


def test_tensor_exports() -> None:
    assert sorted(meshfl.tensors.__all__) == [
        "from_wire",
        "layout_blake3",
        "layout_sha256",
        "state_sha256",
        "tensors_sha256",
        "to_wire",
    ]


def test_default_store_is_loaded_once() -> None:
    assert default_store() is default_store()
    assert SingleObjectCodec(default_store()).store is default_store()


def test_nothing_in_meshfl_unpickles() -> None:
    """Model bytes come from other organisations: deserialising them must never run code."""
    forbidden = re.compile(
        r"\bimport pickle\b|\bfrom pickle\b|\bpickle\.loads?\(|\btorch\.load\(|\bdill\b|\bjoblib\.load\("
    )
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if forbidden.search(line)
    ]
    assert offenders == []
