"""Server options that move a server's state besides its own check, compared with
HAProxy 2.6 on the same configuration and servers: `track` (a tracked server's state goes
down its trackers, chains and other backends included; MAINT "via"), `agent-check` (the
agent's words acting on the server, show stat's agent columns), `slowstart` (the weight
ramp after a server comes back), `hash-balance-factor`, `force-persist` / `ignore-persist`;
`-c` verdicts and messages of the options."""
import csv
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from proxy_harness import Backends, both, one_request, workdir

pytestmark = pytest.mark.haproxy


def stat_row(proxy, pxname, svname, cols):
    """Columns of one `show stat` row, read as CSV (last_chk may hold commas)."""
    lines = proxy.cli("show stat").decode().splitlines()
    head = lines[0][2:].split(",")
    for f in csv.reader(lines[1:]):
        if f[:2] == [pxname, svname]:
            return {c: f[head.index(c)] for c in cols}
    raise AssertionError(f"no show stat row {pxname}/{svname}")


class Switch:
    """A TCP port a health check can be pointed at: open (accepts) or closed (refused)."""

    def __init__(self):
        self.sock = None
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()

    def open(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.sock = s

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Agents:
    """Agent servers on loopback: each port answers every connection with the reply it
    is set to (bytes, then a close); None: accept and say nothing."""

    def __init__(self, names):
        self.replies = {}
        self.ports = {}
        self.socks = []
        self.stop = threading.Event()
        for name in names:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            s.settimeout(0.2)
            self.socks.append(s)
            self.ports[name] = s.getsockname()[1]
            self.replies[name] = b"up\n"
            threading.Thread(target=self._serve, args=(s, name), daemon=True).start()

    def _serve(self, s, name):
        held = []
        while not self.stop.is_set():
            try:
                c, _ = s.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            reply = self.replies[name]
            if reply is None:
                held.append(c)
                continue
            try:
                c.sendall(reply)
            except OSError:
                pass
            c.close()
        for c in held:
            c.close()

    def close(self):
        self.stop.set()
        for s in self.socks:
            s.close()


def settle(procs, pxname, names, cols, pred, timeout=8.0):
    """Rows of `names` from each proxy once `pred(row)` holds for every one of them (no
    check or agent run under way); the last rows read at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {}
        for p in procs:
            for n in names:
                rows[(p.kind, n)] = stat_row(p, pxname, n, cols)
        if all(pred(r) for r in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def compare(procs, pxname, names, cols, pred, timeout=8.0):
    rows = settle(procs, pxname, names, cols, pred, timeout)
    h = {n: rows[("haproxy", n)] for n in names}
    e = {n: rows[("edgestick", n)] for n in names}
    diffs = {n: {c: (h[n][c], e[n][c]) for c in cols if h[n][c] != e[n][c]}
             for n in names if h[n] != e[n]}
    assert not diffs, diffs
    return h


def not_running(row):
    return not any(str(v).startswith("* ") for v in row.values())


def servers_hit(port, n):
    seen = []
    for _ in range(n):
        seen.append(one_request(port).server)
    return seen


# --------------------------------------------------------------------------- track

TRACK = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 500ms

frontend fe
    bind 127.0.0.1:{FE}
    default_backend b1

backend b1
    server s1 127.0.0.1:{S1} check inter 200ms fall 1 rise 1 port {CHK}
    server s2 127.0.0.1:{S2} track s1
    server s3 127.0.0.1:{S3} track b2/t1
    server s4 127.0.0.1:{S4} track s2

backend b2
    server t1 127.0.0.1:{S3} check inter 200ms
    server t2 127.0.0.1:{S4}
"""
TRACK_COLS = ("status", "weight", "uweight", "act", "tracked", "check_status", "check_code",
              "last_chk", "check_rise", "check_fall", "check_health", "chkfail",
              "agent_status", "throttle")


def test_track_follows_the_tracked_server_as_haproxy(haproxy_bin):
    switch = Switch()
    switch.open()
    b = Backends(["s1", "s2", "s3", "s4"])
    b.start()
    b.ports["chk"] = switch.port
    names = ["s1", "s2", "s3", "s4"]
    try:
        with workdir() as wd, both(TRACK, b, wd, haproxy_bin) as (h, e):
            procs = (h, e)
            first = compare(procs, "b1", names, TRACK_COLS,
                            lambda r: r["check_status"] in ("", "L4OK"))
            assert first["s2"]["tracked"] == "b1/s1" and first["s4"]["tracked"] == "b1/s2"
            assert first["s2"]["status"] == "UP"
            compare(procs, "b2", ["t1", "t2"], TRACK_COLS, not_running)
            for p in procs:
                assert set(servers_hit(p.port, 8)) == {"s1", "s2", "s3", "s4"}, p.kind

            switch.close()              # s1's check fails: s2 and, through it, s4 follow
            down = compare(procs, "b1", names, TRACK_COLS,
                           lambda r: r["check_status"] in ("", "L4CON"))
            assert [down[n]["status"] for n in names] == ["DOWN", "DOWN", "UP", "DOWN"]
            for p in procs:
                assert set(servers_hit(p.port, 4)) == {"s3"}, p.kind

            switch.open()
            compare(procs, "b1", names, TRACK_COLS,
                    lambda r: r["check_status"] in ("", "L4OK"))
            for p in procs:             # maintenance goes down the chain too
                assert p.cli("set server b1/s1 state maint") == b"\n"
            maint = compare(procs, "b1", names, TRACK_COLS, not_running)
            assert maint["s2"]["status"].startswith("MAINT (via "), maint
            for p in procs:
                assert set(servers_hit(p.port, 4)) == {"s3"}, p.kind
                p.cli("set server b1/s1 state drain")
            compare(procs, "b1", names, TRACK_COLS, not_running)
            for p in procs:
                p.cli("set server b1/s1 state ready")
            compare(procs, "b1", names, TRACK_COLS, not_running)
    finally:
        b.kill()
        switch.close()


# --------------------------------------------------------------------------- -c verdicts

D = """defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
"""


def _config_case(body):
    return D + body


CONFIG_CASES = [
    ("track + check", "backend b\n    server s1 127.0.0.1:1 check\n"
     "    server s2 127.0.0.1:2 track s1 check\n"),
    ("default-server track", "backend b\n    default-server track t\n"
     "    server t 127.0.0.1:2 check\n"),
    ("track unknown server", "backend b\n    server s2 127.0.0.1:2 track s9\n"),
    ("track unknown proxy", "backend b\n    server s2 127.0.0.1:2 track bx/s1\n"),
    ("track a frontend", "frontend f\n    bind 127.0.0.1:1\nbackend b\n"
     "    server s2 127.0.0.1:2 track f/s1\n"),
    ("track unchecked", "backend b\n    server s2 127.0.0.1:2 track b2/t\n"
     "backend b2\n    server t 127.0.0.1:9\n"),
    ("track itself", "backend b\n    server s2 127.0.0.1:2 track s2\n"),
    ("track loop", "backend b\n    server s1 127.0.0.1:1 check\n"
     "    server s2 127.0.0.1:2 track s3\n    server s3 127.0.0.1:3 track s2\n"),
    ("track forward", "backend b\n    server s1 127.0.0.1:1 track b2/t\n"
     "backend b2\n    server t 127.0.0.1:2 check\n"),
    ("track agent-only", "backend b\n    server s1 127.0.0.1:1 track t\n"
     "    server t 127.0.0.1:2 agent-check agent-port 5\n"),
    ("track tcp backend", "backend b\n    server s1 127.0.0.1:1 track b2/t\n"
     "backend b2\n    mode tcp\n    server t 127.0.0.1:2 check\n"),
    ("track no argument", "backend b\n    server s1 127.0.0.1:1 track\n"),
    ("agent without port", "backend b\n    server s1 127.0.0.1:1 agent-check\n"),
    ("agent-addr with port", "backend b\n    server s1 127.0.0.1:1 agent-check "
     "agent-addr 127.0.0.1:5555 agent-port 1\n"),
    ("agent options", "backend b\n    server s1 127.0.0.1:1 agent-check agent-port 5 "
     "agent-inter 1s agent-addr 127.0.0.1 agent-send hello\n"),
    ("agent-inter 0", "backend b\n    server s1 127.0.0.1:1 agent-inter 0\n"),
    ("agent-inter unit", "backend b\n    server s1 127.0.0.1:1 agent-inter 1x\n"),
    ("agent-send no string", "backend b\n    server s1 127.0.0.1:1 agent-send\n"),
    ("observe", "backend b\n    server s1 127.0.0.1:1 observe layer7 error-limit 5 "
     "on-error sudden-death on-marked-down shutdown-sessions "
     "on-marked-up shutdown-backup-sessions\n"),
    ("observe bad", "backend b\n    server s1 127.0.0.1:1 observe layer5\n"),
    ("observe layer7 in tcp", "backend b\n    mode tcp\n    server s1 127.0.0.1:1 "
     "observe layer7\n"),
    ("error-limit 0", "backend b\n    server s1 127.0.0.1:1 error-limit 0\n"),
    ("on-error bad", "backend b\n    server s1 127.0.0.1:1 on-error reboot\n"),
    ("on-marked-down bad", "backend b\n    server s1 127.0.0.1:1 on-marked-down x\n"),
    ("on-marked-up bad", "backend b\n    server s1 127.0.0.1:1 on-marked-up x\n"),
    ("slowstart", "backend b\n    server s1 127.0.0.1:1 slowstart 10s\n"),
    ("slowstart bad", "backend b\n    server s1 127.0.0.1:1 slowstart 10x\n"),
    ("hash-balance-factor", "backend b\n    balance uri\n    hash-type consistent\n"
     "    hash-balance-factor 150\n    server s1 127.0.0.1:1\n"),
    ("hash-balance-factor 100", "backend b\n    hash-balance-factor 100\n"),
    ("hash-balance-factor none", "backend b\n    hash-balance-factor\n"),
    ("persist rules", "backend b\n    ignore-persist if { path /x }\n"
     "    force-persist unless TRUE\n    server s1 127.0.0.1:1\n"),
    ("persist without condition", "backend b\n    force-persist\n"),
    ("persist bad word", "backend b\n    ignore-persist when TRUE\n"),
    ("persist unknown acl", "backend b\n    ignore-persist if nosuchacl\n"),
    ("persist in defaults", "defaults x\n    ignore-persist if TRUE\n"),
    ("persist in a frontend", "frontend f\n    bind 127.0.0.1:1\n"
     "    ignore-persist if TRUE\n    force-persist if TRUE\n"),
]


def _messages(text: str, haproxy: bool) -> list[str]:
    """The ALERT/WARNING messages, without the location prefix or final dots."""
    out = []
    for line in text.splitlines():
        if "[NOTICE]" in line or not ("ALERT" in line or "WARNING" in line):
            continue
        if haproxy:
            m = re.search(r"\[[^\]]+:\d+\] : (?:'[^']*' : )?(.*)$", line)
        else:
            m = re.search(r"\S+:\d+: (?:'[^']*': )?(.*)$", line)
        if m:
            out.append(m.group(1).rstrip("."))
    return out


@pytest.mark.parametrize("name,body", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_server_options_config_as_haproxy(haproxy_bin, name, body):
    with workdir() as d:
        cfg = d / "t.cfg"
        cfg.write_text(_config_case(body))
        h = subprocess.run([haproxy_bin, "-c", "-f", str(cfg)], capture_output=True,
                           text=True, timeout=30)
        e = subprocess.run([sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)],
                           capture_output=True, text=True, timeout=30)
        h_ok, e_ok = h.returncode in (0, 2), e.returncode == 0
        assert h_ok == e_ok, (h.stdout + h.stderr, e.stdout + e.stderr)
        assert _messages(h.stdout + h.stderr, True) == _messages(e.stdout + e.stderr, False), (
            h.stdout + h.stderr, e.stdout + e.stderr)


# --------------------------------------------------------------------------- agent-check

AGENT = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 500ms
    default-server agent-check agent-inter 300ms

frontend fe
    bind 127.0.0.1:{FE}
    default_backend b

backend b
    server up 127.0.0.1:{S1} agent-port {A_UP}
    server down 127.0.0.1:{S2} agent-port {A_DOWN}
    server stopped 127.0.0.1:{S2} agent-port {A_STOPPED}
    server fail 127.0.0.1:{S2} agent-port {A_FAIL}
    server drain 127.0.0.1:{S3} agent-port {A_DRAIN}
    server maint 127.0.0.1:{S3} agent-port {A_MAINT}
    server half 127.0.0.1:{S4} agent-port {A_HALF} weight 10
    server maxconn 127.0.0.1:{S4} agent-port {A_MAXCONN} weight 4
    server error 127.0.0.1:{S4} agent-port {A_ERROR}
    server desc 127.0.0.1:{S4} agent-port {A_DESC}
    server empty 127.0.0.1:{S4} agent-port {A_EMPTY}
    server refused 127.0.0.1:{S4} agent-port {A_REFUSED}
    server checked 127.0.0.1:{S4} agent-port {A_CHECKED} check inter 300ms
    server sent 127.0.0.1:{S4} agent-port {A_SENT} agent-addr 127.0.0.1 agent-send "hello\\n"

backend st
    balance static-rr
    server s 127.0.0.1:{S4} agent-port {A_MAXCONN} weight 4
    server z 127.0.0.1:{S4} agent-port {A_ZERO} weight 4
"""
AGENT_REPLIES = {"a_up": b"up\n", "a_down": b"down # gone\n", "a_stopped": b"stopped\n",
                 "a_fail": b"fail\n", "a_drain": b"drain\n", "a_maint": b"maint\n",
                 "a_half": b"50%\n", "a_maxconn": b"75% maxconn:7 bar\n", "a_error": b"foo\n",
                 "a_desc": b"up # all good\n", "a_empty": b"", "a_checked": b"down\n",
                 "a_sent": b"ready,up\n", "a_zero": b"0%\n"}
AGENT_SERVERS = ["up", "down", "stopped", "fail", "drain", "maint", "half", "maxconn",
                 "error", "desc", "empty", "refused", "checked", "sent"]
AGENT_COLS = ("status", "weight", "uweight", "slim", "agent_status", "agent_code",
              "last_agt", "agent_desc", "agent_rise", "agent_fall", "agent_health",
              "check_status")


def agents_settled(row):
    return (not_running(row) and row["agent_status"] not in ("INI", "")
            and row["check_status"] in ("", "L4OK"))


def test_agent_check_as_haproxy(haproxy_bin):
    agents = Agents(list(AGENT_REPLIES))
    agents.replies.update(AGENT_REPLIES)
    b = Backends(["s1", "s2", "s3", "s4"])
    b.start()
    b.ports.update(agents.ports)
    b.ports["a_refused"] = Switch().port          # nothing listens there
    try:
        with workdir() as wd, both(AGENT, b, wd, haproxy_bin) as (h, e):
            procs = (h, e)
            first = compare(procs, "b", AGENT_SERVERS, AGENT_COLS, agents_settled)
            assert first["down"]["status"] == "DOWN (agent)"
            assert first["half"]["weight"] == "5" and first["maxconn"]["slim"] == "7"
            assert first["checked"]["status"] == "DOWN (agent)"
            compare(procs, "st", ["s", "z"], AGENT_COLS, agents_settled)
            compare(procs, "b", ["BACKEND"], ("status", "weight", "uweight", "act"),
                    lambda r: True)
            for p in procs:             # DOWN, drained and maintained servers get nothing
                assert set(servers_hit(p.port, 12)) == {"s1", "s4"}, p.kind
            # the agents change their minds
            agents.replies.update({"a_down": b"up\n", "a_drain": b"ready\n",
                                   "a_maint": b"ready\n", "a_half": b"100%\n",
                                   "a_checked": b"up\n", "a_up": b"drain\n"})
            for name, col, value in (("down", "status", "no check"), ("maint", "status", "no check"),
                                     ("up", "status", "DRAIN (agent)"), ("half", "weight", "10")):
                settle(procs, "b", [name], (col,), lambda r, c=col, v=value: r[c] == v)
            second = compare(procs, "b", AGENT_SERVERS, AGENT_COLS, agents_settled)
            assert second["down"]["status"] == "no check"
            assert second["up"]["status"] == "DRAIN (agent)"
            assert second["half"]["weight"] == "10"
            for p in procs:             # (a whole roundrobin window: 22 weight units)
                assert set(servers_hit(p.port, 22)) == {"s2", "s3", "s4"}, p.kind
    finally:
        b.kill()
        agents.close()


# --------------------------------------------------------------------------- slowstart

SLOWSTART = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    default_backend rr

backend rr
    server s1 127.0.0.1:{S1} slowstart 3s weight 50
    server s2 127.0.0.1:{S2} weight 50

backend lc
    balance leastconn
    server s1 127.0.0.1:{S1} slowstart 3s weight 50

backend st
    balance static-rr
    server s1 127.0.0.1:{S1} slowstart 3s weight 50
"""
# HAProxy's ramp for weight 50 over 3 s (16ths: 1, 6, 11, then 16), as show stat words it
RAMP = [("4", "6"), ("19", "37"), ("35", "68"), ("50", "")]


def _subsequence(seen, full):
    it = iter(full)
    return all(any(x == y for y in it) for x in seen)


def test_slowstart_ramp_as_haproxy(haproxy_bin):
    b = Backends(["s1", "s2"])
    b.start()
    try:
        with workdir() as wd, both(SLOWSTART, b, wd, haproxy_bin) as (h, e):
            procs = (h, e)
            for p in procs:
                for bk in ("rr", "lc", "st"):
                    p.cli(f"set server {bk}/s1 state maint")
            for p in procs:
                for bk in ("rr", "lc", "st"):
                    p.cli(f"set server {bk}/s1 state ready")
            seen = {(p.kind, bk): [] for p in procs for bk in ("rr", "lc", "st")}
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                done = True
                for p in procs:
                    for bk in ("rr", "lc", "st"):
                        r = stat_row(p, bk, "s1", ("weight", "throttle"))
                        v = (r["weight"], r["throttle"])
                        if not seen[(p.kind, bk)] or seen[(p.kind, bk)][-1] != v:
                            seen[(p.kind, bk)].append(v)
                        done = done and v[1] == ""
                if done:
                    break
                time.sleep(0.05)
            for kind in ("haproxy", "edgestick"):
                for bk in ("rr", "lc"):
                    ramp = seen[(kind, bk)]
                    # every step of HAProxy's formula, in order (a step can be missed when
                    # a timer straddles a second), from the first to full weight
                    assert ramp[0] == RAMP[0] and ramp[-1] == RAMP[-1], (kind, bk, ramp)
                    assert _subsequence(ramp, RAMP) and len(ramp) >= 3, (kind, bk, ramp)
                # a static algorithm keeps the weight; the server is STARTING all the same
                assert seen[(kind, "st")] == [("50", "100"), ("50", "")], (kind, seen)
            rows = {p.kind: stat_row(p, "rr", "BACKEND", ("weight", "uweight"))
                    for p in procs}
            assert rows["haproxy"] == rows["edgestick"] == {"weight": "100", "uweight": "100"}
            for p in procs:             # RUNNING at the end of the ramp: a state change
                assert int(stat_row(p, "rr", "s1", ("lastchg",))["lastchg"]) <= 1, p.kind
    finally:
        b.kill()


# --------------------------------------------------------------------------- bounded loads

HBF = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    balance uri
    hash-type consistent

frontend fe
    bind 127.0.0.1:{FE}
    use_backend free if { path_beg /u }
    default_backend bounded

backend bounded
    hash-balance-factor 150
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}

