"""The weights the governance service aggregated for an accepted update, recomputed for an audit.

The service may transform an accepted update (norm clipping with ``norm_action = "clip"``, DP
clipping under central DP) against the version it goes into; replay must aggregate the same
transformed weights. Both call the one function, ``governance.policies.transforms.reapply_transforms``,
which re-runs the transforming policy classes themselves, never a copy of their math.
"""

from __future__ import annotations

from governance.policies.transforms import TRANSFORMING_POLICIES, reapply_transforms

__all__ = ["TRANSFORMING_POLICIES", "reapply_transforms"]
