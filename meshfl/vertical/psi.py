"""Private set intersection for entity alignment: thin wrappers over openmined-psi (ECDH-PSI).

The protocol of openmined-psi (github.com/OpenMined/PSI, after Meadows 1986 / Huberman et al. 1999,
with the elliptic-curve commutative encryption of its C++ core): the client sends its elements raised
to its secret key; the server raises those to its own key and sends them back together with its own
elements under its key (the *setup*); the client learns which of its elements are in the server's set,
and nothing else about the server's other elements. The server learns only the client's set size.
Every message is a serialized protobuf of curve points: no element and no hash of one is ever sent.

Elements are entity ids as UTF-8 strings. A client object keeps its secret key in memory only, so an
alignment interrupted by a restart is redone in a new session rather than resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshfl.errors import MeshflError
from meshfl.extras import require

psi = require("private_set_intersection.python", "vertical")

_REVEAL_INTERSECTION = True  # the client learns the intersection itself, not only its size


class AlignmentError(MeshflError):
    """A private-set-intersection message could not be used."""


@dataclass
class PsiClient:
    """One side's elements and its secret key for one session; ``request`` goes to the other side."""

    elements: list[str]
    request: bytes
    _client: object

    def intersection(self, setup: bytes | memoryview, response: bytes | memoryview) -> list[int]:
        """Indices (into ``elements``, sorted) of the elements the server also holds."""
        try:
            server_setup = psi.ServerSetup()
            server_setup.ParseFromString(bytes(setup))
            parsed = psi.Response()
            parsed.ParseFromString(bytes(response))
            indices = self._client.GetIntersection(server_setup, parsed)  # type: ignore[attr-defined]
        except Exception as exc:  # the C++ core and protobuf raise RuntimeError or DecodeError alike
            raise AlignmentError(f"unusable PSI reply: {exc}") from exc
        if any(not 0 <= index < len(self.elements) for index in indices):
            raise AlignmentError("PSI reply names elements out of range")
        return sorted(set(indices))


def new_client(elements: Sequence[str]) -> PsiClient:
    """A fresh key and the request carrying ``elements`` under it."""
    values = [str(value) for value in elements]
    client = psi.client.CreateWithNewKey(_REVEAL_INTERSECTION)
    request = client.CreateRequest(values).SerializeToString()
    return PsiClient(elements=values, request=request, _client=client)


class PsiServer:
    """One side's elements under one fresh key: the *setup* is computed once and answers every request
    of the session (the share phase answers each member with the same setup: each learns the same
    intersection, and its response is under its own key)."""

    def __init__(self, elements: Sequence[str], *, max_client_elements: int) -> None:
        self._values = [str(value) for value in elements]
        self._max = max_client_elements
        self._server = psi.server.CreateWithNewKey(_REVEAL_INTERSECTION)
        self._setup: bytes | None = None

    def answer(self, request: bytes | memoryview) -> tuple[bytes, bytes]:
        """(setup, response) for one client's request; the server learns only the request's size."""
        try:
            parsed = psi.Request()
            parsed.ParseFromString(bytes(request))
        except Exception as exc:
            raise AlignmentError(f"unusable PSI request: {exc}") from exc
        if len(parsed.encrypted_elements) > self._max:
            raise AlignmentError(
                f"PSI request of {len(parsed.encrypted_elements)} elements, above the bound {self._max}"
            )
        try:
            if self._setup is None:
                # fpr is irrelevant for the RAW structure: the setup holds every encrypted element.
                # The RAW setup does not depend on the client's size, so one serves every request.
                setup = self._server.CreateSetupMessage(
                    1e-9, max(1, len(parsed.encrypted_elements)), self._values, psi.DataStructure.RAW
                )
                self._setup = setup.SerializeToString()
            response = self._server.ProcessRequest(parsed)
        except Exception as exc:
            raise AlignmentError(f"cannot answer the PSI request: {exc}") from exc
        return self._setup, response.SerializeToString()


def reply(
    elements: Sequence[str], request: bytes | memoryview, *, max_client_elements: int
) -> tuple[bytes, bytes]:
    """The server's (setup, response) to one request, with a fresh key."""
    return PsiServer(elements, max_client_elements=max_client_elements).answer(request)
