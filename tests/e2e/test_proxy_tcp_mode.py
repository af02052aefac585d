"""`mode tcp` compared with HAProxy 2.6: bytes relayed both ways (large transfers,
half-closes), the server each connection reaches (roundrobin, leastconn, source, stick
on src), tcp-request connection/content rules (a connection-rate limit, inspect-delay
with req.len, req.payload and req.ssl_sni), show table and show stat rows of the TCP
proxies, timeouts, and the mode errors of -c."""
import errno
import hashlib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from proxy_harness import (PYTHON, both, free_ports, mask_table, raw_exchange, stat_row,
                           workdir)

pytestmark = pytest.mark.haproxy
pytest.importorskip("edgestick.proxy.tcp_mode")


class TcpServers:
    """Echo servers in this process: each greets with its name, echoes what it reads,
    and on the client's FIN says `bye <bytes>` and closes (so a half-close must pass
    through the proxy both ways). Duck-types proxy_harness.Backends (`ports`)."""

    def __init__(self, names):
        self.socks = {}
        self.ports = {}
        for n in names:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            self.socks[n] = s
            self.ports[n] = s.getsockname()[1]
        self.stop = False
        for n, s in self.socks.items():
            threading.Thread(target=self._accept, args=(n, s), daemon=True).start()

    def _accept(self, name, lsock):
        while not self.stop:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(name, c), daemon=True).start()

    @staticmethod
    def _serve(name, c):
        c.settimeout(10)
        try:
            c.sendall(name.encode() + b"\n")
            total = 0
            while True:
                d = c.recv(65536)
                if not d:
                    break
                total += len(d)
                c.sendall(d)
            if name.startswith("mute"):     # slow to answer the FIN
                time.sleep(2)
            c.sendall(b"bye %d\n" % total)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop = True
        for s in self.socks.values():
            s.close()


def session(port, chunks=(b"hello",), src="127.0.0.1", pause=0.0, hold=None):
    """Connect (from `src`), send the chunks (`pause` s apart), shut the write side and
    read to the end: the bytes received, or ('RESET', bytes) when the proxy reset it."""
    got = b""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    except ConnectionResetError:        # reset by a tcp-request connection rule
        return ("RESET", got)
    try:
        for i, ch in enumerate(chunks):
            if i and pause:
                time.sleep(pause)
            s.sendall(ch)
        if hold is not None:
            hold.append(s)
            return None
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                return got
            got += d
    except (ConnectionResetError, BrokenPipeError):
        return ("RESET", got)
    except OSError as e:                # reset before our shutdown: not connected
        if e.errno != errno.ENOTCONN:
            raise
        return ("RESET", got)
    finally:
        if hold is None:
            s.close()


def finish(s):
    """End a held session: FIN, then everything the server sends."""
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    s.close()
    return got


def banner(s):
    """The server name a held session reached (its first line)."""
    got = b""
    while not got.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            break
        got += d
    return got.strip().decode()


BALANCE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s

listen rr
    bind 127.0.0.1:{FE8}
    balance roundrobin
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3} weight 2

listen lc
    bind 127.0.0.1:{FE2}
    balance leastconn
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}

listen bysrc
    bind 127.0.0.1:{FE3}
    balance source
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}

frontend limited
    bind 127.0.0.1:{FE4}
    tcp-request connection track-sc0 src
    tcp-request connection reject if { sc_conn_rate(0) gt 3 }
    stick-table type ip size 100 expire 1m store conn_cnt,conn_cur,conn_rate(10s),sess_cnt,sess_rate(10s),bytes_in_cnt,bytes_out_cnt,gpc0
    default_backend sticky

backend sticky
    stick-table type ip size 100 expire 1m store server_id,conn_cnt,bytes_in_cnt,bytes_out_cnt
    stick on src
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}

frontend inspect
    bind 127.0.0.1:{FE5}
    tcp-request inspect-delay 3s
    tcp-request content track-sc1 src table limited
    tcp-request content reject if { req.payload(0,3) -m bin 424144 }
    tcp-request content sc-inc-gpc0(1) if { req.len ge 4 }
    tcp-request content accept if { req.ssl_hello_type 1 }
    tcp-request content accept if { req.len ge 4 }
    use_backend only2 if { req.payload(0,4) -m bin 50494e47 }
    use_backend only3 if { req.ssl_sni -m end .three.test }
    default_backend only1

