"""Register model versions in an MLflow model registry, each loadable with ``mlflow.pytorch.load_model``.

One registered model per task (named after it); each meshfl version becomes one MLflow model version,
logged from a run of its own, tagged with its lineage: task, version, parent, SHA-256, contributing
domains and the data products their updates were trained on. Registration is idempotent (a version
already tagged in the registry is skipped), so ``sync`` can run from cron and ``follow`` as a daemon.
Models are stored in MLflow's default PyTorch format (``pt2``: a torch.export graph, not a pickle).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from meshfl.bus import read_all
from meshfl.events import ModelUpdate, ModelVersion, TrainingTask
from meshfl.extras import require
from meshfl.interop.model import load_version_model, task_of
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

log = get_logger("meshfl.interop.mlflow")

VERSION_TAG = "meshfl.version"


@dataclass
class SyncResult:
    registered: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)


def registered_name(task_id: str) -> str:
    return f"meshfl-{task_id}"


class MlflowSync:
    """Copies a task's versions from the bus into an MLflow registry at ``tracking_uri``."""

    def __init__(
        self,
        settings: MeshflSettings,
        tracking_uri: str,
        *,
        registry_uri: str | None = None,
        experiment: str = "meshfl",
        artifact_location: str | None = None,
    ) -> None:
        require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        self._settings = settings
        self._tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
        self._registry_uri = registry_uri or tracking_uri
        found = self._client.get_experiment_by_name(experiment)
        self._experiment_id = (
            found.experiment_id
            if found is not None
            else self._client.create_experiment(experiment, artifact_location=artifact_location)
        )

    # --- what is there -----------------------------------------------------------------------

    def registered_versions(self, task_id: str) -> set[int]:
        """meshfl version numbers already in the registry for ``task_id``."""
        name = registered_name(task_id)
        done: set[int] = set()
        for found in self._client.search_model_versions(f"name = '{name}'"):
            tag = (found.tags or {}).get(VERSION_TAG)
            if tag is not None and tag.isdigit():
                done.add(int(tag))
        return done

    # --- copying -----------------------------------------------------------------------------

    def sync(self, task_id: str) -> SyncResult:
        """Register every published version of ``task_id`` that the registry does not hold yet."""
        from governance.registry import ModelRegistry

        registry = ModelRegistry(self._settings)
        task = task_of(self._settings, task_id)
        done = self.registered_versions(task_id)
        result = SyncResult()
        pending = [v.version for v in registry.versions(task_id) if v.version not in done]
        result.already = sorted(done)
        if not pending:
            return result
        products = self._data_products(task_id)
        for number in pending:
            self.register(task, registry.get(task_id, number), products)
            result.registered.append(number)
        return result

    def follow(self, task_id: str, stop: threading.Event) -> int:
        """Register versions as they land until ``stop``; returns how many were registered."""
        from meshfl.subscribe import watch_versions

        task = task_of(self._settings, task_id)
        done = self.registered_versions(task_id)
        count = 0
        for version in watch_versions(self._settings, task_id, stop=stop):
            if version.version in done:
                continue
            self.register(task, version, self._data_products(task_id))
            done.add(version.version)
            count += 1
        return count

    def register(self, task: TrainingTask, version: ModelVersion, products: dict[str, list[str]]) -> int:
        """Log one version from a run of its own and register it; returns the MLflow version number."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        model = load_version_model(task, version)
        example = torch.zeros(2, task.model.input_dim)
        with torch.no_grad():
            signature = infer_signature(example.numpy(), model(example).numpy())
        tags = self._tags(task, version, products)
        mlflow.set_tracking_uri(self._tracking_uri)
        mlflow.set_registry_uri(self._registry_uri)
        with mlflow.start_run(
            experiment_id=self._experiment_id, run_name=f"{task.id}-v{version.version}", tags=tags
        ):
            mlflow.log_metrics({k: float(v) for k, v in version.metrics.items()})
            if version.privacy is not None:
                mlflow.log_metrics({"dp_epsilon": version.privacy.epsilon, "dp_delta": version.privacy.delta})
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                registered_model_name=registered_name(task.id),
                signature=signature,
                input_example=example.numpy(),
                pip_requirements=["torch"],
            )
        number = int(info.registered_model_version)
        for key, value in tags.items():
            self._client.set_model_version_tag(registered_name(task.id), str(number), key, value)
        log.info("version registered in MLflow", task=task.id, version=version.version, mlflow_version=number)
        return number

    # --- lineage -------------------------------------------------------------------------------

    def _data_products(self, task_id: str) -> dict[str, list[str]]:
        """Update id -> the data products (id@version) it was trained on, for the version tags."""
        found: dict[str, list[str]] = {}
        for envelope in read_all(self._settings, Topic.UPDATES):
            update = envelope.event
            if isinstance(update, ModelUpdate) and update.task_id == task_id:
                found.setdefault(update.update_id, [f"{p.id}@{p.version}" for p in update.data_products])
        return found

    @staticmethod
    def _tags(task: TrainingTask, version: ModelVersion, products: dict[str, list[str]]) -> dict[str, str]:
        used = sorted({p for uid in version.contributing_updates for p in products.get(uid, [])})
        return {
            "meshfl.task": task.id,
            VERSION_TAG: str(version.version),
            "meshfl.parent": "" if version.parent_version is None else str(version.parent_version),
            "meshfl.round": str(version.round),
            "meshfl.sha256": version.sha256,
            "meshfl.strategy": version.strategy.name,
            "meshfl.domains": ",".join(version.contributing_domains),
            "meshfl.data_products": ",".join(used),
            "meshfl.features": ",".join(task.features),
        }


def describe(result: SyncResult) -> dict[str, Any]:
    return {"registered": result.registered, "already_registered": result.already}
