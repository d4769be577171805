"""The ``vertical`` task kind: checks that a split task can be trained as written, and its networks.

A task file with ``kind = "vertical"`` holds a ``SplitTask``; each domain's bottom network takes its own
columns to its cut width, governance's top takes the concatenated cuts, and with labels kept at a domain
the label owner's head takes the top's output to one logit per class::

    kind = "vertical"
    id = "breast-cancer-split"
    num_classes = 2
    epochs = 35
    [[domains]]
    domain = "hospital-north"
    data_product = "hospital-north.biopsy-measurements"
    key = "patient_id"
    columns = ["mean_radius", ...]
    cut_width = 16
    bottom = [{kind = "linear", out_features = 32}, {kind = "relu"}, ..., {kind = "relu"}]
    [labels]
    domain = "hospital-north"
    column = "diagnosis"
    at = "governance"            # or "domain", with a head = [...]
    top = [...]
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import torch
from torch import nn

from meshfl.errors import ConfigError
from meshfl.vertical.events import SplitLabelsAt, SplitLayer, SplitTask

LAYER_KINDS = ("linear", "relu", "batchnorm", "dropout")
MAX_DOMAINS = 64
MAX_LAYERS = 64
MAX_WIDTH = 1 << 16
MAX_COLUMNS = 1 << 14
OPTIMIZERS = ("adam", "sgd")
SAFE_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A split task's id names its state folder in each domain: one path component, never '..' or '/'."""


def output_width(layers: Sequence[SplitLayer], in_features: int) -> int:
    """Width after the layers; raises ``ConfigError`` on an unknown or ill-formed layer."""
    if len(layers) > MAX_LAYERS:
        raise ConfigError(f"{len(layers)} layers, above the bound {MAX_LAYERS}")
    width = in_features
    for index, layer in enumerate(layers):
        if layer.kind not in LAYER_KINDS:
            raise ConfigError(f"layer {index}: unknown kind {layer.kind!r}; known: {', '.join(LAYER_KINDS)}")
        if layer.kind == "linear":
            if layer.out_features is None or not 1 <= layer.out_features <= MAX_WIDTH:
                raise ConfigError(f"layer {index}: a linear layer needs 1 <= out_features <= {MAX_WIDTH}")
            width = layer.out_features
        elif layer.kind == "dropout" and (layer.p is None or not 0.0 <= layer.p < 1.0):
            raise ConfigError(f"layer {index}: a dropout layer needs 0 <= p < 1")
    return width


def build_network(layers: Sequence[SplitLayer], in_features: int, *, seed: int) -> nn.Sequential:
    """The layers as a torch module, its initial weights drawn from ``seed`` only (reproducible anywhere)."""
    output_width(layers, in_features)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        modules: list[nn.Module] = []
        width = in_features
        for layer in layers:
            if layer.kind == "linear":
                assert layer.out_features is not None
                modules.append(nn.Linear(width, layer.out_features))
                width = layer.out_features
            elif layer.kind == "relu":
                modules.append(nn.ReLU())
            elif layer.kind == "batchnorm":
                modules.append(nn.BatchNorm1d(width))
            else:
                modules.append(nn.Dropout(layer.p or 0.0))
        return nn.Sequential(*modules)
    finally:
        torch.random.set_rng_state(generator_state)


