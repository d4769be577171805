"""Model versions where data scientists work: a real MLflow store (sqlite + local artifacts) and ONNX
run by onnxruntime, both fed from a federation on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from governance.registry import ModelRegistry
from governance.service import GovernanceService
from meshfl.domain.data import load_xy_file
from meshfl.events import ModelUpdate, ModelVersion, TrainingTask
from meshfl.identity.local import identity_env
from meshfl.interop import MlflowSync, export_onnx, load_version_model, task_of
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _federate(settings: MeshflSettings, mesh_root: Path, daemons: Threads, rounds: int = 2) -> str:
    task = hospital_task(mesh_root, rounds=rounds)
    daemons.start("governance", GovernanceService(settings, [task]).run)
    for name in HOSPITALS:
        daemons.start_agent(settings, mesh_root / name)

    def versions() -> int:
        return sum(1 for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion))

    wait_for(lambda: versions() >= rounds + 1, timeout=180, what="all versions", check=daemons.check)
    return task.id


def _test_rows(mesh_root: Path, task: TrainingTask) -> torch.Tensor:
    x, _ = load_xy_file(mesh_root / "_testsets" / "breast-cancer-test.parquet", task)
    return torch.as_tensor(x, dtype=torch.float32)


def test_versions_in_mlflow_and_onnx(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads, tmp_path: Path
) -> None:
    import mlflow.pytorch
    import onnxruntime

    task_id = _federate(settings, mesh_root, daemons)
    task = task_of(settings, task_id)
    registry = ModelRegistry(settings)
    latest = registry.latest(task_id)
    assert latest is not None and latest.version == 2
    rows = _test_rows(mesh_root, task)
    with torch.no_grad():
        expected = load_version_model(task, latest)(rows).numpy()

    # MLflow: every version registered once, loadable, tagged with its lineage.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    syncer = MlflowSync(settings, uri, artifact_location=(tmp_path / "artifacts").as_uri())
    first = syncer.sync(task_id)
    assert first.registered == [0, 1, 2]
    assert syncer.sync(task_id).registered == []  # idempotent
    client = mlflow.tracking.MlflowClient(tracking_uri=uri, registry_uri=uri)
    by_version = {
        int(mv.tags["meshfl.version"]): mv
        for mv in client.search_model_versions("name = 'meshfl-" + task_id + "'")
    }
    assert sorted(by_version) == [0, 1, 2]
    tags = by_version[2].tags
    assert tags["meshfl.sha256"] == latest.sha256
    assert tags["meshfl.parent"] == "1"
    assert sorted(tags["meshfl.domains"].split(",")) == sorted(latest.contributing_domains)
    updates = {e.update_id: e for e in events(settings, Topic.UPDATES) if isinstance(e, ModelUpdate)}
    products = {
        f"{p.id}@{p.version}" for uid in latest.contributing_updates for p in updates[uid].data_products
    }
    assert set(tags["meshfl.data_products"].split(",")) == products
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"models:/meshfl-{task_id}/{by_version[2].version}")
    with torch.no_grad():
        np.testing.assert_allclose(loaded(rows).numpy(), expected, rtol=0, atol=0)

    # ONNX through the CLI, run by onnxruntime on the same rows.
    out = tmp_path / "model.onnx"
    env_cmd = [
        sys.executable,
        "-m",
        "meshfl",
        "models",
        "pull",
        "--task",
        task_id,
        "--format",
        "onnx",
        "-o",
        str(out),
    ]
    done = subprocess.run(
        [*env_cmd, "--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **identity_env(settings, with_private_key=False)},  # pins governance's key
    )
    assert done.returncode == 0, done.stderr
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"features": rows.numpy()})
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["meshfl.sha256"] == latest.sha256 and meta["meshfl.version"] == "2"
    # and the library call gives the same file content for an older version
    older = export_onnx(task, registry.get(task_id, 1), tmp_path / "v1.onnx")
    assert older.stat().st_size > 0
