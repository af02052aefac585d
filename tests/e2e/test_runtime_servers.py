"""Managing servers through the runtime API, edgestick against a live HAProxy 2.6: the
same configuration and commands go to both, and must give the same reply bytes (`show
servers state` with its time-since-last-change column masked), the same choice of
servers for traffic, and the same state after a reload with a server-state file."""
import collections
import re
import signal
import time

import pytest

from proxy_harness import (Backends, Client, both, free_ports, one_request, start_proxy,
                           stat_row, workdir)

CONFIG = """\
global
    stats socket {SOCK} level admin
    stats socket {SOCK}.op level operator
    server-state-file {SOCK}.state
    maxconn 500
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    load-server-state-from-file global
backend be1
    id 7
    server s1 127.0.0.1:{S1} weight 10 id 4
    server s2 127.0.0.1:{S2} check inter 300ms port {S2}
    server s3 localhost:{S3} backup
    server s4 127.0.0.1:{S4} check inter 300ms addr 127.0.0.1
    server s5 127.0.0.1:{S1} ssl verify none disabled
    server dead 127.0.0.1:{DEAD} check inter 300ms
    server s8 127.0.0.1:{S2} disabled
backend rr
    balance roundrobin
    server a 127.0.0.1:{S1} weight 3
    server b 127.0.0.1:{S2}
    server c 127.0.0.1:{S3}
backend srr
    balance static-rr
    server a 127.0.0.1:{S1}
listen li
    bind 127.0.0.1:{FE2}
    load-server-state-from-file none
    server l1 127.0.0.1:{S1}
frontend fe
    bind 127.0.0.1:{FE}
    default_backend rr
"""

COMMANDS = """\
show backend
show servers state
show servers state li
show servers state fe
show servers state nope
set server be1/s1 state maint
set server be1/s2 state maint
set server be1/s4 state drain
set server be1/s8 state ready
show servers state be1
set server be1/s2 state ready
set server be1/s1 state ready
disable server be1/s3
show servers state be1
enable server be1/s3
get weight be1/s1
get weight be1
get weight be1/
get weight nope/s1
get weight be1/zz
get weight
set weight be1/s1 50%
get weight be1/s1
set weight be1/s1 300
set weight be1/s1 abc
set weight be1/s1
set weight be1/s1 -5%
set weight be1/s1 5x
set weight be1/s1 3000%
get weight be1/s1
set weight be1/s1 7
set weight srr/a 5
set weight srr/a 0%
set weight srr/a 100%
set server be1/s1 weight 4
set server be1/s1 weight
set server be1/s1 state x
set server be1/s1 health x
set server be1/s1 agent up
set server be1/s1 agent-addr 1.1.1.1
set server be1/s1 agent-send x
set server be1/s1 fqdn x
set server be1/s1 ssl on
set server be1/s1 check-port 99
set server be1/s2 check-port
set server be1/s2 check-port x
set server be1/s2 check-port 70000
set server be1/s2 check-addr bad
set server be1/s2 check-addr 127.0.0.1 port {S4}
set server be1/s4 check-port {S4}
set server be1/s1 health down
show servers state be1
set server be1/s1 health up
enable health be1/s1
disable health be1/s1
disable health be1/s4
show servers state be1
enable health be1/s4
set server be1/s1 bogus
set server be1/s1
set server be1
set server nope/s1 state ready
set server be1/s1 addr
set server be1/s1 addr bad
set server be1/s1 addr 127.0.0.1
set server be1/s1 addr 127.0.0.1 port {S1}
set server be1/s1 addr 127.0.0.2 port {S2}
set server be1/s1 addr 127.0.0.1 port x
set server be1/s1 addr 127.0.0.1 port {S1}
set maxconn server be1/s1 20
set maxconn server be1/s1
set maxconn server be1/s1 x
set maxconn server be1/s1 5x
set maxconn server be1/zz 5
set maxconn frontend fe 30
set maxconn frontend nope 30
set maxconn frontend fe
set maxconn frontend
set maxconn frontend fe -1
set maxconn global 100
set maxconn global
set maxconn global 501
set maxconn global 0
set maxconn global -1
set maxconn
shutdown sessions server be1/s1
shutdown sessions server
shutdown sessions server be1/zz
add server be1
add server
add server be1/n2
add server nope/n2 127.0.0.1:1
add server srr/n 127.0.0.1:1
add server be1/n3 127.0.0.1:1 bogus
add server be1/n5 127.0.0.1:1 cookie x
add server be1/n5 127.0.0.1:1 redir http://x
add server be1/n6 127.0.0.1:1 weight 300
add server be1/n7 127.0.0.1:99999
add server be1/n8 127.0.0.1:1 id 4
add server be1/s1 127.0.0.1:1
add server be1/n1 127.0.0.1:{S3} weight 3 maxconn 9
add server be1/n9 127.0.0.1:{S3} check inter 300ms id 40 backup
add server be1/n10 127.0.0.1:{S1} disabled
show servers state be1
enable health be1/n9
set server be1/n9 state ready
show servers state be1
del server be1/n1
set server be1/n1 state ready
get weight be1/n1
show servers state be1
set server be1/n1 state maint; del server be1/n1
del server be1/n1
del server be1/s2
del server be1/zz
del server nope/s1
del server be1
del server
show servers state be1
show version
"""

