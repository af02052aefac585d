"""`show info` and the `typed` / `json` / `desc` / `float` forms of `show info` and
`show stat`, as HAProxy 2.6 prints them: the same configuration and traffic on both,
then every field compared (names, order, positions, tags, types, JSON structure) and
every value but the few named below that cannot be equal; show stat's filters and the
error replies byte for byte."""
import json
import re
import time

import pytest

from proxy_harness import Backends, Client, both, private_tmp, raw_exchange  # noqa: F401 (fixture)
from test_show_stat_vs_haproxy import (HEAD, MASKED as STAT_MASKED, RATES as STAT_RATES,
                                      STATES, checks_done, wait_for)

pytestmark = pytest.mark.haproxy

CONFIG = HEAD + """
frontend f
    bind 127.0.0.1:{FE}
    http-request deny if { path /deny }
    use_backend d if { path /dead }
    default_backend b
backend b
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S1}
    server off 127.0.0.1:{S1} disabled
backend d
    retries 0
    server x 127.0.0.1:{DEAD}
"""

# show info's fields whose values legitimately differ, and why
PRODUCT = {"Name", "Version", "Release_date", "Build info"}     # edgestick's own
MASKED = {
    "Pid", "Uptime", "Uptime_sec", "Start_time_sec",    # two processes, two start times
    # HAProxy raises its file limit to what its maxconn needs (2 per connection and
    # more); edgestick reports its process's own soft RLIMIT_NOFILE
    "Ulimit-n", "Maxsock",
    # HAProxy's memory pools: edgestick has none (0)
    "PoolAlloc_MB", "PoolUsed_MB", "PoolAlloc_bytes", "PoolUsed_bytes",
    "Tasks",            # HAProxy's scheduler tasks vs edgestick's asyncio tasks
    "Idle_pct",         # CPU idleness over the last second, of two different processes
    # per-second rates and peaks: read at different instants, HAProxy's periods start
    # with an event, edgestick's at its once-a-second tick; bounded below
    "ConnRate", "SessRate", "MaxConnRate", "MaxSessRate", "BytesOutRate",
    # counted from the test's own CLI traffic, which differs (replies hold the Pid,
    # the Name...): compared below once the test's CLI share is taken out
    "CumConns", "CumReq", "TotalBytesOut",
}


class Cli:
    """A proxy's runtime API, counting what the test's own commands add to show info's
    totals: one connection (and one CLI stream, a 'request') each, and the reply bytes."""

    def __init__(self, p):
        self.p, self.conns, self.bytes = p, 0, 0

    def __call__(self, command: str) -> str:
        reply = self.p.cli(command)
        self.conns += 1
        self.bytes += len(reply)
        return reply.decode()


def settle(cli: Cli):
    """Every connection ended (through the counted CLI)."""
    deadline = time.monotonic() + 5
    while True:
        lines = cli("show stat").split("\n")[1:-2]
        if all(line.split(",")[4] == "0" for line in lines):
            return
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)


def plain(text: str) -> list[tuple[str, str]]:
    assert text.endswith("\n\n"), text[-200:]
    return [tuple(line.split(": ", 1)) for line in text[:-2].split("\n")]


def typed(text: str) -> list[tuple]:
    """`pos.name.proc:tags:type:value` lines -> (pos, name, tags, type, value)."""
    assert text.endswith("\n\n")
    out = []
    for line in text[:-2].split("\n"):
        m = re.fullmatch(r"(\d+)\.([^.]+)\.1:(\w{3}):(\w+):(.*)", line)
        assert m, line
        out.append((int(m[1]), m[2], m[3], m[4], m[5]))
    return out


def check_info(h: list[tuple], e: list[tuple], value_at: int):
    """Field lists of equal structure; values equal but MASKED ones."""
    assert [f[:value_at] for f in e] == [f[:value_at] for f in h]
    for hf, ef in zip(h, e):
        name = hf[1] if value_at > 1 else hf[0]
        if name not in MASKED and name not in PRODUCT:
            assert ef[value_at] == hf[value_at], (name, ef, hf)


