"""TLS and mTLS on both stacks: resilient channels over TLS, handshake failures kept to the
caller that caused them, certificates reloaded from disk without a restart."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import grpc
import pytest

from octollm_grpc import errors as e
from octollm_grpc.client import RetryPolicy, channel_credentials, resilient_channel
from octollm_grpc.client import aio as client_aio
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_credentials, server_interceptors
from tests.security.pki import Pki
from tests.security.support import ECHO, WHO, aio_tls_server, sync_tls_server

ONE_ATTEMPT = RetryPolicy(max_attempts=1)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh CA in a temporary directory."""
    return Pki(tmp_path)


def test_sync_resilient_channel_over_tls_decodes_typed_errors(pki: Pki) -> None:
    """Sync: calls over TLS succeed and a handler's error arrives as its typed class."""
    server = pki.server()
    creds = server_credentials(server.cert_file, server.key_file)
    with sync_tls_server(creds, server_interceptors(metrics=False)) as port, \
            resilient_channel(f"127.0.0.1:{port}",
                              credentials=channel_credentials(pki.ca_file)) as channel:
        call = channel.unary_unary(ECHO)
        assert call(b"hi", timeout=5) == b"echo:hi"
        with pytest.raises(e.TaskNotFoundError) as caught:
            call(b"missing", timeout=5)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert caught.value.details["task_id"] == "t-404"


async def test_aio_resilient_channel_over_tls_decodes_typed_errors(pki: Pki) -> None:
    """aio: calls over TLS succeed and a handler's error arrives as its typed class."""
    server = pki.server()
    creds = server_credentials(server.cert_file, server.key_file)
    async with aio_tls_server(creds, server_aio.server_interceptors(metrics=False)) as port:
        async with client_aio.resilient_channel(
                f"127.0.0.1:{port}",
                credentials=channel_credentials(pki.ca_pem)) as channel:
            call = channel.unary_unary(ECHO)
            assert await call(b"hi", timeout=5) == b"echo:hi"
            with pytest.raises(e.TaskNotFoundError):
                await call(b"missing", timeout=5)


