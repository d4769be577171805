"""Central DP in ``aggregate_version``: noise before the server optimizer, a key no one can search,
only the strategies and modes the noise is calibrated for, float64 noise, nothing else published."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from dataclasses import replace

import pytest
import torch
from pydantic import SecretStr

from governance.policies import DP_STRATEGIES, check_dp_config, dp_config_problems, dp_mean_delta, noise_key
from governance.rounds import aggregate_version, initial_version
from governance.service import GovernanceService
from governance.strategies import STRATEGIES, ClientUpdate, build_strategy
from meshfl.errors import ConfigError
from meshfl.events import FederationMode, PrivacyPolicy, StrategySpec, UpdateChecks
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
from tests.audit.audit_builders import SECRET, make_task, perturbed

PRIVACY = PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.0)


def _round(strategy: str = "fedadam", n: int = 3, scale: float = 0.1, **task_overrides):
    task = make_task(privacy=PRIVACY, strategy=StrategySpec(name=strategy), **task_overrides)
    parent = initial_version(task)
    weights = from_wire(parent.tensors)
    updates = [
        ClientUpdate(f"u{i}", f"d{i}", perturbed(weights, seed=10 + i, scale=scale), num_examples=10 + 90 * i)
        for i in range(n)
    ]
    return task, parent, weights, updates


def _release(task, parent, weights, updates, secret: bytes = SECRET):
    return aggregate_version(
        task, parent, weights, {}, updates, created_at=parent.created_at, dp_secret=secret
    )


def _clean_mean_delta(weights, updates, clip_norm: float) -> dict[str, torch.Tensor]:
    """The uniform mean of the clipped deltas, without noise: what must never be published."""
    out = {name: torch.zeros(t.shape, dtype=torch.float64) for name, t in weights.items()}
    for update in updates:
        deltas = {k: update.weights[k].double() - weights[k].double() for k in weights}
        norm = math.sqrt(sum(float(d.square().sum()) for d in deltas.values()))
        for k in weights:
            out[k] += deltas[k] * min(1.0, clip_norm / norm)
    return {k: v / len(updates) for k, v in out.items()}


def _key(task, parent, updates, secret: bytes = SECRET) -> bytes:
    ids = [u.update_id for u in updates]
    return noise_key(secret, task_id=task.id, version=1, parent_sha256=parent.sha256, update_ids=ids)


# --- 1. noise before the server optimizer ------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fedadam", "fedyogi", "fedadagrad"])
def test_published_moments_hold_the_noised_mean_never_the_clean_one(strategy: str) -> None:
    task, parent, weights, updates = _round(strategy)
    state = from_wire(_release(task, parent, weights, updates).server_state)
    clean = _clean_mean_delta(weights, updates, PRIVACY.clip_norm)
    noised = dp_mean_delta(
        weights,
        [u.weights for u in updates],
        clip_norm=PRIVACY.clip_norm,
        noise_multiplier=PRIVACY.noise_multiplier,
        key=_key(task, parent, updates),
    )
    std = PRIVACY.noise_multiplier * PRIVACY.clip_norm / len(updates)
    beta_1 = build_strategy(strategy, {}).beta_1  # type: ignore[attr-defined]
    for name in weights:
        recovered = state[f"m.{name}"] / (1 - beta_1)
        assert float((recovered - clean[name]).abs().max()) > std  # was equal to 1e-17 before the fix
        assert torch.allclose(recovered, noised[name], rtol=0, atol=1e-12)


def test_fedavgm_velocity_is_computed_from_the_noised_mean() -> None:
    task, parent, weights, updates = _round("fedavgm")
    task = task.model_copy(update={"strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.9})})
    state = from_wire(_release(task, parent, weights, updates).server_state)
    clean = _clean_mean_delta(weights, updates, PRIVACY.clip_norm)
    for name in weights:
        assert float((-state[f"momentum.{name}"] - clean[name]).abs().max()) > 0.05


def test_weights_are_base_plus_noised_mean_rounded_once() -> None:
    task, parent, weights, updates = _round("fedavg")
    version = _release(task, parent, weights, updates)
    noised = dp_mean_delta(
        weights,
        [u.weights for u in updates],
        clip_norm=PRIVACY.clip_norm,
        noise_multiplier=PRIVACY.noise_multiplier,
        key=_key(task, parent, updates),
    )
    published = from_wire(version.tensors)
    for name, base in weights.items():
        assert torch.equal(published[name], (base.double() + noised[name]).float())


def test_a_raw_update_is_clipped_by_the_mechanism_itself() -> None:
    """An update that skipped the DP clip (e.g. restored raw after a restart) weighs as if clipped."""
    task, parent, weights, updates = _round("fedavg", scale=1.0)
    from governance.policies.deltas import scale_delta

    clipped = []
    for update in updates:
        norm = math.sqrt(
            sum(float((update.weights[k] - weights[k]).double().square().sum()) for k in weights)
        )
        assert norm > 10 * PRIVACY.clip_norm
        clipped.append(
            replace(update, weights=scale_delta(update.weights, weights, PRIVACY.clip_norm / norm))
        )
    raw_version = from_wire(_release(task, parent, weights, updates).tensors)
    clipped_version = from_wire(_release(task, parent, weights, clipped).tensors)
    for name in weights:
        assert torch.allclose(raw_version[name], clipped_version[name], rtol=0, atol=1e-6)


# --- 2. a key no one can search ----------------------------------------------------------------


def _legacy_seed(task_id: str, version: int, secret: bytes) -> int:
    """The pre-fix seed: 63 bits of HMAC(task, version), of which torch's generator kept 32."""
    digest = hmac.new(secret, f"{task_id}\x00{version}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def _search_torch_seeds(published, parent_weights, std: float, clip: float, seeds) -> list[int]:
    """The issue's attack: the seed whose noise leaves a residual of norm <= C is the one used."""
    found = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        squares = 0.0
        for name in sorted(published):
            noise = torch.randn(tuple(published[name].shape), generator=generator) * std
            squares += float((published[name] - parent_weights[name] - noise).double().square().sum())
        if math.sqrt(squares) <= clip * 1.001:
            found.append(seed)
    return found


def test_the_32_bit_seed_search_of_the_issue_finds_nothing() -> None:
    generator = torch.Generator()
    assert torch.equal(
        torch.randn(8, generator=generator.manual_seed(2**40 + 77)),
        torch.randn(8, generator=generator.manual_seed(77)),
    )  # why the 63-bit HMAC seed was a 32-bit one
    task, parent, weights, updates = _round("fedavg")
    published = from_wire(_release(task, parent, weights, updates).tensors)
    std = PRIVACY.noise_multiplier * PRIVACY.clip_norm / len(updates)
    low = _legacy_seed(task.id, 1, SECRET) & 0xFFFFFFFF
    window = range(max(low - 2048, 0), low + 2048)  # the window the issue searched holds the old seed
    assert _search_torch_seeds(published, weights, std, PRIVACY.clip_norm, window) == []
    assert _search_torch_seeds(published, weights, std, PRIVACY.clip_norm, range(2048)) == []


def test_replay_needs_the_secret_and_a_new_release_never_reuses_noise() -> None:
    task, parent, weights, updates = _round("fedavg")
    first = _release(task, parent, weights, updates)
    assert first.sha256 == _release(task, parent, weights, updates).sha256  # bit for bit with the secret
    assert first.sha256 != _release(task, parent, weights, updates, secret=SECRET + b"?").sha256
    # the same version number released again from other updates: other noise, not the same noise
    other = [replace(u, update_id=u.update_id + "-again") for u in updates]
    again = from_wire(_release(task, parent, weights, other).tensors)
    before = from_wire(first.tensors)
    assert all(not torch.equal(again[k], before[k]) for k in weights)
    with pytest.raises(ValueError, match="at least 32"):
        _release(task, parent, weights, updates, secret=b"s3cret")


# --- 3. only what the noise is calibrated for --------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - set(DP_STRATEGIES)))
def test_dp_is_refused_for_uncalibrated_strategies(strategy: str) -> None:
    task = make_task(privacy=PRIVACY, strategy=StrategySpec(name=strategy))
    with pytest.raises(ConfigError, match=f"strategy '{strategy}' cannot run under central DP") as caught:
        check_dp_config(task)
    assert "allowed: fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad" in str(caught.value)
    _, parent, weights, updates = _round("fedavg", n=5)
    with pytest.raises(ValueError, match="central DP refused"):
        _release(task, parent, weights, updates)


def test_dp_is_refused_in_async_mode_and_with_norm_reject() -> None:
    async_task = make_task(privacy=PRIVACY, mode=FederationMode.ASYNC)
    with pytest.raises(ConfigError, match="mode 'async' cannot run under central DP"):
        check_dp_config(async_task)
    reject = make_task(privacy=PRIVACY, update_checks=UpdateChecks(max_l2_norm=1.0, norm_action="reject"))
    with pytest.raises(ConfigError, match="norm_action = 'clip'"):
        check_dp_config(reject)
    clip = make_task(privacy=PRIVACY, update_checks=UpdateChecks(max_l2_norm=1.0, norm_action="clip"))
    check_dp_config(clip)
    check_dp_config(make_task(update_checks=UpdateChecks(max_l2_norm=1.0)))  # no DP, no constraint


@pytest.mark.parametrize("strategy", sorted(DP_STRATEGIES))
def test_dp_is_allowed_for_the_calibrated_strategies(strategy: str) -> None:
    task, parent, weights, updates = _round(strategy)
    check_dp_config(task)
    version = _release(task, parent, weights, updates)
    assert version.privacy is not None and version.privacy.epsilon > 0


# --- 5, 6. nothing outside the mechanism; no integer tensors -----------------------------------


def test_no_example_count_is_published_under_dp() -> None:
    task, parent, weights, updates = _round("fedavg")
    assert set(_release(task, parent, weights, updates).metrics) == {"num_updates"}
    plain = task.model_copy(update={"privacy": None})
    assert _release(plain, parent, weights, updates).metrics["num_examples"] == sum(
        u.num_examples for u in updates
    )


def test_a_model_with_integer_tensors_is_refused() -> None:
    task, parent, weights, updates = _round("fedavg")
    with_counter = {**weights, "bn.num_batches_tracked": torch.tensor(3)}
    problems = dp_config_problems(task, with_counter)
    assert len(problems) == 1 and "integer tensors (bn.num_batches_tracked)" in problems[0]
    counted = [replace(u, weights={**u.weights, "bn.num_batches_tracked": torch.tensor(4)}) for u in updates]
    with pytest.raises(ValueError, match="integer tensors"):
        _release(task, parent, with_counter, counted)


def test_governance_refuses_an_uncalibrated_dp_task_or_a_short_secret_at_start() -> None:
    long_secret = MeshflSettings(dp_secret=SecretStr(SECRET.decode()))
    median = make_task(privacy=PRIVACY, strategy=StrategySpec(name="fedmedian"))
    with pytest.raises(ConfigError, match="fedmedian"):
        GovernanceService(long_secret, [median]).run(threading.Event())
    short = MeshflSettings(dp_secret=SecretStr("s3cret"))
    with pytest.raises(ConfigError, match="too short"):
        GovernanceService(short, [make_task(privacy=PRIVACY)]).run(threading.Event())


def test_a_task_on_the_bus_cannot_turn_the_files_dp_off_or_uncalibrate_it() -> None:
    from governance.log_checks import effective_task

    configured = make_task(privacy=PRIVACY)
    assert effective_task(configured, make_task()) == configured  # DP dropped on the bus: the file runs
    weaker = make_task(privacy=PRIVACY.model_copy(update={"noise_multiplier": 0.1}))
    assert effective_task(configured, weaker) == configured
    median = make_task(privacy=PRIVACY, strategy=StrategySpec(name="fedmedian"))
    assert effective_task(make_task(), median).strategy.name == "fedavg"  # uncalibrated DP on the bus
    same = configured.model_copy(update={"description": "as published"})
    assert effective_task(configured, same) == same  # otherwise the bus wins, as before
