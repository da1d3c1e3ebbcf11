"""TLS and mTLS for clients: channel credentials from PEM files.

``resilient_channel(target, credentials=channel_credentials(...))`` (sync or aio) then runs
retry, the retry budget, the breaker and error decoding over TLS exactly as over plaintext.
A handshake that fails (an untrusted or expired server certificate, a server that does not
speak TLS) is ``UNAVAILABLE`` on that channel only; other channels are not affected.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

__all__ = ["channel_credentials"]


def _read(source: str | os.PathLike[str] | bytes | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def channel_credentials(
    root_certificates: str | os.PathLike[str] | bytes | None = None,
    certificate_chain: str | os.PathLike[str] | bytes | None = None,
    private_key: str | os.PathLike[str] | bytes | None = None,
) -> grpc.ChannelCredentials:
    """Credentials for a TLS channel (mTLS when a client certificate is given).

    Each argument is a PEM file's path, or the PEM content as ``bytes``.

    Args:
        root_certificates: the CA certificates trusted to sign the server's certificate;
            ``None``: the system's default roots (grpc's bundled ones).
        certificate_chain: the client certificate (mTLS), with ``private_key``.
        private_key: the client certificate's private key.

    Returns:
        ``grpc.ssl_channel_credentials`` for ``resilient_channel(..., credentials=...)``,
        ``grpc.secure_channel`` or ``grpc.aio.secure_channel``.

    Raises:
        ValueError: only one of ``certificate_chain`` and ``private_key`` is given.
        OSError: a file cannot be read.
    """
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(root_certificates),
        private_key=_read(private_key),
        certificate_chain=_read(certificate_chain),
    )
