"""`show stat` (the runtime API's CSV) as HAProxy 2.6 prints it: the same configuration
and the same traffic on both, then the whole output compared, the header byte for byte,
every row and every field, but for the few fields named below that cannot be equal."""
import socket
import time

import pytest

from proxy_harness import Backends, Client, both, private_tmp, raw_exchange  # noqa: F401 (fixture)

pytestmark = pytest.mark.haproxy

HEAD = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
    maxconn 1000
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
"""

CONFIG = HEAD + """
frontend f
    bind 127.0.0.1:{FE}
    http-request deny if { path /deny }
    use_backend d if { path /dead }
    default_backend b
backend b
    server s1 127.0.0.1:{S1} check inter 1s
    server s2 127.0.0.1:{S1}
backend d
    retries 0
    server x 127.0.0.1:{DEAD}
"""

# Fields that legitimately differ, and why.
MASKED = {
    "lastchg",          # seconds since the last state change: read at two different instants
    "lastsess",         # seconds since the last session, the same
    "downtime",         # seconds spent DOWN (a server DOWN since start), the same
    "check_duration",   # milliseconds the last health check took
    # HAProxy's averages and peaks of queue/connect/response/total times (ms over the
    # last 1024 requests): edgestick does not measure them
    "qtime", "ctime", "rtime", "ttime", "qtime_max", "ctime_max", "rtime_max", "ttime_max",
}
# per-second rates: HAProxy's period starts with the first event, edgestick's at its
# once-a-second tick, so a burst may be split differently; compared with a tolerance
RATES = {"rate", "rate_max", "req_rate", "req_rate_max", "conn_rate", "conn_rate_max"}


STATES = HEAD + """
listen l
    bind 127.0.0.1:{FE}
    balance leastconn
    cookie SRV insert indirect nocache
    server a 127.0.0.1:{S1} check inter 200ms fall 1 rise 1 cookie a
    server down 127.0.0.1:{DEAD} check inter 200ms fall 1 rise 1 cookie d
    server bk 127.0.0.1:{S1} backup weight 3 maxconn 10
    server off 127.0.0.1:{S1} disabled
frontend t
    bind 127.0.0.1:{FE2}
    default_backend tb
backend tb
    id 7
    server t1 127.0.0.1:{S1}
