"""A small gRPC client for dice fleet nodes.

Rolls a die on a node's ``api.DiceService`` over mutual TLS, as the old web
app's wrapper did::

    from dice_client import Certs, Client, DiceError

    certs = Certs("certs/dev/ca.pem", "certs/dev/client.pem", "certs/dev/client-key.pem")
    with Client("127.0.0.1:8443", certs) as client:
        value = client.roll_die()      # 1..6, or raises DiceError

A node is reached directly on its mTLS listener or through nginx (which
terminates mTLS in front of the agents' h2c listeners); the client cannot
tell the difference. Every failed RPC raises :class:`DiceError`, which
carries the :class:`grpc.StatusCode` and the status details.

The stubs in ``dice_client._proto`` are generated from ``proto/api.proto``
when the package is built or installed (``generate_stubs.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

import grpc

try:
    from dice_client._proto import api_pb2, api_pb2_grpc
except ImportError as _error:  # pragma: no cover - depends on the install
    raise ImportError(
        "dice_client: the generated gRPC stubs are missing: install the package "
        "(pip install clients/python) or run python clients/python/generate_stubs.py"
    ) from _error

__all__ = ["Certs", "Client", "DiceError", "DEFAULT_TIMEOUT"]

#: How long one RollDie may take, connecting included, in seconds.
DEFAULT_TIMEOUT = 5.0

PathLike = Union[str, "os.PathLike[str]"]


class Certs:
    """The PEM files a client uses: the CA bundle it trusts for node
    certificates, and the client certificate and key it presents.

    ``cert`` and ``key`` go together; leave both out to present no client
    certificate (a node then refuses the connection, which is only useful to
    check that it does).
    """

    def __init__(self, root: PathLike, cert: Optional[PathLike] = None, key: Optional[PathLike] = None):
        if (cert is None) != (key is None):
            raise ValueError("Certs: give both cert and key, or neither")
        self.root = Path(root)
        self.cert = Path(cert) if cert is not None else None
        self.key = Path(key) if key is not None else None

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the files into gRPC channel credentials.

        Raises :class:`OSError` (naming the file) if one cannot be read.
        """
        root = self.root.read_bytes()
        cert = self.cert.read_bytes() if self.cert is not None else None
        key = self.key.read_bytes() if self.key is not None else None
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)

    def __repr__(self) -> str:
        # Paths only: key material never goes into a repr or a log.
        return f"Certs(root={str(self.root)!r}, cert={_opt(self.cert)}, key={_opt(self.key)})"


class DiceError(Exception):
    """An RPC to a node failed. ``code`` is the :class:`grpc.StatusCode`,
    ``details`` the status message, ``addr`` the node."""

    def __init__(self, addr: str, code: grpc.StatusCode, details: str):
        super().__init__(f"node {addr}: {code.name}: {details}")
        self.addr = addr
        self.code = code
        self.details = details

    @property
    def kind(self) -> str:
        """What went wrong, coarsely: ``"tls"`` (the node or a proxy refused
        the certificate, or the handshake failed), ``"unavailable"`` (nothing
        answered), ``"timeout"`` or ``"rpc"`` (the node answered with an error).
        """
        details = self.details.lower()
        if self.code == grpc.StatusCode.UNAUTHENTICATED or any(
            # grpc core's words for a failed or refused handshake; TSI is its TLS layer.
            word in details for word in ("ssl", "tls", "tsi_", "handshake", "certificate")
        ):
            return "tls"
        if self.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "timeout"
        if self.code == grpc.StatusCode.UNAVAILABLE:
            return "unavailable"
        return "rpc"


class Client:
    """A connection to one node (``HOST:PORT``) over mutual TLS.

    ``server_name`` overrides the name checked against the node's certificate
    (by default the host part of ``addr``). ``metadata`` is sent with every
    RPC. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        addr: str,
        certs: Certs,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        server_name: Optional[str] = None,
        metadata: Iterable[Tuple[str, str]] = (),
    ):
        self.addr = addr
        self.timeout = timeout
        self.metadata: Sequence[Tuple[str, str]] = tuple(metadata)
        options = []
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._channel = grpc.secure_channel(addr, certs.credentials(), options=options)
        self._stub = api_pb2_grpc.DiceServiceStub(self._channel)

    def roll_die(self) -> int:
        """Rolls one die on the node and returns the face, 1 to 6.

        Raises :class:`DiceError` with the gRPC status if the RPC fails.
        """
        try:
            response = self._stub.RollDie(
                api_pb2.RollDieRequest(), timeout=self.timeout, metadata=self.metadata or None
            )
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
            details = error.details() if hasattr(error, "details") else str(error)
            raise DiceError(self.addr, code, details or "") from error
        return response.value

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(addr={self.addr!r})"


def _opt(path: Optional[Path]) -> str:
    return repr(str(path)) if path is not None else "None"