backend free
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}
"""


def test_hash_balance_factor_as_haproxy(haproxy_bin):
    """Six requests for one URI in flight at once: without a bound they all go to the
    URI's server; with `hash-balance-factor 150` each server may serve at most 150% of
    its share, the others take the rest in the ring's order."""
    b = Backends(["s1", "s2", "s3"])
    b.start()
    try:
        with workdir() as wd, both(HBF, b, wd, haproxy_bin) as (h, e):
            socks = {(p.kind, path): [] for p in (h, e) for path in ("/x", "/u/x")}
            for n in range(1, 7):
                for p in (h, e):
                    for path in ("/x", "/u/x"):
                        s = socket.create_connection(("127.0.0.1", p.port), 5)
                        s.sendall(f"GET {path}?sleep=2.5 HTTP/1.1\r\nHost: a\r\n"
                                  "Connection: close\r\n\r\n".encode())
                        socks[(p.kind, path)].append(s)
                for bk in ("bounded", "free"):      # each request on a server before the next
                    settle((h, e), bk, ["BACKEND"], ("scur",),
                           lambda r, n=n: r["scur"] == str(n), timeout=3)
            got = {}
            for key, conns in socks.items():
                got[key] = []
                for s in conns:
                    data = b""
                    while True:
                        d = s.recv(65536)
                        if not d:
                            break
                        data += d
                    s.close()
                    m = re.search(rb"server=(\w+)", data)
                    got[key].append(m.group(1).decode() if m else data[:40])
            assert got[("haproxy", "/x")] == got[("edgestick", "/x")], got
            assert got[("haproxy", "/u/x")] == got[("edgestick", "/u/x")], got
            assert len(set(got[("haproxy", "/u/x")])) == 1
            assert len(set(got[("haproxy", "/x")])) > 1
    finally:
        b.kill()


