"""The poisoning attacks of ``bench/robustness.py``: what one compromised (signed, admitted) domain sends.

- ``scaled``: ``global + 100 x delta``, model replacement (Bagdasaryan et al., "How To Backdoor Federated
  Learning", AISTATS 2020, arXiv:1807.00459), the attack of tests/federation/test_poisoning.py;
- ``signflip``: ``global - 4 x delta``, the sign-flipping attack of Li et al., "RSA: Byzantine-Robust
  Stochastic Aggregation Methods", AAAI 2019, arXiv:1811.03761;
- ``labelflip``: honest training on labels ``c -> C - 1 - c`` (Tolpegin et al., "Data Poisoning Attacks
  Against Federated Learning Systems", ESORICS 2020, arXiv:2007.08432): a data attack, normal norms.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from bench._quality.sim import Adversary

SCALE = 100.0
SIGN_FLIP = -4.0


def _scaled(factor: float):
    def publish(base: Mapping[str, torch.Tensor], local: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: base[k] + factor * (local[k] - base[k]) for k in base}

    return publish


def _flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return (num_classes - 1) - y


def adversary(attack: str, domain: str) -> Adversary | None:
    """The adversary for ``attack`` (``clean`` gives ``None``) controlling ``domain``."""
    if attack == "clean":
        return None
    if attack == "scaled":
        return Adversary(domain, publish=_scaled(SCALE))
    if attack == "signflip":
        return Adversary(domain, publish=_scaled(SIGN_FLIP))
    if attack == "labelflip":
        return Adversary(domain, labels=_flip_labels)
    raise ValueError(f"unknown attack {attack!r}")


ATTACKS = ("clean", "scaled", "signflip", "labelflip")