def test_sync_mtls_requires_a_client_certificate(pki: Pki) -> None:
    """Sync mTLS: no client certificate fails the handshake (UNAVAILABLE); one signed by the
    CA gets through and the handler sees its principal."""
    server = pki.server()
    client = pki.client(uris=("spiffe://example.org/ns/prod/sa/web",))
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    with sync_tls_server(creds) as port:
        target = f"127.0.0.1:{port}"
        with resilient_channel(target, credentials=channel_credentials(pki.ca_file),
                               retry=ONE_ATTEMPT) as anonymous:
            with pytest.raises(grpc.RpcError) as caught:
                anonymous.unary_unary(WHO)(b"", timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        with resilient_channel(target, credentials=channel_credentials(
                pki.ca_file, client.cert_file, client.key_file)) as channel:
            assert channel.unary_unary(WHO)(b"", timeout=5) == \
                b"spiffe://example.org/ns/prod/sa/web"


async def test_aio_mtls_requires_a_client_certificate(pki: Pki) -> None:
    """aio mTLS: no client certificate fails the handshake; a signed one gets through."""
    server = pki.server()
    client = pki.client(dns=("worker.internal",), cn="ignored-cn")
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    async with aio_tls_server(creds) as port:
        target = f"127.0.0.1:{port}"
        async with client_aio.resilient_channel(
                target, credentials=channel_credentials(pki.ca_file),
                retry=ONE_ATTEMPT) as anonymous:
            with pytest.raises(grpc.RpcError) as caught:
                await anonymous.unary_unary(WHO)(b"", timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        async with client_aio.resilient_channel(target, credentials=channel_credentials(
                pki.ca_file, client.cert, client.key)) as channel:
            assert await channel.unary_unary(WHO)(b"", timeout=5) == b"worker.internal"


def _hostile_attempts(port: int, pki: Pki, stranger: Pki) -> dict[str, grpc.StatusCode | str]:
    """Every way a TLS caller can be wrong; each one's outcome."""
    target = f"127.0.0.1:{port}"
    untrusted = stranger.client(uris=("spiffe://evil.example/x",))
    expired = pki.client(uris=("spiffe://example.org/ns/prod/sa/old",), expired=True)
    outcomes: dict[str, grpc.StatusCode | str] = {}
    cases = {
        "untrusted_client_cert": channel_credentials(pki.ca_file, untrusted.cert_file,
                                                     untrusted.key_file),
        "expired_client_cert": channel_credentials(pki.ca_file, expired.cert_file,
                                                   expired.key_file),
        "untrusted_server": channel_credentials(stranger.ca_file, expired.cert_file,
                                                expired.key_file),
        "no_client_cert": channel_credentials(pki.ca_file),
    }
    for name, creds in cases.items():
        with grpc.secure_channel(target, creds) as channel:
            try:
                channel.unary_unary(WHO)(b"", timeout=5)
                outcomes[name] = "OK"
            except grpc.RpcError as error:
                outcomes[name] = error.code()
    with grpc.insecure_channel(target) as plaintext:
        try:
            plaintext.unary_unary(WHO)(b"", timeout=5)
            outcomes["plaintext"] = "OK"
        except grpc.RpcError as error:
            outcomes["plaintext"] = error.code()
    # Not even HTTP/2: an HTTP/1 request in clear text; the server just closes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(5)
        try:
            answer = raw.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        outcomes["http1_plaintext"] = "closed" if b"HTTP/1.1 200" not in answer else "OK"
    return outcomes


def test_sync_bad_tls_callers_fail_cleanly_and_leave_others_alone(tmp_path: Path) -> None:
    """Sync mTLS: untrusted, expired, missing client certificates, a server the client does
    not trust, and plaintext all fail with UNAVAILABLE, while an innocent caller's calls all
    succeed, during the attacks and after."""
    pki, stranger = Pki(tmp_path, "ca"), Pki(tmp_path, "stranger")
    server, good = pki.server(), pki.client(cn="innocent")
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    latencies: list[float] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    with sync_tls_server(creds) as port, grpc.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki.ca_file, good.cert_file, good.key_file)) as innocent:
        call = innocent.unary_unary(WHO)
        assert call(b"", timeout=5) == b"innocent"

        def keep_calling() -> None:
            for _ in range(2000):  # bounded; stops when the attacks are over
                if stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    assert call(b"", timeout=5) == b"innocent"
                except BaseException as error:
                    failures.append(error)
                    return
                latencies.append(time.perf_counter() - started)

        worker = threading.Thread(target=keep_calling)
        worker.start()
        try:
            outcomes = _hostile_attempts(port, pki, stranger)
        finally:
            stop.set()
            worker.join(10)
        assert failures == []
        assert outcomes == {
            "untrusted_client_cert": grpc.StatusCode.UNAVAILABLE,
            "expired_client_cert": grpc.StatusCode.UNAVAILABLE,
            "untrusted_server": grpc.StatusCode.UNAVAILABLE,
            "no_client_cert": grpc.StatusCode.UNAVAILABLE,
            "plaintext": grpc.StatusCode.UNAVAILABLE,
            "http1_plaintext": "closed",
        }
        assert len(latencies) >= 5
        assert max(latencies) < 2.0, max(latencies)
        assert call(b"", timeout=5) == b"innocent"  # and after


async def test_aio_bad_tls_callers_fail_cleanly_and_leave_others_alone(tmp_path: Path) -> None:
    """aio mTLS: the same hostile callers fail with UNAVAILABLE while an innocent caller on
    the loop keeps being served."""
    pki, stranger = Pki(tmp_path, "ca"), Pki(tmp_path, "stranger")
    server, good = pki.server(), pki.client(cn="innocent")
    creds = server_credentials(server.cert_file, server.key_file, pki.ca_file)
    async with aio_tls_server(creds) as port, grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki.ca_file, good.cert_file, good.key_file)) as innocent:
        call = innocent.unary_unary(WHO)
        assert await call(b"", timeout=5) == b"innocent"
        attacks = asyncio.ensure_future(asyncio.to_thread(_hostile_attempts, port, pki, stranger))
        served = 0
        latencies = []
        while not attacks.done() and served < 2000:
            started = time.perf_counter()
            assert await call(b"", timeout=5) == b"innocent"
            latencies.append(time.perf_counter() - started)
            served += 1
        outcomes = await attacks
        assert set(outcomes.values()) == {grpc.StatusCode.UNAVAILABLE, "closed"}
        assert outcomes["plaintext"] is grpc.StatusCode.UNAVAILABLE
        assert served >= 5 and max(latencies) < 2.0
        assert await call(b"", timeout=5) == b"innocent"


