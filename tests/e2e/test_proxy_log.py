"""Request logs compared with HAProxy 2.6: both proxies log to a UDP socket the test owns
(one each), get the same traffic, and their lines must be equal once what legitimately
differs is masked (dates, client and frontend ports, pids, elapsed times that are not -1,
the parts of unique ids made of those). Covers `option httplog` on forwarded, denied,
returned, redirected, tarpitted, 503/504 and refused requests; `option httplog clf`; a
custom log-format with most variables, flags and samples; captures (`capture request/
response header`, `http-request capture`, `declare capture`, the capture.req.hdr fetch);
`unique-id-format`/`unique-id-header` (the header the server receives and %ID);
`option dontlognull`; the syslog framing of every `format`, levels, `len`, `log-tag`,
`log-send-hostname`, a unix datagram socket and stdout."""
import re
import socket
import time

import pytest

from proxy_harness import Backends, Client, one_request, raw_exchange, start_proxy, workdir

pytestmark = pytest.mark.haproxy


class LogSink:
    """A datagram socket (UDP on 127.0.0.1, or unix) collecting log lines."""

    def __init__(self, path=None):
        if path is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            self.addr = str(path)
        self.sock.settimeout(0.05)

    def lines(self, settle: float = 0.3) -> list[str]:
        """Everything received until nothing came for `settle` seconds."""
        out = []
        deadline = time.monotonic() + 5
        last = time.monotonic()
        while time.monotonic() - last < settle and time.monotonic() < deadline:
            try:
                out.append(self.sock.recv(65536).decode("latin-1"))
                last = time.monotonic()
            except (TimeoutError, socket.timeout):
                pass
        return out

    def close(self):
        self.sock.close()


class Pair:
    """HAProxy and edgestick on one template, each with its own log sinks: {LOG} (UDP),
    {ULOG} (unix datagram socket)."""

    def __init__(self, template, backends, wd, haproxy_bin, n_frontends=1):
        self.sinks, self.proxies = {}, {}
        for kind in ("haproxy", "edgestick"):
            (wd / kind).mkdir()
            udp, unix = LogSink(), LogSink(wd / kind / "log.sock")
            self.sinks[kind] = (udp, unix)
            text = template.replace("{LOG}", udp.addr).replace("{ULOG}", unix.addr)
            self.proxies[kind] = start_proxy(kind, text, backends, wd / kind, n_frontends,
                                             haproxy_bin, wait_ports=1)
        time.sleep(0.2)
        for udp, unix in self.sinks.values():       # the start-up probes' lines
            udp.lines(0.1)
            unix.lines(0.05)

    def stop(self):
        for p in self.proxies.values():
            p.stop()
        for udp, unix in self.sinks.values():
            udp.close()
            unix.close()

    def run(self, traffic):
        """The same traffic on both; {kind: (udp lines, unix lines)}."""
        got = {}
        for kind, p in self.proxies.items():
            traffic(p)
            udp, unix = self.sinks[kind]
            got[kind] = (udp.lines(), unix.lines(0.05))
        return got


@pytest.fixture
def backends():
    b = Backends(["s1"]).start()
    try:
        yield b
    finally:
        b.kill()


def _pair(template, backends, haproxy_bin, n_frontends=1):
    wd_ctx = workdir()
    wd = wd_ctx.__enter__()
    try:
        pair = Pair(template, backends, wd, haproxy_bin, n_frontends)
    except Exception:
        wd_ctx.__exit__(None, None, None)
        raise
    return pair, wd_ctx


# ------------------------------------------------------------------ masks

_SYSLOG_DATE = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d")
_CLF_DATE = re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d(\.\d{3}| [+-]\d{4})")
_PID = re.compile(r"(haproxy|mytag|fetag)\[\d+\]")
_PID5424 = re.compile(r" (haproxy|mytag|fetag) \d+ - - ")
_HTTPLOG = re.compile(r"^(.*?)127\.0\.0\.1:\d+ \[<date>\] (\S+ \S+) "
                      r"(-?\d+)/(-?\d+)/(-?\d+)/(-?\d+)/(-?\d+) (.*)$")
_CLF = re.compile(r'^(.*\] "[^"]*" -?\d+ \d+ "" "" )\d+ \d{3} (\S+ \S+ \S+) '
                  r'(-?\d+) (-?\d+) (-?\d+) (-?\d+) (-?\d+) (.*)$')


def _t(v: str) -> str:
    return v if v.startswith("-") else "T"     # a duration: only -1 is deterministic


