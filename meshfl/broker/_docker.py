"""Whether a Docker engine answers, so tests and users can prefer a container when there is one."""

from __future__ import annotations

from meshfl.logs import get_logger

log = get_logger(__name__)


def docker_available(timeout: float = 3.0) -> bool:
    """Ping the Docker engine that testcontainers would use (``DOCKER_HOST`` or the local socket)."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=max(1, int(timeout)))
    except DockerException as exc:
        log.debug("no docker engine", reason=str(exc))
        return False
    try:
        return bool(client.ping())
    except (DockerException, OSError) as exc:
        log.debug("docker engine did not answer", reason=str(exc))
        return False
    finally:
        client.close()