# --------------------------------------------------------------------------- persist rules

PERSIST = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    use_backend st if { path_beg /stk/ }
    default_backend ck

backend ck
    cookie SRV insert indirect nocache
    force-persist if { path_beg /force }
    ignore-persist if { path_beg /static }
    server s1 127.0.0.1:{S1} cookie c1
    server s2 127.0.0.1:{S2} cookie c2

backend st
    stick-table type ip size 1k
    stick on src
    force-persist if { path_beg /stk/force }
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
"""


def test_force_and_ignore_persist_as_haproxy(haproxy_bin):
    b = Backends(["s1", "s2"])
    b.start()

    def run(p, path, cookie=None):
        r = one_request(p.port, path, headers=[("Cookie", f"SRV={cookie}")] if cookie else [])
        return r.status, r.server, r.header("set-cookie")

    try:
        with workdir() as wd, both(PERSIST, b, wd, haproxy_bin) as (h, e):
            got = {}
            for p in (h, e):
                seq = [run(p, "/", "c2"), run(p, "/static/a", "c2"), run(p, "/static/b", "c2"),
                       run(p, "/stk/1"), run(p, "/stk/2")]
                p.cli("set server ck/s2 state maint")
                first = stat_row(p, "st", "s1", ("stot",))["stot"] != "0"
                p.cli(f"set server st/{'s1' if first else 's2'} state maint")
                seq += [run(p, "/", "c2"), run(p, "/force", "c2"), run(p, "/static/c", "c2"),
                        run(p, "/stk/force"), run(p, "/stk/3")]
                got[p.kind] = seq
            assert got["haproxy"] == got["edgestick"], got
            seq = got["haproxy"]
            assert seq[1][2] is None and seq[6][1] == "s2"        # ignored; forced to MAINT
            assert seq[7][1] == "s1"                               # ignored: balanced
            assert seq[3][1] == seq[4][1] == seq[8][1] != seq[9][1]   # forced, then not
    finally:
        b.kill()


# --------------------------------------------------------------------------- observe

OBSERVE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
    max-spread-checks 100ms

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    default-server check inter 20s

frontend fe
    bind 127.0.0.1:{FE}
    use_backend %[path,field(2,/)]

backend markdown
    server s 127.0.0.1:{S1} observe layer7 error-limit 3 on-error mark-down

backend failcheck
    server s 127.0.0.1:{S1} observe layer7 error-limit 2 on-error fail-check

backend suddendeath
    retries 2
    server s 127.0.0.1:{DEAD} observe layer4 error-limit 2 on-error sudden-death port {CHK}

backend fastinter
    server s 127.0.0.1:{S1} observe layer7 error-limit 2 on-error fastinter

backend reset
    server s 127.0.0.1:{S1} observe layer7 error-limit 2

backend soon
    server s 127.0.0.1:{S1} observe layer7 error-limit 2 on-error fastinter fastinter 200ms fall 1 port {CHK2}
"""
OBSERVED = ("markdown", "failcheck", "suddendeath", "fastinter", "reset")  # (and soon)
OBSERVE_COLS = ("status", "check_status", "check_code", "last_chk", "check_health",
                "chkfail", "chkdown", "hanafail", "econ", "eresp")


