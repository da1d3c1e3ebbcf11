"""Certificates made on the fly for the TLS tests: a CA (trustme), its server and client
certificates, written to a temporary directory. No key is ever committed."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pair", "Pki"]

_UTC = datetime.UTC


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as PEM bytes and as files."""

    cert: bytes
    key: bytes
    cert_file: Path
    key_file: Path


class Pki:
    """A trustme CA with helpers to issue server and client certificates into ``directory``."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.ca = trustme.CA()
        self.directory = directory
        self.name = name
        self.ca_file = directory / f"{name}.pem"
        self.ca_file.write_bytes(self.ca.cert_pem.bytes())
        self._count = 0

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (what clients and servers trust)."""
        return self.ca.cert_pem.bytes()

    def _files(self, cert: bytes, key: bytes) -> Pair:
        self._count += 1
        stem = self.directory / f"{self.name}-{self._count}"
        cert_file, key_file = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        return Pair(cert, key, cert_file, key_file)

    def server(self, *names: str, expired: bool = False) -> Pair:
        """A server certificate for ``names`` (default: localhost and 127.0.0.1)."""
        now = datetime.datetime.now(_UTC)
        window = {"not_before": now - datetime.timedelta(days=3),
                  "not_after": now - datetime.timedelta(days=1)} if expired else {}
        leaf = self.ca.issue_cert(*(names or ("localhost", "127.0.0.1")), **window)
        return self._files(b"".join(p.bytes() for p in leaf.cert_chain_pems),
                           leaf.private_key_pem.bytes())

    def client(self, *, uris: tuple[str, ...] = (), dns: tuple[str, ...] = (),
               cn: str | None = None, expired: bool = False) -> Pair:
        """A client certificate with these URI and DNS SANs and subject CN."""
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca_pem)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(_UTC)
        start, end = ((now - datetime.timedelta(days=3), now - datetime.timedelta(days=1))
                      if expired else (now - datetime.timedelta(hours=1),
                                       now + datetime.timedelta(days=1)))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False))
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return self._files(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