frontend idle
    bind 127.0.0.1:{FE6}
    timeout client 400ms
    default_backend only1

frontend prom
    mode http
    bind 127.0.0.1:{FE7}
    http-request use-service prometheus-exporter if { path /metrics }

# the one port the harness probes at startup (bound last: the others are up by then;
# a probe's connection would count in the proxies compared)
listen probed
    bind 127.0.0.1:{FE}
    server s1 127.0.0.1:{S1}

backend only1
    server s1 127.0.0.1:{S1}

backend only2
    server s2 127.0.0.1:{S2}

backend only3
    timeout tunnel 5s
    server s3 127.0.0.1:{S3}
"""


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    servers = TcpServers(["s1", "s2", "s3"])
    try:
        with workdir() as wd, both(BALANCE, servers, wd, haproxy_bin, 8, wait_ports=1) as p:
            yield p
    finally:
        servers.close()


def test_roundrobin_bytes_and_half_close(pair):
    h, e = pair
    out = []
    for p in (h, e):
        out.append([session(p.ports[7], (b"hello", b" world"), pause=0.02) for _ in range(8)])
    assert out[1] == out[0]
    assert out[0][0].split(b"\n", 1)[1] == b"hello worldbye 11\n"
    assert {x.split(b"\n")[0] for x in out[0]} == {b"s1", b"s2", b"s3"}


def test_large_transfer_both_ways(pair):
    data = bytes(range(256)) * (4 * 4096)          # 4 MiB
    results = []
    for p in pair:
        s = socket.create_connection(("127.0.0.1", p.ports[2]), timeout=10)
        got = []

        def reader():
            while True:
                d = s.recv(1 << 16)
                if not d:
                    break
                got.append(d)
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        t.join(20)
        s.close()
        raw = b"".join(got)
        name, _, rest = raw.partition(b"\n")
        results.append((name, len(rest), hashlib.sha256(rest[:len(data)]).hexdigest(),
                        rest[len(data):]))
    assert results[1] == results[0]
    assert results[0][1:] == (len(data) + len(b"bye %d\n" % len(data)),
                              hashlib.sha256(data).hexdigest(), b"bye %d\n" % len(data))


def test_leastconn_and_source(pair):
    out = []
    for p in pair:
        held = []
        names = []
        for _ in range(3):
            session(p.ports[1], (b"x",), hold=held)
            names.append(banner(held[-1]))
        finish(held.pop(0))             # the first server has one connection less now
        session(p.ports[1], (b"y",), hold=held)
        names.append(banner(held[-1]))
        for s in held:
            finish(s)
        srcs = [session(p.ports[2], (b"z",), src=f"127.0.0.{i}").split(b"\n")[0]
                for i in range(2, 10)]
        out.append((names, srcs))
    assert out[1] == out[0]
    assert len(set(out[0][1])) > 1


def test_connection_rate_limit_stick_on_src_and_tables(pair):
    out = []
    for p in pair:
        p.cli("clear table limited")
        p.cli("clear table sticky")
        got = [session(p.ports[3], (b"abc",), src="127.0.0.20") for _ in range(5)]
        got += [session(p.ports[3], (b"defg",), src="127.0.0.21") for _ in range(2)]
        time.sleep(0.2)
        out.append((got, mask_table(p.cli("show table limited")),
                    mask_table(p.cli("show table sticky"))))
    assert out[1] == out[0]
    got = out[0][0]
    assert [isinstance(g, tuple) for g in got] == [False] * 3 + [True] * 2 + [False] * 2
    assert got[0].split(b"\n")[0] == got[1].split(b"\n")[0] == got[2].split(b"\n")[0]


def _client_hello(name: str) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_content_rules_inspect_delay(pair):
    hello3 = _client_hello("www.three.test")
    hello_other = _client_hello("www.other.test")
    cases = [
        ((b"PI", b"NG"), 0.15),                 # waits for 4 bytes: only2
        ((b"PONG",), 0),                        # only1
        ((b"BA", b"D!"), 0.15),                 # rejected once the 3rd byte arrives
        ((hello3[:20], hello3[20:]), 0.15),     # SNI routing on a split ClientHello
        ((hello_other,), 0),
        ((b"ab",), 0),                          # FIN before 4 bytes: rules end, only1
    ]
    out = []
    for p in pair:
        p.cli("clear table limited")
        res = []
        for chunks, pause in cases:
            r = session(p.ports[4], chunks, src="127.0.0.30", pause=pause)
            if isinstance(r, bytes):
                r = r.split(b"\n")[0]           # the server reached
            res.append(r)
        time.sleep(0.2)
        out.append((res, mask_table(p.cli("show table limited"))))
    assert out[1] == out[0]
    assert out[0][0][:2] == [b"s2", b"s1"]
    assert out[0][0][3] == b"s3" and out[0][0][4] == b"s1"


def test_client_timeout(pair):
    out = []
    for p in pair:
        s = socket.create_connection(("127.0.0.1", p.ports[5]), timeout=5)
        t0 = time.monotonic()
        got = b""
        while True:
            d = s.recv(100)
            if not d:
                break
            got += d
        s.close()
        out.append((got, time.monotonic() - t0 < 4))
    # the silent client's side shuts (a FIN to the server, as if the client had sent
    # one): the server's goodbye still reaches it
    assert out[1] == out[0] == (b"s1\nbye 0\n", True)


STAT_SKIP = {"lastchg", "lastsess", "downtime", "slim", "rate", "conn_rate", "req_rate",
             "qtime", "ctime", "rtime", "ttime", "qtime_max", "ctime_max", "rtime_max",
             "ttime_max", "check_duration", "addr",
             "rate_max", "conn_rate_max",   # (where the second boundaries fall)
             "cli_abrt", "srv_abrt"}    # (which side closed first: a race on loopback)


def test_show_stat_rows(pair):
    rows = []
    for p in pair:
        lines = p.cli("show stat").decode().splitlines()
        head = lines[0][2:].split(",")
        got = {}
        for line in lines[1:]:
            f = line.split(",")
            if len(f) < 2 or f[0] not in ("limited", "sticky", "rr", "only2", "inspect", "idle"):
                continue
            got[(f[0], f[1])] = {c: v for c, v in zip(head, f) if c not in STAT_SKIP}
        rows.append(got)
    assert rows[1].keys() == rows[0].keys()
    for k in rows[0]:
        assert rows[1][k] == rows[0][k], k


MIXED = """
defaults
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    mode {FMODE}
    bind 127.0.0.1:10000
    default_backend be

