from __future__ import annotations

from pathlib import Path

import pytest

from meshfl.errors import ConfigError
from meshfl.settings import load_settings
from meshfl.topics import Topic, topic_name, topic_specs


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests set the environment themselves; the caller's MESHFL_* must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith("MESHFL_"):
            monkeypatch.delenv(name)


def test_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "meshfl.toml"
    config.write_text(
        'bootstrap_servers = "kafka-a:9092"\ntopic_prefix = "acme."\n[kafka]\n"security.protocol" = "SSL"\n'
    )
    monkeypatch.setenv("MESHFL_CONFIG", str(config))
    settings = load_settings()
    assert settings.bootstrap_servers == "kafka-a:9092"
    assert settings.client_config()["security.protocol"] == "SSL"
    monkeypatch.setenv("MESHFL_TOPIC_PREFIX", "env.")
    assert load_settings().topic_prefix == "env."  # the environment wins over the file
    assert load_settings(topic_prefix="arg.").topic_prefix == "arg."  # arguments win over both


def test_bad_settings_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHFL_REPLICATION_FACTOR", "0")
    with pytest.raises(ConfigError, match="replication_factor"):
        load_settings()


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHFL_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


def test_topics_are_prefixed_and_audit_topics_kept_forever() -> None:
    settings = load_settings(topic_prefix="x.")
    specs = {spec.name: spec for spec in topic_specs(settings)}
    assert topic_name(settings, Topic.UPDATES) == "x.model-updates"
    for topic in (Topic.UPDATES, Topic.MODEL_VERSIONS, Topic.DECISIONS, Topic.TASKS):
        assert specs[topic_name(settings, topic)].config["retention.ms"] == "-1"
    assert specs[topic_name(settings, Topic.CATALOG)].config["cleanup.policy"] == "compact"


def test_environment_names_any_case_and_mappings_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHFL_KAFKA", '{"security.protocol": "SASL_SSL", "socket.timeout.ms": 5000}')
    monkeypatch.setenv("meshfl_partitions", "3")
    monkeypatch.setenv("MESHFL_SIGNATURE_WINDOW_SECONDS", "60.5")
    settings = load_settings()
    assert settings.kafka == {"security.protocol": "SASL_SSL", "socket.timeout.ms": 5000}
    assert settings.partitions == 3
    assert settings.signature_window_seconds == 60.5


def test_a_model_built_directly_still_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshfl.settings import MeshflSettings

    monkeypatch.setenv("MESHFL_BOOTSTRAP_SERVERS", "kafka-b:9092")
    settings = MeshflSettings(topic_prefix="x.")
    assert (settings.bootstrap_servers, settings.topic_prefix) == ("kafka-b:9092", "x.")


def test_unreadable_sources_are_config_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHFL_KAFKA", "{not json")
    with pytest.raises(ConfigError, match="MESHFL_KAFKA must be JSON"):
        load_settings()
    monkeypatch.delenv("MESHFL_KAFKA")
    config = tmp_path / "meshfl.toml"
    config.write_text("bootstrap_servers = \n")
    monkeypatch.setenv("MESHFL_CONFIG", str(config))
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings()
    config.write_bytes(b'topic_prefix = "caf\xe9."\n')  # Latin-1, not UTF-8
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings()
    config.write_text('no_such_setting = "x"\n')
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings()


def test_environment_mappings_merge_with_the_file_key_by_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As with pydantic-settings: ``MESHFL_KAFKA`` adds to the file's ``[kafka]`` table (and arguments
    to both), it never silently drops the file's security settings."""
    config = tmp_path / "meshfl.toml"
    config.write_text('[kafka]\n"security.protocol" = "SASL_SSL"\n"client.rack" = "file"\n')
    monkeypatch.setenv("MESHFL_CONFIG", str(config))
    monkeypatch.setenv("MESHFL_KAFKA", '{"client.rack": "env", "linger.ms": 7}')
    assert load_settings().kafka == {"security.protocol": "SASL_SSL", "client.rack": "env", "linger.ms": 7}
    merged = load_settings(kafka={"linger.ms": 9}).kafka
    assert merged == {"security.protocol": "SASL_SSL", "client.rack": "env", "linger.ms": 9}


def test_invalid_settings_never_echo_their_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHFL_KAFKA", '"sasl.password=hunter2"')
    with pytest.raises(ConfigError, match="kafka") as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    monkeypatch.delenv("MESHFL_KAFKA")
    config = tmp_path / "meshfl.toml"
    config.write_text('[kafka]\n"sasl.password" = ["hunter2"]\n')
    monkeypatch.setenv("MESHFL_CONFIG", str(config))
    with pytest.raises(ConfigError, match=r"kafka\.sasl\.password") as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)
