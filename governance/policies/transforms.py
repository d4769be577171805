"""The form in which an accepted update is aggregated: the transforming policies re-run against the parent.

Norm clipping (``norm_action = "clip"``) and the DP clip change an accepted update's weights, relative to
the global weights they are measured against. The service, a restarted service and an audit replay all
aggregate an update in the form this function gives for the version it goes into (the parent), so the
clip factor is a pure function of the log: the update's tensors, the parent version and the task. The
service never aggregates raw weights that these policies did not pass: a refusal here withdraws the
update with a decision.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from governance.policies.base import Candidate, PolicyContext
from governance.policies.checks import evaluate_update
from governance.policies.dp_clip import DPClip
from governance.policies.norm_bound import NormBound
from meshfl.events import ModelUpdate, TrainingTask

TRANSFORMING_POLICIES = (NormBound(), DPClip())
"""The policies that change an accepted update's weights, in the order the service runs them."""


def reapply_transforms(
    task: TrainingTask, weights: Mapping[str, torch.Tensor], global_weights: Mapping[str, torch.Tensor]
) -> tuple[Mapping[str, torch.Tensor], str | None]:
    """The weights aggregated for an accepted update: the norm clip and DP clip re-run on ``weights``.

    Runs the policy classes themselves (not a copy of their math). Returns the weights and, if a policy
    now rejects the update (a rewritten payload, or a norm bound it no longer meets), its reason.
    """
    context = PolicyContext(
        task=task,
        open_round=0,
        latest_version=0,
        global_weights=global_weights,
        expected={},
        catalog={},
    )
    update = ModelUpdate(
        update_id="replay", task_id=task.id, round=0, base_version=0, domain="", num_examples=1, tensors=[]
    )
    verdict, final = evaluate_update(
        Candidate(update=update, weights=weights), context, TRANSFORMING_POLICIES
    )
    return final, None if verdict.accepted else f"{verdict.policy}: {verdict.reason}"
