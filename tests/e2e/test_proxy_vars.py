"""Variables (set-var, set-var-fmt, unset-var, var(), the set-var/unset-var converters,
global set-var, `get var`) compared with HAProxy 2.6: the same configuration and
requests to both, the same headers, bodies, tables and `-c` verdicts.

(HAProxy 2.6.12 crashes on `set-var-fmt(...) ""` with a condition, so no case has one.)
"""
import subprocess
import sys
import time

import pytest

from proxy_harness import Backends, Client, both, mask_table, one_request, workdir

pytestmark = pytest.mark.haproxy

CONFIG = """
global
    stats socket {SOCK} mode 600 level admin
    set-var proc.g str(glob)
    set-var proc.gi int(40),add(2)
    set-var-fmt proc.gf "g=%[var(proc.g)] n=%[int(7)]"

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    tcp-request connection set-var(sess.conn) int(1)
    tcp-request connection set-var(txn.tc) int(2)
    tcp-request session set-var(req.ts) int(3)
    tcp-request session set-var(sess.src) src
    http-request set-var(sess.n) var(sess.n),add(1)
    http-request set-var(sess.count) var(sess.count,0),add(1)
    http-request set-var(sess.first) path if !{ var(sess.first) -m found }
    http-request set-var(txn.p) path
    http-request set-var(req.r) str(reqv)
    http-request set-var(res.s) str(resv)
    http-request set-var(proc.cnt) var(proc.cnt,0),add(1)
    http-request set-var(txn.int) int(10)
    http-request set-var(txn.str) str(10)
    http-request set-var(txn.ip) src
    http-request set-var(txn.b) always_true
    http-request set-var(txn.m) method
    http-request set-var(txn.q) req.hdr(x-q)
    http-request set-header X-Vars "conn=%[var(sess.conn)] tc=%[var(txn.tc)] ts=%[var(req.ts)] src=%[var(sess.src)] n=%[var(sess.n)] count=%[var(sess.count)] first=%[var(sess.first)] p=%[var(txn.p)] r=%[var(req.r)] s=%[var(res.s)] rs=%[var(res.r)] cnt=%[var(proc.cnt)] q=%[var(txn.q)]"
    http-request set-header X-Types "i=%[var(txn.int),hex] s=%[var(txn.str),hex] ip=%[var(txn.ip),hex] b=%[var(txn.b),hex] m=%[var(txn.m),hex] ilen=%[var(txn.int),length] d=%[var(txn.none,12),hex] dadd=%[var(txn.none,12),add(1)] ipm=%[var(txn.ip),ipmask(8)]"
    http-request set-header X-Acl "y" if { var(txn.int) -m int 10 } { var(txn.str) -m int 10 } { var(txn.ip) -m ip 127.0.0.0/8 } { var(txn.str) -m str 10 } { var(txn.int) -m str 10 } { var(txn.int),add(1) 11 }
    http-request set-header X-Ip-str "y" if { var(txn.str) -m ip 0.0.0.10 }
    http-request set-header X-Found "y" if { var(txn.nothing) -m found }
    http-request set-header X-NFound "y" if !{ var(txn.nothing) -m found }
    http-request set-header X-Bool "y" if { var(txn.b) -m bool }
    http-request set-header X-Q-Beg "y" if { var(txn.q) -m beg ab }
    http-request set-header X-Q-Len "y" if { var(txn.q) -m len 3 }
    http-request set-header X-Glob "%[var(proc.g)] %[var(proc.gi),add(1)] %[var(proc.gf)]"
    http-response set-header X-Res "r=%[var(req.r)] s=%[var(res.s)] p=%[var(txn.p)] n=%[var(sess.count)] q=%[var(txn.q)]"
    http-response set-var(res.x) str(rx)
    http-response set-var(txn.late) status
    http-response set-header X-Res2 "x=%[var(res.x)] rx=%[var(req.x)] late=%[var(txn.late),add(1)]"
    use_backend %[var(txn.be)] if { var(txn.be) -m found }
    default_backend bk

frontend conds
    bind 127.0.0.1:{FE2}
    http-request set-var(txn.a,ifexists) str(a1)
    http-request set-var(txn.b,ifnotexists) str(b1)
    http-request set-var(txn.b,ifnotexists) str(b2)
    http-request set-var(txn.c) str(c1)
    http-request set-var(txn.c,ifexists) str(c2)
    http-request set-var(txn.d,ifempty) str(x)
    http-request set-var(txn.e,ifnotempty) str(e1)
    http-request set-var(txn.d2,ifempty) str()
    http-request set-var(txn.d3,ifnotempty) str
    http-request set-var(txn.e2,ifempty) int(0)
    http-request set-var(txn.e3,ifnotempty) int(0)
    http-request set-var(txn.f) int(5)
    http-request set-var(txn.f,ifgt) int(3)
    http-request set-var(txn.g) int(5)
    http-request set-var(txn.g,ifgt) int(9)
    http-request set-var(txn.h) int(5)
    http-request set-var(txn.h,iflt) int(3)
    http-request set-var(txn.h2) int(5)
    http-request set-var(txn.h2,iflt) int(8)
    http-request set-var(txn.i) str(x)
    http-request set-var(txn.i,ifgt) int(3)
    http-request set-var(txn.j) str(j1)
    http-request unset-var(txn.j)
    http-request set-var(txn.j,ifexists) str(j2)
    http-request set-var(txn.k) str(k1)
    http-request unset-var(txn.k)
    http-request set-var(txn.k,ifnotset) str(k2)
    http-request set-var(txn.l,ifset) str(l2)
    http-request set-var(txn.m,ifnotset) str(m1)
    http-request set-var(txn.n) str(n1)
    http-request set-var(txn.n,ifnotset) str(n2)
    http-request set-var(txn.o) str(o1)
    http-request set-var(txn.o,ifset,ifnotempty) str(o2)
    http-request set-var(proc.pe,ifexists) str(pe)
    http-request set-var(proc.pn,ifnotexists) str(pn)
    http-request set-var(proc.ps,ifnotset) str(ps)
    http-request set-var(proc.pt,ifset) str(pt)
    http-request set-var(proc.pc) var(proc.pc,0),add(1)
    http-request unset-var(proc.pc) if { var(proc.pc) -m int gt 1 }
    http-request set-var-fmt(txn.fmt) "%[int(3)]-%[path]"
    http-request set-var(txn.cv1) str(abc),set-var(txn.w),upper,set-var(txn.x,ifnotexists)
    http-request set-var(txn.cv2) str(abc),set-var(txn.nope,ifexists)
    http-request set-var(txn.cv3) str(abc),set-var(txn.y),unset-var(txn.y),upper
    http-request set-var(txn.none) req.hdr(x-none)
    http-request set-var(txn.cond) str(yes) if { path /cond }
    http-request return status 200 content-type text/plain lf-string "a=%[var(txn.a)] b=%[var(txn.b)] c=%[var(txn.c)] d=%[var(txn.d)] d2=%[var(txn.d2),length] d3=%[var(txn.d3),length] e=%[var(txn.e)] e2=%[var(txn.e2)] e3=%[var(txn.e3)] f=%[var(txn.f)] g=%[var(txn.g)] h=%[var(txn.h)] h2=%[var(txn.h2)] i=%[var(txn.i)] j=%[var(txn.j)] k=%[var(txn.k)] l=%[var(txn.l)] m=%[var(txn.m)] n=%[var(txn.n)] o=%[var(txn.o)] pe=%[var(proc.pe)] pn=%[var(proc.pn)] ps=%[var(proc.ps)] pt=%[var(proc.pt)] pc=%[var(proc.pc)] fmt=%[var(txn.fmt)] fmt1=%[var(txn.fmt),add(1)] cv1=%[var(txn.cv1)] w=%[var(txn.w)] x=%[var(txn.x)] cv2=%[var(txn.cv2)] cv3=%[var(txn.cv3)] y=%[var(txn.y)] none=%[var(txn.none)] nonelen=%[var(txn.none),length] cond=%[var(txn.cond)]\\n"

frontend track
    bind 127.0.0.1:{FE3}
    stick-table type string len 16 size 100 expire 1m store http_req_cnt
    tcp-request connection set-var(sess.who) str(conn)
    http-request set-var(txn.user) req.hdr(x-user),lower
    http-request set-var(txn.user) var(sess.who) unless { var(txn.user) -m found }
    http-request track-sc0 var(txn.user)
    http-request set-var(txn.be) str(bk2) if { var(txn.user) -m str bob }
    use_backend %[var(txn.be)] if { var(txn.be) -m found }
    default_backend bk

frontend args
    bind 127.0.0.1:{FE4}
    http-request set-var(txn.i) int(3)
    http-request set-var(txn.s) str(7x)
    http-request set-var(txn.a) str(abc)
    http-request set-var(txn.ip) src
    http-request return status 200 content-type text/plain lf-string "add=%[int(10),add(txn.i)] adds=%[int(10),add(txn.s)] miss=%[int(10),add(txn.none)] sub=%[int(10),sub(txn.i)] mul=%[int(10),mul(txn.i)] div=%[int(10),div(txn.i)] mod=%[int(10),mod(txn.i)] and=%[int(10),and(txn.i)] or=%[int(10),or(txn.i)] xor=%[int(10),xor(txn.i)] addip=%[int(10),add(txn.ip)] c1=%[str(x),concat(<,txn.a,>)] c2=%[str(x),concat(,txn.none,)] c3=%[str(x),concat(a)] c4=%[int(5),concat(-,txn.i)] c5=%[str(x),concat(,txn.ip,)] s1=%[str(abc),strcmp(txn.a)] s2=%[str(abd),strcmp(txn.a)] s3=%[str(ab),strcmp(txn.a)] s4=%[str(abcd),strcmp(txn.a)] s5=%[str(a),strcmp(txn.none)] s6=%[str(b),strcmp(txn.a)] s7=%[str(Z),strcmp(txn.a)] s8=%[int(3),strcmp(txn.i)] s9=%[req.hdr(x-a),strcmp(txn.a)]\\n"

backend bk
    server s1 127.0.0.1:{S1}

backend bk2
    server s2 127.0.0.1:{S2}
"""


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1", "s2"]).start()
    try:
        with workdir() as wd, both(CONFIG, b, wd, haproxy_bin, 4) as p:
            yield p
    finally:
        b.kill()