OPERATOR_COMMANDS = """\
show servers state li
show backend
get weight be1/s1
set weight be1/s1 5
set server be1/s1 state maint
set maxconn server be1/s1 3
set maxconn frontend fe 4
set maxconn global 5
add server be1/n1 1.2.3.4:5
del server be1/s1
shutdown sessions server be1/s1
enable server be1/s1
disable server be1/s1
user; show servers state li
user; get weight be1/s1
"""

_STATE_LINE = re.compile(r"^(\S+ \S+ \S+ \S+ \S+ \S+ \S+ \S+ \S+) \d+ (\S+ \S+ \S+) (\d+)(.*)$",
                         re.M)


def masked(reply: bytes) -> str:
    """A reply with `show servers state`'s time since the last change masked, a check
    under way (bit 1 of the check state) not told apart from none, and the name of the
    configuration file masked."""
    text = re.sub(r" at \S+\.cfg:", " at CFG:", reply.decode())   # (each its own file)
    return _STATE_LINE.sub(lambda m: f"{m[1]} T {m[2]} {int(m[3]) & ~1}{m[4]}", text)


def replies(h, e, cmd: str, timeout: float = 3.0) -> tuple:
    """The replies of both to `cmd`; `show servers state` is read again while a check
    is under way in either (its result is unknown while it runs) or while they differ
    (the two run their checks at their own instants: a check's verdict, or the health
    counter climbing back after maintenance, reaches one before the other)."""
    deadline = time.monotonic() + timeout
    while True:
        hr, er = h.cli(cmd), e.cli(cmd)
        if not cmd.startswith("show servers state") or time.monotonic() > deadline:
            return hr, er
        busy = any(int(m[3]) & 1 for r in (hr, er) for m in _STATE_LINE.finditer(r.decode()))
        if not busy and masked(hr) == masked(er):
            return hr, er
        time.sleep(0.05)


def states(proxy, backend: str) -> dict:
    """show servers state: server name -> its fields."""
    out = {}
    for line in proxy.cli(f"show servers state {backend}").decode().splitlines()[2:]:
        f = line.split()
        if f:
            out[f[3]] = f
    return out


