"""Model versions where data scientists already work: ONNX files and an MLflow model registry.

``load_version_model`` turns a published version (checked against its SHA-256) and its task into a
ready ``torch.nn.Module``; ``export_onnx`` writes it as ONNX; ``MlflowSync`` registers every version
of a task in an MLflow registry as a PyTorch model with its lineage as tags. MLflow and ONNX are
extras (``pip install 'meshfl[mlflow]'``, ``'meshfl[onnx]'``): a command that needs one says so.
"""

from __future__ import annotations

from meshfl.interop.mlflow_sync import MlflowSync, SyncResult
from meshfl.interop.model import load_version_model, task_of
from meshfl.interop.onnx_export import export_onnx

__all__ = ["MlflowSync", "SyncResult", "export_onnx", "load_version_model", "task_of"]
