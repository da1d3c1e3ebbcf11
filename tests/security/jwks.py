"""A real JWKS endpoint on loopback (http.server in a thread) and signing keys for tests.

The endpoint serves whatever :attr:`JwksServer.mode` says: the current keys, or a hostile
answer (huge, slow, not JSON, duplicate key ids, a server error). Every request is counted.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["JwksServer", "SigningKey", "jwks_server"]


class SigningKey:
    """An EC P-256 key pair with a key id: signs tokens, publishes its public JWK."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK (with ``kid``, ``use`` and ``alg``)."""
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "ES256"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """A compact JWT of ``claims`` signed with ES256 (``kid`` set unless overridden)."""
        return jwt.encode(claims, self.private, algorithm="ES256",
                          headers={"kid": self.kid, **header})


class JwksServer:
    """The running endpoint: set :attr:`keys` and :attr:`mode`; read :attr:`requests`."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.mode = "ok"
        self.requests = 0
        self.release = threading.Event()  # ends a "slow" answer
        self.url = ""

    def body(self) -> bytes:
        """What the endpoint answers now."""
        document = {"keys": [k.jwk() for k in self.keys]}
        if self.mode == "huge":
            return json.dumps({"keys": [self.keys[0].jwk()] * 5000}).encode()
        if self.mode == "not_json":
            return b"<html>surprise</html>"
        if self.mode == "not_jwks":
            return b'["keys"]'
        if self.mode == "duplicate":
            twin = SigningKey(self.keys[0].kid)
            return json.dumps({"keys": [*document["keys"], twin.jwk()]}).encode()
        return json.dumps(document).encode()


@contextlib.contextmanager
def jwks_server() -> Iterator[JwksServer]:
    """Serve a :class:`JwksServer` on 127.0.0.1:<free port>/jwks; stop it after."""
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            if state.mode == "error":
                self.send_error(503)
                return
            if state.mode == "slow":
                state.release.wait(5)  # bounded: the test releases it when done
            body = state.body()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if state.mode != "huge":  # a huge answer without Content-Length: read to learn
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may give up mid-body
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              name="jwks-test", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
