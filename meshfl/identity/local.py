"""Identities for a federation on one machine (the demo, tests, benchmarks), made in one call.

``provision_local`` creates governance's key pair in a folder (once), a key in every domain folder that
has none, registers each domain key on the bus (unless the registry already holds it), and returns the
settings with governance's keys pinned; ``identity_env`` gives the same to child processes. A real
deployment does the same steps by hand with ``meshfl keys`` (each domain keeps its private key).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshfl.identity.keys import (
    encode_public_key,
    generate_private_key,
    key_id,
    load_private_key,
    write_key_pair,
)
from meshfl.identity.trust import domain_key_path, governance_signer, read_registry, register_domain_dir
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings

__all__ = [
    "GOVERNANCE_KEY_FILE",
    "ensure_domain_key",
    "identity_env",
    "provision_local",
    "with_governance_keys",
]

log = get_logger("meshfl.identity")

GOVERNANCE_KEY_FILE = "governance.key"


def ensure_domain_key(domain_dir: Path) -> Path:
    """The domain's private key file, created (mode 0600) if it does not exist yet."""
    path = domain_key_path(domain_dir)
    if not path.exists():
        write_key_pair(path, generate_private_key())
        log.info("domain key created", domain_dir=str(domain_dir))
    return path


def with_governance_keys(settings: MeshflSettings, key_dir: Path) -> MeshflSettings:
    """``settings`` with governance's key pair from ``key_dir`` pinned (created there the first time)."""
    private = key_dir / GOVERNANCE_KEY_FILE
    if not private.exists():
        write_key_pair(private, generate_private_key())
    public = encode_public_key(load_private_key(private))
    return settings.model_copy(update={"governance_public_key": public, "governance_private_key": private})


def provision_local(settings: MeshflSettings, key_dir: Path, domain_dirs: Sequence[Path]) -> MeshflSettings:
    """Keys for governance and every domain folder, domain keys registered; the settings to run with.

    Governance keys already set in ``settings`` are used as they are; otherwise a pair is made in
    ``key_dir`` (once) and pinned.
    """
    if settings.governance_public_key and settings.governance_private_key is not None:
        pinned = settings
    else:
        pinned = with_governance_keys(settings, key_dir)
    signer = governance_signer(pinned)
    known = {record.key_id for record in read_registry(pinned)}
    for domain_dir in domain_dirs:
        path = ensure_domain_key(domain_dir)
        if key_id(load_private_key(path)) not in known:
            register_domain_dir(pinned, signer, domain_dir)
    return pinned


def identity_env(settings: MeshflSettings, *, with_private_key: bool) -> dict[str, str]:
    """``MESHFL_*`` variables that carry the pinned keys to a child process (the private key path only
    for governance's own processes)."""
    env = {}
    if settings.governance_public_key:
        env["MESHFL_GOVERNANCE_PUBLIC_KEY"] = settings.governance_public_key
    if with_private_key and settings.governance_private_key is not None:
        env["MESHFL_GOVERNANCE_PRIVATE_KEY"] = str(settings.governance_private_key)
    return env
