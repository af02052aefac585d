"""Request bodies in rules, and the stream actions, compared with HAProxy 2.6: `option
http-buffer-request` (frontend, backend), `http-request wait-for-body`, the req.body,
req.body_len, req.body_size and req.body_param fetches (a body in pieces, chunked, larger
than HAProxy's buffer, Expect: 100-continue, a 408 when it does not come in time),
`http-request set-timeout server`, `set-log-level` (request and response), `early-hint`;
the same raw bytes to both proxies, the same bytes back, the same log lines, the same
`-c` verdicts."""
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy.config import load_config_text
from proxy_harness import Backends, both, stat_row, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout http-request 1s
    timeout http-keep-alive 3s

frontend buffered
    bind 127.0.0.1:{FE}
    option http-buffer-request
    http-request deny if { req.body -m sub attack }
    http-request set-var(txn.any2) str(yes) if { req.body_param -m str 2 }
    http-request return status 200 content-type text/plain lf-string "len=%[req.body_len] size=%[req.body_size] a=%[req.body_param(a)] first=%[req.body_param] any2=%[var(txn.any2)] hex=%[req.body,bytes(0,12),hex]\\n" if { path /info }
    default_backend bk

frontend plain
    bind 127.0.0.1:{FE2}
    http-request return status 200 content-type text/plain lf-string "len=%[req.body_len] size=%[req.body_size]\\n" if { path /info }
    http-request wait-for-body time 1500ms at-least 10 if { path /w }
    http-request return status 200 content-type text/plain lf-string "w len=%[req.body_len] size=%[req.body_size]\\n" if { path /w }
    http-request set-var(txn.fe) req.body_len
    use_backend bkbuf if { path_beg /b }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}

backend bkbuf
    option http-buffer-request
    timeout http-request 1100ms
    http-request return status 200 content-type text/plain lf-string "fe=%[var(txn.fe)] be=%[req.body_len]\\n" if { path /binfo }
    server s1 127.0.0.1:{S1}
"""


def head(path: str, length: int, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n" % (
        path.encode(), length, extra)


def chunked_head(path: str) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode()


def exchange(port: int, parts, pause: float = 0.2, wait: float = 0.8, shut: bool = False) -> bytes:
    """Send the parts `pause` apart (then close our side if `shut`), then read until the
    proxy closes (<EOF>) or stays silent for `wait` seconds (<open>: it keeps the
    connection)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    out = b""
    try:
        for i, part in enumerate(parts):
            if i:
                time.sleep(pause)
            s.sendall(part)
        if shut:
            s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                return out + b"<EOF>"
            out += d
    except socket.timeout:
        return out + b"<open>"
    except OSError:
        return out + b"<reset>"
    finally:
        s.close()


def both_exchange(pair, index: int, parts, **kw) -> tuple[bytes, bytes]:
    if parts and parts[-1] is SHUT:
        parts, kw["shut"] = parts[:-1], True
    """The same exchange with both proxies at once (frontend number `index`)."""
    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(exchange, p.ports[index], parts, **kw) for p in pair]
        return tuple(f.result() for f in futs)


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin, n_frontends=2) as p:
            yield p
    finally:
        b.kill()


SHUT = object()     # (last of the parts: the client closes its side)
BIG = b"z" * 20000
CHUNKS_100 = b"".join(b"64\r\n" + b"y" * 100 + b"\r\n" for _ in range(200)) + b"0\r\n\r\n"

