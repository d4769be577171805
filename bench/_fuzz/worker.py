"""The fuzzing process: atheris (libFuzzer) drives ``targets.one_input``; crashes are kept, not fatal.

libFuzzer stops at the first crash; a fuzz campaign wants to know how many *distinct* crashes there are.
So every input runs under a guard: an exception other than meshfl's own is recorded (deduplicated by
its type and the innermost frame that raised it, with the input saved for reproduction) and the run
goes on. Counters go to a JSON stats file about once a second, since libFuzzer ends the process with
``exit()`` and no Python clean-up runs after it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from pathlib import Path

import atheris

# Heavy dependencies first, uninstrumented: coverage is wanted in meshfl's code, not in torch's.
import fastavro  # noqa: F401
import numpy  # noqa: F401
import pydantic  # noqa: F401
import torch  # noqa: F401

with atheris.instrument_imports(include=["meshfl", "_fuzz"]):
    from _fuzz import targets


class Campaign:
    def __init__(self, stats: Path, crash_dir: Path) -> None:
        self.stats = stats
        self.crash_dir = crash_dir
        self.inputs = 0
        self.crashes: dict[str, dict[str, object]] = {}
        self.started = time.monotonic()
        self._written = 0.0

    def __call__(self, data: bytes) -> None:
        self.inputs += 1
        try:
            targets.one_input(data)
        except Exception as exc:  # the finding itself: anything but meshfl's errors escaping a target
            self._record(exc, data)
        if self.inputs & 255 == 0:
            now = time.monotonic()
            if now - self._written >= 1.0:
                self.write()
                self._written = now

    def _record(self, exc: Exception, data: bytes) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        key = f"{type(exc).__name__} at {where}"
        if key in self.crashes:
            self.crashes[key]["count"] = int(self.crashes[key]["count"]) + 1  # type: ignore[call-overload]
            return
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = self.crash_dir / f"crash-{digest}"
        path.write_bytes(data)
        self.crashes[key] = {
            "count": 1,
            "error": f"{type(exc).__name__}: {exc}"[:500],
            "input": str(path),
            "traceback": "".join(traceback.format_exception(exc))[-3000:],
        }
        self.write()

    def write(self) -> None:
        record = {"inputs": self.inputs, "seconds": time.monotonic() - self.started, "crashes": self.crashes}
        tmp = self.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.stats)


def main() -> None:
    stats, crash_dir, *libfuzzer = sys.argv[1:]
    campaign = Campaign(Path(stats), Path(crash_dir))
    campaign.write()
    atheris.Setup([sys.argv[0], *libfuzzer], campaign)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
