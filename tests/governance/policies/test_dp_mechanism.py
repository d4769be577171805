"""The Gaussian mechanism: the keyed ChaCha20 normals, the float64 clip-sum-noise, the key binding."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import stats

from governance.policies import (
    MIN_SECRET_BYTES,
    ClippedSum,
    check_secret,
    dp_mean_delta,
    gaussian_stream,
    noise_key,
    noised_mean_delta,
)
from governance.policies.dp_mechanism import basic_log, polar_normals

SECRET = b"governance-and-auditors-only-0123456789"
KEY = hashlib.sha256(b"a fixed test key").digest()


def _key(**overrides: object) -> bytes:
    fields: dict = {
        "task_id": "churn",
        "version": 3,
        "parent_sha256": "ab" * 32,
        "update_ids": ["u-1", "u-2", "u-3"],
    }
    fields.update(overrides)
    secret = fields.pop("secret", SECRET)
    return noise_key(secret, **fields)


# --- key ---------------------------------------------------------------------------------------


def test_the_key_is_the_full_hmac_bound_to_the_rounds_content() -> None:
    key = _key()
    assert len(key) == 32 and key == _key()
    assert key == _key(update_ids=["u-3", "u-1", "u-2"])  # the set of contributions, not their order
    others = [
        _key(secret=SECRET + b"!"),
        _key(task_id="churn2"),
        _key(version=4),
        _key(parent_sha256="cd" * 32),  # a second release of version 3 from another parent
        _key(update_ids=["u-1", "u-2"]),  # ... or from other updates
        _key(update_ids=["u-1", "u-2", "u-4"]),
        _key(update_ids=["u-1", "u-2u-3"]),  # length-prefixed fields: no ambiguity
    ]
    assert len({key, *others}) == len(others) + 1


def test_short_secrets_are_refused() -> None:
    assert MIN_SECRET_BYTES == 32
    for secret in (b"", b"k", b"s3cret", b"x" * 31):
        with pytest.raises(ValueError, match="at least 32"):
            check_secret(secret)
        with pytest.raises(ValueError, match="at least 32"):
            _key(secret=secret)
    check_secret(b"x" * 32)


# --- normals -----------------------------------------------------------------------------------


def test_basic_log_is_log_to_a_few_ulps() -> None:
    x = np.exp(np.random.default_rng(0).uniform(-75.0, 3.0, 50_000))
    x = np.concatenate([x, [2.0**-104, 0.5, 1.0, 2.0, math.sqrt(0.5), 1 - 2**-52]])
    assert np.allclose(basic_log(x), np.log(x), rtol=2e-15, atol=1e-300)
    assert basic_log(np.array([1.0]))[0] == 0.0


def test_normals_have_the_tails_float32_box_muller_cuts_off() -> None:
    """torch's float32 randn stops near 5.77 sigma; the polar method on a 2^-52 grid reaches ~12."""
    tiny = 2.0**-52
    extreme = polar_normals(np.array([tiny, tiny, 0.5]), np.array([0.0, tiny, 0.5]))
    assert abs(extreme[0]) > 11.9 and abs(extreme[2]) > 8.4
    assert abs(extreme[4]) == pytest.approx(math.sqrt(-2 * math.log(0.5)) * 0.5 / math.sqrt(0.5))
    rejected = polar_normals(np.array([0.0, 0.9, -1.0]), np.array([0.0, 0.9, 0.0]))
    assert rejected.size == 0  # the centre and points outside the open unit disc


