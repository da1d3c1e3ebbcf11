"""TLS and mTLS for servers, with certificates reloaded from disk without a restart.

[`server_credentials`][octollm_grpc.server.server_credentials] turns a certificate chain, its
private key and, for mTLS, the CA
that signs client certificates into ``grpc.ServerCredentials`` for
``server.add_secure_port(address, credentials)``. With a client CA every caller must present
a certificate it signed: a caller without one fails the handshake and never reaches a handler.

Certificates rotate. grpc asks a fetcher for the certificate configuration before every new
TLS handshake (``grpc.dynamic_ssl_server_credentials``); ours compares the files' sizes and
modification times with those last loaded and loads them again when they changed, so a new
certificate written over the old one (best: renamed into place) serves the next connection.
Connections already open keep the certificate they were made with. A half-written or
mismatching pair is refused and the previous certificate stays in use (logged as a warning).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

import grpc

__all__ = ["CertificateFiles", "server_credentials"]

_log = logging.getLogger("octollm_grpc.server.tls")

PathLike = str | os.PathLike[str]


class CertificateFiles:
    """A certificate chain, its key and an optional client CA, read from files on demand.

    `load` reads them (raising ``OSError`` or ``ssl.SSLError`` when they are missing,
    unreadable or do not belong together); `changed` says whether any file changed since
    the last successful load. Thread-safe: grpc may call the fetcher from several threads.
    """

    def __init__(self, certificate_chain: PathLike, private_key: PathLike,
                 client_ca: PathLike | None = None) -> None:
        self.certificate_chain = Path(certificate_chain)
        self.private_key = Path(private_key)
        self.client_ca = Path(client_ca) if client_ca is not None else None
        self._lock = threading.Lock()
        self._loaded: tuple[tuple[int, int, int], ...] | None = None
        #: How many times the files were loaded (1 after the first load).
        self.loads = 0

    def _paths(self) -> tuple[Path, ...]:
        if self.client_ca is None:
            return (self.certificate_chain, self.private_key)
        return (self.certificate_chain, self.private_key, self.client_ca)

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        stats = [p.stat() for p in self._paths()]
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def changed(self) -> bool:
        """Whether a file differs (size, modification time, inode) from the last load."""
        try:
            return self._signature() != self._loaded
        except OSError:
            return False  # a file briefly missing mid-rotation: keep what we have

    def load(self) -> grpc.ServerCertificateConfiguration:
        """Read the files into a grpc certificate configuration (see the class docstring)."""
        with self._lock:
            before = self._signature()
            chain = self.certificate_chain.read_bytes()
            key = self.private_key.read_bytes()
            ca = self.client_ca.read_bytes() if self.client_ca is not None else None
            # The key must match the certificate: load the pair the way any TLS server would.
            # An encrypted key fails here instead of OpenSSL asking a terminal for a password.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                self.certificate_chain, self.private_key, password=_no_password)
            if ca is not None:
                ssl.create_default_context(cadata=ca.decode("latin-1"))
            if self._signature() != before:  # written to while we read: try again next time
                raise OSError("certificate files changed while being read")
            config = grpc.ssl_server_certificate_configuration([(key, chain)], ca)
            self._loaded = before
            self.loads += 1
            return config

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's certificate configuration fetcher: a new configuration when the files
        changed and load cleanly, else ``None`` (keep the current one). Never raises."""
        if not self.changed():
            return None
        try:
            return self.load()
        except (OSError, ValueError, ssl.SSLError) as error:
            _log.warning("TLS certificate reload failed, keeping the current one: %s",
                         type(error).__name__)
            return None


def _no_password() -> bytes:
    return b""


def server_credentials(
    certificate_chain: PathLike,
    private_key: PathLike,
    client_ca: PathLike | None = None,
    *,
    reload: bool = True,
) -> grpc.ServerCredentials:
    """Server credentials for TLS, or mTLS when ``client_ca`` is given.

    Args:
        certificate_chain: PEM file with the server certificate (then its intermediates).
        private_key: PEM file with the certificate's private key.
        client_ca: PEM file with the CA certificates that sign client certificates. Given,
            every caller must present a certificate signed by one of them (mTLS); the
            handshake fails otherwise.
        reload: load the files again before a new connection's handshake when they changed
            on disk (the default); ``False`` reads them once.

    Returns:
        Credentials for ``server.add_secure_port(address, credentials)`` (sync or aio).

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: the certificate and key do not belong together, or a file is not PEM.
    """
    files = CertificateFiles(certificate_chain, private_key, client_ca)
    initial = files.load()
    require = client_ca is not None
    if not reload:
        return grpc.ssl_server_credentials(
            [(files.private_key.read_bytes(), files.certificate_chain.read_bytes())],
            root_certificates=(files.client_ca.read_bytes()
                               if files.client_ca is not None else None),
            require_client_auth=require)
    # The stubs say the fetcher returns a configuration; grpc documents None as "no change".
    return grpc.dynamic_ssl_server_credentials(
        initial, files.fetch,  # type: ignore[arg-type]
        require_client_authentication=require)
