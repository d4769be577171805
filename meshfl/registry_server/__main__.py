"""``python -m meshfl.registry_server [--port N] [--build-only]``: build, then run a local registry."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from meshfl.registry_server._build import build_registry
from meshfl.registry_server._server import LocalSchemaRegistry
from meshfl.settings import MeshflSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshfl.registry_server", description=__doc__)
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--build-only", action="store_true", help="build into the cache and exit")
    args = parser.parse_args(argv)
    cache_dir = MeshflSettings().cache_dir
    if args.build_only:
        sys.stdout.write(f"{build_registry(cache_dir)}\n")
        return 0
    log_path = Path(tempfile.mkdtemp(prefix="meshfl-registry-")) / "registry.log"
    registry = LocalSchemaRegistry(port=args.port, cache_dir=cache_dir, log_path=log_path)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    sys.stdout.write(f"schema_registry_url: {registry.start()}\nlog: {log_path}\n")
    sys.stdout.flush()
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
