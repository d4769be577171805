"""The console end to end: a real federation on the real broker, the page in a real headless Chromium.

The page must show the round count rising as versions land, and a rejected update with the reason
governance published for it. Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``),
driven by Playwright; a machine without it fails this test rather than skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from governance.rounds import initial_version
from governance.service import GovernanceService
from meshfl.bus import EventProducer, ensure_topics
from meshfl.console import run_console
from meshfl.domain.agent import DomainAgent
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelUpdate
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import HOSPITALS, Threads, events, hospital_task, register_domain, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("MESHFL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("the console's browser test needs Debian's chromium (apt-get install chromium)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        return 0, str(exc)


def test_the_page_follows_a_live_federation(
    settings: MeshflSettings, mesh_root: Path, daemons: Threads, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    task = hospital_task(mesh_root, rounds=4)
    ensure_topics(settings)
    port = free_port()
    daemons.start("console", lambda stop: run_console(settings, stop, port=port, replay_interval=1.0))
    daemons.start("governance", GovernanceService(settings, [task]).run)
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: _get(url + "healthz")[0] == 200, timeout=60, what="the console", check=daemons.check)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            card = page.locator(f'[data-task="{task.id}"]')
            expect(card).to_be_visible(timeout=60_000)
            expect(card.locator(".round")).to_have_text("0", timeout=30_000)

            # A forged update from a domain nobody registered: governance rejects it, the page says why.
            version0 = initial_version(task)
            forged = ModelUpdate(
                update_id="forged-1",
                task_id=task.id,
                round=1,
                base_version=0,
                domain="nobody-domain",
                num_examples=10,
                tensors=version0.tensors,
            )
            with EventProducer(settings) as producer:
                producer.produce(Topic.UPDATES, forged, key=task.id)
                producer.flush()
            for name in HOSPITALS:  # a second of simulated training a round, so the page sees each one
                register_domain(settings, mesh_root / name)
                agent = DomainAgent(settings, mesh_root / name, heartbeat_interval=1.0, simulate_delay=1.0)
                daemons.start(f"agent-{name}", agent.run)

            seen: list[int] = []
            deadline = time.monotonic() + 180
            while (not seen or seen[-1] < task.rounds) and time.monotonic() < deadline:
                shown = int(card.locator(".round").inner_text())
                if not seen or shown != seen[-1]:
                    seen.append(shown)
                daemons.check()
                page.wait_for_timeout(100)
            assert seen == sorted(seen) and seen[-1] == task.rounds, seen
            assert len(seen) >= 3, f"the page jumped instead of following the rounds: {seen}"
            rejected = [
                e
                for e in events(settings, Topic.DECISIONS)
                if isinstance(e, GovernanceDecision)
                and e.update_id == "forged-1"
                and e.outcome == DecisionOutcome.REJECTED
            ]
            assert rejected, "governance published no rejection for the forged update"
            row = page.locator("tr.decision.rejected", has_text="nobody-domain").first
            expect(row).to_be_visible(timeout=30_000)
            expect(row.locator(".reason")).to_have_text(rejected[0].reason)
            expect(page.locator(".version .replay", has_text="reproduced").first).to_be_visible(
                timeout=60_000
            )
            shot = os.environ.get("MESHFL_CONSOLE_SCREENSHOT") or str(tmp_path / "console.png")
            page.screenshot(path=shot, full_page=True)  # the README's picture comes from here
        finally:
            browser.close()

    status, body = _get(url + "readyz")
    assert (status, body.strip()) == (200, "ready")
    state = json.loads(_get(url + "api/state")[1])
    (shown,) = [t for t in state["tasks"] if t["id"] == task.id]
    assert shown["latest_round"] == 4 and shown["complete"]
    assert {d["domain"] for d in state["domains"]} == set(HOSPITALS)
    assert all(v["replay"] and v["replay"]["reproduced"] for v in shown["versions"][1:])
    metrics = _get(url + "metrics")[1]
    assert "meshfl_console_events_total" in metrics
    daemons.check()
    assert all(thread.is_alive() for thread in daemons.threads)
