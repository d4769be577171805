"""Optional dependencies: what only some users need is an extra, and a command that needs one says which.

pip install meshfl                   the core: agents, governance, audit, CLI over Kafka
pip install 'meshfl[dp]'             central differential privacy (Opacus accountant, SciPy)
pip install 'meshfl[plots]'          the demo's plot and the audit report's figures (matplotlib)
pip install 'meshfl[examples]'       the bundled example domains' data (scikit-learn)
pip install 'meshfl[vertical]'       split learning: PSI alignment (openmined-psi), ROC AUC (scikit-learn)
pip install 'meshfl[console]'        the live web console (Starlette, uvicorn)
pip install 'meshfl[mlflow]'         model versions into an MLflow registry
pip install 'meshfl[onnx]'           model versions as ONNX
pip install 'meshfl[docker]'         a broker from a Docker engine for tests (testcontainers)
pip install 'meshfl[all]'            all of the above
"""

from __future__ import annotations

import importlib
from types import ModuleType

from meshfl.errors import MeshflError


class MissingExtraError(MeshflError):
    """A command needs an optional dependency that is not installed; the message names the extra."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise ``MissingExtraError`` saying which meshfl extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"this needs the Python package behind {module!r}: pip install 'meshfl[{extra}]'"
        ) from exc
