"""What governance takes from its own log at start: only tasks and versions that pass the checks."""

from __future__ import annotations

from governance.log_checks import decode_version, effective_task, version_problem
from governance.rounds import initial_version
from meshfl.events import ModelSpec, Tensor, TensorDType, TrainingTask


def _task(**changes: object) -> TrainingTask:
    fields: dict[str, object] = {
        "id": "t",
        "model": ModelSpec(input_dim=3, hidden=[4], output_dim=2),
        "features": ["a", "b", "c"],
        "label": "y",
        "num_classes": 2,
        "rounds": 3,
    }
    fields.update(changes)
    return TrainingTask.model_validate(fields)


def test_an_invalid_bus_task_does_not_replace_the_task_file() -> None:
    configured = _task()
    huge = _task(model=ModelSpec(input_dim=3, hidden=[2**40], output_dim=2))
    assert effective_task(configured, huge) is configured
    assert effective_task(configured, _task(local_epochs=10**9)) is configured
    assert effective_task(configured, None) is configured
    fine = _task(rounds=5)
    assert effective_task(configured, fine) is fine


def test_versions_that_do_not_fit_their_task_are_named() -> None:
    task = _task()
    good = initial_version(task)
    assert version_problem(good, task) is None
    assert not isinstance(decode_version(good, task), str)
    overflow = good.model_copy(
        update={"tensors": [Tensor(name="w", dtype=TensorDType.FLOAT32, shape=[2**62, 2**62, 0], data=b"")]}
    )
    assert "elements" in (version_problem(overflow, task) or "")
    assert "elements" in (version_problem(overflow, None) or "")
    assert isinstance(decode_version(overflow, task), str)
    reshaped = good.model_copy(update={"tensors": good.tensors[:1]})
    assert "missing" in (version_problem(reshaped, task) or "")
    bloated = good.model_copy(
        update={"server_state": [Tensor(name="m", dtype=TensorDType.FLOAT32, shape=[10**6, 0], data=b"")]}
    )
    assert version_problem(bloated, task) is not None