def mask(line: str) -> str:
    line = _SYSLOG_DATE.sub("<date>", line, 1)
    line = _ISO.sub("<date>", line)
    line = _CLF_DATE.sub("<date>", line)
    line = _PID.sub(r"\1[<pid>]", line)
    line = _PID5424.sub(r" \1 <pid> - - ", line)
    m = _HTTPLOG.match(line)
    if m:
        times = "/".join(_t(x) for x in m.groups()[2:7])
        return f"{m.group(1)}127.0.0.1:<port> [<date>] {m.group(2)} {times} {m.group(8)}"
    m = _CLF.match(line)
    if m:
        times = " ".join(_t(x) for x in m.groups()[2:7])
        return f"{m.group(1)}<port> <ms> {m.group(2)} {times} {m.group(8)}"
    # custom formats of this file: key=value fields
    line = re.sub(r"\b(cp|fp|pid|Ts|ms)=\w+", r"\1=<v>", line)
    line = re.sub(r"\b(TR|Tw|Tc|Tr|Ta|Tt|Th|Ti|Tq)=(\d+)", r"\1=T", line)
    line = re.sub(r"\bX=[0-9A-F]{4}\b", "X=<port>", line)
    return line


def mask_uid(uid: str) -> str:
    """7F000001:DEFA_7F000001:DF05_6B09A245_0001:3FD2: client and frontend ports, the
    date and the pid vary; the addresses and the request counter do not."""
    m = re.fullmatch(r"([0-9A-F]{8}):[0-9A-F]{4}_([0-9A-F]{8}):[0-9A-F]{4}_[0-9A-F]{8}_"
                     r"([0-9A-F]{4}):[0-9A-F]{4}", uid)
    assert m, uid
    return f"{m.group(1)}:P_{m.group(2)}:P_TS_{m.group(3)}:PID"


def compare(got):
    # the stats page's size (its content is edgestick's own) is the one field masked more
    h = [re.sub(r"<STATS> (\S+) 200 \d+", r"<STATS> \1 200 <size>", mask(x))
         for x in got["haproxy"][0]]
    e = [re.sub(r"<STATS> (\S+) 200 \d+", r"<STATS> \1 200 <size>", mask(x))
         for x in got["edgestick"][0]]
    assert e == h
    return h


# ------------------------------------------------------------------ httplog

HTTPLOG = """
global
    nbthread 1
    log {LOG} local0

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 3s
    timeout server 300ms
    timeout tarpit 100ms

userlist ul
    user admin insecure-password secret

frontend fe
    bind 127.0.0.1:{FE}
    monitor-uri /health
    capture request header Host len 10
    capture request header User-Agent len 5
    capture response header Content-Type len 20
    http-request capture req.hdr(x-trace) len 4
    declare capture response len 8
    capture cookie SRV len 12
    http-request deny deny_status 429 if { path /deny }
    http-request return status 200 content-type text/plain string "hi" if { path /ret }
    http-request redirect location /elsewhere if { path /redir }
    http-request tarpit if { path /tarpit }
    http-request reject if { path /reject }
    http-request auth realm r if { path /auth } !{ http_auth(ul) }
    http-request set-header X-Cap "%[capture.req.hdr(0)]/%[capture.req.hdr(2)]"
    use_backend empty if { path /empty }
    use_backend bk_deny if { path /bk-deny }
    default_backend bk

frontend fe_nolognull
    bind 127.0.0.1:{FE2}
    option dontlognull
    default_backend bk

frontend fe_slow
    bind 127.0.0.1:{FE3}
    timeout http-request 200ms
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}

backend empty

backend bk_deny
    http-request deny if { path /bk-deny }
    server s1 127.0.0.1:{S1}

listen st
    bind 127.0.0.1:{FE4}
    stats enable
    stats uri /stats
"""


