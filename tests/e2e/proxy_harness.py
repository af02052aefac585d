"""Differential harness: the same configuration, backends and client traffic against
the real HAProxy 2.6 and `edgestick proxy`, each a real process on loopback.

A configuration is a template with `{FE}` / `{FE2}`... (frontend ports, different for
each proxy), `{S1}`... (backend ports, shared) and `{SOCK}` (stats socket path).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
PYTHON = sys.executable
ECHO = Path(__file__).resolve().parent / "echo_backend.py"


@contextmanager
def workdir():
    """A private temporary folder, removed afterwards. (Not pytest's tmp_path: pytest
    sessions running at the same time prune each other's base folders.)"""
    path = Path(tempfile.mkdtemp(prefix="edgestick-e2e-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_tmp():
    """Fixture: a private temporary folder (see workdir)."""
    with workdir() as path:
        yield path


def free_ports(n: int) -> list[int]:
    """Ports free on every address, IPv4 and IPv6 (a dual-stack wildcard bind)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 10.0,
              host: str = "127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def seed_section(number: int) -> str:
    """Configuration N of tests/fixtures/seed-configs.cfg, as users wrote it."""
    text = (FIXTURES / "seed-configs.cfg").read_text()
    parts = re.split(r"^# --- (\d)\. .*$", text, flags=re.M)
    for i in range(1, len(parts), 2):
        if int(parts[i]) == number:
            body = parts[i + 1].split("# --- Monitoring")[0]
            return body
    raise KeyError(number)


def rewrite_addresses(section: str, mapping: dict[str, str]) -> str:
    """Replace the article's addresses (`10.0.1.10:8080`, `*:80`) as the tests need."""
    for old, new in mapping.items():
        section = section.replace(old, new)
    return section


class Backends:
    """The echo application servers (one process), shared by both proxies."""

    def __init__(self, names: list[str]):
        self.ports = dict(zip(names, free_ports(len(names))))
        self.proc = None

    def start(self):
        args = [f"{n}={p}" for n, p in self.ports.items()]
        self.proc = subprocess.Popen([PYTHON, str(ECHO), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", line
        return self

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self):
        self.kill()
        self.start()


class RunningProxy:
    def __init__(self, kind: str, proc: subprocess.Popen, ports: list[int], sock: str,
                 cfg_path: str):
        self.kind, self.proc, self.ports, self.sock, self.cfg_path = kind, proc, ports, sock, cfg_path

    @property
    def port(self) -> int:
        return self.ports[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cli(self, command: str, timeout: float = 5.0) -> bytes:
        """One runtime API command (non-interactive), the reply bytes."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock)
        s.sendall(command.encode() + b"\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        s.close()
        return out


def start_proxy(kind: str, template: str, backends: Backends, tmp: Path, n_frontends: int = 1,
                haproxy_bin: str = "haproxy", extra_args: list[str] | None = None,
                wait_ports: int | None = None, attempts: int = 3) -> RunningProxy:
    """Start one proxy on the template; its output goes to <tmp>/<kind>.log. Ports are
    picked free, and picked again if another process took one meanwhile."""
    for attempt in range(attempts):
        ports = free_ports(n_frontends)
        sock = str(tmp / f"{kind}.sock")
        subs = {"SOCK": sock}
        for i, p in enumerate(ports):
            subs["FE" if i == 0 else f"FE{i + 1}"] = str(p)
        for name, p in backends.ports.items():
            subs[name.upper()] = str(p)
        text = template
        for k, v in subs.items():
            text = text.replace("{" + k + "}", v)
        cfg_path = tmp / f"{kind}.cfg"
        cfg_path.write_text(text)
        if kind == "haproxy":
            argv = [haproxy_bin, "-db", "-f", str(cfg_path)]
        else:
            argv = [PYTHON, "-m", "edgestick", "proxy", "-f", str(cfg_path)]
        argv += extra_args or []
        log = open(tmp / f"{kind}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp))
        log.close()
        try:
            for p in ports[:wait_ports]:
                wait_port(p, proc)
            if "stats socket" in text:
                deadline = time.monotonic() + 10
                while not os.path.exists(sock):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("no stats socket")
                    time.sleep(0.02)
        except (RuntimeError, TimeoutError):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            out = (tmp / f"{kind}.log").read_text(errors="replace")
            if attempt + 1 < attempts and ("in use" in out or "bind" in out):
                continue
            raise RuntimeError(f"{kind} did not start: {out[-2000:]}")
        return RunningProxy(kind, proc, ports, sock, str(cfg_path))
    raise AssertionError("unreachable")


@contextmanager
def both(template: str, backends: Backends, tmp: Path, haproxy_bin: str, n_frontends: int = 1,
         extra_args: list[str] | None = None, wait_ports: int | None = None):
    """HAProxy and edgestick on the same template, stopped at the end."""
    (tmp / "h").mkdir(exist_ok=True)
    (tmp / "e").mkdir(exist_ok=True)
    h = start_proxy("haproxy", template, backends, tmp / "h", n_frontends, haproxy_bin,
                    extra_args, wait_ports)
    try:
        e = start_proxy("edgestick", template, backends, tmp / "e", n_frontends,
                        extra_args=extra_args, wait_ports=wait_ports)
    except Exception:
        h.stop()
        raise
    try:
        yield h, e
    finally:
        e.stop()
        h.stop()


# ------------------------------------------------------------------ clients

class Response:
    def __init__(self, raw_head: bytes, body: bytes):
        self.raw_head = raw_head
        lines = raw_head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers = [tuple(x.split(": ", 1)) for x in lines[1:] if x]
        self.body = body

    def header(self, name: str):
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def server(self):
        for line in self.body.decode("latin-1").splitlines():
            if line.startswith("server="):
                return line[7:]
        return None

    def normalised(self):
        """Status line and headers, without what legitimately differs (date)."""
        return (self.status_line, [h for h in self.headers if h[0].lower() != "date"])


_TLS = []


def _client_tls() -> ssl.SSLContext:
    if not _TLS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _TLS.append(ctx)
    return _TLS[0]


class Client:
    """Raw HTTP/1.1 client on one TCP connection, optionally from a chosen source address."""

    def __init__(self, port: int, src: str | None = None, timeout: float = 5.0,
                 tls: bool = False):
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        if src:
            self.sock.bind((src, 0))
        self.sock.connect(("127.0.0.1", port))
        if tls:
            self.sock = _client_tls().wrap_socket(self.sock)
        self.buf = b""
        self.port = port

    def send(self, raw: bytes):
        self.sock.sendall(raw)

    def _fill(self) -> bool:
        d = self.sock.recv(65536)
        if not d:
            return False
        self.buf += d
        return True

    def read_response(self, method: str = "GET") -> Response | None:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        i = self.buf.index(b"\r\n\r\n")
        head, self.buf = self.buf[:i], self.buf[i + 4:]
        r = Response(head, b"")
        te = (r.header("transfer-encoding") or "").lower()
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            return r
        if "chunked" in te:
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    if not self._fill():
                        return None
                j = self.buf.index(b"\r\n")
                size = int(self.buf[:j].split(b";")[0], 16)
                self.buf = self.buf[j + 2:]
                while len(self.buf) < size + 2:
                    if not self._fill():
                        return None
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
            r.body = body
            return r
        cl = r.header("content-length")
        if cl is not None:
            n = int(cl)
            while len(self.buf) < n:
                if not self._fill():
                    break
            r.body, self.buf = self.buf[:n], self.buf[n:]
            return r
        while self._fill():
            pass
        r.body, self.buf = self.buf, b""
        return r

    def request(self, path: str = "/", method: str = "GET", headers: list[tuple[str, str]] = (),
                close: bool = False, body: bytes | None = None) -> Response | None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        if close:
            lines.append("Connection: close")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        return self.read_response(method)

    def closed_by_peer(self, timeout: float = 2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def one_request(port: int, path: str = "/", src: str | None = None,
                headers: list[tuple[str, str]] = (), method: str = "GET",
                tls: bool = False) -> Response:
    c = Client(port, src, tls=tls)
    try:
        return c.request(path, method, headers, close=True)
    finally:
        c.close()


def raw_exchange(port: int, raw: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes, read until the peer closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout)
    s.sendall(raw)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (TimeoutError, socket.timeout):
        out += b"<open>"
    except ConnectionResetError:
        out += b"<reset>"
    s.close()
    return out


def exchange_and_state(port: int, path: str, close: bool, wait: float = 0.6) -> bytes:
    """One GET (with `Connection: close` or not): the response bytes, then <EOF> when
    the proxy closed the connection or <open> when it kept it (`wait` seconds)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    conn = "Connection: close\r\n" if close else ""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n{conn}\r\n".encode())
    data = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                return data + b"<EOF>"
            data += d
    except socket.timeout:
        return data + b"<open>"
    finally:
        s.close()


def wait_socket(path: str, timeout: float = 10.0) -> None:
    """A proxy's frontends listen a moment before its stats socket answers."""
    from edgestick.control.runtime_client import RuntimeClient
    deadline = time.monotonic() + timeout
    while True:
        try:
            RuntimeClient(path, timeout=1).command("show info")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def requests(port: int, src: str, path: str, count: int) -> list[int]:
    """The statuses of `count` GETs of `path` on one keep-alive connection from `src`."""
    client = Client(port, src)
    try:
        return [client.request(path).status for _ in range(count)]
    finally:
        client.close()


def stat_row(proxy, pxname: str, svname: str, cols) -> dict[str, str]:
    """Columns `cols` of one `show stat` row (pxname, svname: FRONTEND, BACKEND or a
    server)."""
    lines = proxy.cli("show stat").decode().splitlines()
    head = lines[0][2:].split(",")
    for line in lines[1:]:
        f = line.split(",")
        if f[:2] == [pxname, svname]:
            return {c: f[head.index(c)] for c in cols}
    raise AssertionError(f"no show stat row {pxname}/{svname}")


def settled_stat_row(proxy, pxname: str, svname: str, cols, timeout: float = 5.0) -> dict:
    """Like stat_row, read at an instant when no check of the server is under way
    (check_status without HAProxy's '* ' mark) and its first check has ended."""
    deadline = time.monotonic() + timeout
    while True:
        row = stat_row(proxy, pxname, svname, tuple(dict.fromkeys(("check_status",) + tuple(cols))))
        status = row["check_status"]
        if (not status.startswith("* ") and status not in ("INI", "")) \
                or time.monotonic() >= deadline:
            return {c: row[c] for c in cols}
        time.sleep(0.05)


def mask_table(dump: bytes) -> list[str]:
    """`show table` output with pointers and exp masked (they differ by nature)."""
    out = []
    for line in dump.decode().splitlines():
        line = re.sub(r"^0x[0-9a-f]+:", "PTR:", line)
        line = re.sub(r" exp=\d+", " exp=X", line)
        out.append(line)
    return out


def self_signed_cert(directory: Path) -> str:
    """A throw-away certificate + key in one PEM file (HAProxy's `crt` format)."""
    key, crt, pem = directory / "key.pem", directory / "crt.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return str(pem)
