"""Connections to servers over TLS (`server ... ssl verify ca-file sni verifyhost`, TLS
health checks) and with a PROXY protocol header (`send-proxy`, `send-proxy-v2`), compared
with HAProxy 2.6: the same TLS server (a HAProxy `bind ... ssl` listener that reports the
SNI it got) and the same PROXY-reading server behind both proxies."""
import socket
import struct
import subprocess
import threading
import time

import pytest

from proxy_harness import (Backends, both, free_ports, raw_exchange, settled_stat_row,
                           wait_port, workdir)

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    retries 1

frontend fe
    bind 127.0.0.1:{FE}
    use_backend %[req.hdr(x-backend)]

backend no_verify
    server t 127.0.0.1:{TLS} ssl verify none
backend good_ca
    server t 127.0.0.1:{TLS} ssl verify required ca-file {CA}
backend other_ca
    server t 127.0.0.1:{TLS} ssl verify required ca-file {OTHER_CA}
backend sni_const
    server t 127.0.0.1:{TLS} ssl verify required ca-file {CA} sni str(www.example.com)
backend sni_req
    server t 127.0.0.1:{TLS} ssl verify required ca-file {CA} sni req.hdr(x-sni)
backend host_bad
    server t 127.0.0.1:{TLS} ssl verify required ca-file {CA} verifyhost nope.example.net
backend host_wild
    server t 127.0.0.1:{TLS} ssl verify required ca-file {CA} verifyhost a.example.org
backend tls12_default
    server t 127.0.0.1:{TLS12} ssl verify none
backend tls12_allowed
    server t 127.0.0.1:{TLS12} ssl verify none ssl-min-ver TLSv1.2
backend proxy_v1
    server p 127.0.0.1:{PP} send-proxy
backend proxy_v2
    server p 127.0.0.1:{PP} send-proxy-v2
backend checked_proxy
    server p 127.0.0.1:{PP2} send-proxy check inter 200ms
backend checked
    option httpchk GET /health
    server t 127.0.0.1:{TLS} ssl verify none check inter 200ms
    server plain 127.0.0.1:{TLS} check inter 200ms
"""

TLS_SERVER = """
global
    nbthread 1
defaults
    mode http
    timeout client 5s
listen tls
    bind 127.0.0.1:{port} ssl crt {pem}
    http-request return status 200 content-type text/plain lf-string "sni=%[ssl_fc_sni] path=%[path]\\n"
listen tls12
    bind 127.0.0.1:{port12} ssl crt {pem} ssl-max-ver TLSv1.2
    http-request return status 200 content-type text/plain lf-string "%[ssl_fc_protocol]\\n"