CASES = [
    # (name, frontend index, parts, what must be in the answer)
    ("body in pieces, denied", 0,
     [head("/info", 22), b"a=1&b=2&", b"attack&c=33333"], b"403 Forbidden"),
    ("body in pieces, fetches", 0,
     [head("/info", 22), b"a=1&b=2&", b"xxxxxx&c=33333"], b"len=22 size=22 a=1 first=1 any2=yes"),
    ("params without '='", 0, [head("/info", 11) + b"=5&a&b=1;a=", b""], b"a= first=5 any2="),
    ("Expect: 100-continue", 0,
     [head("/info", 3, b"Expect: 100-continue\r\n"), b"abc"], b"100 Continue\r\n\r\nHTTP/1.1 200"),
    ("chunked in pieces", 0,
     [chunked_head("/info") + b"3\r\nabc\r\n", b"2\r\nde\r\n0\r\n\r\n"], b"len=5 size=5"),
    ("larger than the buffer", 0, [head("/info", len(BIG)) + BIG], b"len=15210 size=20000"),
    ("chunked larger than the buffer", 0, [chunked_head("/info") + CHUNKS_100],
     b"len=15200 size=15300"),
    ("forwarded whole", 0, [head("/fwd", 100000) + b"x" * 100000], b"body-bytes: 100000"),
    ("two on one connection", 0,
     [head("/info", 3) + b"abc" + head("/info", 2) + b"zz"], b"len=2 size=2"),
    ("not buffered: what came with the head", 1, [head("/info", 22) + b"a=1&b=2&", b"x" * 14],
     b"len=8 size=22"),
    ("wait-for-body, all of it", 1, [head("/w", 22), b"a=1&b=2&", b"xxxxxx&c=33333"],
     b"w len=22 size=22"),
    ("wait-for-body at-least", 1, [head("/w", 22), b"a=1&b=2&xxx"], b"w len=11 size=22"),
    # a client closing its side amid its body: the rules run, nothing is answered nor sent
    ("client closes amid its body, denied", 0, [head("/info", 22), b"attack", SHUT], b"<EOF>"),
    ("client closes amid its body, not forwarded", 0, [head("/fwd", 22), b"a=1&", SHUT],
     b"<EOF>"),
    ("backend buffering after the frontend's rules", 1,
     [head("/binfo", 10) + b"abc", b"defghij"], b"fe=3 be=10"),
]


