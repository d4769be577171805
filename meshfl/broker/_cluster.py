"""``LocalBroker``: a real Apache Kafka cluster of 1..5 KRaft nodes on loopback, run from Maven jars.

The data dir holds ``cluster.json`` (what it was formatted for) and one ``node-<id>`` folder a node
(``server.properties``, ``log4j2.properties``, ``data/``, ``server.log``, ``stdout.log``,
``kafka.pid``). Starting is idempotent: nodes already running are left alone, stopped ones are
started again with the same identity, so a test can stop one node and bring it back.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from meshfl.broker._config import (
    LAYOUT_FILE,
    MAX_BROKERS,
    ClusterLayout,
    NodeSpec,
    log4j2_properties,
    server_properties,
)
from meshfl.broker._maven import find_java, kafka_version, resolve_kafka_jars, storage_tool_class
from meshfl.broker._process import (
    await_exit,
    describe_exit,
    exit_code,
    log_tail,
    pid_alive,
    port_answers,
    port_in_use,
    read_pid,
    run_tool,
    send_stop,
    spawn,
    terminate,
    wait_for_broker,
)
from meshfl.broker._security import BrokerSecurity, SecurityMode, load_or_create, write_private
from meshfl.errors import BrokerError
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings

log = get_logger(__name__)

DEFAULT_PORT = 9092
_RELAUNCHES = 2
"""Launches of a node that exits during start-up, after the first one, before the start fails."""
JIT_MODES: dict[str, tuple[str, ...]] = {
    # C1 only. On a 2-core machine a broker with C2 never stopped compiling under meshfl's traffic:
    # its compiler threads took 0.2-0.3 s of CPU every round, over 24 rounds and after 30 warm-up
    # rounds, as much as its request handlers (bench/round.py, session 7, per-thread /proc CPU), and
    # the deoptimised code made the handlers slower too. With C1 alone the broker's CPU a round fell
    # from 0.62-0.72 s to 0.30 s. A local broker is short-lived and shares its cores with the daemons.
    "c1": ("-XX:TieredStopAtLevel=1",),
    # The JVM's default: C2 after C1, for a long-running broker on cores of its own.
    "tiered": (),
}
"""JIT compiler settings of a node's JVM, by the name ``jit`` takes."""


class NodeStatus(BaseModel):
    node_id: int
    address: str
    controller_address: str
    pid: int | None
    running: bool


class BrokerStatus(BaseModel):
    """What ``meshfl broker status`` reports."""

    state: Literal["running", "degraded", "stopped"]
    bootstrap: str | None
    data_dir: Path
    kafka_version: str | None
    cluster_id: str | None
    nodes: list[NodeStatus]
    security: SecurityMode = SecurityMode.NONE

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def pid(self) -> int | None:
        return next((node.pid for node in self.nodes if node.running), None)


