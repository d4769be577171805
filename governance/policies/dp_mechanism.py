"""The Gaussian mechanism of central DP, as one pure function of (base, updates, key material).

What is released [DP-FedAvg, McMahan et al., 2018, arXiv:1710.06963, Algorithm 1]: each update's delta
against the base is clipped to L2 norm ``C`` (here, again, in float64: the guarantee never rests on an
upstream policy having done it, e.g. an update restored after a restart); the ``n`` clipped deltas are
**summed**, ``N(0, (z C)^2)`` is added to every coordinate of the **sum**, and the result is divided by
``n`` (public: the version lists its contributing updates). That is the noised **mean** delta, with noise
std ``z C / n`` on the mean. Everything the service then publishes (weights, FedAdam moments, FedAvgM
velocity) is computed from that noised mean and public values only: post-processing.

The noise is a keyed cryptographic stream: ChaCha20 [Bernstein, 2008; RFC 8439] keyed by the full 256-bit
HMAC-SHA256 of the round's content (task, version number, parent's SHA-256, sorted contributing update ids)
under the governance secret. Without the secret nobody can regenerate the noise (a torch generator seed
kept 32 of the HMAC's bits and was found by search); a second release of the same version number from
other updates or another parent never reuses noise. Each floating-point tensor has its own stream (the
nonce is a hash of its name). Words become uniforms on a 2^-52 grid in [-1, 1) and normals by Marsaglia's
polar method (Marsaglia and Bray, 1964), with a logarithm built from IEEE-754 basic operations only, so a
replay on another CPU gives the same bits (libm and SIMD ``log`` differ in the last ulp between machines).
Support: the smallest accepted ``s = u^2 + v^2`` is ~2^-104, so ``|Z|`` reaches ~12 sigma; the mass the
grid cuts off (P(|Z| > 12) ~ 4e-33 a coordinate) is far below any ``target_delta``. (torch's float32
Box-Muller stops at ~5.77 sigma.) Noise is drawn and added in float64 and rounded once, by the caller's
final cast to the model dtype.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

MIN_SECRET_BYTES = 32
"""Shortest DP secret accepted: 256 bits, the ChaCha20 key size (a short secret can be searched)."""

_KEY_DOMAIN = b"meshfl/dp-noise/v2"
_PAIRS_PER_BLOCK = 1 << 18
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: the high part has 32 trailing zero bits
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = math.sqrt(0.5)


# --- key ---------------------------------------------------------------------------------------


def check_secret(secret: bytes) -> None:
    """Refuse a secret shorter than ``MIN_SECRET_BYTES``: the noise is only as secret as the key."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the DP secret has {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


def noise_key(
    secret: bytes, *, task_id: str, version: int, parent_sha256: str, update_ids: Sequence[str]
) -> bytes:
    """The 256-bit ChaCha20 key of one release: HMAC-SHA256 of the round's content under ``secret``.

    Fields are length-prefixed (no two contents give the same message); update ids are sorted, so the
    key depends on the set of contributions, not on their arrival order.
    """
    check_secret(secret)
    fields = [_KEY_DOMAIN, task_id.encode(), str(int(version)).encode(), parent_sha256.encode()]
    fields += [u.encode() for u in sorted(update_ids)]
    message = b"".join(len(f).to_bytes(8, "big") + f for f in fields)
    return hmac.new(secret, message, hashlib.sha256).digest()


# --- normals from the stream -------------------------------------------------------------------


def basic_log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive finite float64 values from +, -, *, / only (bit-reproducible anywhere).

    ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)); ``log m = 2 atanh(f)``, ``f = (m-1)/(m+1)``,
    ``|f| <= 0.172``, by its series to ``f^21`` (truncation < 1e-18 relative); ``e ln 2`` in two parts.
    Accurate to a few ulps: this only has to be the same everywhere, and close to ``log``.
    """
    mantissa, exponent = np.frexp(x)
    low = mantissa < _SQRT_HALF
    mantissa = np.where(low, mantissa * 2.0, mantissa)
    exponent = (exponent - low).astype(np.float64)
    f = (mantissa - 1.0) / (mantissa + 1.0)
    f2 = f * f
    series = np.full_like(f, 1.0 / 21.0)
    for k in range(9, -1, -1):
        series = series * f2 + 1.0 / (2 * k + 1)
    return exponent * _LN2_HI + (2.0 * f * series + exponent * _LN2_LO)


def polar_normals(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Marsaglia's polar method: pairs of uniforms in (-1, 1) -> normals, interleaved (u0 v0 u1 v1 ...).

    Pairs outside the open unit disc (or at its centre) are rejected; the rest give two N(0, 1) each.
    """
    s = u * u + v * v
    keep = (s < 1.0) & (s > 0.0)
    u, v, s = u[keep], v[keep], s[keep]
    factor = np.sqrt(-2.0 * basic_log(s) / s)
    return np.stack([u * factor, v * factor], axis=1).reshape(-1)


