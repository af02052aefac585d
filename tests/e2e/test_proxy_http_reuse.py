"""`http-reuse never` compared with HAProxy 2.6: a server connection serves one client
connection only (its keep-alive requests), never another client's; and the keyword's
errors. The server answers each request with the port its connection comes from."""
import socket
import threading

import pytest

from proxy_harness import Backends, both, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout http-keep-alive 5s

frontend fe
    bind 127.0.0.1:{FE}
    default_backend bk

backend bk
    http-reuse never
    server s 127.0.0.1:{PORTS}
"""


class PortServer:
    """Answers every request with its connection's peer port (keep-alive)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, peer[1]), daemon=True).start()

    @staticmethod
    def _serve(c, port):
        buf = b""
        c.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(4096)
                    if not d:
                        return
                    buf += d
                _, buf = buf.split(b"\r\n\r\n", 1)
                body = b"%d" % port
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            c.close()


def _ask(s: socket.socket) -> bytes:
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    server = PortServer()
    b = Backends([])
    b.ports["ports"] = server.port
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin) as p:
            yield p
    finally:
        server.sock.close()


def test_http_reuse_never_binds_server_connections_to_clients(pair):
    """Two clients, requests interleaved, each keep-alive: each client keeps its own
    server connection, and a client that comes after the first has gone still gets a
    new one (for both proxies)."""
    for p in pair:
        a = socket.create_connection(("127.0.0.1", p.port))
        b = socket.create_connection(("127.0.0.1", p.port))
        try:
            a1, b1, a2, b2 = _ask(a), _ask(b), _ask(a), _ask(b)
        finally:
            a.close()
        c = socket.create_connection(("127.0.0.1", p.port))
        try:
            c1 = _ask(c)
        finally:
            b.close()
            c.close()
        assert a1 == a2 and b1 == b2 and a1 != b1, (p.kind, a1, a2, b1, b2)
        assert c1 not in (a1, b1), (p.kind, c1)


@pytest.mark.parametrize("mode,valid", [("never", True), ("safe", True), ("aggressive", True),
                                        ("always", True), ("sometimes", False), ("", False)])
def test_http_reuse_keyword_as_haproxy(haproxy_bin, mode, valid):
    import subprocess
    import sys
    with workdir() as d:
        cfg = d / "r.cfg"
        cfg.write_text("defaults\n    mode http\n    timeout client 1s\n    timeout server 1s\n"
                       f"    timeout connect 1s\nbackend b\n    http-reuse {mode}\n")
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert (r.returncode in (0, 2)) == valid, (argv[0], r.stdout + r.stderr)
            if not valid:
                assert "'http-reuse' only supports 'never', 'safe', 'aggressive', 'always'." \
                    in r.stdout + r.stderr