def test_the_stream_is_reproducible_normal_float64_and_keyed() -> None:
    draws = gaussian_stream(KEY, "layers.0.weight", 200_000)
    assert draws.dtype == np.float64
    assert np.array_equal(draws, gaussian_stream(KEY, "layers.0.weight", 200_000))
    assert np.array_equal(draws[:1000], gaussian_stream(KEY, "layers.0.weight", 1000))
    assert stats.kstest(draws, "norm").pvalue > 1e-3
    assert abs(draws.mean()) < 5 / math.sqrt(draws.size) and draws.std() == pytest.approx(1.0, abs=0.01)
    other_tensor = gaussian_stream(KEY, "layers.0.bias", 1000)
    other_key = gaussian_stream(hashlib.sha256(b"another").digest(), "layers.0.weight", 1000)
    assert abs(np.corrcoef(draws[:1000], other_tensor)[0, 1]) < 0.15
    assert not np.array_equal(draws[:1000], other_key)
    with pytest.raises(ValueError, match="32 bytes"):
        gaussian_stream(b"short", "w", 1)


# --- the mechanism -----------------------------------------------------------------------------


def _base() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"a": torch.randn(40, 5, generator=generator), "b": torch.randn(7, generator=generator)}


def _shifted(base: dict[str, torch.Tensor], seed: int, norm: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    deltas = {k: torch.randn(v.shape, generator=generator, dtype=torch.float64) for k, v in base.items()}
    total = math.sqrt(sum(float(d.square().sum()) for d in deltas.values()))
    return {k: (base[k].double() + deltas[k] * (norm / total)).float() for k in base}


def test_each_delta_is_clipped_in_float64_whatever_came_before() -> None:
    """A raw update (delta norm 30, clip 0.5) contributes exactly what its clipped version does."""
    base = _base()
    raw = _shifted(base, 1, 30.0)
    summed = ClippedSum(base, clip_norm=0.5)
    summed.add(raw)
    norm = math.sqrt(sum(float(s.square().sum()) for s in summed.sums.values()))
    assert norm == pytest.approx(0.5, rel=1e-12)
    small = _shifted(base, 2, 0.2)
    within = ClippedSum(base, clip_norm=0.5)
    within.add(small)
    assert all(torch.equal(within.sums[k], small[k].double() - base[k].double()) for k in base)


def test_noise_is_added_to_the_sum_in_float64_and_divided_by_n() -> None:
    base = _base()
    updates = [_shifted(base, seed, 0.3) for seed in range(4)]
    released = dp_mean_delta(base, updates, clip_norm=0.5, noise_multiplier=1.5, key=KEY)
    for name in base:
        clean = sum(u[name].double() - base[name].double() for u in updates)
        noise = torch.from_numpy(gaussian_stream(KEY, name, base[name].numel())).reshape(base[name].shape)
        expected = (clean + noise * (1.5 * 0.5)) / 4
        assert released[name].dtype == torch.float64
        assert torch.allclose(released[name], expected, rtol=0, atol=1e-15)


def test_the_noise_std_on_the_mean_is_z_c_over_n() -> None:
    base = {"w": torch.zeros(400_000)}
    released = dp_mean_delta(
        base, [base, base, base, base, base], clip_norm=0.8, noise_multiplier=1.3, key=KEY
    )
    assert float(released["w"].std()) == pytest.approx(1.3 * 0.8 / 5, rel=0.01)


def test_integer_tensors_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="integer tensors"):
        ClippedSum({"w": torch.zeros(3), "steps": torch.tensor(4)}, clip_norm=1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        ClippedSum(_base(), clip_norm=0.0)
    empty = ClippedSum(_base(), clip_norm=1.0)
    with pytest.raises(ValueError, match="at least one"):
        noised_mean_delta(empty, noise_multiplier=1.0, key=KEY)
    summed = ClippedSum(_base(), clip_norm=1.0)
    summed.add(_base())
    with pytest.raises(ValueError, match="noise_multiplier"):
        noised_mean_delta(summed, noise_multiplier=0.0, key=KEY)
    with pytest.raises(ValueError, match="differ"):
        summed.add({"a": torch.zeros(40, 5)})
    nan = _base()
    nan["b"] = torch.full((7,), float("nan"))
    with pytest.raises(ValueError, match="not finite"):
        summed.add(nan)