backend be
    mode {BMODE}
    server s1 127.0.0.1:9
"""


def _check(argv, text, wd, name):
    path = wd / f"{name}.cfg"
    path.write_text(text)
    r = subprocess.run([*argv, "-c", "-f", str(path)], capture_output=True, text=True,
                       timeout=30, cwd=str(wd))
    alerts = [line.split(": ", 1)[-1] if "] " in line else line
              for line in (r.stdout + r.stderr).splitlines() if "ALERT" in line]
    return r.returncode, alerts


def test_check_mixed_modes(haproxy_bin):
    with workdir() as wd:
        text = MIXED.replace("{FMODE}", "http").replace("{BMODE}", "tcp")
        hr, ha = _check([haproxy_bin], text, wd, "h")
        er, ea = _check([PYTHON, "-m", "edgestick", "proxy"], text, wd, "e")
        assert hr == er == 1
        want = [a for a in ha if "incompatible" in a][0].split("config : ")[-1]
        assert any(want.replace("h.cfg", "e.cfg") in a for a in ea), (ha, ea)
        # a tcp frontend on an http backend: HAProxy upgrades the stream, edgestick says
        # it does not
        text = MIXED.replace("{FMODE}", "tcp").replace("{BMODE}", "http")
        er, ea = _check([PYTHON, "-m", "edgestick", "proxy"], text, wd, "e2")
        assert er == 1 and any("not supported by edgestick" in a for a in ea), ea
        for fm in ("tcp", "http"):
            text = MIXED.replace("{FMODE}", fm).replace("{BMODE}", fm)
            assert _check([haproxy_bin], text, wd, "h3")[0] == 0
            assert _check([PYTHON, "-m", "edgestick", "proxy"], text, wd, "e3")[0] == 0


def _metric_names(port, proxies):
    raw = raw_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    names, mine = set(), set()
    for line in raw.decode().splitlines():
        if line.startswith("haproxy_") and "{" in line:
            name = line.split("{")[0]
            names.add(name)
            if any(f'proxy="{p}"' in line for p in proxies):
                mine.add(name)
    return names, mine


def test_metrics_of_tcp_proxies(pair):
    """HAProxy's exporter leaves the HTTP metrics out for TCP proxies."""
    h, e = pair
    tcp = ("limited", "sticky", "rr", "inspect")
    h_all, h_tcp = _metric_names(h.ports[6], tcp)
    e_all, e_tcp = _metric_names(e.ports[6], tcp)
    assert e_tcp and e_tcp == h_tcp & e_all