def test_httplog_default_format(backends, haproxy_bin):
    pair, wd = _pair(HTTPLOG, backends, haproxy_bin, 4)
    try:
        seen = {}

        def traffic(p):
            out = seen.setdefault(p.kind, [])
            r = one_request(p.port, "/a?b=1", headers=[("User-Agent", "curl/7.8 long"),
                                                      ("X-Trace", "abcdefgh")])
            out.append((r.status, r.body))
            for path in ("/deny", "/ret", "/redir", "/empty", "/tarpit", "/s?status=500",
                         "/slow?sleep=1", "/health", "/auth", "/bk-deny"):
                out.append(one_request(p.port, path).status)
            raw_exchange(p.port, b"GET /reject HTTP/1.1\r\nHost: a\r\n\r\n")  # (close or reset)
            out.append(one_request(p.ports[3], "/stats").status)
            out.append(one_request(p.port, "/c?setcookie=SRV%3Dabcdefghijklmnop%3B%20path%3D%2F",
                                   headers=[("Cookie", "X=1; SRVX=s1234567890123")]).status)
            c = Client(p.port)              # keep-alive: two lines, one client port
            out.append(c.request("/k1").status)
            out.append(c.request("/k2", method="POST", body=b"0123456789").status)
            c.close()
            raw_exchange(p.port, b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n")     # refused
            socket.create_connection(("127.0.0.1", p.port)).close()          # silent
            time.sleep(0.1)             # (logged before the next connection: same counts)
            socket.create_connection(("127.0.0.1", p.ports[1])).close()      # dontlognull
            time.sleep(0.1)
            out.append(one_request(p.ports[1], "/after-probe").status)
            for raw in (b"GET /partial HTTP/1.1\r\nHo", b""):     # timeout http-request
                out.append(raw_exchange(p.ports[2], raw, timeout=2.0)[:12])

        got = pair.run(traffic)
        assert seen["edgestick"] == seen["haproxy"]
        assert b"x-cap: 127.0.0.1/abcd" in seen["haproxy"][0][1]
        lines = compare(got)
        assert len(lines) == 20, lines
        text = "\n".join(lines)
        for want in ("fe bk/s1 T/T/T/T/T 200 ", "{127.0.0.1|curl/|abcd} {text/plain|}",
                     "fe/<NOSRV> T/-1/-1/-1/T 429 ", " PR-- ", " LR-- ", " PT-- ", " SC-- ",
                     " sH-- ", '"<BADREQ>"', " CR-- ", "fe_nolognull bk/s1",
                     " SRVX=s123456 SRV=abcdefgh ---- ", "fe fe/<NOSRV> -1/-1/-1/-1/T -1 0 - - PR-- ",
                     " 401 ", "fe bk_deny/<NOSRV> T/-1/-1/-1/T 403 ",
                     "st st/<STATS> T/T/T/T/T 200 <size> - - LR-- "):
            assert want in text
        assert text.count(" CR-- ") == 1        # the silent connection, not the second one
        assert "/health" not in text            # monitor-uri requests are never logged
        assert text.count(" 408 0 - - cR-- ") == 2
    finally:
        pair.stop()
        wd.__exit__(None, None, None)


# ------------------------------------------------------------------ custom formats, unique id

CUSTOM = r"""
global
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 3s
    timeout server 3s

frontend fe
    bind 127.0.0.1:{FE}
    log {LOG} local0
    capture request header Host len 10
    unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Unique-ID
    log-format "ci=%ci cp=%cp fi=%fi fp=%fp ft=%ft f=%f b=%b s=%s si=%si TR=%TR Tw=%Tw Tc=%Tc Tr=%Tr Ta=%Ta Tt=%Tt Th=%Th Ti=%Ti Tq=%Tq ST=%ST B=%B U=%U CC=%CC CS=%CS hr=%hr hs=%hs hrl=%hrl hsl=%hsl r=%r HM=%HM HP=%HP HU=%HU HV=%HV HQ=%HQ ts=%ts tsc=%tsc ac=%ac fc=%fc bc=%bc sc=%sc rc=%rc sq=%sq bq=%bq ID=%ID rt=%rt lc=%lc pid=%pid o=%o Q=%{+Q}r X=%{+X}cp %{+Q}HM %{-Q}b %[src] %{+Q}[capture.req.hdr(0)] uid=%[unique-id] %%  end "
    http-request deny deny_status 429 if { path /deny }
    default_backend bk

frontend fe_clf
    bind 127.0.0.1:{FE2}
    log {LOG} local1
    log {LOG} format rfc3164 local2
    log {LOG} format rfc5424 local3
    option httplog clf
    http-request deny if { path /deny }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


def test_custom_format_clf_and_unique_id(backends, haproxy_bin):
    pair, wd = _pair(CUSTOM, backends, haproxy_bin, 2)
    try:
        uids = {}

        def traffic(p):
            r = one_request(p.port, "/a/b?x=1&y=%22q%22")
            uid = [ln for ln in r.body.decode().splitlines() if ln.startswith("x-unique-id:")]
            uids[p.kind] = [mask_uid(u.split(": ", 1)[1]) for u in uid]
            one_request(p.port, "/deny")
            one_request(p.ports[1], "/c?d")
            one_request(p.ports[1], "/deny")

        got = pair.run(traffic)
        assert uids["edgestick"] == uids["haproxy"] == ["7F000001:P_7F000001:P_TS_0001:PID"]
        for kind in got:            # the id in the log is the one the server received
            line = got[kind][0][0]
            assert re.search(r"ID=(\S+) .* uid=\1 ", line), line
        masked = [re.sub(r"(ID|uid)=[0-9A-F:_]+", r"\1=<uid>", x) for x in
                  (mask(y) for y in got["haproxy"][0])]
        masked_e = [re.sub(r"(ID|uid)=[0-9A-F:_]+", r"\1=<uid>", x) for x in
                    (mask(y) for y in got["edgestick"][0])]
        assert masked_e == masked
        assert len(masked) == 8
        # no log-send-hostname: none in the default format, "localhost" in an explicit
        # rfc3164, "-" in rfc5424
        assert masked[2].startswith("<142><date> haproxy[<pid>]: 127.0.0.1 - - ")
        assert masked[3].startswith("<150><date> localhost haproxy[<pid>]: 127.0.0.1 - - ")
        assert masked[4].startswith("<158>1 <date> - haproxy <pid> - - 127.0.0.1 - - ")
        assert 'ST=200 B=' in masked[0] and 'Q="GET /a/b?x=1&y=%22q%22 HTTP/1.1"' in masked[0]
        assert masked[2].endswith('"GET /c?d HTTP/1.1" 200 117 "" "" <port> <ms> "fe_clf" '
                                  '"bk" "s1" T T T T T ---- 1 1 0 0 0 0 0 "" "" ')
    finally:
        pair.stop()
        wd.__exit__(None, None, None)


# ------------------------------------------------------------------ syslog framing

FRAMING = """
global
    nbthread 1
    log {LOG} local0
    log {LOG} format rfc3164 local1
    log {LOG} format rfc5424 local2
    log {LOG} format short local3
    log {LOG} format priority local4
    log {LOG} format timed local5
    log {LOG} format iso local6
    log {LOG} format raw local7
    log {LOG} len 80 format rfc5424 daemon
    log {LOG} format raw user notice
    log {LOG} format raw user info info
    log {LOG} format priority mail debug err
    log {ULOG} format rfc3164 auth
    log-send-hostname edge1

defaults
    mode http
    timeout connect 1s
    timeout client 3s
    timeout server 3s

frontend fe
    bind 127.0.0.1:{FE}
    log global
    log stdout format raw local0
    log-tag mytag
    log-format "%ST %b/%s x=%[src] %{+Q}HM"
    default_backend bk

frontend fe_nolog
    bind 127.0.0.1:{FE2}
    log global
    no log
    log-format "nolog %ST"
    default_backend bk

frontend fe_default_tag
    bind 127.0.0.1:{FE3}
    log {LOG} format rfc5424 local0
    log {LOG} format rfc3164 local0
    log-format "%ST %[src]xyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzwxyzw"
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


def test_syslog_framing_of_each_format(backends, haproxy_bin):
    pair, wd = _pair(FRAMING, backends, haproxy_bin, 3)
    try:
        def traffic(p):
            for port in p.ports:
                one_request(port, "/f")

        got = pair.run(traffic)
        h = sorted(mask(x) for x in got["haproxy"][0])
        e = sorted(mask(x) for x in got["edgestick"][0])
        assert e == h
        assert len(h) == 13
        assert "<134><date> edge1 mytag[<pid>]: 200 bk/s1 x=127.0.0.1 \"GET\"\n" in h
        assert any(x.startswith("<150>1 <date> edge1 mytag <pid> - - 200") for x in h)
        assert "<6>200 bk/s1 x=127.0.0.1 \"GET\"\n" in h           # short
        assert any(len(x) <= 81 and x.startswith("<30>1 ") for x in h)    # len 80
        unix_h = [mask(x) for x in got["haproxy"][1]]
        unix_e = [mask(x) for x in got["edgestick"][1]]
        assert unix_e == unix_h and len(unix_h) == 1 and unix_h[0].startswith("<38><date> ")
        outputs = []
        for p in pair.proxies.values():
            p.stop()
            with open(p.cfg_path.replace(".cfg", ".log"), errors="replace") as f:
                text = f.read()
            outputs.append([ln for ln in text.splitlines() if ln.startswith("200 bk/s1")])
        assert outputs[0] == outputs[1] == ['200 bk/s1 x=127.0.0.1 "GET"']
    finally:
        pair.stop()
        wd.__exit__(None, None, None)


# ------------------------------------------------------------------ errors

LEVELS = """
global
    nbthread 1
    log {LOG} format short local0 err

defaults
    mode http
    log global
    option dontlognull
    timeout connect 1s
    timeout client 3s
    timeout server 3s

frontend fe
    bind 127.0.0.1:{FE}
    option log-separate-errors
    log {LOG} format short local1
    log-format "sep %ST %ts"
    http-request deny if { path /deny }
    http-request return status 200 if { path /ret }
    default_backend bk

frontend fe_quiet
    bind 127.0.0.1:{FE2}
    option dontlog-normal
    log {LOG} format short local1
    log-format "quiet %ST %ts"
    http-request deny if { path /deny }
    http-request return status 200 if { path /ret }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


def test_error_level_and_dontlog_normal(backends, haproxy_bin):
    """`option log-separate-errors`: errors (a termination worse than a local reply, or a
    5xx) at level err, which an `err` target alone receives; `option dontlog-normal`:
    only those are logged."""
    pair, wd = _pair(LEVELS, backends, haproxy_bin, 2)
    try:
        def traffic(p):
            for port in p.ports:
                for path in ("/ok", "/deny", "/ret", "/x?status=500", "/x?status=404"):
                    one_request(port, path)

        got = pair.run(traffic)
        assert got["edgestick"][0] == got["haproxy"][0] == [
            "<6>sep 200 --\n", "<3>sep 403 PR\n", "<3>sep 403 PR\n", "<6>sep 200 LR\n",
            "<3>sep 500 --\n", "<3>sep 500 --\n", "<6>sep 404 --\n",
            "<6>quiet 403 PR\n", "<6>quiet 500 --\n"]
    finally:
        pair.stop()
        wd.__exit__(None, None, None)


SAMPLED = """
global
    nbthread 1
    log {LOG} format raw sample 2-3,5:5 local0
    log {LOG} format short sample 1:3 local0

defaults
    mode http
    log global
    option dontlognull
    timeout connect 1s
    timeout client 3s
    timeout server 3s

frontend fe
    bind 127.0.0.1:{FE}
    log-format "n %rt"
    http-request return status 200
"""


def test_sampled_targets(haproxy_bin):
    """`sample <ranges>:<size>`: each target sends the lines whose place in each period
    of `size` is in its ranges."""
    b = Backends([])
    pair, wd = _pair(SAMPLED, b, haproxy_bin)
    try:
        def traffic(p):
            c = Client(p.port)
            for i in range(12):
                c.request(f"/{i}")
            c.close()

        got = pair.run(traffic)
        assert got["edgestick"][0] == got["haproxy"][0] == [
            "<6>n 0\n", "n 1\n", "n 2\n", "<6>n 3\n", "n 4\n", "n 6\n", "<6>n 6\n", "n 7\n",
            "n 9\n", "<6>n 9\n", "n 11\n"]
    finally:
        pair.stop()
        wd.__exit__(None, None, None)


SHAPES = """
global
    nbthread 1
    log {LOG} format raw local0

defaults
    mode http
    log global
    option dontlognull
    timeout connect 1s
    timeout client 3s
    timeout server 3s

frontend fe
    bind 127.0.0.1:{FE}
    log-format "%ST %B %U %ts %{+Q}r HP=%HP HU=%HU HQ=%HQ HV=%HV"
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


def test_request_shapes(backends, haproxy_bin):
    """Bytes both ways (%B, %U: as HAProxy counts them) and the request's parts for a
    chunked response, HEAD, HTTP/1.0, an absolute URI, a chunked upload, a large body."""
    pair, wd = _pair(SHAPES, backends, haproxy_bin)
    try:
        def traffic(p):
            for raw in (b"GET /ch?chunked=1&size=3000 HTTP/1.1\r\nHost: a\r\n",
                        b"HEAD /h HTTP/1.1\r\nHost: a\r\n",
                        b"GET /old HTTP/1.0\r\n",
                        b"GET http://example.com/abs/p?q=1 HTTP/1.1\r\nHost: example.com\r\n",
                        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                        b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n",
                        b"GET /big?size=100000 HTTP/1.1\r\nHost: a\r\n"):
                close = b"" if b"HTTP/1.0" in raw or b"close" in raw else b"Connection: close\r\n"
                raw_exchange(p.port, raw + close + b"\r\n")

        got = pair.run(traffic)
        assert got["edgestick"][0] == got["haproxy"][0]
        assert got["haproxy"][0][3] == ('200 143 75 -- "GET http://example.com/abs/p?q=1 '
                                        'HTTP/1.1" HP=http://example.com/abs/p HU=http://'
                                        'example.com/abs/p?q=1 HQ=?q=1 HV=HTTP/1.1\n')
        assert len(got["haproxy"][0]) == 6
    finally:
        pair.stop()
        wd.__exit__(None, None, None)
