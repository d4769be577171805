"""The empirical privacy audit: its statistics, and that it has teeth.

meshfl's release (``aggregate_version``) must give an empirical lower bound on epsilon below the
accountant's epsilon for the same configuration; each defect of issue 10 put back must push the bound
far above it. A bounded run: a few hundred releases per world on a 36-parameter model, no Kafka.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from governance.audit.dp_audit import (
    BROKEN,
    AuditSetup,
    audit,
    audit_broken,
    make_world,
    meshfl_release,
    observed_mean_delta,
)
from governance.audit.dp_bound import clopper_pearson, epsilon_lower_bound

SETUP = AuditSetup(domains=10, noise_multiplier=4.0, trials=400)


def test_clopper_pearson_matches_the_closed_forms() -> None:
    lower, upper = clopper_pearson(0, 200, 0.0125)
    assert lower == 0.0 and upper == pytest.approx(1 - 0.0125 ** (1 / 200), rel=1e-9)
    lower, upper = clopper_pearson(200, 200, 0.0125)
    assert upper == 1.0 and lower == pytest.approx(0.0125 ** (1 / 200), rel=1e-9)
    lower, upper = clopper_pearson(50, 100, 0.025)
    assert lower < 0.5 < upper and upper - 0.5 == pytest.approx(0.5 - lower, rel=1e-9)


def test_the_bound_is_zero_for_identical_worlds_and_log_n_for_separated_ones() -> None:
    rng = np.random.default_rng(0)
    same = epsilon_lower_bound(rng.normal(size=2000), rng.normal(size=2000), delta=1e-5)[0]
    assert same < 0.2
    apart, threshold = epsilon_lower_bound(rng.normal(10, 1, 400), rng.normal(0, 1, 400), delta=1e-5)
    assert 0 < threshold < 10
    tpr_lower = (0.05 / 4) ** (1 / 200)  # every one of the 200 held-out releases told apart
    assert apart == pytest.approx(math.log((tpr_lower - 1e-5) / (1 - tpr_lower)), rel=1e-9)


def test_the_adversary_reads_the_released_mean_off_fedadam_moments() -> None:
    world = make_world(SETUP)
    version = meshfl_release(world, world.updates(True, 0), b"k" * 32)
    observed = observed_mean_delta(world, version)
    assert observed.shape == world.direction.shape and np.isfinite(observed).all()
    assert float(np.linalg.norm(world.direction)) == pytest.approx(1.0)


def test_meshfl_stays_below_its_accountant_and_every_defect_rises_far_above() -> None:
    honest = audit(SETUP)
    assert honest.epsilon_accountant == pytest.approx(1.0125, abs=1e-3)  # z = 4, one release, delta 1e-5
    assert honest.epsilon_lower <= honest.epsilon_accountant
    broken = audit_broken(SETUP, trials=300)
    assert [b.mechanism for b in broken] == list(BROKEN)
    for result in broken:
        assert result.epsilon_lower > 2 * honest.epsilon_accountant, result
        assert result.epsilon_lower > honest.epsilon_lower + 1.5, result
