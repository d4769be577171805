"""What governance takes from its own log only after checking it, like anything else off the bus.

The state rebuild at start reads tasks and versions that anyone able to write to the bus could have
put there; one bad record must not stop the service (it would read the same record on every restart
and die again). So:

* ``effective_task``: the task on the bus wins over the task file only if it passes the same
  validation as a task file (sizes, epochs, rounds within limits, a DP policy the noise is calibrated
  for) and, when the file asks for central DP, has the very same privacy policy (a bus task must not
  turn the file's DP off or weaken it); otherwise the file's task runs and the bus's is reported.
* ``version_problem``: a version becomes a task's latest only if its tensors are, by their headers
  alone (no allocation), exactly the task's model (names and shapes), with a server state of
  bounded size. What fails is skipped with its reason.
* ``decode_version``: the latest version's weights decoded within the model's size, or the reason not.

Signatures (who wrote a task or version) are checked elsewhere; this is about what a record asks for.
"""

from __future__ import annotations

import torch

from governance.policies.dp_config import check_dp_config
from meshfl.domain.tasks import check_task
from meshfl.errors import ConfigError, TensorCodecError
from meshfl.events import ModelVersion, TrainingTask
from meshfl.limits import check_wire_tensors, spec_elements
from meshfl.logs import get_logger
from meshfl.modelspec import expected_shapes
from meshfl.tensors import from_wire

log = get_logger("meshfl.governance")

_SERVER_STATE_FACTOR = 4
"""A server optimizer keeps at most a few tensors per parameter (Adam: two moments)."""


def effective_task(configured: TrainingTask, on_bus: TrainingTask | None) -> TrainingTask:
    """The task to run: the bus's definition when present and valid, else the task file's."""
    if on_bus is None:
        return configured
    try:
        check_task(on_bus)
        check_dp_config(on_bus)
        if configured.privacy is not None and on_bus.privacy != configured.privacy:
            raise ConfigError(f"privacy {on_bus.privacy} on the bus, {configured.privacy} in the task file")
    except ConfigError as exc:
        log.error("task on the bus is invalid; running the task file's", task=configured.id, error=str(exc))
        return configured
    if on_bus.model_dump(exclude={"created_at"}) != configured.model_dump(exclude={"created_at"}):
        log.warning("task file differs from the task on the bus; the bus wins", task=configured.id)
    return on_bus


def version_problem(version: ModelVersion, task: TrainingTask | None) -> str | None:
    """Why ``version`` cannot be a latest version of ``task`` (``None`` when it can); headers only."""
    try:
        if task is None:
            check_wire_tensors([(t.name, t.shape) for t in version.tensors])
            return None
        expected = expected_shapes(task.model)
        elements = spec_elements(expected)
        check_wire_tensors([(t.name, t.shape) for t in version.tensors], max_total_elements=elements)
        check_wire_tensors(
            [(t.name, t.shape) for t in version.server_state],
            max_total_elements=_SERVER_STATE_FACTOR * elements,
        )
    except (TensorCodecError, ConfigError) as exc:
        return str(exc)
    got = {t.name: list(t.shape) for t in version.tensors}
    want = {name: list(shape) for name, (shape, _) in expected.items()}
    if got != want:
        differences = _diff(got, want)
        return f"tensors do not match the task's model: {', '.join(differences[:5])}"
    return None


def decode_version(
    version: ModelVersion, task: TrainingTask, *, copy: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | str:
    """(weights, server state) of ``version``, or the reason they cannot be decoded; ``copy=False``:
    the weights are read-only views of the version's bytes (for a caller that holds the version)."""
    try:
        elements = spec_elements(expected_shapes(task.model))
        weights = from_wire(version.tensors, max_elements=elements, copy=copy)
        server_state = from_wire(version.server_state, max_elements=_SERVER_STATE_FACTOR * elements)
    except (TensorCodecError, ConfigError) as exc:
        return str(exc)
    return weights, server_state


def _diff(got: dict[str, list[int]], want: dict[str, list[int]]) -> list[str]:
    out = [f"missing {name!r}" for name in want if name not in got]
    out += [f"unexpected {name[:80]!r}" for name in got if name not in want]
    out += [
        f"{name!r} is {got[name]}, not {want[name]}"
        for name in want
        if name in got and got[name] != want[name]
    ]
    return sorted(out)