def settle(proxy, backend: str, checked, timeout: float = 6.0) -> None:
    """Until each checked server has a check verdict (not INI) and none is under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = states(proxy, backend)
        if all(st[s][10] != "1" and not int(st[s][13]) & 1 for s in checked):
            return
        time.sleep(0.05)


def served(port: int, count: int) -> collections.Counter:
    return collections.Counter(one_request(port, "/").server for _ in range(count))


def test_server_commands_match_haproxy(haproxy_bin):
    bk = Backends(["s1", "s2", "s3", "s4"])
    bk.start()
    try:
        with workdir() as tmp:
            bk.ports["dead"] = free_ports(1)[0]     # (nothing listens there)
            with both(CONFIG, bk, tmp, haproxy_bin, n_frontends=2) as (h, e):
                for p in (h, e):
                    settle(p, "be1", ("s2", "s4", "dead"))
                for cmd in COMMANDS.format(S1=bk.ports["s1"], S2=bk.ports["s2"],
                                           S3=bk.ports["s3"], S4=bk.ports["s4"]).splitlines():
                    hr, er = replies(h, e, cmd)
                    if cmd == "show version":
                        assert hr.startswith(b"2.6.") and er.startswith(b"0.") and \
                            er.endswith(b"\n\n"), (hr, er)
                        continue
                    assert masked(er) == masked(hr), cmd
                for cmd in OPERATOR_COMMANDS.splitlines():
                    hs, es = h.sock, e.sock
                    h.sock, e.sock = hs + ".op", es + ".op"
                    try:
                        assert masked(e.cli(cmd)) == masked(h.cli(cmd)), cmd
                    finally:
                        h.sock, e.sock = hs, es
    finally:
        bk.kill()


def test_weights_and_dynamic_servers_steer_traffic(haproxy_bin):
    """set weight, maintenance, drain and a dynamic server change which servers the
    requests reach, the same way in both."""
    bk = Backends(["s1", "s2", "s3"])
    bk.start()
    try:
        with workdir() as tmp:
            template = CONFIG.replace("{DEAD}", "{S3}").replace("{S4}", "{S3}")
            with both(template, bk, tmp, haproxy_bin, n_frontends=2) as (h, e):
                steps = [
                    ([], 10),                                   # weights 3 1 1
                    (["set weight rr/a 1"], 6),                 # 1 1 1
                    (["set server rr/b state maint"], 4),
                    (["set server rr/b state ready", "set server rr/c state drain"], 4),
                    (["set server rr/c weight 0%", "set server rr/c state ready",
                      f"add server rr/d 127.0.0.1:{bk.ports['s3']} weight 2",
                      "set server rr/d state ready"], 8),       # a, b, d (2)
                    (["set server rr/d state maint", "del server rr/d",
                      "set server rr/a state maint", "set server rr/b state maint"], 3),
                    # b moves to s3's port: the requests follow it
                    (["set server rr/a state ready", "set server rr/b state ready",
                      f"set server rr/b addr 127.0.0.1 port {bk.ports['s3']}"], 4),
                ]
                for cmds, count in steps:
                    for cmd in cmds:
                        assert masked(e.cli(cmd)) == masked(h.cli(cmd)), cmd
                    got = served(e.port, count)
                    assert got == served(h.port, count), cmds
                assert got == {"s1": 2, "s3": 2}
                assert stat_row(e, "rr", "b", ("addr",)) == stat_row(h, "rr", "b", ("addr",)) \
                    == {"addr": f"127.0.0.1:{bk.ports['s3']}"}
    finally:
        bk.kill()


STATE_FILE = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
2 rr 1 a 127.0.0.1 2 1 5 3 100 1 0 2 0 0 0 0 - {S1} - 0 0 - - 0
2 rr 2 b 127.0.0.9 2 0 5 9 100 1 0 2 0 0 0 0 - {S3} - 0 0 - - 0
2 rr 3 c 127.0.0.1 0 0 1 1 100 8 2 0 6 0 0 0 - {S3} - 0 0 - - 0
2 rr 4 zz 127.0.0.1 0 0 1 1 100 8 2 0 6 0 0 0 - {S3} - 0 0 - - 0
7 be1 4 s1 127.0.0.1 2 8 7 10 100 1 0 2 0 0 0 0 - {S1} - 0 0 - - 0
7 be1 9 s8 127.0.0.1 2 4 1 1 100 1 0 0 8 0 0 0 - {S2} - 0 0 - - 0
7 be1 5 s5 127.0.0.1 2 0 1 1 100 1 0 0 8 0 0 0 - {S1} - 0 0 - - 0
7 be1 6 s3 127.0.0.1 2 x 1 1 100 1 0 0 8 0 0 0 - {S1} - 0 0 - - 0
3 li 1 l1 127.0.0.1 2 1 1 1 100 1 0 2 0 0 0 0 - {S1} - 0 0 - - 0
"""