def test_observe_on_error_as_haproxy(haproxy_bin):
    switch, switch2 = Switch(), Switch()
    switch.open()
    switch2.open()
    b = Backends(["s1"])
    b.start()
    b.ports.update({"chk": switch.port, "chk2": switch2.port, "dead": Switch().port})
    try:
        with workdir() as wd, both(OBSERVE, b, wd, haproxy_bin) as (h, e):
            procs = (h, e)
            for bk in OBSERVED:
                settle(procs, bk, ["s"], ("check_status",),
                       lambda r: r["check_status"] == "L4OK")
            for p in procs:
                for path in ("markdown",) * 3 + ("failcheck",) * 2 + ("fastinter",) * 2 + (
                        "reset", "reset/ok", "reset"):
                    status = "200" if path.endswith("ok") else "500"
                    one_request(p.port, f"/{path}?status={status}")
                one_request(p.port, "/suddendeath/")        # three refused connections
            rows = {bk: compare(procs, bk, ["s"], OBSERVE_COLS, not_running)["s"]
                    for bk in OBSERVED}
            assert rows["markdown"]["status"] == "DOWN"
            for p in procs:             # (HAProxy's -1 ms, printed unsigned)
                assert stat_row(p, "markdown", "s", ("check_duration",)) == {
                    "check_duration": "18446744073709551615"}, p.kind
            assert rows["markdown"]["last_chk"] == \
                "Detected 3 consecutive errors, last one was: Wrong http response"
            assert rows["failcheck"]["status"] == "UP 2/3"
            # one verdict after two errors: from the top to rise + 1, then one failure
            assert rows["suddendeath"]["status"] == "UP 1/3"
            assert rows["suddendeath"]["hanafail"] == "1"
            assert rows["reset"]["hanafail"] == "0"
            # `show stat up`: a server going down ("UP 2/3") is up, a DOWN one is not
            shown = {}
            for p in procs:
                lines = list(csv.reader(p.cli("show stat up").decode().splitlines()[1:]))
                shown[p.kind] = sorted((f[0], f[1], f[17]) for f in lines
                                       if f and f[0] in ("markdown", "failcheck"))
            assert shown["haproxy"] == shown["edgestick"], shown
            assert ("failcheck", "s", "UP 2/3") in shown["haproxy"]
            # on-error fastinter: the verdict brings the next check forward (its interval
            # is 20 s): a check port closed meanwhile makes the server DOWN at once
            settle(procs, "soon", ["s"], ("check_status",), lambda r: r["check_status"] == "L4OK")
            switch2.close()
            for p in procs:
                for _ in range(2):
                    one_request(p.port, "/soon?status=500")
            soon = compare(procs, "soon", ["s"], ("status", "check_status", "hanafail"),
                           lambda r: r["status"] == "DOWN", timeout=3)
            assert soon["s"] == {"status": "DOWN", "check_status": "L4CON", "hanafail": "1"}
    finally:
        b.kill()
        switch.close()
        switch2.close()