"""


def show_stat(p) -> tuple[str, list[dict]]:
    text = p.cli("show stat").decode()
    lines = text.split("\n")
    assert lines[-2:] == ["", ""]           # each row ends with "\n", the dump with "\n"
    header = lines[0]
    names = header[2:].split(",")
    rows = []
    for line in lines[1:-2]:
        values = line.split(",")
        assert len(values) == len(names), line
        rows.append(dict(zip(names, values)))
    return header, rows


def wait_for(p, predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        _, rows = show_stat(p)
        if predicate(rows):
            return
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def settled(rows) -> bool:
    """Every connection ended, the first health check done."""
    by = {(r["pxname"], r["svname"]): r for r in rows}
    return all(r["scur"] == "0" for r in rows) and by[("b", "s1")]["check_health"] == "4"


def compare(h, e):
    """The whole dump: header, rows, every field (MASKED aside, RATES near)."""
    (h_header, h_rows), (e_header, e_rows) = show_stat(h), show_stat(e)
    assert e_header == h_header
    assert [(r["pxname"], r["svname"]) for r in e_rows] == [
        (r["pxname"], r["svname"]) for r in h_rows]
    totals = {"rate": "stot", "rate_max": "stot", "conn_rate": "conn_tot",
              "conn_rate_max": "conn_tot", "req_rate": "req_tot", "req_rate_max": "req_tot"}
    for hr, er in zip(h_rows, e_rows):
        where = (hr["pxname"], hr["svname"])
        for name, hv in hr.items():
            ev = er[name]
            if name in MASKED:
                continue
            if name == "check_status":      # "* ": a check under way at that instant
                hv, ev = hv.removeprefix("* "), ev.removeprefix("* ")
            if name in RATES and hv != "":
                # within the traffic's total; a peak near HAProxy's (a burst split over
                # two seconds at worst); a current rate depends on when it is read (its
                # arithmetic: tests/unit/test_metrics.py)
                total = int(hr[totals[name]])
                assert ev != "" and 0 <= int(ev) <= total, (where, name, ev, hv)
                if name.endswith("_max"):
                    assert abs(int(ev) - int(hv)) <= max(1, int(hv) // 2), (where, name, ev, hv)
                continue
            assert ev == hv, (where, name, ev, hv)
    return {(r["pxname"], r["svname"]): r for r in e_rows}


def test_show_stat_like_haproxy(private_tmp, haproxy_bin):
    b = Backends(["s1"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]       # nothing listens there
    try:
        with both(CONFIG, b, private_tmp, haproxy_bin) as (h, e):
            for p in (h, e):
                wait_for(p, settled)
                # a close request (s1), then a keep-alive session: s2 on a new server
                # connection, s1 on the one the first request left idle, a denied request
                assert raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                    b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
                wait_for(p, settled)
                c = Client(p.port, "127.0.0.1")
                assert [c.request(path).status for path in ("/", "/?x=1", "/deny")] == [
                    200, 200, 403]
                c.close()
                wait_for(p, settled)
                # the dead server: refused, no retry, 503
                assert raw_exchange(p.port, b"GET /dead HTTP/1.1\r\nHost: a\r\n"
                                    b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 503")
                wait_for(p, settled)
                # refused by the multiplexer: a malformed head, a truncated one (both
                # streams to HAProxy), and before all this the harness's empty probe
                assert raw_exchange(p.port, b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n").startswith(
                    b"HTTP/1.1 400")
                wait_for(p, settled)
                s = socket.create_connection(("127.0.0.1", p.port))
                s.sendall(b"GET / HTTP/1.1\r\nHost")
                s.shutdown(socket.SHUT_WR)
                assert s.recv(100).startswith(b"HTTP/1.1 400")
                s.close()
                wait_for(p, settled)
            e = compare(h, e)
        # the traffic's marks, beyond "equal": HTX-sized bytes, servers' sessions,
        # connections made and reused, the dead server's failed attempt
        assert e[("f", "FRONTEND")]["iid"] == "2"           # the CLI's frontend is 1
        assert e[("b", "s1")]["stot"] == "2" and e[("b", "s1")]["reuse"] == "1"
        assert e[("b", "s1")]["check_desc"] == "Layer4 check passed"
        assert e[("b", "BACKEND")]["lbtot"] == "3" and e[("b", "BACKEND")]["connect"] == "2"
        assert e[("d", "x")]["econ"] == "1" and e[("d", "x")]["req_tot"] == "0"
        assert e[("d", "BACKEND")]["hrsp_5xx"] == "1"
        fe = e[("f", "FRONTEND")]
        assert (fe["ereq"], fe["h1_total_streams"]) == ("3", "7")   # the probe: no stream
        # bytes in HAProxy's internal (HTX) size, not as they were on the wire
        assert fe["bin"] != fe["h1_bytes_in"]
    finally:
        b.kill()


def checks_done(rows) -> bool:
    """STATES: the first checks done (a UP, down DOWN), no connection open."""
    status = {r["svname"]: r["check_status"].removeprefix("* ") for r in rows}
    return (status["a"], status["down"]) == ("L4OK", "L4CON") and all(
        r["scur"] == "0" for r in rows)


def test_show_stat_server_states_like_haproxy(private_tmp, haproxy_bin):
    """A listen section (one proxy, both rows), leastconn and a cookie, a server DOWN by
    its check (refused), a backup, a disabled one, an explicit id."""
    b = Backends(["s1"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]
    try:
        with both(STATES, b, private_tmp, haproxy_bin, n_frontends=2) as (h, e):
            for p in (h, e):
                wait_for(p, checks_done)
                for port in p.ports:
                    assert raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                        b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
                wait_for(p, lambda rows: all(r["scur"] == "0" for r in rows))
            e = compare(h, e)
        assert e[("l", "down")]["last_chk"] == "Connection refused"
        assert e[("l", "BACKEND")]["weight"] == "1" and e[("l", "BACKEND")]["cookie"] == "SRV"
        assert e[("tb", "BACKEND")]["iid"] == "7"
    finally:
        b.kill()