def test_state_file_applied_at_start_and_reload(haproxy_bin):
    """A state file written by hand applies at start as HAProxy applies it (forced
    maintenance, drain, weights only when the configured one is unchanged, a stopped
    server without checks stays down, the file's port wins, malformed lines and other
    backends' servers ignored); then an operator's sequence: change states, save
    `show servers state`, reload (HAProxy: a new process; edgestick: `reload`, and
    SIGUSR2): the same state after it, and the same servers chosen."""
    bk = Backends(["s1", "s2", "s3"])
    bk.start()
    try:
        with workdir() as tmp:
            template = CONFIG.replace("{DEAD}", "{S3}").replace("{S4}", "{S3}")
            for kind in ("h", "e"):
                (tmp / kind).mkdir()
                (tmp / kind / f"{'haproxy' if kind == 'h' else 'edgestick'}.sock.state") \
                    .write_text(STATE_FILE.format(S1=bk.ports["s1"], S2=bk.ports["s2"],
                                                  S3=bk.ports["s3"]))
            with both(template, bk, tmp, haproxy_bin, n_frontends=2) as (h, e):
                for p in (h, e):
                    settle(p, "be1", ("s2", "s4", "dead"))
                for cmd in ("show servers state rr", "show servers state be1",
                            "show servers state li"):
                    hr, er = replies(h, e, cmd)
                    assert masked(er) == masked(hr), cmd
                assert served(e.port, 6) == served(h.port, 6)
                # the operator's changes, saved, then a reload
                for cmd in ("set server rr/a state ready", "set weight rr/a 2",
                            "set server rr/b state maint", "set server be1/s1 state drain"):
                    assert e.cli(cmd) == h.cli(cmd), cmd
                for p in (h, e):
                    state = p.cli("show servers state")
                    with open(p.sock + ".state", "wb") as f:
                        f.write(state[:-1])        # (the reply's final empty line)
                h.stop()
                h2 = start_proxy("haproxy", template, bk, tmp / "h", 2, haproxy_bin)
                try:
                    assert e.cli("reload").startswith(b"Success=1")
                    for p in (h2, e):
                        settle(p, "be1", ("s2", "s4", "dead"))
                    for cmd in ("show servers state rr", "show servers state be1"):
                        hr, er = replies(h2, e, cmd)
                        assert masked(er) == masked(hr), cmd
                    assert served(e.port, 6) == served(h2.port, 6)
                    # SIGUSR2 reads the file again: a state saved by hand applies
                    with open(e.sock + ".state", "w") as f:
                        f.write(STATE_FILE.format(S1=bk.ports["s1"], S2=bk.ports["s2"],
                                                  S3=bk.ports["s3"]))
                    e.proc.send_signal(signal.SIGUSR2)
                    deadline = time.monotonic() + 5
                    while states(e, "rr")["a"][6] != "1" and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert states(e, "rr")["a"][6:8] == ["1", "5"]
                finally:
                    h2.stop()
    finally:
        bk.kill()


LIMITS = """\
global
    stats socket {SOCK} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout queue 5s
backend be1
    server s1 127.0.0.1:{S1} maxconn 1
frontend fe
    bind 127.0.0.1:{FE}
    default_backend be1
"""


