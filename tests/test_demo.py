"""The async demo's plan: a fair FedBuff scenario at the synchronous run's number of accepted updates."""

from __future__ import annotations

from pathlib import Path

from meshfl.demo import async_overrides, update_budget_rounds
from meshfl.domain.tasks import load_task_file
from meshfl.events import FederationMode

TASKS = Path(__file__).resolve().parents[1] / "domains" / "tasks"


def test_async_digits_uses_the_task_files_buffer_and_the_sync_update_budget() -> None:
    task = load_task_file(TASKS / "digits.toml")  # sync, 20 rounds x 5 domains = 100 updates
    overrides = async_overrides(task, 5, None)
    run = task.model_copy(update={**overrides, "mode": FederationMode.ASYNC})
    assert run.strategy.name == "fedbuff"
    assert (run.round_policy.buffer_size, run.round_policy.max_staleness, run.round_policy.min_domains) == (
        4,
        20,
        1,
    )
    assert run.rounds == 25  # 25 versions x K = 4 = the sync run's 100 accepted updates
    assert update_budget_rounds(run, 5) == 20  # the centralized baseline's budget stays 20 x 2 epochs
    assert update_budget_rounds(task, 5) == 20
    assert async_overrides(task, 5, 7)["round_policy"].buffer_size == 4  # type: ignore[attr-defined]
    assert "rounds" not in async_overrides(task, 5, 7)  # --rounds given: kept


def test_async_buffer_is_never_a_barrier_over_all_domains() -> None:
    task = load_task_file(TASKS / "breast-cancer.toml")  # no buffer size in the file, 3 hospitals
    overrides = async_overrides(task, 3, None)
    assert overrides["round_policy"].buffer_size == 2  # type: ignore[attr-defined]
    assert overrides["rounds"] == 30