def _x_lines(resp) -> list:
    """The X-* headers of the response and those the backend received (its body)."""
    got = [f"{k.lower()}: {v}" for k, v in resp.headers if k.lower().startswith("x-")]
    got += [ln for ln in resp.body.decode("latin-1").splitlines() if ln.startswith("x-")]
    return sorted(got)


def test_scopes_lifetimes_and_types(pair):
    """sess variables live as long as the connection, txn ones one request, req ones
    the request processing, res ones the response's; what a scope cannot reach yet is
    neither set nor read; each variable keeps the type it was set with."""
    out = []
    for p in pair:
        seen = []
        c = Client(p.port)
        try:
            seen.append(_x_lines(c.request("/a", headers=[("X-Q", "abc")])))
            seen.append(_x_lines(c.request("/b")))
            seen.append(_x_lines(c.request("/c", method="POST", headers=[("X-Q", "zz")])))
        finally:
            c.close()
        seen.append(_x_lines(one_request(p.port, "/d")))
        out.append(seen)
    assert out[1] == out[0]
    assert any("first=/a" in ln and "count=3" in ln for ln in out[0][2])   # sanity


def test_set_var_conditions_converters_and_proc(pair):
    """ifexists/ifnotexists/ifempty/ifnotempty/ifset/ifnotset/ifgt/iflt, unset-var, proc
    names that exist from the start, set-var-fmt, the set-var/unset-var converters."""
    h, e = pair
    for path in ("/one", "/cond", "/three"):
        rh = one_request(h.ports[1], path)
        re_ = one_request(e.ports[1], path)
        assert (re_.status, re_.body) == (rh.status, rh.body), path


