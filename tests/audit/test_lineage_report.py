"""Lineage and the HTML report over in-memory logs."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from governance.audit import TaskLog, lineage, replay, write_report
from governance.audit.report import metric_series, render_report, update_metrics_by_version
from meshfl.events import PrivacyPolicy
from tests.audit.audit_builders import DOMAINS, GOVERNANCE_KEY, SECRET, make_task, memory_federation


def test_lineage_of_the_last_version() -> None:
    memory, fed = memory_federation()
    tree = lineage(TaskLog.of(memory.events, fed.task.id))
    assert tree.version == 3
    assert [node.version for node in tree.chain] == [3, 2, 1, 0]
    assert [node.parent_version for node in tree.chain] == [2, 1, 0, None]
    assert tree.domains == sorted(fed.versions[3].contributing_domains) == sorted(DOMAINS)
    last = tree.chain[0]
    assert [u.update_id for u in last.updates] == fed.versions[3].contributing_updates
    assert all(
        p.id == f"{u.domain}.table" and p.version == "2.1.0" and p.in_catalog
        for u in last.updates
        for p in u.data_products
    )
    placed = {update.update_id: at for update, at in fed.updates}
    assert all((u.partition, u.offset) == placed[u.update_id] for u in last.updates)
    round_two = tree.chain[1]
    assert [(x.domain, x.policy) for x in round_two.excluded] == [("mallory", "norm_bound")]
    assert "mallory" not in tree.all_domains


def test_lineage_of_a_middle_version() -> None:
    memory, fed = memory_federation()
    tree = lineage(TaskLog.of(memory.events, fed.task.id), 1)
    assert [node.version for node in tree.chain] == [1, 0]
    assert tree.chain[-1].updates == []


def test_report_is_self_contained(tmp_path: Path) -> None:
    task = make_task(privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.1, max_epsilon=50.0))
    memory, fed = memory_federation(task, dp_secret=SECRET)
    index = TaskLog.of(memory.events, task.id)
    path = write_report(
        index,
        tmp_path / "report",
        replay(memory.events, task.id, governance_key=GOVERNANCE_KEY, dp_secret=SECRET),
    )
    text = path.read_text()
    assert "every version reproduces" in text
    assert "mallory" in text and "exceeds bound" in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2  # metrics, privacy budget
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert f"{fed.versions[-1].privacy.epsilon:.4g}" in text
    assert "http://" not in text and "https://" not in text


def test_report_under_dp_shows_only_what_the_noise_covers() -> None:
    private = make_task(privacy=PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.1))
    memory, _ = memory_federation(private, dp_secret=SECRET)
    index = TaskLog.of(memory.events, private.id)
    assert "train_loss" in update_metrics_by_version(index)  # the domains did report their metrics ...
    assert set(metric_series(index)) == {"num_updates"}  # ... not shown
    text = render_report(index)
    assert "not noised" in text and " examples, " not in text
    public, _ = memory_federation(make_task())
    public_index = TaskLog.of(public.events, "audit-task")
    assert "domains' train_loss" in metric_series(public_index)
    plain = render_report(public_index)
    assert " examples, " in plain and "not noised" not in plain
