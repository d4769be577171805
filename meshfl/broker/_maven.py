"""Find Java and resolve the Apache Kafka jars with Maven, once, into the meshfl cache.

The jars are named by ``pom.xml`` beside this module (shipped with the package). Maven keeps its
own repository where it always does (``~/.m2``); the jars the broker runs from are copied to
``<cache_dir>/kafka-<version>/libs``, and a marker file holding the pom's SHA-256 makes later calls
instant. A changed pom (a new Kafka version) resolves again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from meshfl.errors import BrokerError
from meshfl.logs import get_logger

log = get_logger(__name__)

POM = Path(__file__).with_name("pom.xml")
MIN_JAVA = 17
_MARKER = ".resolved"
_STORAGE_TOOL_CLASSES = ("org.apache.kafka.tools.StorageTool", "kafka.tools.StorageTool")
_MAVEN_TIMEOUT_S = 900


def kafka_version() -> str:
    """The Kafka version the shipped pom pins (its ``kafka.version`` property)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ElementTree.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{POM} does not set the kafka.version property")
    return (node.text or "").strip()


def find_java() -> Path:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java`` or the one on PATH, Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is None or not candidate.is_file():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    if candidate is None:
        raise BrokerError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker and none was found: install a JDK or "
            f"JRE {MIN_JAVA} or newer (e.g. `apt-get install openjdk-17-jre-headless`, "
            "`brew install openjdk@17`) or set JAVA_HOME"
        )
    major = _java_major(candidate)
    if major < MIN_JAVA:
        raise BrokerError(
            f"Kafka {kafka_version()} needs Java {MIN_JAVA} or newer, but {candidate} is Java {major}: "
            f"install Java {MIN_JAVA}+ and put it first on PATH or point JAVA_HOME at it"
        )
    return candidate


def _java_major(java: Path) -> int:
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run {java} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match is None:
        raise BrokerError(f"could not read the Java version from `{java} -version`: {done.stderr.strip()}")
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


def resolve_kafka_jars(cache_dir: Path) -> Path:
    """Return the directory holding every jar the broker needs, resolving them with Maven if needed."""
    version = kafka_version()
    home = Path(cache_dir).expanduser() / f"kafka-{version}"
    libs = home / "libs"
    pom_digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if _is_resolved(home, pom_digest):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving the same jars
        if not _is_resolved(home, pom_digest):
            _resolve(home, pom_digest)
    return libs


def _is_resolved(home: Path, pom_digest: str) -> bool:
    marker = home / _MARKER
    return marker.is_file() and marker.read_text().strip() == pom_digest and (home / "libs").is_dir()


def _resolve(home: Path, pom_digest: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (`mvn`) is needed once to download the Kafka jars and was not found: install it "
            "(e.g. `apt-get install maven`, `brew install maven`) and run `meshfl broker start` again"
        )
    pom = home / "pom.xml"
    shutil.copyfile(POM, pom)  # run from the cache, so the installed package is never written to
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    log.info("resolving kafka jars with maven", directory=str(home))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"running Maven to fetch the Kafka jars failed: {exc}") from exc
    if done.returncode != 0 or not any(staging.glob("kafka_*.jar")):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise BrokerError(
            f"Maven could not resolve the Kafka jars (exit {done.returncode}); check access to Maven "
            f"Central or the mirror in ~/.m2/settings.xml, then retry. Command: {' '.join(command)}\n{tail}"
        )
    libs = home / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (home / _MARKER).write_text(pom_digest + "\n")
    log.info("kafka jars resolved", jars=len(list(libs.glob("*.jar"))), directory=str(libs))


def storage_tool_class(libs: Path) -> str:
    """The main class of ``kafka-storage`` in these jars (it moved between packages across versions)."""
    for jar in sorted(libs.glob("kafka*.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile) as exc:
            raise BrokerError(f"{jar} is not a readable jar; delete {libs.parent} and retry") from exc
        for cls in _STORAGE_TOOL_CLASSES:
            if cls.replace(".", "/") + ".class" in names:
                return cls
    raise BrokerError(f"no Kafka StorageTool class in {libs}; delete {libs.parent} and retry")