def test_expired_server_certificate_is_refused_by_the_client(pki: Pki) -> None:
    """A server presenting an expired certificate: the client's handshake fails (UNAVAILABLE)."""
    server = pki.server(expired=True)
    creds = server_credentials(server.cert_file, server.key_file)
    with sync_tls_server(creds) as port, resilient_channel(
            f"127.0.0.1:{port}", credentials=channel_credentials(pki.ca_file),
            retry=ONE_ATTEMPT) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(ECHO)(b"x", timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def _rotate(src_cert: Path, src_key: Path, cert: Path, key: Path) -> None:
    """Replace the served files the way rotation tools do: write aside, rename into place."""
    for src, dst in ((src_cert, cert), (src_key, key)):
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


def test_certificates_reload_from_disk_without_restart(tmp_path: Path) -> None:
    """A certificate replaced on disk serves the next new connection; the old one is no
    longer presented to new callers, and the server never restarted."""
    old_ca, new_ca = Pki(tmp_path, "old"), Pki(tmp_path, "new")
    first, second = old_ca.server(), new_ca.server()
    cert, key = tmp_path / "served.crt", tmp_path / "served.key"
    _rotate(first.cert_file, first.key_file, cert, key)
    creds = server_credentials(cert, key)
    with sync_tls_server(creds) as port:
        target = f"127.0.0.1:{port}"
        with grpc.secure_channel(target, channel_credentials(old_ca.ca_file)) as channel:
            assert channel.unary_unary(ECHO)(b"1", timeout=5) == b"echo:1"
        _rotate(second.cert_file, second.key_file, cert, key)
        with grpc.secure_channel(target, channel_credentials(new_ca.ca_file)) as channel:
            assert channel.unary_unary(ECHO)(b"2", timeout=5) == b"echo:2"
        with grpc.secure_channel(target, channel_credentials(old_ca.ca_file)) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(ECHO)(b"3", timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_broken_rotation_keeps_the_current_certificate(
        pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """A key file that no longer matches the certificate is refused with a warning, and new
    connections keep getting the certificate already in use."""
    server, other = pki.server(), pki.server()
    cert, key = Path(pki.directory / "cur.crt"), Path(pki.directory / "cur.key")
    _rotate(server.cert_file, server.key_file, cert, key)
    creds = server_credentials(cert, key)
    with sync_tls_server(creds) as port, caplog.at_level(logging.WARNING):
        _rotate(server.cert_file, other.key_file, cert, key)  # mismatching pair
        for n in range(3):
            with grpc.secure_channel(f"127.0.0.1:{port}",
                                     channel_credentials(pki.ca_file)) as channel:
                assert channel.unary_unary(ECHO)(b"k", timeout=5) == b"echo:k", n
    warnings = [r for r in caplog.records if r.name == "octollm_grpc.server.tls"]
    assert warnings and "keeping the current one" in warnings[0].getMessage()
    assert "PRIVATE" not in caplog.text


def test_server_credentials_refuse_bad_files(pki: Pki) -> None:
    """A key that does not match its certificate, or a missing file, fails at startup."""
    one, two = pki.server(), pki.server()
    with pytest.raises(ssl.SSLError):
        server_credentials(one.cert_file, two.key_file)
    with pytest.raises(OSError):
        server_credentials(one.cert_file, pki.directory / "absent.key")
    with pytest.raises(ssl.SSLError):
        server_credentials(one.cert_file, one.key_file, one.key_file)  # a key is not a CA


def test_channel_credentials_need_both_halves_of_a_client_certificate(pki: Pki) -> None:
    """A client certificate without its key (or the reverse) is refused at once."""
    pair = pki.client(cn="x")
    with pytest.raises(ValueError, match="both"):
        channel_credentials(pki.ca_file, certificate_chain=pair.cert_file)
    with pytest.raises(ValueError, match="both"):
        channel_credentials(pki.ca_file, private_key=pair.key)


async def test_aio_certificates_reload_from_disk_without_restart(tmp_path: Path) -> None:
    """aio: a rotated certificate serves the next new connection, the server never restarted."""
    old_ca, new_ca = Pki(tmp_path, "old"), Pki(tmp_path, "new")
    first, second = old_ca.server(), new_ca.server()
    cert, key = tmp_path / "served.crt", tmp_path / "served.key"
    _rotate(first.cert_file, first.key_file, cert, key)
    async with aio_tls_server(server_credentials(cert, key)) as port:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.secure_channel(target, channel_credentials(old_ca.ca_file)) as ch:
            assert await ch.unary_unary(ECHO)(b"1", timeout=5) == b"echo:1"
        _rotate(second.cert_file, second.key_file, cert, key)
        async with grpc.aio.secure_channel(target, channel_credentials(new_ca.ca_file)) as ch:
            assert await ch.unary_unary(ECHO)(b"2", timeout=5) == b"echo:2"


@pytest.mark.timeout(20)
def test_an_encrypted_key_is_refused_without_asking_for_a_password(pki: Pki) -> None:
    """A passphrase-protected key fails at once (ssl.SSLError), never waits on a terminal."""
    from cryptography.hazmat.primitives import serialization

    pair = pki.server()
    key = serialization.load_pem_private_key(pair.key, None)
    locked = pki.directory / "locked.key"
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(ssl.SSLError):
        server_credentials(pair.cert_file, locked)