class LocalBroker:
    """A local Kafka cluster. ``port``/``brokers`` of None mean: what the data dir holds, else 9092 and 1."""

    def __init__(
        self,
        settings: MeshflSettings | None = None,
        *,
        data_dir: Path | None = None,
        cache_dir: Path | None = None,
        port: int | None = None,
        brokers: int | None = None,
        host: str = "127.0.0.1",
        heap: str = "512m",
        jit: str = "c1",
        security: SecurityMode | None = None,
    ) -> None:
        if brokers is not None and not 1 <= brokers <= MAX_BROKERS:
            raise BrokerError(f"brokers must be between 1 and {MAX_BROKERS}, got {brokers}")
        if port is not None and not 1024 <= port <= 65535 - 2 * MAX_BROKERS:
            raise BrokerError(f"port must be between 1024 and {65535 - 2 * MAX_BROKERS}, got {port}")
        if jit not in JIT_MODES:
            raise BrokerError(f"jit must be one of {', '.join(JIT_MODES)}, got {jit!r}")
        settings = settings if settings is not None else MeshflSettings()
        self.data_dir = Path(data_dir if data_dir is not None else settings.data_dir / "broker").expanduser()
        self.cache_dir = Path(cache_dir if cache_dir is not None else settings.cache_dir).expanduser()
        self.host = host
        self.heap = heap
        self.jit = jit
        self._port = port
        self._brokers = brokers
        self._security = security

    # ---- layout -------------------------------------------------------------------------------

    def layout(self) -> ClusterLayout | None:
        path = self.data_dir / LAYOUT_FILE
        if not path.is_file():
            return None
        try:
            return ClusterLayout.model_validate_json(path.read_text())
        except ValueError as exc:
            raise BrokerError(f"{path} is corrupt ({exc}); delete {self.data_dir} and start again") from exc

    def _planned_layout(self) -> ClusterLayout:
        layout = self.layout()
        if layout is None:
            return ClusterLayout.new(
                kafka_version=kafka_version(),
                host=self.host,
                port=self._port or DEFAULT_PORT,
                brokers=self._brokers or 1,
                security=self._security or SecurityMode.NONE,
            )
        wanted = (
            self._port or layout.port,
            self._brokers or layout.brokers,
            self._security or layout.security,
        )
        if wanted != (layout.port, layout.brokers, layout.security):
            raise BrokerError(
                f"{self.data_dir} holds a cluster of {layout.brokers} broker(s) on port {layout.port} "
                f"with security {layout.security}, not {wanted[1]} on port {wanted[0]} with security "
                f"{wanted[2]}: start it as it was, use another --data-dir, or delete it first "
                "(`meshfl broker stop --purge`)"
            )
        return layout

    def security(self) -> BrokerSecurity | None:
        """The admin credential and CA of a secured cluster (None for a plain one or none yet)."""
        layout = self.layout()
        if layout is None or layout.security == SecurityMode.NONE:
            return None
        return load_or_create(self.data_dir, layout.security, layout.host)

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings of an admin client of this cluster: bootstrap plus SASL/TLS if secured."""
        layout = self.layout()
        if layout is None:
            raise BrokerError(f"no local cluster in {self.data_dir}; `meshfl broker start` makes one")
        security = self.security()
        return {"bootstrap.servers": layout.bootstrap, **(security.client_config() if security else {})}

    def _node_dir(self, node: NodeSpec) -> Path:
        return self.data_dir / f"node-{node.node_id}"

    def _marker(self, node: NodeSpec) -> str:
        return str(self._node_dir(node) / "server.properties")

    def _node_pid(self, node: NodeSpec) -> int | None:
        pid = read_pid(self._node_dir(node) / "kafka.pid")
        return pid if pid is not None and pid_alive(pid, self._marker(node)) else None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> str:
        """Start every node that is not running; wait until all answer; return the bootstrap servers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            layout = self._planned_layout()
            security = load_or_create(self.data_dir, layout.security, layout.host)
            stopped = [node for node in layout.nodes if self._node_pid(node) is None]
            java, libs = "java", Path()
            if stopped:
                self._check_ports(layout, stopped)
                libs = resolve_kafka_jars(self.cache_dir)
                java = str(find_java())
                (self.data_dir / LAYOUT_FILE).write_text(layout.model_dump_json(indent=2) + "\n")
                for node in stopped:
                    self._prepare(layout, node, java, libs, security)
                for node in stopped:
                    self._launch(node, java, libs)
            relaunches = {node.node_id: 0 for node in stopped}
            try:
                wait_for_broker(
                    layout.bootstrap,
                    timeout=timeout,
                    brokers=layout.brokers,
                    check=lambda: self._died(layout, relaunches, java, libs),
                    config=security.client_config() if security is not None else None,
                )
            except BrokerError as exc:
                tails = self._log_tails(layout)  # before stopping: it names how each node ended
                for node in stopped:
                    self._stop_node(node, kill=True)
                raise BrokerError(f"{exc}\n{tails}") from exc
        log.info("kafka running", bootstrap=layout.bootstrap, started=[n.node_id for n in stopped])
        return layout.bootstrap

    def stop(self, node: int | None = None, *, kill: bool = False, grace: float = 30.0) -> None:
        """Stop one node or all: SIGTERM (controlled shutdown), SIGKILL after ``grace`` s, or at once."""
        layout = self.layout()
        if layout is None:
            if node is not None:
                raise BrokerError(f"no local cluster in {self.data_dir}; nothing to stop")
            return
        try:
            targets = layout.nodes if node is None else [layout.node(node)]
        except ValueError as exc:
            raise BrokerError(str(exc)) from exc
        for spec in targets:  # signal every node first: a cluster shuts down in parallel
            pid = self._node_pid(spec)
            if pid is not None:
                send_stop(pid, self._marker(spec), kill=kill)
        for spec in targets:
            self._stop_node(spec, kill=kill, grace=grace, signalled=True)

    def purge(self) -> None:
        """Stop the cluster and delete its data dir (only a dir that holds a meshfl cluster)."""
        if not (self.data_dir / LAYOUT_FILE).is_file():
            if self.data_dir.exists() and any(self.data_dir.iterdir()):
                raise BrokerError(f"{self.data_dir} holds no meshfl cluster ({LAYOUT_FILE}); not deleting it")
            return
        self.stop()
        shutil.rmtree(self.data_dir)

    def status(self) -> BrokerStatus:
        layout = self.layout()
        if layout is None:
            return BrokerStatus(
                state="stopped", bootstrap=None, data_dir=self.data_dir, kafka_version=None,
                cluster_id=None, nodes=[],
            )  # fmt: skip
        nodes = []
        for spec in layout.nodes:
            pid = self._node_pid(spec)
            up = pid is not None and port_answers(spec.host, spec.port)
            nodes.append(
                NodeStatus(
                    node_id=spec.node_id,
                    address=spec.address,
                    controller_address=spec.controller_address,
                    pid=pid,
                    running=up,
                )
            )
        up_count = sum(node.running for node in nodes)
        state: Literal["running", "degraded", "stopped"] = (
            "running" if up_count == len(nodes) else "stopped" if up_count == 0 else "degraded"
        )
        return BrokerStatus(
            state=state,
            bootstrap=layout.bootstrap,
            data_dir=self.data_dir,
            kafka_version=layout.kafka_version,
            cluster_id=layout.cluster_id,
            nodes=nodes,
            security=layout.security,
        )

    def is_running(self) -> bool:
        return self.status().running

    # ---- internals ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.data_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _check_ports(self, layout: ClusterLayout, nodes: list[NodeSpec]) -> None:
        for node in nodes:
            for port in (node.port, node.controller_port):
                if port_in_use(node.host, port):
                    raise BrokerError(
                        f"port {port} on {node.host} is already in use by another program. The local "
                        f"broker needs ports {layout.port}-{layout.port + 2 * layout.brokers - 1}: stop "
                        "what holds it, or choose other ports with `meshfl broker start --port N` (uses N "
                        "and up) and another --data-dir"
                    )

    def _java_command(self, java: str, libs: Path, node: NodeSpec) -> list[str]:
        return [
            java,
            "-Xms128m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            # Kafka's documented broker setting (ops guide, "Java Version"). G1 sizes regions from the
            # heap: 1 MiB here, so every ~1 MB produce request (a meshfl chunk) was a humongous object
            # allocated in the old generation, and each started a concurrent mark cycle: G1's marking
            # threads took more broker CPU than the request handlers did (bench/round.py, session 6).
            # At 16 MiB a request buffer is ordinary young garbage.
            "-XX:G1HeapRegionSize=16M",
            *JIT_MODES[self.jit],
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._node_dir(node) / 'log4j2.properties'}",
            "-cp",
            str(libs / "*"),
        ]

    def _prepare(
        self, layout: ClusterLayout, node: NodeSpec, java: str, libs: Path, security: BrokerSecurity | None
    ) -> None:
        """Write the node's config files (every start) and format its storage (once)."""
        home = self._node_dir(node)
        data = home / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        write_private(props, server_properties(layout, node, data, security))  # may hold the admin secret
        (home / "log4j2.properties").write_text(log4j2_properties(home / "server.log"))
        if (data / "meta.properties").is_file():
            return
        command = [
            *self._java_command(java, libs, node),
            storage_tool_class(libs),
            "format",
            "--cluster-id",
            layout.cluster_id,
            "--initial-controllers",
            layout.initial_controllers,
            "--config",
            str(props),
            *(security.format_arguments() if security is not None else []),
        ]
        output = run_tool(command, secret=security.admin_password if security is not None else None)
        log.info("formatted kafka storage", node=node.node_id, output=output, security=layout.security.value)

    def _launch(self, node: NodeSpec, java: str, libs: Path) -> None:
        home = self._node_dir(node)
        (home / "kafka.pid").unlink(missing_ok=True)
        command = [*self._java_command(java, libs, node), "kafka.Kafka", str(home / "server.properties")]
        pid = spawn(command, cwd=home, output=home / "stdout.log", pid_file=home / "kafka.pid")
        log.info("kafka node started", node=node.node_id, pid=pid, address=node.address)

    def _stop_node(
        self, node: NodeSpec, *, kill: bool = False, grace: float = 30.0, signalled: bool = False
    ) -> None:
        pid_file = self._node_dir(node) / "kafka.pid"
        pid = read_pid(pid_file)
        if pid is not None and signalled:
            await_exit(pid, self._marker(node), grace=5.0 if kill else grace)
        elif pid is not None:
            terminate(pid, self._marker(node), grace=grace, kill=kill)
            log.info("kafka node stopped", node=node.node_id, pid=pid, killed=kill)
        pid_file.unlink(missing_ok=True)

    def _died(self, layout: ClusterLayout, relaunches: dict[int, int], java: str, libs: Path) -> str | None:
        """A reason to give up when a node exited; a node this start launched is relaunched first.

        A node of a cluster can lose a start-up race on a loaded machine (its port taken a moment
        after the check, the quorum not reachable in time): a second launch with the same identity
        then succeeds, so only a node that keeps dying fails the start, with how it ended.
        """
        for node in layout.nodes:
            if self._node_pid(node) is not None:
                continue
            pid = read_pid(self._node_dir(node) / "kafka.pid")
            ended = describe_exit(exit_code(pid) if pid is not None else None)
            tries = relaunches.get(node.node_id)
            busy = [port for port in (node.port, node.controller_port) if port_in_use(node.host, port)]
            if tries is None or tries >= _RELAUNCHES or busy:
                held = f"; port(s) {busy} held by another program" if busy else ""
                return (
                    f"kafka node {node.node_id} ({node.address}) exited during start-up ({ended}{held}"
                    f"{f', after {tries} relaunch(es)' if tries else ''})"
                )
            relaunches[node.node_id] = tries + 1
            log.warning(
                "kafka node exited during start-up; relaunching it",
                node=node.node_id,
                ended=ended,
                attempt=tries + 1,
                log_tail=log_tail(self._node_dir(node) / "stdout.log", 5),
            )
            self._launch(node, java, libs)
        return None

    def _log_tails(self, layout: ClusterLayout) -> str:
        parts = []
        for node in layout.nodes:
            home = self._node_dir(node)
            pid = read_pid(home / "kafka.pid")
            running = self._node_pid(node) is not None
            state = f"running, pid {pid}" if running else describe_exit(exit_code(pid) if pid else None)
            parts.append(f"=== node {node.node_id} ({node.address}): {state}")
            for name in ("stdout.log", "server.log"):
                parts.append(f"--- {home / name} (last lines) ---\n{log_tail(home / name)}")
        return "\n".join(parts)