MORE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode tcp
    timeout connect 500ms
    timeout client 5s
    timeout server 5s

# not probed at startup (bound first): a probe, a client gone at once, would race with
# their retries, round robin or PROXY header
listen redisp
    bind 127.0.0.1:{FE8}
    retries 1
    option redispatch
    balance roundrobin
    server dead 127.0.0.1:{DEAD}
    server s1 127.0.0.1:{S1}

listen retry2
    bind 127.0.0.1:{FE9}
    retries 2
    server dead 127.0.0.1:{DEAD}

listen noredisp
    bind 127.0.0.1:{FE10}
    retries 1
    server dead 127.0.0.1:{DEAD}
    server s1 127.0.0.1:{S1}

listen checked
    bind 127.0.0.1:{FE5}
    balance roundrobin
    server dead 127.0.0.1:{DEAD} check inter 200 fall 1 rise 1
    server s1 127.0.0.1:{S1} check inter 200
    server s2 127.0.0.1:{S2} check inter 200

listen matched
    bind 127.0.0.1:{FE6}
    balance roundrobin
    stick-table type ip size 10 expire 1m store server_id,conn_cnt
    stick match src
    stick store-request src if { src 127.0.0.50 }
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}

frontend proxied
    bind 127.0.0.1:{FE7} accept-proxy
    stick-table type ip size 10 expire 1m store conn_cnt,sess_cnt,bytes_in_cnt
    tcp-request connection track-sc1 src
    tcp-request session track-sc0 src
    default_backend only1

listen one_at_a_time
    bind 127.0.0.1:{FE11}
    maxconn 1
    server s1 127.0.0.1:{S1}

listen finwait
    bind 127.0.0.1:{FE12}
    timeout server-fin 300ms
    server mute 127.0.0.1:{MUTE}

# probed at startup
listen queued
    bind 127.0.0.1:{FE}
    timeout queue 3s
    server s1 127.0.0.1:{S1} maxconn 1

frontend sessions
    bind 127.0.0.1:{FE2}
    tcp-request session track-sc0 src table counted
    tcp-request session reject if { sc_sess_rate(0) gt 2 }
    tcp-request inspect-delay 2s
    tcp-request content set-var(sess.magic) req.payload(0,4)
    tcp-request content accept if { req.len ge 4 }
    use_backend only2 if { var(sess.magic) -m bin 50494e47 }
    default_backend only1

backend counted
    stick-table type ip size 10 expire 1m store sess_cnt,sess_rate(10s),conn_cnt,conn_cur,bytes_in_cnt,bytes_out_cnt

listen tunnel
    bind 127.0.0.1:{FE3}
    timeout client 300ms
    timeout server 300ms
    timeout tunnel 1500ms
    server s1 127.0.0.1:{S1}

frontend slowinspect
    bind 127.0.0.1:{FE4}
    timeout client 400ms
    tcp-request inspect-delay 3s
    tcp-request content accept if { req.len ge 4 }
    default_backend only1

