"""Java and Maven discovery and the jar cache (real Maven; the jars are shared with other tests)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meshfl.broker import find_java, kafka_version, resolve_kafka_jars
from meshfl.broker._maven import POM, storage_tool_class
from meshfl.errors import BrokerError
from meshfl.settings import MeshflSettings


def test_kafka_version_comes_from_the_shipped_pom() -> None:
    version = kafka_version()
    assert f"<kafka.version>{version}</kafka.version>" in POM.read_text()
    assert int(version.split(".")[0]) >= 4


def test_jars_resolve_once_then_come_from_the_cache() -> None:
    cache = MeshflSettings().cache_dir
    libs = resolve_kafka_jars(cache)
    names = {jar.name for jar in libs.glob("*.jar")}
    version = kafka_version()
    assert f"kafka_2.13-{version}.jar" in names
    assert f"kafka-clients-{version}.jar" in names
    assert any(name.startswith("log4j-slf4j-impl-") for name in names)  # else Kafka logs nothing
    assert any(name.startswith("log4j-core-") for name in names)
    started = time.perf_counter()
    assert resolve_kafka_jars(cache) == libs
    assert time.perf_counter() - started < 0.5
    assert storage_tool_class(libs) in {"kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool"}


def test_java_found_is_17_or_newer() -> None:
    assert find_java().is_file()


def test_missing_java_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="Java 17"):
        find_java()


def test_missing_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="install it"):
        resolve_kafka_jars(tmp_path / "fresh-cache")