# --------------------------------------------------------------------------- on-marked-down/up

MARKED = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    default_backend b

backend b
    server s1 127.0.0.1:{S1} check inter 100ms fall 1 rise 1 port {CHK} on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions
    server s2 127.0.0.1:{S2} backup
"""
MARKED_COLS = ("status", "eresp", "hrsp_5xx", "srv_abrt", "cli_abrt")


def _slow_exchange(port, out, key):
    """A request the server answers in 2 s: the status line, and whether the connection
    stayed open afterwards."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(4)
    s.sendall(b"GET /?sleep=2 HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(65536)
        if not d:
            break
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"content-length: *(\d+)", head, re.I)
    need = int(m.group(1)) if m else 0
    try:
        while len(body) < need:
            d = s.recv(65536)
            if not d:
                break
            body += d
        s.settimeout(0.5)
        state = "closed" if s.recv(1) == b"" else "data"
    except (TimeoutError, socket.timeout):
        state = "open"
    except OSError:
        state = "reset"
    s.close()
    out[key] = (head.split(b"\r\n")[0], state)


@pytest.mark.parametrize("event", ["down", "up"])
def test_on_marked_shutdown_sessions_as_haproxy(haproxy_bin, event):
    switch = Switch()
    if event == "down":
        switch.open()
    b = Backends(["s1", "s2"])
    b.start()
    b.ports["chk"] = switch.port
    try:
        with workdir() as wd, both(MARKED, b, wd, haproxy_bin) as (h, e):
            want = "UP" if event == "down" else "DOWN"
            settle((h, e), "b", ["s1"], ("status",), lambda r: r["status"] == want)
            got = {}
            threads = [threading.Thread(target=_slow_exchange, args=(p.port, got, p.kind))
                       for p in (h, e)]
            for t in threads:
                t.start()
            # both requests on a server: s1, or the backup s2
            settle((h, e), "b", ["s1" if event == "down" else "s2"], ("scur",),
                   lambda r: r["scur"] == "1", timeout=3)
            if event == "down":
                switch.close()
            else:
                switch.open()
            for t in threads:
                t.join()
            assert got["haproxy"] == got["edgestick"], got
            assert got["haproxy"][0] == b"HTTP/1.1 502 Bad Gateway"
            for name in ("s1", "s2", "BACKEND"):
                compare((h, e), "b", [name], MARKED_COLS, lambda r: True)
    finally:
        b.kill()
        switch.close()


