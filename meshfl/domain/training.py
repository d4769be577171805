"""Local training and evaluation of a task's model on one domain's tensors.

``train_local`` is the client step of FedAvg [McMahan et al., 2017, "Communication-Efficient Learning
of Deep Networks from Decentralized Data", arXiv:1602.05629]: start from the global weights, run
``local_epochs`` of minibatch SGD (momentum 0.9) or Adam on cross-entropy, return the new weights and
the number of examples. The learning rate follows ``task.lr_schedule`` over the rounds
(:func:`learning_rate_at`); the centralized baseline follows the same schedule over the same epochs.
With ``proximal_mu > 0`` it is the FedProx client step [Li et al., 2020,
"Federated Optimization in Heterogeneous Networks", arXiv:1812.06127]: the loss gets
``mu/2 * ||w - w_global||^2``, which keeps local weights near the global model under skewed data.

Reproducibility: given the same seed, inputs and thread count, the returned state is the same bytes
on CPU. Shuffling uses a private ``torch.Generator``; dropout draws from the global RNG inside
``torch.random.fork_rng``, seeded, so the caller's RNG is left as it was. Float reductions depend on
the number of intra-op threads, so setting ``torch.set_num_threads`` (``[training] threads`` of the
domain) is the caller's job, once per process. The optimizer's state starts fresh at every call, as
in FedAvg; ``global_state`` is never modified.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from meshfl.errors import ConfigError, DataContractError, TrainingStopped
from meshfl.events import ModelSpec, TrainingTask
from meshfl.modelspec import empty_model, initial_state

SGD_MOMENTUM = 0.9
EVAL_BATCH = 4096

_OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]] = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}
OPTIMIZERS: tuple[str, ...] = tuple(_OPTIMIZERS)
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def learning_rate_at(task: TrainingTask, round_: int) -> float:
    """The local learning rate of round ``round_`` (1-based) under ``task.lr_schedule``.

    ``cosine`` is ``lr * (1 + cos(pi * (round - 1) / rounds)) / 2``: the full rate in round 1, decaying
    towards 0 by the last round (Loshchilov and Hutter, "SGDR", ICLR 2017, arXiv:1608.03983). A decaying
    rate is what makes FedAvg converge on non-IID data (Li et al., "On the Convergence of FedAvg on
    Non-IID Data", ICLR 2020, arXiv:1907.02189): with a constant one the last round's local drift stays
    as large as the first's. Rounds past ``task.rounds`` (async versions) keep the last round's rate.
    """
    if task.lr_schedule == "constant":
        return task.learning_rate
    if task.lr_schedule == "cosine":
        progress = (min(max(round_, 1), task.rounds) - 1) / task.rounds
        return task.learning_rate * (1.0 + math.cos(math.pi * progress)) / 2.0
    raise ConfigError(f"lr_schedule: unknown {task.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}")


@dataclass(frozen=True)
class LocalResult:
    """The weights after local training, how many examples made them, and what was measured.

    ``metrics`` has ``train_loss`` (mean cross-entropy over the last epoch, without the proximal
    term) and ``seconds``; ``holdout_loss`` and ``holdout_accuracy`` only when a holdout was given.
    """

    state: dict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, float]


def local_seed(task_seed: int, domain: str, round_: int) -> int:
    """A seed for one domain's round, stable across machines (so a replay can retrain it)."""
    digest = hashlib.sha256(f"{task_seed}:{domain}:{round_}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _check_xy(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.ndim != 2 or x.shape[1] != spec.input_dim:
        raise DataContractError(
            f"{what}: features have shape {list(x.shape)}, the model takes [n, {spec.input_dim}]"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataContractError(f"{what}: {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} rows")
    if x.dtype != torch.float32 or y.dtype != torch.int64:
        raise DataContractError(
            f"{what}: expected float32 features and int64 labels, got {x.dtype}, {y.dtype}"
        )


def _load(spec: ModelSpec, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A model holding a copy of ``state`` (``load_state_dict`` copies, the mapping is untouched)."""
    model = empty_model(spec)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"the given state does not fit the task's model: {exc}") from exc
    return model


def evaluate(
    spec: ModelSpec, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> dict[str, float]:
    """Mean cross-entropy, accuracy and row count of the model ``state`` on ``(x, y)``."""
    _check_xy(spec, x, y, "evaluate")
    if x.shape[0] == 0:
        raise DataContractError("evaluate: no rows")
    return _evaluate_model(_load(spec, state), x, y)


def _evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    loss_sum = 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            target = y[start : start + EVAL_BATCH]
            loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == target).sum().item())
    n = x.shape[0]
    return {"loss": loss_sum / n, "accuracy": correct / n, "num_examples": float(n)}


def _fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: TrainingTask,
    rates: list[float],
    seed: int,
    proximal_mu: float,
    stop: threading.Event | None = None,
) -> float:
    """Train ``model`` in place, one epoch per entry of ``rates`` (its learning rate); returns the mean
    cross-entropy of the last epoch.

    ``stop`` is looked at before every minibatch, so a daemon asked to stop does so within one batch.
    """
    factory = _OPTIMIZERS.get(task.optimizer)
    if factory is None:
        raise ConfigError(f"optimizer: unknown {task.optimizer!r}; known: {', '.join(_OPTIMIZERS)}")
    if task.batch_size < 1 or task.learning_rate <= 0 or not rates:
        raise ConfigError("batch_size, learning_rate and the number of epochs must be positive")
    optimizer = factory(model.parameters(), rates[0])
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    epoch_loss = float("nan")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for rate in rates:
            for group in optimizer.param_groups:
                group["lr"] = rate
            order = torch.randperm(n, generator=generator)
            loss_sum = 0.0
            for start in range(0, n, task.batch_size):
                if stop is not None and stop.is_set():
                    raise TrainingStopped("local training stopped on request")
                batch = order[start : start + task.batch_size]
                optimizer.zero_grad(set_to_none=True)
                ce = nn.functional.cross_entropy(model(x[batch]), y[batch])
                loss = ce
                if anchor:
                    drift = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
                    loss = ce + proximal_mu / 2 * drift
                loss.backward()
                optimizer.step()
                loss_sum += ce.item() * batch.shape[0]
            epoch_loss = loss_sum / n
    return epoch_loss


def _train(
    task: TrainingTask,
    start: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    rates: list[float],
    seed: int,
    proximal_mu: float,
    holdout: tuple[torch.Tensor, torch.Tensor] | None,
    stop: threading.Event | None = None,
) -> LocalResult:
    _check_xy(task.model, x, y, "training data")
    if x.shape[0] == 0:
        raise DataContractError("training data: no rows")
    if proximal_mu < 0:
        raise ConfigError(f"proximal_mu must be >= 0, got {proximal_mu}")
    began = time.perf_counter()
    model = _load(task.model, start)
    train_loss = _fit(model, x, y, task=task, rates=rates, seed=seed, proximal_mu=proximal_mu, stop=stop)
    metrics = {"train_loss": train_loss}
    if holdout is not None and holdout[1].numel() > 0:
        _check_xy(task.model, holdout[0], holdout[1], "holdout")
        scores = _evaluate_model(model, *holdout)
        metrics["holdout_loss"] = scores["loss"]
        metrics["holdout_accuracy"] = scores["accuracy"]
    metrics["seconds"] = time.perf_counter() - began
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return LocalResult(state=state, num_examples=int(x.shape[0]), metrics=metrics)


def train_local(
    task: TrainingTask,
    global_state: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int,
    proximal_mu: float = 0.0,
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
    stop: threading.Event | None = None,
    round_: int = 1,
) -> LocalResult:
    """One domain's round ``round_``: ``task.local_epochs`` epochs from ``global_state`` on ``(x, y)``
    at the round's learning rate (:func:`learning_rate_at`).

    ``x`` is float32 ``(n, input_dim)``, ``y`` int64 class indices. Raises ``ConfigError`` if the
    state does not fit the task's model or the optimizer is unknown, ``DataContractError`` for
    tensors of the wrong shape or dtype, ``TrainingStopped`` as soon as ``stop`` is set.
    """
    return _train(
        task,
        global_state,
        x,
        y,
        rates=[learning_rate_at(task, round_)] * task.local_epochs,
        seed=seed,
        proximal_mu=proximal_mu,
        holdout=holdout,
        stop=stop,
    )


def train_centralized(
    task: TrainingTask,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    seed: int,
    *,
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LocalResult:
    """The baseline: all rows in one place, the same model, initial weights and optimizer settings.

    Starts from the task's version 0 (``initial_state(task.model, task.seed)``); ``seed`` drives the
    shuffling. For a budget equal to the federation's, pass ``epochs = rounds * local_epochs``: epoch ``e``
    (0-based) then runs at the rate of round ``e // local_epochs + 1``, the federation's schedule.
    """
    start = initial_state(task.model, task.seed)
    per_round = max(task.local_epochs, 1)
    rates = [learning_rate_at(task, e // per_round + 1) for e in range(epochs)]
    return _train(task, start, x, y, rates=rates, seed=seed, proximal_mu=0.0, holdout=holdout)