backend only1
    server s1 127.0.0.1:{S1}

backend only2
    tcp-request content reject if { src 127.0.0.41 }
    server s2 127.0.0.1:{S2}
"""


@pytest.fixture(scope="module")
def more(haproxy_bin):
    servers = TcpServers(["s1", "s2", "mute"])
    servers.ports["dead"] = free_ports(1)[0]        # nothing listens there
    try:
        with workdir() as wd, both(MORE, servers, wd, haproxy_bin, 12, wait_ports=4) as p:
            yield p
    finally:
        servers.close()


def test_retries_and_redispatch(more):
    """Redispatched at once from a refused server (not persistent, round robin over
    two); retries on the same server without redispatch; the counters of each."""
    cols = ("stot", "econ", "wretr", "wredis", "lbtot", "bin", "bout")
    out = []
    for p in more:
        got = [session(p.ports[7], (b"r",)) for _ in range(4)]
        got += [session(p.ports[8], (b"r",))]
        got += [session(p.ports[9], (b"r",)) for _ in range(2)]
        rows = [stat_row(p, px, sv, cols) for px, svs in (
            ("redisp", ("dead", "s1", "BACKEND")), ("retry2", ("dead", "BACKEND")),
            ("noredisp", ("dead", "s1", "BACKEND"))) for sv in svs]
        out.append((got, rows))
    assert out[1] == out[0]
    assert all(g.startswith(b"s1\n") for g in out[0][0][:4])


def test_server_maxconn_queue(more):
    out = []
    for p in more:
        held = []
        session(p.ports[0], (b"a",), hold=held)
        first = banner(held[0])
        late = []
        t = threading.Thread(target=lambda: late.append(session(p.ports[0], (b"b",))))
        t.start()
        time.sleep(0.3)
        waited = (not late, [stat_row(p, "queued", sv, ("qcur", "scur", "stot"))
                             for sv in ("s1", "BACKEND")])
        rest = finish(held[0])
        t.join(10)
        out.append((first, rest, waited, late))
    assert out[1] == out[0]
    assert out[0][2][0] and out[0][3] == [b"s1\nbbye 1\n"]


def test_session_rules_and_variables(more):
    out = []
    for p in more:
        p.cli("clear table counted")
        got = []
        for chunks in ((b"PI", b"NG"), (b"PONG",), (b"PING",), (b"PING",)):
            r = session(p.ports[1], chunks, src="127.0.0.40", pause=0.1)
            got.append(r if isinstance(r, tuple) else r.split(b"\n")[0])
        time.sleep(0.2)
        out.append((got, mask_table(p.cli("show table counted")),
                    stat_row(p, "sessions", "FRONTEND", ("dses", "dcon", "stot", "conn_tot",
                                                         "bin", "bout"))))
    assert out[1] == out[0]
    assert out[0][0][:3] == [b"s2", b"s1", b"s2"] and isinstance(out[0][0][3], tuple)


def test_timeout_tunnel(more):
    out = []
    for p in more:
        s = socket.create_connection(("127.0.0.1", p.ports[2]), timeout=6)
        t0 = time.monotonic()
        got = b""
        while True:
            d = s.recv(100)
            if not d:
                break
            got += d
        s.close()
        waited = time.monotonic() - t0
        out.append((got, 1.0 < waited < 5))     # the tunnel timeout, not the 300 ms ones
    # both directions expire together: the server's goodbye no longer reaches the client
    assert out[1] == out[0] == (b"s1\n", True)


def test_health_checks(more):
    """A refused server goes DOWN on its checks; connections go to the others."""
    time.sleep(1.0)
    out = []
    for p in more:
        # (sorted: where round robin starts depends on when the startup probe came)
        got = sorted(session(p.ports[4], (b"c",)).split(b"\n")[0] for _ in range(4))
        rows = [stat_row(p, "checked", sv, ("status", "check_status", "chkdown",
                                            "check_rise", "check_fall", "act"))
                for sv in ("dead", "s1", "s2", "BACKEND")]
        for r in rows:          # ("* ": a check under way at that instant)
            r["check_status"] = r["check_status"].removeprefix("* ")
        out.append((got, rows))
    assert out[1] == out[0]
    assert set(out[0][0]) == {b"s1", b"s2"}


def test_stick_match_and_store_request(more):
    out = []
    for p in more:
        got = []
        for src in ("127.0.0.50", "127.0.0.51", "127.0.0.50", "127.0.0.51", "127.0.0.50"):
            got.append((src, session(p.ports[5], (b"m",), src=src).split(b"\n")[0]))
        out.append((got, mask_table(p.cli("show table matched"))))
    assert out[1] == out[0]
    # .50 stored and matched: always the same server; .51 never stored: round robin
    assert len({g for s, g in out[0][0] if s.endswith("50")}) == 1


def test_client_timeout_while_inspecting(more):
    """`timeout client` shorter than inspect-delay: a client silent that long is
    dropped before any server is chosen."""
    cols = ("stot", "bin", "bout")
    out = []
    for p in more:
        before = [stat_row(p, "only1", sv, cols) for sv in ("s1", "BACKEND")]
        s = socket.create_connection(("127.0.0.1", p.ports[3]), timeout=5)
        t0 = time.monotonic()
        s.sendall(b"ab")
        got = s.recv(100)
        s.close()
        time.sleep(0.1)
        after = [stat_row(p, "only1", sv, cols) for sv in ("s1", "BACKEND")]
        delta = [{c: int(a[c]) - int(b[c]) for c in cols} for a, b in zip(after, before)]
        out.append((got, time.monotonic() - t0 < 2.5, delta,
                    stat_row(p, "slowinspect", "FRONTEND", ("bin", "bout", "dreq"))))
    assert out[1] == out[0]
    # no server reached; the backend counts a session and the two bytes
    assert out[0][:3] == (b"", True, [{"stot": 0, "bin": 0, "bout": 0},
                                      {"stot": 1, "bin": 2, "bout": 0}])


def test_backend_content_rules(more):
    """The backend's own tcp-request content rules run after the switch."""
    out = []
    for p in more:
        got = [session(p.ports[1], (b"PING",), src=src) for src in ("127.0.0.41",
                                                                     "127.0.0.42")]
        got = [g if isinstance(g, tuple) else g.split(b"\n")[0] for g in got]
        out.append((got, stat_row(p, "sessions", "FRONTEND", ("dreq",)),
                    stat_row(p, "only2", "BACKEND", ("dreq", "stot", "bin"))))
    assert out[1] == out[0]
    assert out[0][0][1] == b"s2"


