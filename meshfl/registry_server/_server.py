"""Run the locally built Apicurio Registry as a child ``java`` process on a loopback port.

Storage is Apicurio's default in-memory store: a registry lives as long as its process, which is
what tests and demos want. Clients use the Confluent-compatible API at :data:`CCOMPAT_PATH`.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from meshfl.broker import find_java
from meshfl.logs import get_logger
from meshfl.registry_server._build import RegistryServerError, build_registry

log = get_logger(__name__)

CCOMPAT_PATH = "/apis/ccompat/v6"
_POLL_S = 0.5


class LocalSchemaRegistry:
    """One Apicurio Registry process; ``start()`` returns the Confluent-compatible base URL."""

    def __init__(self, *, port: int, cache_dir: Path, log_path: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.cache_dir = cache_dir
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{CCOMPAT_PATH}"

    def start(self, timeout: float = 180.0) -> str:
        jar = build_registry(self.cache_dir)
        java = find_java()
        command = [
            str(java),
            "-Xmx512m",
            f"-Dquarkus.http.host={self.host}",
            f"-Dquarkus.http.port={self.port}",
            "-jar",
            str(jar),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=jar.parent)
        log.info("schema registry starting", url=self.url, pid=self._process.pid)
        self._wait(timeout)
        return self.url

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RegistryServerError(
                    f"the Schema Registry exited with {self._process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=5) as response:
                    if response.status == 200:
                        log.info("schema registry ready", url=self.url)
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(_POLL_S)
        self.stop()
        raise RegistryServerError(
            f"the Schema Registry at {self.url} did not answer in {timeout:.0f} s: {last}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        log.info("schema registry stopped", url=self.url)
