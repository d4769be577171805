"""The README's meshfl.toml example is complete (names every setting) and loads as it stands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from meshfl.settings import MeshflSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if "bootstrap_servers" in b]
    assert blocks, "the README has no meshfl.toml example"
    return blocks[0]


def test_the_example_names_every_setting() -> None:
    example = tomllib.loads(_example())
    assert set(example) == set(MeshflSettings.model_fields)


def test_the_example_loads(tmp_path: Path, monkeypatch) -> None:
    example = tomllib.loads(_example())
    # empty strings in the example stand for "unset"; the rest must validate as written
    values = {k: v for k, v in example.items() if v != ""}
    settings = MeshflSettings(**values)
    assert settings.kafka["sasl.mechanism"] == "SCRAM-SHA-512"
    assert settings.log_format == "json"