def _settled_table(proxy, name: str) -> list:
    """`show table` once the last stream has released its entry (use=0 again)."""
    deadline = time.monotonic() + 3
    while b"use=1" in proxy.cli(f"show table {name}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return mask_table(proxy.cli(f"show table {name}"))


def test_track_key_and_dynamic_backend_from_variables(pair):
    h, e = pair
    for users in (["Alice", "bob", None, "BOB", "alice"],):
        for p in pair:
            p.chosen = []
            for u in users:
                r = one_request(p.ports[2], "/", headers=[("X-User", u)] if u else [])
                p.chosen.append((r.status, r.server))
        assert e.chosen == h.chosen
    assert e.chosen[1][1] == "s2" and e.chosen[0][1] == "s1"
    assert _settled_table(e, "track") == _settled_table(h, "track")


def test_converters_reading_variables(pair):
    """add/sub/mul/div/mod/and/or/xor(<var>), concat(start,var,end), strcmp(var)."""
    h, e = pair
    for hdrs in ([], [("X-A", "abd")], [("X-A", "ab")]):
        rh = one_request(h.ports[3], "/", headers=hdrs)
        re_ = one_request(e.ports[3], "/", headers=hdrs)
        assert rh.status == 200 and (re_.status, re_.body) == (rh.status, rh.body), hdrs


def test_get_var_on_the_cli(pair):
    h, e = pair
    one_request(h.port, "/")
    one_request(e.port, "/")
    for name in ("proc.g", "proc.gi", "proc.gf", "proc.cnt", "proc.pn", "proc.nothere",
                 "txn.p", "foo", ""):
        assert e.cli(f"get var {name}") == h.cli(f"get var {name}"), name


BASE = """defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:1
    {rule}
    default_backend bk
backend bk
    server s 127.0.0.1:1
"""

# (line, haproxy -c accepts it, a piece of the message both give when not)
CHECKS = [
    ("http-request set-var(txn.) int(1)", False, "invalid variable name 'txn.'. A variable "
     "name must be start by its scope. The scope can be 'proc', 'sess', 'txn', 'req', 'res' "
     "or 'check'."),
    ("http-request set-var(foo.x) int(1)", False, "invalid variable name 'foo.x'"),
    ("http-request set-var(x) int(1)", False, "invalid variable name 'x'"),
    ("http-request set-var(txn.a-b) int(1)", False, "invalid syntax at char '-b)'"),
    ("http-request set-var(txn.x int(1)", False, "incomplete argument after action "
     "'set-var(txn.x'. Expects 'set-var(<var-name>)', 'set-var-fmt(<var-name>)' or "
     "'unset-var(<var-name>)'."),
    ("http-request set-var(txn.x)x int(1)", False, "incomplete argument after action"),
    ("http-request set-var txn.x int(1)", False, "invalid or incomplete action 'set-var'"),
    ("http-request set-var(txn.x)", False, "missing fetch method"),
    ("http-request set-var(txn.x) int(1) int(2)", False, "expects either 'if' or 'unless' "
     "followed by a condition but found 'int(2)'"),
    ("http-request set-var(txn.x) nosuch", False, "unknown fetch method 'nosuch'"),
    ("http-request set-var(txn.x,bogus) int(1)", False, 'unknown condition "bogus"'),
    ("http-request unset-var(txn.x,ifexists)", False, "unset-var does not expect parameters "
     "after the variable name. Only \"set-var\" and \"set-var-fmt\" manage conditions."),
    ("http-request unset-var(txn.x) foo", False, "found 'foo'"),
    ("http-request set-var-fmt(txn.x) %[nosuch]", False, "unknown fetch method 'nosuch'"),
    ("http-request set-header X %[var(txn.a-b)]", False, "invalid args in fetch method 'var' : "
     "invalid syntax at char '-b'"),
    ("http-request set-header X %[var()]", False, "Empty variable name cannot be accepted"),
    ("http-request set-header X %[var(foo)]", False, "invalid variable name 'foo'"),
    ("http-request set-header X %[str(a),set-var(txn.b,nope)]", False, "invalid args in "
     "converter 'set-var' : unknown condition \"nope\""),
    ("http-request set-header X %[str(a),unset-var(txn.b,ifexists)]", False, "invalid arg 2 "
     "in converter 'unset-var'"),
    ("http-request deny if { var(txn.x) 3 }", False, "matching method must be specified first "
     "(using '-m') when using a sample fetch of this type ('var')."),
    ("http-request set-header X %[int(1),add(foo)]", False, "invalid args in converter "
     "'add' : expects an integer or a variable name."),
    ("http-request set-header X %[int(1),mul(txn.a-b)]", False, "expects an integer or a "
     "variable name."),
    ("http-request set-header X %[str(a),concat(a,b,c,d)]", False, "expected ')' before"),
    ("http-request set-header X %[str(a),concat(a,foo,c)]", False, "invalid args in converter "
     "'concat' : failed to register variable name 'foo'."),
    ("http-request set-header X %[str(a),strcmp()]", False, "invalid args in converter "
     "'strcmp' : missing variable name."),
    ("http-request set-header X %[str(a),strcmp(foo)]", False, "failed to register variable "
     "name 'foo'."),
    ("http-request set-header X %[str(a),concat()]", True, ""),
    ("http-request set-var(txn.x) str()", True, ""),
    ("http-request set-header X %[int()]", False, ""),
    ("http-request set-var(txn.x) status", False, "none of which is available here"),
    ("tcp-request connection set-var(sess.x) path", False, "none of which is available here"),
    ("http-request deny if { var(txn.x),add(1) 3 }", True, ""),
    ("http-request set-var(txn.x,ifexists,ifgt,iflt,ifset,ifnotset,ifempty,ifnotempty,"
     "ifnotexists) int(1)", True, ""),
    ("http-request set-var(txn.x,) int(1)", True, ""),
    ("http-request set-var(txn.Ab_9.c) int(1)", True, ""),
    ("http-request set-var(check.x) int(1)", True, ""),
    ("http-request set-var-fmt(txn.x) a%[path]b", True, ""),
    ("tcp-request connection set-var(txn.x) int(1)", True, ""),
    ("tcp-request session set-var(sess.x) src", True, ""),
    ("tcp-request content set-var(txn.x) req.hdr(host)", True, ""),
    ("http-response set-var(req.x) status", True, ""),
    ("http-request set-header X %[var(txn.a,def)]", True, ""),
]

GLOBAL_CHECKS = [
    ("set-var proc.x int(1)", True, ""),
    ("set-var-fmt proc.x \"a %[int(1)]\"", True, ""),
    ("set-var proc.x src", False, "none of which is available here"),
    ("set-var txn.x int(1)", False, ""),
    ("set-var proc.x", False, ""),
]


def _check_both(haproxy_bin, text, ok, message) -> str:
    """Both verdicts (and messages) as expected; edgestick's output."""
    with workdir() as d:
        cfg = d / "t.cfg"
        cfg.write_text(text)
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            out = r.stdout + r.stderr
            assert (r.returncode == 0) == ok, (argv[0], out)
            if not ok:
                assert message in out, (argv[0], out)
    return out


@pytest.mark.parametrize("rule,ok,message", CHECKS, ids=[c[0] for c in CHECKS])
def test_config_check_as_haproxy(haproxy_bin, rule, ok, message):
    text = BASE.replace("{rule}", rule)
    if rule.startswith("tcp-request content"):
        text = text.replace("    default_backend", "    tcp-request inspect-delay 1s\n"
                            "    default_backend")
    out = _check_both(haproxy_bin, text, ok, message)
    assert ok or "t.cfg:8: '" in out             # edgestick names the line and the keyword


@pytest.mark.parametrize("line,ok,message", GLOBAL_CHECKS, ids=[c[0] for c in GLOBAL_CHECKS])
def test_global_set_var_check_as_haproxy(haproxy_bin, line, ok, message):
    _check_both(haproxy_bin, f"global\n    {line}\n" + BASE.replace("{rule}", ""), ok, message)


RELOAD = """
global
    stats socket {SOCK} mode 600 level admin
    set-var proc.base int(100)

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    http-request set-var(proc.n) var(proc.n,0),add(1)
    http-request set-var(sess.k) var(sess.k,0),add(1)
    http-request return status 200 content-type text/plain lf-string "%[var(proc.base)] %[var(proc.n)] %[var(sess.k)]\\n"
"""


def test_reload_starts_proc_variables_afresh():
    """edgestick only (HAProxy reloads by a new process, whose proc variables start from
    its global set-var): after `reload`, proc variables are those of the new
    configuration; a connection opened before keeps its session variables."""
    from proxy_harness import start_proxy
    be = Backends([])
    with workdir() as tmp:
        p = start_proxy("edgestick", RELOAD, be, tmp)
        try:
            c = Client(p.port)
            assert [c.request("/").body for _ in range(2)] == [b"100 1 1\n", b"100 2 2\n"]
            assert p.cli("get var proc.n") == b"proc.n: type=sint value=<2>\n"
            text = open(p.cfg_path).read()
            open(p.cfg_path, "w").write(text.replace("int(100)", "int(200)"))
            assert p.cli("reload").startswith(b"Success=1")
            assert p.cli("get var proc.n") == b"Variable not found.\n\n"
            assert one_request(p.port, "/").body == b"200 1 1\n"
            assert c.request("/").body == b"100 3 3\n"      # the old configuration's
            c.close()
        finally:
            p.stop()


TCP = """
global
    stats socket {SOCK} mode 600 level admin

defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    tcp-request inspect-delay 1s
    tcp-request connection set-var(txn.c) str(bk2)
    tcp-request connection set-var(sess.n) src_port
    tcp-request session set-var(sess.s) str(bk2) if { src_port,sub(sess.n) eq 0 }
    tcp-request content set-var(txn.b) var(sess.s) if { req.payload(0,4) -m str GET\\  }
    tcp-request content set-var(req.r) req.len
    tcp-request content track-sc0 var(txn.b,none),concat(-,req.r,-),concat(,txn.c,)
    stick-table type string len 32 size 10 store conn_cnt
    use_backend %[var(txn.b)] if { var(txn.b) -m found }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}

backend bk2
    server s2 127.0.0.1:{S2}
"""


def test_tcp_mode_streams_have_txn_and_req_variables(haproxy_bin):
    """A TCP frontend: connection and session rules reach sess (txn, req not yet: no
    stream), content rules reach txn and req, use_backend and track keys read them."""
    b = Backends(["s1", "s2"]).start()
    try:
        with workdir() as wd, both(TCP, b, wd, haproxy_bin) as (h, e):
            got = {}
            for p in (h, e):
                got[p.kind] = []
                for method in ("GET", "POST"):
                    c = Client(p.port)
                    got[p.kind].append(c.request("/", method, body=b"").status_line)
                    c.close()
                got[p.kind + "/table"] = _settled_table(p, "fe")
                got[p.kind + "/s2"] = [ln.split(",")[7] for ln in
                                       p.cli("show stat").decode().splitlines()
                                       if ln.startswith(("bk,s1,", "bk2,s2,"))]
            assert got["edgestick"] == got["haproxy"] == ["HTTP/1.1 200 OK"] * 2
            assert got["edgestick/table"] == got["haproxy/table"]
            assert any("key=bk2-" in ln for ln in got["haproxy/table"])
            assert got["edgestick/s2"] == got["haproxy/s2"]
    finally:
        b.kill()
