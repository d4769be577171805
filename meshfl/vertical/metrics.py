"""Test metrics of a split model from predicted probabilities (scikit-learn).

ROC AUC is computed from the probability of the positive class (one-vs-rest for more classes), not from
argmax labels: the seed paper's figure is the latter, which is balanced accuracy, reported beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from meshfl.extras import require


def classification_metrics(probabilities: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``roc_auc``, ``balanced_accuracy``, ``accuracy`` and ``log_loss`` on held-out rows."""
    sk = require("sklearn.metrics", "vertical")
    probs = probabilities.detach().to(torch.float64).numpy()
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within rounding
    y = labels.detach().numpy().astype(np.int64)
    if len(y) == 0:
        return {}
    predicted = probs.argmax(axis=1)
    metrics = {
        "accuracy": float(sk.accuracy_score(y, predicted)),
        "balanced_accuracy": float(sk.balanced_accuracy_score(y, predicted)),
    }
    classes = probs.shape[1]
    if len(np.unique(y)) > 1:
        if classes == 2:
            metrics["roc_auc"] = float(sk.roc_auc_score(y, probs[:, 1]))
        else:
            metrics["roc_auc"] = float(
                sk.roc_auc_score(y, probs, multi_class="ovr", labels=list(range(classes)))
            )
        metrics["log_loss"] = float(sk.log_loss(y, np.clip(probs, 1e-12, 1.0), labels=list(range(classes))))
    return metrics
