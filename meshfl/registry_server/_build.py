"""Build Apicurio Registry (a Quarkus application) from Maven Central, once, into the meshfl cache.

Maven Central serves Apicurio's application classes (``apicurio-registry-app``), not a runnable
distribution, so ``pom.xml`` beside this module runs Quarkus' ``build`` goal over them; the
resulting ``quarkus-app`` directory is copied to ``<cache_dir>/schema-registry/apicurio-<version>``.
A marker holding the SHA-256 of the pom and ``application.properties`` makes later calls instant;
a changed pom builds again. ``-P !external_repos`` keeps Maven on Central (the parent pom adds
repositories that cannot be reached here and that the application does not need).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from meshfl.errors import MeshflError
from meshfl.logs import get_logger

log = get_logger(__name__)

POM = Path(__file__).with_name("pom.xml")
PROPERTIES = Path(__file__).with_name("application.properties")
_MARKER = ".built"
_MAVEN_TIMEOUT_S = 1500


class RegistryServerError(MeshflError):
    """The local Schema Registry could not be built, started or reached."""


def registry_version() -> str:
    """The Apicurio Registry version the shipped pom builds (its parent's version)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ElementTree.parse(POM).getroot().find("m:parent/m:version", ns)
    if node is None or not (node.text or "").strip():
        raise RegistryServerError(f"{POM} names no parent version")
    return (node.text or "").strip()


def _digest() -> str:
    return hashlib.sha256(POM.read_bytes() + b"\0" + PROPERTIES.read_bytes()).hexdigest()


def build_registry(cache_dir: Path) -> Path:
    """Return the runnable ``quarkus-run.jar`` of the registry, building it with Maven if needed."""
    home = Path(cache_dir).expanduser() / "schema-registry" / f"apicurio-{registry_version()}"
    digest = _digest()
    if _is_built(home, digest):
        return home / "quarkus-app" / "quarkus-run.jar"
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process (a parallel test run) may be building it
        if not _is_built(home, digest):
            _build(home, digest)
    return home / "quarkus-app" / "quarkus-run.jar"


def _is_built(home: Path, digest: str) -> bool:
    marker = home / _MARKER
    return (
        marker.is_file()
        and marker.read_text().strip() == digest
        and (home / "quarkus-app" / "quarkus-run.jar").is_file()
    )


def _build(home: Path, digest: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RegistryServerError(
            "Maven (`mvn`) is needed once to build the local Schema Registry and was not found: install it "
            "(e.g. `apt-get install maven`) and retry"
        )
    project = home / "build"
    shutil.rmtree(project, ignore_errors=True)
    resources = project / "src" / "main" / "resources"
    resources.mkdir(parents=True)
    shutil.copyfile(POM, project / "pom.xml")  # build in the cache: the installed package stays read-only
    shutil.copyfile(PROPERTIES, resources / "application.properties")
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(project / "pom.xml"),
        "package",
        "-DskipTests",
        "-P",
        "!external_repos",
    ]
    log.info("building the local schema registry with maven", directory=str(home))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryServerError(f"running Maven to build the Schema Registry failed: {exc}") from exc
    built = project / "target" / "quarkus-app"
    if done.returncode != 0 or not (built / "quarkus-run.jar").is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise RegistryServerError(
            f"Maven could not build the Schema Registry (exit {done.returncode}); check access to Maven "
            f"Central or the mirror in ~/.m2/settings.xml, then retry. Command: {' '.join(command)}\n{tail}"
        )
    install_app_config(built)
    target = home / "quarkus-app"
    shutil.rmtree(target, ignore_errors=True)
    built.rename(target)
    shutil.rmtree(project, ignore_errors=True)
    (home / _MARKER).write_text(digest + "\n")
    log.info("schema registry built", directory=str(target))


def install_app_config(app_dir: Path) -> None:
    """Put Apicurio's own ``application.properties`` where Quarkus reads runtime config (``config/``).

    Quarkus takes build-time config only from the building project, so the application's runtime
    defaults (auth off, storage, limits) ship inside its jar and are laid beside ``quarkus-run.jar``.
    """
    jars = sorted((app_dir / "lib" / "main").glob("io.apicurio.apicurio-registry-app-*.jar"))
    if not jars:
        raise RegistryServerError(f"no apicurio-registry-app jar in {app_dir / 'lib' / 'main'}")
    with zipfile.ZipFile(jars[0]) as archive:
        config = archive.read("application.properties")
    (app_dir / "config").mkdir(exist_ok=True)
    (app_dir / "config" / "application.properties").write_bytes(config)