def test_accept_proxy(more):
    """A PROXY header's source is the stream's (session rules, what the server gets is
    the rest); connection rules saw the real address."""
    out = []
    for p in more:
        got = session(p.ports[6], (b"PROXY TCP4 198.18.0.7 127.0.0.1 40000 80\r\nhi",))
        bad = session(p.ports[6], (b"PROXY NONSENSE\r\nhi",))
        time.sleep(0.1)
        out.append((got, bad, mask_table(p.cli("show table proxied"))))
    assert out[1] == out[0]
    assert out[0][0] == b"s1\nhibye 2\n"


@pytest.mark.parametrize("algo", ["uri", "hdr(host)", "url_param x"])
def test_check_layer7_balance_in_tcp_warns(haproxy_bin, algo):
    """HAProxy warns and balances round robin (show stat's algo too)."""
    text = ("defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
            f"    timeout server 1s\nlisten l\n    bind 127.0.0.1:10000\n    balance {algo}\n"
            "    server s 127.0.0.1:9\n")
    with workdir() as wd:
        out = []
        for argv, name in (([haproxy_bin], "h"), ([PYTHON, "-m", "edgestick", "proxy"], "e")):
            path = wd / f"{name}.cfg"
            path.write_text(text)
            r = subprocess.run([*argv, "-c", "-f", str(path)], capture_output=True, text=True,
                               timeout=30)
            warn = [line.split("Layer 7")[1] for line in (r.stdout + r.stderr).splitlines()
                    if "Layer 7" in line]
            out.append((r.returncode, warn))
    assert out[1] == out[0] == (0, [" hash not possible for proxy 'l' (needs 'mode http'). "
                                    "Falling back to round robin."])