def test_show_info_like_haproxy(private_tmp, haproxy_bin):
    b = Backends(["s1"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]       # nothing listens there
    try:
        with both(CONFIG, b, private_tmp, haproxy_bin) as (hp, ep):
            clis = {}
            for p in (hp, ep):
                cli = clis[p.kind] = Cli(p)
                # a close request, a keep-alive session (two served, one denied), the
                # dead server's 503, a malformed head (400)
                assert raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                    b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
                c = Client(p.port, "127.0.0.1")
                assert [c.request(path).status for path in ("/", "/?x=1", "/deny")] == [
                    200, 200, 403]
                c.close()
                assert raw_exchange(p.port, b"GET /dead HTTP/1.1\r\nHost: a\r\n"
                                    b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 503")
                assert raw_exchange(p.port, b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n").startswith(
                    b"HTTP/1.1 400")
                settle(cli)
            h, e = clis["haproxy"], clis["edgestick"]
            h_text, e_text = h("show info"), e("show info")
            hi, ei = plain(h_text), plain(e_text)
            check_info(hi, ei, 1)
            hv, ev = dict(hi), dict(ei)
            assert (ev["Name"], ev["Build info"]) == ("edgestick", ev["Version"])
            assert re.fullmatch(r"\d{4}/\d\d/\d\d", ev["Release_date"])
            assert ev["Pid"] == str(ep.proc.pid)
            assert re.fullmatch(r"0d 0h0\dm\d\ds", ev["Uptime"]) and int(ev["Uptime_sec"]) < 600
            assert 0 <= int(ev["Idle_pct"]) <= 100 and int(ev["Tasks"]) > 0
            assert int(ev["Ulimit-n"]) > 0 and ev["Maxsock"] == ev["Ulimit-n"]
            # cumulated counts, once each side's CLI share is taken out (every CLI
            # connection, the current one included, is a connection and a request; the
            # replies sent before this one are bytes out): the traffic's 4 connections
            # and the harness's empty start probe; 5 requests parsed (not the refused
            # head, not the probe); the bytes sent to clients and servers on the wire
            traffic = {}
            for k, values, text in (("haproxy", hv, h_text), ("edgestick", ev, e_text)):
                cli = clis[k]
                traffic[k] = (int(values["CumConns"]) - cli.conns,
                              int(values["CumReq"]) - cli.conns,
                              int(values["TotalBytesOut"]) - (cli.bytes - len(text)))
            assert traffic["edgestick"] == traffic["haproxy"]
            assert traffic["edgestick"][:2] == (5, 5)
            for name in ("ConnRate", "SessRate", "MaxConnRate", "MaxSessRate"):
                assert 0 <= int(ev[name]) <= 7, (name, ev[name])
            assert int(ev["MaxConnRate"]) >= 1 and int(ev["BytesOutRate"]) % 32 == 0

            # typed, desc, json, float: the same fields, tags and types
            check_info(typed(h("show info typed")), typed(e("show info typed")), 4)
            check_info(typed(h("show info typed desc")), typed(e("show info typed desc")), 4)
            check_info(typed(h("show info typed float")), typed(e("show info typed float")), 4)
            hd, ed = plain(h("show info desc")), plain(e("show info desc"))
            assert [(k, v.split(":", 1)[1] if ":" in v else v) for k, v in ed if k != "Uptime"] \
                == [(k, v.split(":", 1)[1] if ":" in v else v) for k, v in hd if k != "Uptime"]
            for form in ("show info json", "show info json float", "show info json desc"):
                hj, ej = json.loads(h(form)), json.loads(e(form))
                assert [_shape(o) for o in ej] == [_shape(o) for o in hj], form
                for ho, eo in zip(hj, ej):
                    if ho["field"]["name"] not in MASKED | PRODUCT:
                        assert eo["value"] == ho["value"], (ho, eo)
            # arguments HAProxy ignores; the last of typed/json wins
            assert [f[0] for f in plain(e("show info bogus"))] == [f[0] for f in hi]
            assert typed(e("show info json typed"))[0][1] == "Name"
    finally:
        b.kill()


def _shape(obj):
    """A JSON object's structure: keys and every value but the measured one."""
    if isinstance(obj, dict):
        return {k: (_shape(v) if k != "value" or isinstance(v, dict) else type(v).__name__)
                for k, v in obj.items()}
    return obj


def stat_typed(text: str) -> list[tuple]:
    """`T.iid.sid.pos.name.proc:tags:type:value[:"desc"]` lines."""
    assert text.endswith("\n\n")
    out = []
    for line in text[:-2].split("\n"):
        m = re.fullmatch(r"([FBSL])\.(\d+)\.(\d+)\.(\d+)\.([^.]+)\.1:(\w{3}):(\w+):(.*)", line)
        assert m, line
        out.append(m.groups())
    return out


def _stat_equal(name: str, hv: str, ev: str) -> bool:
    if name in STAT_MASKED or name in STAT_RATES:
        return True
    if name == "check_status":
        hv, ev = hv.removeprefix("* "), ev.removeprefix("* ")
    return hv == ev


def compare_typed_and_json(h: Cli, e: Cli, typed_forms, json_forms):
    """Typed and JSON dumps: the same objects, ids, positions, names, tags, types (and
    descriptions), values equal but those show stat's test masks or bounds."""
    for form in typed_forms:
        # (the fields show stat's test masks: edgestick leaves the times empty)
        ht, et = ([f for f in stat_typed(p(form)) if f[4] not in STAT_MASKED] for p in (h, e))
        assert [f[:7] for f in et] == [f[:7] for f in ht], form
        for hf, ef in zip(ht, et):
            value = (lambda f: f[7].rsplit(':"', 1)[0]) if "desc" in form else (
                lambda f: f[7])
            assert _stat_equal(hf[4], value(hf), value(ef)), (form, hf, ef)
            if "desc" in form:
                assert ef[7].rsplit(':"', 1)[1] == hf[7].rsplit(':"', 1)[1]
    for form in json_forms:
        hj, ej = ([[o for o in row if o["field"]["name"] not in STAT_MASKED]
                   for row in json.loads(p(form))] for p in (h, e))
        assert [[_shape(o) for o in row] for row in ej] == [
            [_shape(o) for o in row] for row in hj], form
        for hrow, erow in zip(hj, ej):
            for ho, eo in zip(hrow, erow):
                assert _stat_equal(ho["field"]["name"], str(ho["value"]["value"]),
                                   str(eo["value"]["value"])), (ho, eo)


def test_show_stat_forms_like_haproxy(private_tmp, haproxy_bin):
    """show stat typed / json / desc, the `<iid> <type> <sid>` filter, `up` and
    `no-maint`, and the error replies."""
    b = Backends(["s1"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]
    try:
        with both(CONFIG, b, private_tmp, haproxy_bin) as (hp, ep):
            for p in (hp, ep):
                # (the start's port probe gone first, or smax may count it with the request)
                wait_for(p, lambda rows: all(r["scur"] == "0" for r in rows))
                assert raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                    b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
                wait_for(p, lambda rows: all(r["scur"] == "0" for r in rows))
            h, e = Cli(hp), Cli(ep)
            compare_typed_and_json(
                h, e, ("show stat typed", "show stat typed desc", "show stat b 4 -1 typed"),
                ("show stat json", "show stat json desc", "show stat 3 -1 -1 json"))
            # filters: rows selected, and the backend's "(up/all)" with up / no-maint
            for form in ("show stat 2 -1 -1", "show stat f 1 -1", "show stat b 4 1",
                         "show stat b 6 2", "show stat -1 2 -1", "show stat 3 -1",
                         "show stat desc", "show stat up", "show stat no-maint",
                         "show stat b -1 -1 up no-maint"):
                assert _rows(e(form)) == _rows(h(form)), form
            # the CSV header and rows as plain show stat prints them, desc or not
            assert e("show stat desc").split("\n")[0] == h("show stat").split("\n")[0]
            for bad in ("show stat domain", "show stat domain x", "show stat domain dns",
                        "show stat nosuch 1 1", "show stat 0 1 1", "show stat x -1 -1 typed"):
                assert ep.cli(bad) == hp.cli(bad), bad
    finally:
        b.kill()


def _rows(text: str) -> list[tuple]:
    """A CSV dump's (pxname, svname, status) rows."""
    lines = text.split("\n")
    assert lines[0].startswith("# pxname,") and lines[-2:] == ["", ""], text[:300]
    return [tuple(line.split(",")[i] for i in (0, 1, 17)) for line in lines[1:-2]]


def test_show_stat_typed_states_like_haproxy(private_tmp, haproxy_bin):
    """The typed and JSON forms over show stat's test of server states: a listen
    section, health checks (one server DOWN), a cookie, a backup, a disabled server,
    an explicit id; and `up` / `no-maint` there."""
    b = Backends(["s1"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]
    try:
        with both(STATES, b, private_tmp, haproxy_bin, n_frontends=2) as (hp, ep):
            for p in (hp, ep):
                wait_for(p, checks_done)
            h, e = Cli(hp), Cli(ep)
            compare_typed_and_json(h, e, ("show stat typed", "show stat l -1 -1 typed desc"),
                                   ("show stat json", "show stat 7 -1 -1 json"))
            for form in ("show stat up", "show stat no-maint", "show stat l 4 -1 up"):
                assert _rows(e(form)) == _rows(h(form)), form
            # a UP, no check on bk (a backup with no check: UP), down DOWN, off MAINT
            assert ("l", "BACKEND", "UP (2/4)") in _rows(e("show stat up"))
    finally:
        b.kill()