AGENT_MAXCONN = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout queue 5s

frontend fe
    bind 127.0.0.1:{FE}
    default_backend one

backend one
    server s 127.0.0.1:{S1} agent-check agent-port {A_ONE} agent-inter 200ms
"""


def test_agent_maxconn_queues_requests_as_haproxy(haproxy_bin):
    """An agent's maxconn:1 on a server that had none: a second request waits in the
    backend's queue (the fast path of a backend without limits does not bypass it)."""
    agents = Agents(["a_one"])
    b = Backends(["s1"])
    b.start()
    b.ports.update(agents.ports)
    try:
        with workdir() as wd, both(AGENT_MAXCONN, b, wd, haproxy_bin) as (h, e):
            # traffic before any limit: two requests at once leave two idle connections
            warm = [threading.Thread(target=one_request, args=(p.port, "/?sleep=0.3"))
                    for p in (h, e) for _ in range(2)]
            for t in warm:
                t.start()
            for t in warm:
                t.join()
            agents.replies["a_one"] = b"maxconn:1\n"
            settle((h, e), "one", ["s"], ("slim",), lambda r: r["slim"] == "1")
            got = {}
            threads = [threading.Thread(target=lambda p=p, i=i: got.__setitem__(
                (p.kind, i), one_request(p.port, "/?sleep=0.8").status))
                for p in (h, e) for i in range(2)]
            for t in threads:
                t.start()
            settle((h, e), "one", ["BACKEND"], ("qcur",), lambda r: r["qcur"] == "1", timeout=3)
            rows = {p.kind: (stat_row(p, "one", "s", ("scur", "slim")),
                             stat_row(p, "one", "BACKEND", ("qcur",)))
                    for p in (h, e)}
            for t in threads:
                t.join()
            assert rows["haproxy"] == rows["edgestick"] == (
                {"scur": "1", "slim": "1"}, {"qcur": "1"}), rows
            assert set(got.values()) == {200}, got
    finally:
        b.kill()
        agents.close()
