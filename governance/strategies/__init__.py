"""Aggregation strategies of the governance service: pure math, no Kafka, one algorithm a module.

``STRATEGIES`` is the explicit registry the task files name (``strategy: {name: fedavg, params: {...}}``);
:func:`build_strategy` turns such a name and its parameters into a configured :class:`Strategy`.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Mapping

from governance.strategies.accumulator import WeightedSumAccumulator
from governance.strategies.base import AggregateResult, ClientUpdate, Strategy, TooFewUpdates, Weights
from governance.strategies.bulyan import Bulyan
from governance.strategies.centeredclip import CenteredClipping
from governance.strategies.fedadagrad import FedAdagrad
from governance.strategies.fedadam import FedAdam
from governance.strategies.fedavg import FedAvg
from governance.strategies.fedavgm import FedAvgM
from governance.strategies.fedbuff import FedBuff, staleness_weight
from governance.strategies.fedmedian import FedMedian
from governance.strategies.fedopt import FedOpt
from governance.strategies.fedprox import FedProx, proximal_term
from governance.strategies.fedtrimmedavg import FedTrimmedAvg
from governance.strategies.fedyogi import FedYogi
from governance.strategies.krum import Krum, MultiKrum
from governance.strategies.normbound import NormBound
from governance.strategies.trustscore import TrustScore
from meshfl.errors import ConfigError

__all__ = [
    "STRATEGIES",
    "AggregateResult",
    "Bulyan",
    "CenteredClipping",
    "ClientUpdate",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedBuff",
    "FedMedian",
    "FedOpt",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "NormBound",
    "Strategy",
    "TooFewUpdates",
    "TrustScore",
    "WeightedSumAccumulator",
    "Weights",
    "build_strategy",
    "proximal_term",
    "staleness_weight",
]

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "normbound": NormBound,
    "centeredclip": CenteredClipping,
    "trustscore": TrustScore,
    "fedbuff": FedBuff,
}


@functools.cache
def strategy_params(cls: type[Strategy]) -> dict[str, object]:
    """The keyword parameters of a strategy's constructor and their types (cached: read per version)."""
    hints = typing.get_type_hints(cls.__init__)
    return {
        name: hints.get(name, object)
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def build_strategy(name: str, params: Mapping[str, float]) -> Strategy:
    """The strategy registered as ``name``, configured with ``params``.

    Parameters typed ``int`` accept integral floats (task files and JSON often carry ``2.0``). Raises
    :class:`ConfigError` naming the allowed strategies or parameters when ``name`` or ``params`` is wrong.
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown aggregation strategy {name!r}; allowed: {', '.join(sorted(STRATEGIES))}")
    allowed = strategy_params(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"strategy {name!r} has no parameter {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    kwargs: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"strategy {name!r}: parameter {key} must be a number, got {value!r}")
        if int in typing.get_args(allowed[key]) or allowed[key] is int:
            if not (math.isfinite(value) and float(value).is_integer()):
                raise ConfigError(f"strategy {name!r}: parameter {key} must be an integer, got {value!r}")
            value = int(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from exc
