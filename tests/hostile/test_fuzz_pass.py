"""A short, bounded pass of the coverage-guided fuzzer (``bench/fuzz.py``): CI's guard against regressions.

The long campaign (goal: a million inputs) is ``bench/fuzz.py --seconds 1800``; this runs the same
targets for a few seconds from the valid seeds, which is enough to find a decoder that lets a foreign
exception escape on a one-byte mutation of a real message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_short_fuzz_pass_finds_no_crash(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fuzz.py"), "--seconds", "15", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    figures = json.loads(out.read_text())
    assert figures["inputs"] > 1_000, proc.stdout + proc.stderr
    assert figures["distinct_crashes"] == 0, json.dumps(figures["crashes"], indent=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