def gaussian_stream(key: bytes, stream: str, count: int) -> np.ndarray:
    """``count`` float64 N(0, 1) values from ChaCha20(``key``), nonce ``SHA-256(stream)[:12]``, counter 0.

    A function of (key, stream, count) only. Each 64-bit little-endian word gives a uniform
    ``(w >> 11) 2^-52 - 1`` (exact in float64), two words a polar pair.
    """
    if len(key) != 32:
        raise ValueError("the noise key must be 32 bytes")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    nonce = bytes(4) + hashlib.sha256(stream.encode()).digest()[:12]
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    out = np.empty(count, dtype=np.float64)
    filled = 0
    while filled < count:
        pairs = min(_PAIRS_PER_BLOCK, (count - filled) // 2 * 4 // 3 + 16)  # pi/4 of pairs are kept
        words = np.frombuffer(encryptor.update(bytes(16 * pairs)), dtype="<u8")
        uniforms = (words >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0
        normals = polar_normals(uniforms[0::2], uniforms[1::2])
        take = min(normals.size, count - filled)
        out[filled : filled + take] = normals[:take]
        filled += take
    return out


# --- the mechanism -----------------------------------------------------------------------------


def _float64_delta(weights: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], name: str):
    tensor, reference = weights[name], base[name]
    if tuple(tensor.shape) != tuple(reference.shape):
        raise ValueError(f"tensor {name!r}: shape {tuple(tensor.shape)} != base {tuple(reference.shape)}")
    return torch.sub(tensor.detach().to("cpu", torch.float64), reference.detach().to("cpu", torch.float64))


def check_dp_model(base: Mapping[str, torch.Tensor]) -> None:
    """DP noises floating-point tensors only: a model with integer tensors would leak them un-noised."""
    integer = sorted(name for name, t in base.items() if not t.is_floating_point())
    if integer:
        raise ValueError(f"central DP cannot noise integer tensors ({', '.join(integer[:5])})")
    if not base:
        raise ValueError("the base weights are empty")


class ClippedSum:
    """Running float64 sum of deltas ``weights - base``, each clipped to L2 norm ``clip_norm`` first.

    Streams: one update at a time, memory O(model) (the sum, plus one tensor's float64 delta). The norm
    is over all tensors as one vector, computed in float64, so each clipped delta has norm ``<= C`` up to
    float64 rounding (relative 1e-15), whatever was done to the update before. Only element-wise IEEE
    operations and fixed-order sums are used, so the result has the same bits on every CPU.
    """

    def __init__(self, base: Mapping[str, torch.Tensor], *, clip_norm: float) -> None:
        check_dp_model(base)
        if not (clip_norm > 0 and math.isfinite(clip_norm)):
            raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm}")
        self._base = base
        self._names = sorted(base)
        self.clip_norm = float(clip_norm)
        self.sums = {name: torch.zeros(tuple(base[name].shape), dtype=torch.float64) for name in self._names}
        self.count = 0

    def add(self, weights: Mapping[str, torch.Tensor]) -> None:
        if set(weights) != set(self._names):
            differ = sorted(set(weights) ^ set(self._names))[:5]
            raise ValueError(f"update tensors differ from the base: {differ}")
        # numpy's pairwise float64 sum has one order on every CPU (torch's reduction order follows its SIMD)
        squares = [
            float(np.sum(np.square(_float64_delta(weights, self._base, n).numpy()))) for n in self._names
        ]
        norm = math.sqrt(math.fsum(squares))
        if not math.isfinite(norm):
            raise ValueError("an update delta is not finite")
        scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        for name in self._names:
            self.sums[name].add_(_float64_delta(weights, self._base, name).mul_(scale))
        self.count += 1


def noised_mean_delta(clipped: ClippedSum, *, noise_multiplier: float, key: bytes) -> dict[str, torch.Tensor]:
    """``(sum + N(0, (z C)^2)) / n`` per tensor in float64 (consumes ``clipped``'s sums)."""
    if clipped.count < 1:
        raise ValueError("a release needs at least one update")
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier}")
    sigma = noise_multiplier * clipped.clip_norm
    out: dict[str, torch.Tensor] = {}
    for name in list(clipped.sums):
        total = clipped.sums.pop(name)
        noise = torch.from_numpy(gaussian_stream(key, name, total.numel())).reshape(total.shape)
        out[name] = total.add_(noise.mul_(sigma)).div_(clipped.count)
    return out


def dp_mean_delta(
    base: Mapping[str, torch.Tensor],
    updates: Iterable[Mapping[str, torch.Tensor]],
    *,
    clip_norm: float,
    noise_multiplier: float,
    key: bytes,
) -> dict[str, torch.Tensor]:
    """The mechanism in one call: clip each update's delta, sum, noise the sum, divide by ``n`` (float64)."""
    clipped = ClippedSum(base, clip_norm=clip_norm)
    for weights in updates:
        clipped.add(weights)
    return noised_mean_delta(clipped, noise_multiplier=noise_multiplier, key=key)