def part_seed(task: SplitTask, party: str, role: str = "bottom") -> int:
    """A per-party seed derived from the task's, so every part starts from its own reproducible draw."""
    digest = hashlib.sha256(f"{task.seed}/{task.id}/{party}/{role}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def top_input_width(task: SplitTask) -> int:
    return sum(domain.cut_width for domain in task.domains)


def top_output_width(task: SplitTask) -> int:
    return output_width(task.top, top_input_width(task))


def check_split_task(task: SplitTask) -> None:
    """Raise ``ConfigError`` if the split task cannot be trained as written."""
    if not SAFE_TASK_ID.fullmatch(task.id):
        raise ConfigError(f"task id {task.id!r}: 1-128 of A-Z a-z 0-9 . _ -, not starting with '.'")
    names = [domain.domain for domain in task.domains]
    if not 1 <= len(names) <= MAX_DOMAINS or len(set(names)) != len(names):
        raise ConfigError(f"domains: 1 to {MAX_DOMAINS}, each named once")
    if task.epochs > 100_000 or task.batch_size > 1 << 20 or task.max_in_flight > 1024:
        raise ConfigError("epochs <= 100000, batch_size <= 2**20 and max_in_flight <= 1024 are required")
    for domain in task.domains:
        if len(domain.columns) > MAX_COLUMNS:
            raise ConfigError(f"domain {domain.domain}: more than {MAX_COLUMNS} columns")
        if not domain.columns or len(set(domain.columns)) != len(domain.columns):
            raise ConfigError(f"domain {domain.domain}: columns must be non-empty and distinct")
        if domain.key in domain.columns:
            raise ConfigError(f"domain {domain.domain}: the key {domain.key!r} cannot be a feature")
        try:
            cut = output_width(domain.bottom, len(domain.columns))
        except ConfigError as exc:
            raise ConfigError(f"domain {domain.domain}: bottom {exc}") from exc
        if cut != domain.cut_width:
            raise ConfigError(
                f"domain {domain.domain}: bottom ends at {cut}, cut_width is {domain.cut_width}"
            )
    if task.num_classes < 2:
        raise ConfigError("num_classes must be >= 2")
    try:
        top_width = top_output_width(task)
    except ConfigError as exc:
        raise ConfigError(f"top: {exc}") from exc
    labels = task.labels
    if labels.domain not in names:
        raise ConfigError(f"labels.domain {labels.domain!r} is not one of the task's domains")
    holder = next(d for d in task.domains if d.domain == labels.domain)
    if labels.column in holder.columns or labels.column == holder.key:
        raise ConfigError(f"labels.column {labels.column!r} is also a feature or the key")
    if labels.at == SplitLabelsAt.GOVERNANCE:
        if labels.head:
            raise ConfigError("labels.head is only for labels kept at a domain")
        if top_width != task.num_classes:
            raise ConfigError(f"top ends at {top_width}, but labels at governance need num_classes outputs")
    else:
        try:
            head_width = output_width(labels.head, top_width)
        except ConfigError as exc:
            raise ConfigError(f"labels.head: {exc}") from exc
        if not labels.head or head_width != task.num_classes:
            raise ConfigError(f"labels.head must end at num_classes ({task.num_classes})")
    if task.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown {task.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if task.batch_size < 2 or task.learning_rate <= 0 or task.max_in_flight < 1:
        raise ConfigError("batch_size >= 2, learning_rate > 0 and max_in_flight >= 1 are required")
    if not 0.0 <= task.test_fraction < 1.0 or task.batch_timeout_seconds <= 0:
        raise ConfigError("test_fraction must be in [0, 1) and batch_timeout_seconds > 0")


def warm_up() -> None:
    """Build (and drop) one optimizer and one step of a small network: the first optimizer a process
    builds imports ``torch._dynamo`` (seconds, ~10 s on a loaded machine) and the first kernels
    initialize lazily. A daemon does it at start-up, not on the first epoch's critical path."""
    network = build_network(
        [SplitLayer(kind="linear", out_features=2), SplitLayer(kind="batchnorm")], 2, seed=0
    )
    optimizer = torch.optim.Adam(network.parameters())
    network(torch.zeros(4, 2)).sum().backward()
    optimizer.step()


def make_optimizer(task: SplitTask, parameters: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """One optimizer per party, as in the paper (Adam, the task's learning rate)."""
    if task.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=task.learning_rate)
    return torch.optim.SGD(parameters, lr=task.learning_rate)