def test_live_counters_of_an_open_stream(pair):
    """conn_cur and the bytes of a stream still open, as HAProxy shows them."""
    out = []
    for p in pair:
        held = []
        session(p.ports[3], (b"x" * 1000,), src="127.0.0.25", hold=held)
        banner(held[0])
        held[0].recv(1000, socket.MSG_WAITALL)      # the echo: both ways have flowed
        time.sleep(0.2)
        live = mask_table(p.cli("show table limited key 127.0.0.25"))
        finish(held[0])
        out.append(live)
    assert out[1] == out[0]
    # bytes count when the stream ends
    assert "conn_cur=1" in out[0][1] and "bytes_in_cnt=0 bytes_out_cnt=0" in out[0][1]


def test_client_leaving_stops_retries(more):
    """A client gone during the turn-around before a retry: no more attempt, no econ."""
    cols = ("stot", "econ", "wretr")
    out = []
    for p in more:
        before = stat_row(p, "retry2", "dead", cols)
        s = socket.create_connection(("127.0.0.1", p.ports[8]), timeout=5)
        time.sleep(0.2)                 # the first attempt was refused; 500 ms turn-around
        s.close()
        time.sleep(1.5)
        after = stat_row(p, "retry2", "dead", cols)
        out.append({c: int(after[c]) - int(before[c]) for c in cols})
    assert out[1] == out[0] == {"stot": 1, "econ": 0, "wretr": 1}


def test_frontend_maxconn(more):
    """maxconn 1: a second connection waits, unserved, until the first ends."""
    out = []
    for p in more:
        held = []
        session(p.ports[10], (b"a",), hold=held)
        first = banner(held[0])
        second = socket.create_connection(("127.0.0.1", p.ports[10]), timeout=5)
        second.settimeout(0.3)
        try:
            early = second.recv(10)
        except TimeoutError:
            early = None
        row = stat_row(p, "one_at_a_time", "FRONTEND", ("scur", "slim"))
        finish(held[0])
        second.settimeout(5)
        out.append((first, early, row, banner(second), finish(second)))
    assert out[1] == out[0]
    assert out[0][1] is None and out[0][3] == "s1"


def test_server_fin_timeout(more):
    """timeout server-fin: a server sent the client's FIN and silent that long is left."""
    out = []
    for p in more:
        t0 = time.monotonic()
        got = session(p.ports[11], (b"x",))
        out.append((got, time.monotonic() - t0 < 1.5))
    assert out[1] == out[0] == (b"mute\nx", True)


RELOAD = """
global
    stats socket {SOCK} mode 600 level admin

defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s

listen l
    bind 127.0.0.1:{FE}
    stick-table type ip size 10 expire 1m store conn_cnt
    tcp-request connection track-sc0 src
    server s 127.0.0.1:{S1}
"""


def test_reload_keeps_open_streams_and_tables():
    """edgestick's reload (the runtime API's `reload`): a TCP stream open across it goes
    on relaying on the old configuration, new connections take the new one, the table
    keeps its entries."""
    from proxy_harness import start_proxy
    servers = TcpServers(["s1", "s2"])
    try:
        with workdir() as wd:
            p = start_proxy("edgestick", RELOAD, servers, wd)
            try:
                held = []
                session(p.port, (b"a",), hold=held)
                assert banner(held[0]) == "s1"
                text = open(p.cfg_path).read().replace(str(servers.ports["s1"]),
                                                       str(servers.ports["s2"]))
                open(p.cfg_path, "w").write(text)
                assert p.cli("reload").startswith(b"Success=1")
                assert session(p.port, (b"b",)).startswith(b"s2\nb")
                held[0].sendall(b"c")
                assert finish(held[0]) == b"acbye 2\n"
                # kept: the harness's startup probe, the held stream, the new one
                assert b"conn_cnt=3" in p.cli("show table l")
            finally:
                p.stop()
    finally:
        servers.close()