"""


def _cert(d, name, subject, san):
    key, crt, pem = d / f"{name}.key", d / f"{name}.crt", d / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", subject, "-addext",
                    f"subjectAltName={san}"], check=True, capture_output=True)
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return str(crt), str(pem)


class ProxyReader:
    """A server that reads a PROXY header (v1 or v2) at the start of each connection and
    answers every request on it with that header, hex-encoded."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.headers: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(5)
        buf = b""
        try:
            while not (buf.startswith(b"PROXY") and b"\r\n" in buf or len(buf) >= 16
                       and len(buf) >= 16 + struct.unpack("!H", buf[14:16])[0]):
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            if buf.startswith(b"PROXY"):
                end = buf.index(b"\r\n") + 2
            else:
                end = 16 + struct.unpack("!H", buf[14:16])[0]
            header, buf = buf[:end], buf[end:]
            self.headers.append(header)
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(4096)
                    if not d:
                        return
                    buf += d
                _, buf = buf.split(b"\r\n\r\n", 1)
                body = header.hex().encode() + b"\n"
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def setup(haproxy_bin):
    with workdir() as d:
        ca, pem = _cert(d, "server", "/CN=tls.test",
                        "DNS:www.example.com,DNS:*.example.org")
        other_ca, _ = _cert(d, "other", "/CN=other.test", "DNS:other.test")
        tls_port, tls12_port = free_ports(2)
        (d / "tls.cfg").write_text(TLS_SERVER.format(port=tls_port, port12=tls12_port, pem=pem))
        tls = subprocess.Popen([haproxy_bin, "-db", "-f", str(d / "tls.cfg")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        reader, check_reader = ProxyReader(), ProxyReader()
        b = Backends([])
        b.ports.update({"tls": tls_port, "tls12": tls12_port, "pp": reader.port,
                        "pp2": check_reader.port})
        template = TEMPLATE.replace("{CA}", ca).replace("{OTHER_CA}", other_ca)
        try:
            wait_port(tls_port, tls)
            with both(template, b, d, haproxy_bin) as pair:
                yield pair, check_reader
        finally:
            reader.close()
            check_reader.close()
            tls.kill()
            tls.wait()


def _ask(port, backend, path="/x", extra=""):
    raw = (f"GET {path} HTTP/1.1\r\nHost: a\r\nX-Backend: {backend}\r\n{extra}"
           "Connection: close\r\n\r\n").encode()
    out = raw_exchange(port, raw)
    status = out.split(b"\r\n", 1)[0]
    return status, out.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in out else b""


@pytest.mark.parametrize("backend,extra", [
    ("no_verify", ""), ("good_ca", ""), ("other_ca", ""), ("sni_const", ""),
    ("sni_req", "X-SNI: www.example.com\r\n"), ("sni_req", "X-SNI: b.example.org\r\n"),
    ("sni_req", "X-SNI: wrong.example.net\r\n"), ("sni_req", ""), ("host_bad", ""),
    ("host_wild", ""), ("tls12_default", ""), ("tls12_allowed", "")])
def test_tls_to_servers_as_haproxy(setup, backend, extra):
    """Status and what the TLS server saw (the SNI), for verification that passes and
    fails (unknown CA, a name that does not match the SNI or `verifyhost`)."""
    (h, e), _ = setup
    got_h, got_e = _ask(h.port, backend, extra=extra), _ask(e.port, backend, extra=extra)
    assert got_e[0].split(b" ")[1] == got_h[0].split(b" ")[1], (got_h, got_e)
    if got_h[0].startswith(b"HTTP/1.1 200"):
        assert got_e[1] == got_h[1]
    if backend == "tls12_default":      # the global ssl-default-server-options: TLS 1.3
        assert got_e[0].startswith(b"HTTP/1.1 503"), got_e
    if backend == "tls12_allowed":      # the server line's own ssl-min-ver wins
        assert got_e[1] == b"TLSv1.2\n", got_e


def test_sni_per_request_connections_are_not_shared(setup):
    """Keep-alive on the client side, SNI changing per request: each request reaches the
    server with its own SNI (a pooled connection is reused only for the same one)."""
    (_, e), _ = setup
    s = socket.create_connection(("127.0.0.1", e.port))
    try:
        for sni in ("www.example.com", "b.example.org", "www.example.com"):
            s.sendall(f"GET /k HTTP/1.1\r\nHost: a\r\nX-Backend: sni_req\r\nX-SNI: {sni}\r\n\r\n"
                      .encode())
            data = b""
            while b"path=/k\n" not in data:
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
            assert f"sni={sni} ".encode() in data, data
    finally:
        s.close()


def _proxy_header(port, backend):
    """(the PROXY header the server got, hex-decoded; the client's own port)."""
    s = socket.create_connection(("127.0.0.1", port))
    try:
        local = s.getsockname()[1]
        s.sendall(f"GET /p HTTP/1.1\r\nHost: a\r\nX-Backend: {backend}\r\nConnection: close"
                  "\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return bytes.fromhex(data.split(b"\r\n\r\n", 1)[1].strip().decode()), local


def test_send_proxy_v1_as_haproxy(setup):
    (h, e), _ = setup
    lines = {}
    for p in (h, e):
        header, local = _proxy_header(p.port, "proxy_v1")
        words = header.decode().split()
        assert words[4:] == [str(local), str(p.port)], words     # source and dest ports
        assert header.endswith(b"\r\n")
        lines[p.kind] = words[:4]
    assert lines["edgestick"] == lines["haproxy"] == ["PROXY", "TCP4", "127.0.0.1", "127.0.0.1"]


def test_send_proxy_v2_as_haproxy(setup):
    (h, e), _ = setup
    got = {}
    for p in (h, e):
        header, local = _proxy_header(p.port, "proxy_v2")
        assert struct.unpack("!HH", header[-4:]) == (local, p.port)
        got[p.kind] = header[:-4]
    assert got["edgestick"] == got["haproxy"]
    assert got["haproxy"][12:16] == b"\x21\x11\x00\x0c"      # PROXY, TCP over IPv4, 12 bytes


def test_tls_health_checks_as_haproxy(setup):
    """A TLS check (inherited from `ssl`) gets the TLS server's 200; a plain check against
    the TLS port fails at layer 7 for both."""
    (h, e), _ = setup
    time.sleep(1.0)
    cols = ("status", "check_status", "check_code")
    for srv in ("t", "plain"):
        assert settled_stat_row(e, "checked", srv, cols) \
            == settled_stat_row(h, "checked", srv, cols), srv
    assert settled_stat_row(e, "checked", "t", cols)["check_status"] == "L7OK"


def test_checks_send_the_proxy_header_as_haproxy(setup):
    """`send-proxy` with `check` (and no check port): checks start with a PROXY header
    too; both proxies send the same kind (ports aside)."""
    (h, e), reader = setup
    time.sleep(0.6)
    seen = {b" ".join(x.split()[:4]) for x in reader.headers}
    assert seen == {b"PROXY TCP4 127.0.0.1 127.0.0.1"} and len(reader.headers) >= 4, seen
    assert all(x.split()[5] == str(reader.port).encode() for x in reader.headers)