def _slow_requests(port: int, count: int, results: list, path: str = "/?sleep=1"):
    """`count` slow GETs at once, each on its own connection, in threads."""
    import threading

    def one():
        c = Client(port, timeout=5)
        try:
            r = c.request(path)
            results.append(r.status if r is not None else None)
        except OSError:
            results.append("error")
        finally:
            c.close()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def _wait_row(proxy, px, sv, want: dict, timeout: float = 3.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = stat_row(proxy, px, sv, tuple(want))
        if row == want or time.monotonic() > deadline:
            return row
        time.sleep(0.03)


def test_maxconn_and_shutdown_sessions_act_as_haproxy(haproxy_bin):
    """set maxconn server lets a queued request in, shutdown sessions server ends the
    streams on the server (502 to their clients), set maxconn frontend makes a second
    connection wait: the same counters in both at each step."""
    bk = Backends(["s1"])
    bk.start()
    try:
        with workdir() as tmp:
            with both(LIMITS, bk, tmp, haproxy_bin) as (h, e):
                for p in (h, e):
                    results: list = []
                    threads = _slow_requests(p.port, 2, results, "/?sleep=1.5")
                    # the second request waits in the backend's queue
                    assert _wait_row(p, "be1", "BACKEND", {"qcur": "1"}) == {"qcur": "1"}
                    assert stat_row(p, "be1", "s1", ("scur",)) == {"scur": "1"}, p.kind
                    assert p.cli("set maxconn server be1/s1 2") == b"\n"
                    assert _wait_row(p, "be1", "s1", {"scur": "2"}) == {"scur": "2"}, p.kind
                    assert stat_row(p, "be1", "BACKEND", ("qcur",)) == {"qcur": "0"}, p.kind
                    time.sleep(0.3)         # (both requests sent on: each then gets a 502)
                    assert p.cli("shutdown sessions server be1/s1") == b"\n"
                    for t in threads:
                        t.join(5)
                    assert results == [502, 502], p.kind
                    assert stat_row(p, "be1", "s1", ("scur", "eresp")) == \
                        {"scur": "0", "eresp": "2"}, p.kind
                for p in (h, e):
                    assert p.cli("set maxconn frontend fe 1") == b"\n"
                    results = []
                    threads = _slow_requests(p.port, 2, results, "/?sleep=0.6")
                    assert _wait_row(p, "fe", "FRONTEND", {"scur": "1"}) == {"scur": "1"}
                    time.sleep(0.2)                 # (the second one is still waiting)
                    assert stat_row(p, "fe", "FRONTEND", ("scur",)) == {"scur": "1"}, p.kind
                    if p is e:
                        # (HAProxy 2.6.12's watchdog aborts the process when the limit
                        # of a full frontend is raised: edgestick lets the waiting one in)
                        assert p.cli("set maxconn frontend fe 2") == b"\n"
                        assert _wait_row(p, "fe", "FRONTEND", {"scur": "2"}) == {"scur": "2"}
                    for t in threads:
                        t.join(5)
                    assert results == [200, 200], p.kind
    finally:
        bk.kill()


LOCAL = """\
global
    stats socket {SOCK} level admin
    server-state-base {SOCK}.d
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    load-server-state-from-file local
backend be1
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S1}
backend be2
    server-state-file-name st2
    server s1 127.0.0.1:{S1}
backend be3
    server-state-file-name use-backend-name
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S1}
backend be4
    server s1 127.0.0.1:{S1}
backend be5
    server s1 127.0.0.1:{S1}
backend be6
    load-server-state-from-file none
    server s1 127.0.0.1:{S1}
frontend fe
    bind 127.0.0.1:{FE}
"""

LOCAL_FILES = {
    # the file named after the backend; a server the backend lacks is ignored
    "be1": "1\n2 be1 2 s2 127.0.0.1 2 1 1 1 5 1 0 2 0 0 0 0 - {S1} -\n"
           "2 be1 9 s9 127.0.0.1 2 1 1 1 5 1 0 2 0 0 0 0 - {S1} -\n",
    # an id that differs is applied (name matches), a name that differs is not
    "st2": "1\n9 be2 1 s1 127.0.0.1 2 1 7 1 5 1 0 2 0 0 0 0 - {S1} -\n",
    "be3": "1\n4 bex 1 s1 127.0.0.1 2 1 1 1 5 1 0 2 0 0 0 0 - {S1} -\n"
           "   # a comment\n\n4 be3 2 s2 127.0.0.1 2 8 3 1 5 1 0 2 0 0 0 0 - {S1} -\n",
    # a line with too few fields: the whole file is ignored
    "be4": "1\n5 be4 1 s1 127.0.0.1 2 1 1 1 5\n",
    # not version 1: ignored
    "be5": "2\n6 be5 1 s1 127.0.0.1 2 1 1 1 5 1 0 2 0 0 0 0 - {S1} -\n",
    "be6": "1\n7 be6 1 s1 127.0.0.1 2 1 1 1 5 1 0 2 0 0 0 0 - {S1} -\n",
}


def test_local_state_files_as_haproxy(haproxy_bin):
    """load-server-state-from-file local: one file per backend under server-state-base,
    named after the backend or by server-state-file-name; backend ids and names
    matched as HAProxy matches them, corrupt and foreign-version files ignored."""
    bk = Backends(["s1"])
    bk.start()
    try:
        with workdir() as tmp:
            for kind, name in (("h", "haproxy"), ("e", "edgestick")):
                d = tmp / kind / f"{name}.sock.d"
                d.mkdir(parents=True)
                for fname, text in LOCAL_FILES.items():
                    (d / fname).write_text(text.format(S1=bk.ports["s1"]))
            with both(LOCAL, bk, tmp, haproxy_bin) as (h, e):
                reply = e.cli("show servers state")
                assert masked(reply) == masked(h.cli("show servers state"))
                got = {(f[1], f[3]): (f[6], f[7]) for f in
                       (line.split() for line in reply.decode().splitlines()[2:]) if f}
                assert got == {("be1", "s1"): ("0", "1"), ("be1", "s2"): ("1", "1"),
                               ("be2", "s1"): ("1", "7"), ("be3", "s1"): ("0", "1"),
                               ("be3", "s2"): ("8", "3"), ("be4", "s1"): ("0", "1"),
                               ("be5", "s1"): ("0", "1"), ("be6", "s1"): ("0", "1")}
    finally:
        bk.kill()


def test_show_servers_conn_as_haproxy(haproxy_bin):
    """`show servers conn`: the idle and used server connections after some requests."""
    bk = Backends(["s1", "s2"])
    bk.start()
    try:
        with workdir() as tmp:
            template = LIMITS.replace("    stats socket {SOCK} level admin\n",
                                      "    stats socket {SOCK} level admin\n    nbthread 1\n")
            template = template.replace(" maxconn 1\n", "\n    server s2 127.0.0.1:{S2}\n")
            with both(template, bk, tmp, haproxy_bin) as (h, e):
                for cmd in ("show servers conn", "show servers conn nope"):
                    assert e.cli(cmd) == h.cli(cmd), cmd
                for p in (h, e):
                    for _ in range(2):              # (one per server: a first idle one)
                        assert one_request(p.port, "/").status == 200
                time.sleep(0.2)
                for cmd in ("show servers conn", "show servers conn be1"):
                    assert e.cli(cmd) == h.cli(cmd), cmd
    finally:
        bk.kill()


TRACK = """\
global
    stats socket {SOCK} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend be1
    server s1 127.0.0.1:{S1} agent-check agent-port {DEAD} agent-inter 300ms
    server s2 127.0.0.1:{S1} agent-check agent-port {DEAD} agent-addr 127.0.0.7 agent-inter 300ms check inter 300ms
    server s3 127.0.0.1:{S1} track be1/s2
    server s4 127.0.0.1:{S1} track be1/s3
frontend fe
    bind 127.0.0.1:{FE}
    default_backend be1
"""

TRACK_COMMANDS = """\
show servers state be1
set server be1/s1 agent-addr 127.0.0.1
set server be1/s1 agent-addr bad
set server be1/s1 agent-addr
set server be1/s1 agent-addr 127.0.0.1 port {DEAD}
set server be1/s2 agent-port 9
set server be1/s1 agent-port x
set server be1/s1 agent-port 70000
set server be1/s1 agent-port
set server be1/s1 agent-send hello
set server be1/s1 agent-send
set server be1/s1 agent x
set server be1/s3 agent up
set server be1/s3 agent-addr 127.0.0.1
set server be1/s3 agent-send x
show servers state be1
set server be1/s3 health down
set server be1/s4 health up
del server be1/s2
del server be1/s3
set server be1/s4 state maint
del server be1/s4
del server be1/s3
show servers state be1
"""


def test_agent_and_track_commands_as_haproxy(haproxy_bin):
    """The agent's address, port and string set at run time (show servers state's agent
    columns), HAProxy's replies for a server without agent, a tracking server's health
    not forced, a tracked server never deleted, its tracker deleted."""
    bk = Backends(["s1"])
    bk.start()
    try:
        with workdir() as tmp:
            bk.ports["dead"] = free_ports(1)[0]     # (agents refused: L4CON at once)
            with both(TRACK, bk, tmp, haproxy_bin) as (h, e):
                for p in (h, e):
                    settle(p, "be1", ("s2",))
                for cmd in TRACK_COMMANDS.format(DEAD=bk.ports["dead"]).splitlines():
                    hr, er = replies(h, e, cmd)
                    assert masked(er) == masked(hr), cmd
    finally:
        bk.kill()


SLOWSTART = """\
global
    stats socket {SOCK} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend be1
    server s1 127.0.0.1:{S1} weight 10 slowstart 10s check inter 300ms
    server s2 127.0.0.1:{S1}
frontend fe
    bind 127.0.0.1:{FE}
    default_backend be1
"""


def test_set_weight_during_slow_start_as_haproxy(haproxy_bin):
    """A weight set while a server ramps up after maintenance: the ramp goes on towards
    the new weight (show stat's weight and throttle; compared a moment apart, so the
    ramp's one-second steps may differ by one)."""
    bk = Backends(["s1"])
    bk.start()
    try:
        with workdir() as tmp:
            with both(SLOWSTART, bk, tmp, haproxy_bin) as (h, e):
                for p in (h, e):
                    settle(p, "be1", ("s1",))
                for cmd in ("set server be1/s1 state maint", "set server be1/s1 state ready",
                            "set weight be1/s1 20", "get weight be1/s1"):
                    assert e.cli(cmd) == h.cli(cmd), cmd
                for p in (h, e):                    # (its next check: UP 1/3 -> UP)
                    assert _wait_row(p, "be1", "s1", {"status": "UP"}) == {"status": "UP"}
                cols = ("uweight", "weight", "throttle")
                hr, er = stat_row(h, "be1", "s1", cols), stat_row(e, "be1", "s1", cols)
                assert er["uweight"] == hr["uweight"] == "20"
                assert abs(int(er["throttle"]) - int(hr["throttle"])) <= 10, (hr, er)
                assert abs(int(er["weight"]) - int(hr["weight"])) <= 2, (hr, er)
    finally:
        bk.kill()
