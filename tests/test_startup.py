"""Commands that do not train start without torch (the timing itself is ``bench/startup.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
sys.argv = ["meshfl", *json.loads(sys.argv[1])]
from meshfl.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})) + "\\n")
"""


def _modules(args: list[str], tmp_path: Path) -> set[str]:
    env = {**os.environ, "MESHFL_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True, text=True, check=False, env=env, timeout=120,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    assert lines, done.stderr[-2000:]
    return set(json.loads(lines[0].removeprefix("MODULES ")))


NEVER = {"torch", "numpy", "pyarrow"}
ALSO_NEVER = {
    "--help": {"confluent_kafka", "structlog", "fastavro"},
    # rich (tables, colours) and psutil (pids of a running cluster) load only when used
    "broker status": {"confluent_kafka", "structlog", "fastavro", "rich", "psutil"},
}


@pytest.mark.parametrize(
    "args", [["--help"], ["broker", "status"], ["audit", "--help"], ["models", "--help"]], ids=" ".join
)
def test_commands_that_do_not_train_never_import_torch(args: list[str], tmp_path: Path) -> None:
    loaded = _modules(args, tmp_path)
    assert "meshfl" in loaded
    never = NEVER | ALSO_NEVER.get(" ".join(args), set())
    assert not never & loaded, sorted(never & loaded)


def test_the_cli_spells_the_broker_security_modes_as_the_enum_does() -> None:
    from meshfl.broker import SecurityMode
    from meshfl.cli.broker import SECURITY_MODES

    assert [mode.value for mode in SecurityMode] == SECURITY_MODES
