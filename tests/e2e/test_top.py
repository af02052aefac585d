"""`edgestick top` against a real HAProxy 2.6 stats socket (the proxy side alone; the
shield side and the join are tested in tests/kernel/test_provision.py)."""
import signal
import socket
import subprocess
import sys
import time

import pytest

from edgestick.lab import scenarios

EDGESTICK = [sys.executable, "-m", "edgestick"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(address, timeout: float = 10.0) -> None:
    """Until a connect succeeds (a port, or a unix socket path)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(family) as s:
                s.connect(address)
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {address}")


@pytest.fixture
def haproxy_edge(haproxy_bin, tmp_path):
    """HAProxy with seed configuration 3's rule (+ http_err_rate) in front of a lab backend."""
    front, back = free_port(), free_port()
    sock = tmp_path / "haproxy.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend http_front
    bind 127.0.0.1:{front}
    stick-table type ip size 100k expire 30s store http_req_rate(10s),http_err_rate(10s),conn_cur
    http-request track-sc0 src
    http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt 100 }}
    default_backend app
backend app
    server s1 127.0.0.1:{back}
""")
    procs = [subprocess.Popen([sys.executable, "-m", "edgestick.lab.backend",
                               "--bind", f"127.0.0.1:{back}", "--name", "s1"],
                              stdout=subprocess.DEVNULL),
             subprocess.Popen([haproxy_bin, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        wait_ready(("127.0.0.1", back))
        wait_ready(str(sock))       # not the frontend: a bare connect counts as a request
        yield front, str(sock)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def top(*args, timeout=20):
    return subprocess.run([*EDGESTICK, "top", *args], capture_output=True, text=True, timeout=timeout)


def test_top_once_shows_haproxy_table_and_frontend_counters(haproxy_edge):
    port, sock = haproxy_edge
    legit = scenarios.legit(f"127.0.0.1:{port}", count=150, rate=None, duration=10)
    assert legit.statuses == {200: 100, 429: 50}          # seed 3: the 101st is refused
    stuffing = scenarios.cred_stuffing(f"127.0.0.1:{port}", count=30, source="127.0.0.2")
    assert stuffing.statuses == {401: 30}

    done = top("-S", sock, "--once")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "frontend http_front: requests 180  2xx 100  4xx 80  5xx 0  denied (403/429) 50" in out
    assert "table http_front: used 2/102400" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("source"))
    assert header.split() == ["source", "conn_cur", "http_req_rate(10s)", "http_err_rate(10s)"]
    rows = [line.split() for line in lines if line.startswith("127.0.0.")]
    # Busiest first; no shield socket, so no XDP columns.
    assert rows == [["127.0.0.1", "0", "150", "50"], ["127.0.0.2", "0", "30", "30"]]
    assert "shield" not in out

    assert top("-S", sock, "--once", "-n", "1").stdout.count("127.0.0.") == 1


def test_top_errors(haproxy_edge, tmp_path):
    _, sock = haproxy_edge
    done = top("-S", sock, "--once", "--table", "nope")
    assert done.returncode == 0 and "! proxy: no table 'nope' (tables: http_front)" in done.stdout
    assert "frontend http_front: requests 0" in done.stdout
    done = top("-S", str(tmp_path / "absent.sock"), "--once")
    assert done.returncode == 1 and "! proxy: cannot connect to" in done.stdout
    done = top("-S", "host:notaport", "--once")
    assert done.returncode == 2 and "invalid runtime API address" in done.stderr
    done = top("--once", "--shield", str(tmp_path / "x.sock"), "-n", "0")
    assert done.returncode == 2 and "must be positive" in done.stderr


def test_top_live_refreshes_until_interrupted(haproxy_edge):
    _, sock = haproxy_edge
    proc = subprocess.Popen([*EDGESTICK, "top", "-S", sock, "--interval", "0.2"],
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    frames = out.split("\x1b[H\x1b[2J")
    assert len(frames) >= 3 and all("frontend http_front" in f for f in frames[1:])
