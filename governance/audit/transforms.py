"""The weights the governance service aggregated for an accepted update, recomputed for an audit.

The service may transform an accepted update (norm clipping with ``norm_action = "clip"``, DP
clipping under central DP) against the global weights of the moment; replay must aggregate the same
transformed weights. It re-runs the transforming policy classes themselves, never a copy of their math.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from governance.policies import Candidate, DPClip, NormBound, PolicyContext, evaluate_update
from meshfl.events import ModelUpdate, TrainingTask

TRANSFORMING_POLICIES = (NormBound(), DPClip())
"""The policies that change an accepted update's weights, in the order the service runs them."""


def reapply_transforms(
    task: TrainingTask, weights: Mapping[str, torch.Tensor], global_weights: Mapping[str, torch.Tensor]
) -> tuple[Mapping[str, torch.Tensor], str | None]:
    """The weights the service aggregated for an accepted update: the norm clip and DP clip re-run.

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