@pytest.mark.parametrize("index,parts,expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_body_rules_as_haproxy(pair, index, parts, expect):
    h, e = pair
    got_h, got_e = both_exchange(pair, index, parts)
    # (the echo server names the port it was reached from: the proxies' differ)
    got_h = re.sub(rb"\b%d\b" % h.ports[index], b"<port>", got_h)
    got_e = re.sub(rb"\b%d\b" % e.ports[index], b"<port>", got_e)
    assert got_e == got_h
    assert expect in got_e


TIMEOUTS = [
    # the frontend's `timeout http-request` (1s), the backend's (1.1s), the rule's (1.5s)
    ("option, frontend", 0, [head("/info", 22), b"a=1&"]),
    ("option, backend", 1, [head("/binfo", 22), b"a=1&"]),
    ("wait-for-body time", 1, [head("/w", 22), b"a=1&"]),
]


@pytest.mark.parametrize("index,parts", [c[1:] for c in TIMEOUTS], ids=[c[0] for c in TIMEOUTS])
def test_body_not_in_time_408(pair, index, parts):
    got_h, got_e = both_exchange(pair, index, parts, wait=4)
    assert got_e == got_h
    assert got_e.startswith(b"HTTP/1.1 408 Request Time-out\r\n") and got_e.endswith(b"<EOF>")


def test_counters_as_haproxy(pair):
    """After the cases above: requests, failed requests (the 408s), statuses alike."""
    cols = ("req_tot", "ereq", "hrsp_2xx", "hrsp_4xx", "dreq")
    for fe in ("buffered", "plain"):
        assert stat_row(pair[1], fe, "FRONTEND", cols) == stat_row(pair[0], fe, "FRONTEND", cols)


# ------------------------------------------------------------------ stream actions

ACTIONS = """
global
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout tunnel 5s

listen app
    bind 127.0.0.1:{FE}
    http-request set-timeout tunnel 300ms if { path_beg /ws-short }
    http-request early-hint Link "</a.css>; rel=preload" if { path /eh }
    http-request early-hint X-Path "%[path]"
    http-request early-hint Link "</c.css>" if { path /eh3 }
    http-request set-timeout server 300ms if { path_beg /short }
    http-request set-timeout server req.hdr(x-t) if { req.hdr(x-t) -m found }
    server s1 127.0.0.1:{S1}
"""


@pytest.fixture(scope="module")
def actions_pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(ACTIONS, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


CLOSE = b"Connection: close\r\n\r\n"
ACTION_CASES = [
    ("early hints grouped", b"GET /eh HTTP/1.1\r\nHost: a\r\n" + CLOSE,
     b"x-path: /eh\r\n\r\nHTTP/1.1 200"),
    ("early hint groups split by a condition", b"GET /eh3 HTTP/1.1\r\nHost: a\r\n" + CLOSE,
     b"\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </c.css>\r\n\r\n"),
    ("no early hint for HTTP/1.0", b"GET /eh HTTP/1.0\r\nHost: a\r\n\r\n", b"HTTP/1.1 200"),
    # (closing: what follows a 504 is another matter)
    ("set-timeout server", b"GET /short?sleep=1.5 HTTP/1.1\r\nHost: a\r\n" + CLOSE, b" 504 "),
    ("set-timeout from an expression",
     b"GET /?sleep=1.5 HTTP/1.1\r\nHost: a\r\nx-t: 200\r\n" + CLOSE, b" 504 "),
    ("no set-timeout", b"GET /?sleep=0.5 HTTP/1.1\r\nHost: a\r\n" + CLOSE, b" 200 OK"),
    ("set-timeout on a keep-alive connection's next request",
     [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /short?sleep=1.5 HTTP/1.1\r\nHost: a\r\n" + CLOSE],
     b" 504 "),
]


@pytest.mark.parametrize("raw,expect", [c[1:] for c in ACTION_CASES],
                         ids=[c[0] for c in ACTION_CASES])
def test_stream_actions_as_haproxy(actions_pair, raw, expect):
    h, e = actions_pair
    parts = raw if isinstance(raw, list) else [raw]
    got_h, got_e = both_exchange(actions_pair, 0, parts, wait=2.5)
    got_h = re.sub(rb"\b%d\b" % h.port, b"<port>", got_h)
    got_e = re.sub(rb"\b%d\b" % e.port, b"<port>", got_e)
    assert got_e == got_h
    assert expect in got_e


def test_set_timeout_tunnel_as_haproxy(actions_pair):
    """After a 101, the stream's tunnel timeout (300 ms, not the proxy's 5 s) closes an
    idle tunnel."""
    h, e = actions_pair
    upgrade = (b"GET /ws-short?upgrade=1 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    got_h, got_e = both_exchange(actions_pair, 0, [upgrade, b"ping"], wait=2.5)
    assert got_e == got_h
    assert b"101 Switching Protocols" in got_e and got_e.endswith(b"echo:ping<EOF>")


ABORTONCLOSE = """
global
    nbthread 1
    stats socket {SOCK} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout queue 3s

listen app
    bind 127.0.0.1:{FE}
    option abortonclose
    server s1 127.0.0.1:{S1} maxconn 1

frontend fe
    bind 127.0.0.1:{FE2}
    default_backend be

backend be
    option abortonclose
    server s1 127.0.0.1:{S1} maxconn 1

listen refused
    bind 127.0.0.1:{FE3}
    option abortonclose
    retries 2
    server s1 127.0.0.1:{DEAD}
"""


def _queued_then_closed(port: int) -> bytes:
    """A slow request takes the server's only slot; the next one queues, and its client
    closes its side: what that client gets."""
    import threading
    slow = threading.Thread(target=exchange, args=(
        port, [b"GET /?sleep=0.6 HTTP/1.1\r\nHost: a\r\n" + CLOSE]))
    slow.start()
    time.sleep(0.15)
    got = exchange(port, [b"GET /q HTTP/1.1\r\nHost: a\r\n\r\n", b""], shut=True, wait=2)
    slow.join()
    return got


def test_abortonclose_as_haproxy(haproxy_bin):
    """`option abortonclose`: a queued request whose client closes its side is dropped
    (no answer, the server never sees it) when both the frontend and the backend have
    the option (2.6.12's H1 layer watches the client only for a frontend with it); with
    the backend's alone, it is served. A request whose server refuses the connection is
    dropped at once, not retried into a 503."""
    from proxy_harness import free_ports
    b = Backends(["s1"]).start()
    template = ABORTONCLOSE.replace("{DEAD}", str(free_ports(1)[0]))     # (nothing listens)
    try:
        with workdir() as wd, both(template, b, wd, haproxy_bin, n_frontends=3) as p:
            got = both_exchange(p, 2, [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", SHUT], wait=4)
            assert got[1] == got[0] == b"<EOF>"
            for index, answered in ((0, False), (1, True)):
                # (edgestick tells a half-closed client `connection: close`, 2.6.12 does
                # not: another matter)
                got = [_queued_then_closed(proxy.ports[index]).replace(b"connection: close\r\n", b"")
                       for proxy in p]
                assert got[1] == got[0]
                assert (b"GET /q" in got[1]) == answered
            for px, sv in (("app", "FRONTEND"), ("app", "BACKEND"), ("app", "s1"), ("be", "s1")):
                cols = ("stot", "hrsp_2xx", "cli_abrt", "req_tot")
                assert stat_row(p[1], px, sv, cols) == stat_row(p[0], px, sv, cols), (px, sv)
    finally:
        b.kill()


# ------------------------------------------------------------------ -c verdicts

CHECKS = [
    ("frontend f", "http-request set-timeout server 5s",
     "error detected in frontend 'f' while parsing 'http-request set-timeout' rule : proxy 'f' "
     "has no backend capability."),
    ("frontend f", "http-request set-timeout server",
     "'http-request set-timeout' rule : expects exactly 2 arguments."),
    ("backend b", "http-request set-timeout client 5s",
     "'set-timeout' rule supports 'server'/'tunnel' (got 'client')."),
    ("backend b", "http-request set-timeout server 0",
     "null value is not valid for a 'set-timeout server' rule."),
    ("backend b", "http-request set-timeout server 5x",
     "unexpected character 'x' in rule 'set-timeout server'."),
    ("backend b", "http-request set-timeout tunnel 99999999999",
     "timer overflow in argument '99999999999' to rule 'set-timeout tunnel' (maximum value is "
     "2147483647 ms or ~24.8 days)."),
    ("backend b", "http-request set-timeout server 5s foo",
     "'http-request set-timeout' expects either 'if' or 'unless' followed by a condition but "
     "found 'foo'."),
    ("backend b", "http-request set-timeout server req.hdr(x),map_int(/nonexistent)",
     "unexpected character 'r' in rule 'set-timeout server'."),
    ("backend b", "http-request set-timeout server req.hdr(x),mul(1000)", None),
    ("backend b", "http-request set-timeout tunnel req.hdr(x) if TRUE", None),
    ("frontend f", "http-request set-log-level INFO",
     "'http-request set-log-level' rule : expects exactly 1 argument (log level name or "
     "'silent')."),
    ("frontend f", "http-response set-log-level silent", None),
    ("frontend f", "http-request early-hint Link",
     "'http-request early-hint' rule : expects exactly 2 arguments."),
    ("frontend f", "http-request early-hint Link </x> foo",
     "'http-request early-hint' expects either 'if' or 'unless' followed by a condition but "
     "found 'foo'."),
    ("frontend f", "http-request wait-for-body",
     "'http-request wait-for-body' rule : expects time <time> [ at-least <bytes> ]."),
    ("frontend f", "http-request wait-for-body at-least 1k",
     "'http-request wait-for-body' rule : expects time <time> [ at-least <bytes> ]."),
    ("frontend f", "http-request wait-for-body time",
     "'http-request wait-for-body' rule : missing argument for 'time'."),
    ("frontend f", "http-request wait-for-body time 1x",
     "'http-request wait-for-body' rule : unexpected character 'x'."),
    ("frontend f", "http-request wait-for-body time 1s at-least 1q",
     "'http-request wait-for-body' rule : unexpected character 'q'."),
    ("frontend f", "http-request wait-for-body time 99999999999",
     "time overflow (maximum value is 2147483647 ms or ~24.8 days)."),
    ("frontend f", "http-request wait-for-body time 1s at-least 1k time 2s if METH_POST", None),
    ("backend b", "option http-buffer-request", None),
    ("frontend f", "http-request strict-mode off", None),
    ("frontend f", "tcp-request content set-log-level silent if TRUE", None),
    ("frontend f", "tcp-request content set-log-level bogus",
     "expects exactly 1 argument (log level name or 'silent')"),
    ("frontend f", "tcp-request content set-log-level info foo",
     "'tcp-request content set-log-level' only accepts 'if' or 'unless', in frontend 'f' "
     "(got 'foo')"),
    ("frontend f", "http-response strict-mode on if TRUE", None),
    ("frontend f", "http-request strict-mode",
     "'http-request strict-mode' rule : expects exactly 1 arguments."),
    ("frontend f", "http-request strict-mode foo",
     "Unexpected value 'foo'. Only 'on' and 'off' are supported."),
]


def test_buffering_warned_outside_http_mode(haproxy_bin):
    import subprocess
    text = ("defaults\n    mode tcp\n    timeout client 1s\n    timeout server 1s\n"
            "    timeout connect 1s\nlisten li\n    bind 127.0.0.1:1\n"
            "    option http-buffer-request\n    server s1 127.0.0.1:2\n")
    message = "'option http-buffer-request' ignored for proxy 'li' as it requires HTTP mode."
    with workdir() as d:
        cfg = d / "a.cfg"
        cfg.write_text(text)
        r = subprocess.run([haproxy_bin, "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30)
    assert r.returncode == 0 and message in r.stdout + r.stderr
    _, warnings = load_config_text(text, "a.cfg")
    assert any(message in w for w in warnings), warnings


@pytest.mark.parametrize("section,rule,message", CHECKS, ids=[c[1] for c in CHECKS])
def test_check_like_haproxy(haproxy_bin, section, rule, message):
    import subprocess
    text = ("defaults\n    mode http\n    timeout client 1s\n    timeout server 1s\n"
            f"    timeout connect 1s\n{section}\n    {rule}\n")
    with workdir() as d:
        cfg = d / "a.cfg"
        cfg.write_text(text)
        r = subprocess.run([haproxy_bin, "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30)
    out = r.stdout + r.stderr
    try:
        load_config_text(text, "a.cfg")
        mine = None
    except ConfigError as err:
        mine = str(err)
    if message is None:
        assert r.returncode in (0, 2) and "ALERT" not in out, out     # (2: no listener)
        assert mine is None
    else:
        assert r.returncode == 1 and message in out, out
        assert mine is not None and message in mine, mine


# ------------------------------------------------------------------ logs

LOGGED = """
global
    nbthread 1
    log {LOG} local0

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout http-request 1s

frontend fe
    bind 127.0.0.1:{FE}
    option http-buffer-request
    tcp-request content set-log-level warning if { path /warn }
    http-request set-log-level err if { path /err }
    http-request set-log-level notice if { path /err }
    http-request set-log-level silent if { path /silent }
    http-request early-hint Link "</a.css>" if { path /eh }
    http-response set-log-level emerg if { status 404 }
    http-request return status 200 content-type text/plain string "ok" if { path /ret }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


def test_logs_as_haproxy(haproxy_bin):
    """The request time (TR) spans the body's wait, a 408 is a `cR` line, set-log-level
    changes a line's level (the last rule that matches) or drops it, a 103 counts in
    the bytes sent."""
    from test_proxy_log import Pair, compare
    backends = Backends(["s1"]).start()
    try:
        with workdir() as wd:
            pair = Pair(LOGGED, backends, wd, haproxy_bin)
            try:
                def traffic(p):
                    close = b"Connection: close\r\n"
                    exchange(p.port, [head("/ret", 4, close), b"ab", b"cd"], pause=0.2)
                    exchange(p.port, [head("/fwd", 4, close) + b"abcd"])
                    exchange(p.port, [head("/ret", 4), b"ab"], wait=3)          # 408
                    exchange(p.port, [head("/fwd", 4), b"ab"], shut=True)      # CR
                    for path in (b"/err", b"/silent", b"/?status=404", b"/eh", b"/warn"):
                        exchange(p.port, [b"GET %s HTTP/1.1\r\nHost: a\r\n%s\r\n" % (path, close)])
                got = pair.run(traffic)
            finally:
                pair.stop()
        lines = compare(got)
        assert len(lines) == 8 and " 408 " in lines[2] and " cR-- " in lines[2]
        assert " bk/<NOSRV> T/-1/-1/-1/T -1 0 - - CR-- " in lines[3]
        assert lines[4].startswith("<133>") and lines[5].startswith("<128>")   # notice, emerg
        assert lines[7].startswith("<132>")                                     # warning
    finally:
        backends.kill()
