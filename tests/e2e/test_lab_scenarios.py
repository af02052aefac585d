"""The lab's backend and HTTP scenarios on loopback: real processes, real sockets."""
import json
import socket
import subprocess
import sys
import time

import pytest

from edgestick.lab import scenarios


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def backends():
    """Two lab backends in one process, as the lab's backend host runs them."""
    ports = [free_port(), free_port()]
    proc = subprocess.Popen([sys.executable, "-m", "edgestick.lab.backend",
                             "--bind", f"127.0.0.1:{ports[0]}", "--name", "s1",
                             "--bind", f"127.0.0.1:{ports[1]}", "--name", "s2"],
                            stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in ports]
        assert all("listening" in line for line in lines), lines
        yield ports
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def test_backend_routes_and_names(backends):
    s1, s2 = backends
    reply = raw_request(s1, b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-server: s1\r\n" in reply
    assert reply.endswith(b"\r\n\r\ns1 /x\n")
    reply = raw_request(s2, b"POST /login HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n"
                            b"connection: close\r\n\r\nu=1")
    assert reply.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and b"x-server: s2" in reply
    # Two pipelined requests on one keep-alive connection, then HTTP/1.0 closes.
    reply = raw_request(s1, b"GET /health HTTP/1.1\r\nhost: a\r\n\r\n"
                            b"GET /a HTTP/1.0\r\n\r\n")
    assert reply.count(b"HTTP/1.1 200 OK") == 2 and reply.endswith(b"s1 /a\n")
    assert raw_request(s1, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")


@pytest.mark.parametrize("keepalive", [True, False])
def test_legit_counts_successes_and_latencies(backends, keepalive):
    r = scenarios.legit(f"127.0.0.1:{backends[0]}", count=300, duration=10, rate=None,
                        keepalive=keepalive, concurrency=3)
    assert (r.sent, r.ok, r.statuses, r.errors) == (300, 300, {200: 300}, {})
    # the first answer is one of the first requests in flight (3 workers race for it)
    assert r.success_rate == 1.0 and r.first_status_at[200] <= 3
    assert 0 < r.latency_ms["p50"] <= r.latency_ms["p99"] <= r.latency_ms["max"]


def test_legit_is_paced_and_bounded_by_duration(backends):
    r = scenarios.legit(f"127.0.0.1:{backends[0]}", count=1000, duration=1.0, rate=10)
    assert 1 <= r.sent <= 11 and r.ok == r.sent     # paced: at most 10 in one second
    assert r.seconds < 3.5


def test_cred_stuffing_gets_401s_and_http_flood_binds_its_sources(backends):
    r = scenarios.cred_stuffing(f"127.0.0.1:{backends[1]}", count=50, duration=5)
    assert r.statuses == {401: 50} and r.ok == 0 and r.failed == 50
    r = scenarios.http_flood(f"127.0.0.1:{backends[0]}", count=400, duration=10,
                             sources=["127.0.0.2", "127.0.0.3"], concurrency=4)
    assert r.statuses == {200: 400} and r.params["sources"] == ["127.0.0.2", "127.0.0.3"]


def test_unreachable_target_is_counted_not_raised():
    port = free_port()
    r = scenarios.legit(f"127.0.0.1:{port}", count=3, duration=5, rate=None)
    assert r.sent == 3 and r.ok == 0 and r.errors == {"refused": 3}


def test_cli_prints_a_parsable_result(backends):
    argv = scenarios.scenario_argv("legit", f"127.0.0.1:{backends[1]}", count=20, rate=0,
                                   new_connections=True, duration=5)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    r = scenarios.parse_result(done.stdout)
    assert (r.name, r.sent, r.ok, r.params["mode"]) == ("legit", 20, 20, "new")
    assert "success 100.0%" in done.stderr
    assert json.loads(done.stdout)["success_rate"] == 1.0
    bad = subprocess.run([sys.executable, "-m", "edgestick.lab.scenarios", "nope", "--target", "x"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_backend_reports_what_it_answered_when_stopped():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgestick.lab.backend", "--bind", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "backend s1 listening" in proc.stdout.readline()
        assert scenarios.legit(f"127.0.0.1:{port}", count=120, rate=None).ok == 120
        assert scenarios.cred_stuffing(f"127.0.0.1:{port}", count=30).statuses == {401: 30}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert out.strip() == "backend s1 answered 150 (200:120 401:30)"
    bad = subprocess.run([sys.executable, "-m", "edgestick.lab.backend", "--bind", "nope"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "bad bind 'nope'" in bad.stderr


def test_a_server_closing_idle_keepalive_connections_is_counted_not_raised():
    """The server answers keep-alive but closes right after (as a proxy's `tcp-request
    connection reject` or an idle timeout does): the client reconnects or counts it."""
    import socket
    import struct
    import threading
    import time

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    time.sleep(0.005)
                    # abortive close (RST), as `tcp-request connection reject` does
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = scenarios.legit(f"127.0.0.1:{port}", count=20, duration=10, rate=50, keepalive=True)
    finally:
        stop.set()
        t.join(2)
        srv.close()
    assert r.sent == 20 and r.ok + sum(r.errors.values()) == 20 and r.ok >= 10
